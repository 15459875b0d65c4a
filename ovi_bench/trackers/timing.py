"""Stage and step timing, synchronised with the device so queued GPU work is counted where it runs."""

from __future__ import annotations

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
        _synchronize(self.device)
        now = time.perf_counter()
        self.durations.append(now - self._last)
        self._last = now
        if self.notify is not None:
            self.notify(step, total)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimingTracker:
    def __init__(self, config: TimingConfig) -> None:
        self.device = torch.device(config.device)

    def step_timer(self, notify: Callable[[int, int], None] | None = None) -> StepTimer:
        _synchronize(self.device)
        return StepTimer(self.device, notify)

    @contextmanager
    def track(self, stage: str, fields: dict[str, Any]) -> Iterator[None]:
        events = None
        _synchronize(self.device)
        if self.device.type == "cuda":
            events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            events[0].record()
        start = time.perf_counter()
        try:
            yield
        finally:
            if events is not None:
                events[1].record()
            _synchronize(self.device)
            fields["wall_s"] = time.perf_counter() - start
            fields["device_s"] = events[0].elapsed_time(events[1]) / 1000 if events is not None else None

    def close(self) -> None:
        pass
