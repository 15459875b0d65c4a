"""The harness's one device-timing stack: stage and step timing, timed calls and the matmul ceiling, each
synchronised with the device so queued GPU work is counted where it runs (benchmarks/ use it too; the engine
keeps its own for its attention probe, since it never imports the harness)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TimingConfig:
    device: str = "cpu"


@dataclass
class StepTimer:
    """`on_step` for Engine.denoise: the time between successive step callbacks, device-synchronised."""

    device: torch.device
    notify: Callable[[int, int], None] | None = None  # progress to the parent process
    durations: list[float] = field(default_factory=list)
    _last: float = field(default_factory=time.perf_counter)

    def on_step(self, step: int, total: int) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.durations.append(now - self._last)
        self._last = now
        if self.notify is not None:
            self.notify(step, total)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimingTracker:
    def __init__(self, config: TimingConfig) -> None:
        self.device = torch.device(config.device)

    def step_timer(self, notify: Callable[[int, int], None] | None = None) -> StepTimer:
        synchronize(self.device)
        return StepTimer(self.device, notify)

    @contextmanager
    def track(self, stage: str, fields: dict[str, Any]) -> Iterator[None]:
        events = None
        synchronize(self.device)
        if self.device.type == "cuda":
            events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            events[0].record()
        start = time.perf_counter()
        try:
            yield
        finally:
            if events is not None:
                events[1].record()
            synchronize(self.device)
            fields["wall_s"] = time.perf_counter() - start
            fields["device_s"] = events[0].elapsed_time(events[1]) / 1000 if events is not None else None


# GPU clock cycles the device sleeps ahead of each timed rep: ~1 ms at 2 GHz, up to ~70 ms for a slow host.
LEAD_CYCLES = 2**21
MAX_LEAD_CYCLES = 2**27


def time_calls(fn: Callable[[], object], device: torch.device, reps: int, warmup: int,
               beside: Callable[[], object] | None = None) -> tuple[list[float], list[float]]:
    """Seconds per call of `fn` after `warmup` untimed calls, and of `beside` (a reference kernel) timed
    between them, so that both see the same machine: CUDA events on a GPU (kernel time, the host's dispatch
    hidden behind a queued sleep), a wall clock elsewhere."""
    for _ in range(warmup):
        fn()
        if beside is not None:
            beside()
    calls = [fn] if beside is None else [fn, beside]
    if device.type != "cuda":
        times: list[list[float]] = [[] for _ in calls]
        for _ in range(reps):
            for call, out in zip(calls, times):
                began = time.perf_counter()
                call()
                out.append(time.perf_counter() - began)
        return times[0], times[1] if beside is not None else []
    # Each rep waits behind a GPU sleep long enough for the host to queue all of the rep's calls, so events
    # time the kernels, not the host's dispatch: a compiled flex call takes ~300 us to launch a kernel of ~50
    # (2.2x between two H200 runs, 2026-12-02). Where the GPU reached a rep before the host had queued it,
    # the lead was too short: the reps run again behind a longer one.
    lead_cycles = LEAD_CYCLES
    while True:
        events = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                   for _ in calls] for _ in range(reps)]
        overtaken = False
        for pairs in events:
            torch.cuda._sleep(lead_cycles)
            for call, (start, end) in zip(calls, pairs):
                start.record()
                call()
                end.record()
            overtaken |= pairs[0][0].query()
        torch.cuda.synchronize(device)
        if not overtaken or lead_cycles >= MAX_LEAD_CYCLES:
            break
        lead_cycles *= 4
    per_call = [[pairs[i][0].elapsed_time(pairs[i][1]) / 1e3 for pairs in events] for i in range(len(calls))]
    return per_call[0], per_call[1] if beside is not None else []


def matmul_kernel(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Callable[[], object], int]:
    """A reference kernel (an n^3 matmul) and its FLOPs: what a machine's speed is measured on."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return (lambda: a @ b), 2 * n**3


def matmul_tflops(n: int, dtype: torch.dtype, device: torch.device, reps: int = 10) -> float:
    """Median TFLOP/s of an n^3 matmul: this machine's practical ceiling, measured in the same process."""
    kernel, flops = matmul_kernel(n, dtype, device)
    times, _ = time_calls(kernel, device, reps, warmup=3)
    return flops / statistics.median(times) / 1e12
