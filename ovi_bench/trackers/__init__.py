"""Trackers observe stages from outside the engine; `StageMeter` composes them with an ExitStack.

Each tracker is a config dataclass plus a class with `track(stage, fields)`, a context manager that fills
StageRecord fields (in a `finally`, so a stage that fails still reports what it used).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from ovi_bench.records import StageRecord
from ovi_bench.trackers.memory import MemoryConfig, MemoryTracker
from ovi_bench.trackers.timing import StepTimer, TimingConfig, TimingTracker


class StageMeter:
    """Wraps each stage in the memory and timing trackers and keeps one StageRecord per stage.

    `on_stage_start(name, memory_snapshot)` and `on_stage_end(record)` let the worker tell the parent
    process as stages happen. Stages can be opened by the harness (`with meter.stage(...)`) or by the
    engine's own events (`meter.listener` for `add_stage_listener`).
    """

    def __init__(
        self,
        memory: MemoryTracker,
        timing: TimingTracker,
        on_stage_start: Callable[[str, dict[str, Any]], None] = lambda name, snapshot: None,
        on_stage_end: Callable[[StageRecord], None] = lambda record: None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self.memory = memory
        self.timing = timing
        self.records: list[StageRecord] = []
        self._open: list[tuple[str, ExitStack, dict[str, Any]]] = []
        self._aliased: list[str] = []  # engine stages that coincide with the harness stage open
        self.failed_stage: str | None = None  # the innermost stage open when an exception went through
        self._on_stage_start = on_stage_start
        self._on_stage_end = on_stage_end
        self._on_step = on_step

    @property
    def current(self) -> str | None:
        return self._open[-1][0] if self._open else None

    def begin(self, name: str) -> None:
        self._on_stage_start(name, self.memory.snapshot())
        fields: dict[str, Any] = {}
        stack = ExitStack()
        stack.enter_context(self.memory.track(name, fields))
        stack.enter_context(self.timing.track(name, fields))
        self._open.append((name, stack, fields))

    def end(self, name: str, *, failed: bool = False) -> StageRecord:
        if not self._open or self._open[-1][0] != name:
            raise RuntimeError(f"stage {name!r} ended while {self.current!r} is open")
        _, stack, fields = self._open.pop()
        stack.close()
        extra = fields.pop("extra", {})
        if failed:
            extra["failed"] = True
        record = StageRecord(name=name, extra=extra, **fields)
        self.records.append(record)
        self._on_stage_end(record)
        return record

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        except BaseException:
            self.failed_stage = self.failed_stage or self.current
            self.close_open_stages(failed=True)
            raise
        self.end(name)

    def close_open_stages(self, *, failed: bool) -> None:
        while self._open:
            self.end(self._open[-1][0], failed=failed)

    def listener(self, name: str, phase: str, info: dict[str, Any]) -> None:
        """For `engine.add_stage_listener`. An engine event for the stage the harness already has open
        (the engine's own "denoise" inside the harness's) adds its info to that stage instead of nesting."""
        if phase not in ("start", "end"):
            raise ValueError(f"stage event phase must be 'start' or 'end', got {phase!r}")
        info = json.loads(json.dumps(info, default=str))  # records hold plain data only
        if self._aliased and self._aliased[-1] == name and phase == "end":
            self._aliased.pop()
            if info:
                self._open[-1][2].setdefault("extra", {})["engine"] = info
        elif self.current == name and phase == "start":
            self._aliased.append(name)
        elif phase == "start":
            self.begin(name)
        else:
            if info:
                self._open[-1][2].setdefault("extra", {})["engine"] = info
            self.end(name)

    def step_timer(self) -> StepTimer:
        return self.timing.step_timer(self._on_step)


__all__ = [
    "MemoryConfig",
    "MemoryTracker",
    "StageMeter",
    "StepTimer",
    "TimingConfig",
    "TimingTracker",
]
