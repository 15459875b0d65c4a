"""What every launcher offers the case loop (`Launcher`), and how a launch can fail without a result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import psutil

from ovi_bench.protocol import Message, Result


@dataclass
class Failure:
    """How a case's worker(s) failed, where the result the parent received does not say it (or none came)."""

    status: str
    error: str
    stage: str | None = None  # where the failing worker or rank was


class Launcher(Protocol):
    """A started case: its messages as they come, its memory, and how it ended."""

    def poll(self, timeout: float) -> bool: ...

    def recv(self) -> Message: ...  # EOFError when the worker is gone

    def rss(self) -> int | None: ...

    def stop(self, result: Result | None) -> Failure | None: ...


def process_rss(pids: list[int]) -> int | None:
    """Resident memory of these processes together; None when none can be read."""
    total = None
    for pid in pids:
        try:
            total = (total or 0) + psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total
