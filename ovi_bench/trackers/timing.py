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


def time_calls(fn: Callable[[], object], device: torch.device, reps: int, warmup: int) -> list[float]:
    """Seconds per call after `warmup` untimed calls: CUDA events on a GPU, a wall clock elsewhere."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def matmul_tflops(n: int, dtype: torch.dtype, device: torch.device, reps: int = 10) -> float:
    """Median TFLOP/s of an n^3 matmul: this machine's practical ceiling, measured in the same process."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = time_calls(lambda: a @ b, device, reps, warmup=3)
    return 2 * n**3 / statistics.median(times) / 1e12
