"""time_calls on a GPU, against a simulated device queue: the host launches work that the GPU runs in order,
each op starting when both the GPU is free and the host has queued it. A call whose dispatch takes longer
than its kernel must still read its kernel's time."""

from __future__ import annotations

import pytest
import torch

from ovi_bench.trackers import timing

GPU_HZ = 1.5e9


class SimulatedGPU:
    def __init__(self) -> None:
        self.host = 0.0  # the host's clock, s
        self.free = 0.0  # when the GPU's queue drains

    def launch(self, host_s: float, gpu_s: float) -> float:
        """The host spends host_s queueing an op of gpu_s; returns when the op starts on the GPU."""
        self.host += host_s
        start = max(self.free, self.host)
        self.free = start + gpu_s
        return start


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> SimulatedGPU:
    sim = SimulatedGPU()

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            self.at: float | None = None

        def record(self) -> None:
            self.at = sim.launch(1e-6, 0.0)

        def query(self) -> bool:
            assert self.at is not None
            return self.at <= sim.host

        def elapsed_time(self, end: Event) -> float:
            assert self.at is not None and end.at is not None
            return (end.at - self.at) * 1e3

    def synchronize(device: object = None) -> None:
        sim.host = max(sim.host, sim.free)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: sim.launch(1e-6, cycles / GPU_HZ))
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    return sim


@pytest.mark.parametrize("dispatch_s", [300e-6, 5e-3])  # the second is longer than the first lead (1.4 ms)
def test_a_host_bound_call_reads_its_kernel_time(gpu: SimulatedGPU, dispatch_s: float) -> None:
    kernel_s, matmul_s = 50e-6, 170e-6
    times, beside = timing.time_calls(lambda: gpu.launch(dispatch_s, kernel_s), torch.device("cuda"), reps=10,
                                      warmup=2, beside=lambda: gpu.launch(10e-6, matmul_s))
    assert times == pytest.approx([kernel_s] * 10, rel=1e-6)
    assert beside == pytest.approx([matmul_s] * 10, rel=1e-6)


def test_a_gpu_bound_call_reads_its_kernel_time(gpu: SimulatedGPU) -> None:
    times, _ = timing.time_calls(lambda: gpu.launch(20e-6, 4e-3), torch.device("cuda"), reps=5, warmup=1)
    assert times == pytest.approx([4e-3] * 5, rel=1e-6)
