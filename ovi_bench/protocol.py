"""The messages a worker sends its parent, typed, and their one plain-data encoding.

A spawned worker sends them over a pipe and a torchrun rank writes them as JSON lines; both go through
`encode` and `decode`, so the parent reads every launcher's messages the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ovi_bench.records import StageRecord


@dataclass(frozen=True)
class Ready:
    """The worker has imported torch and built the engine: the case's own time limit starts."""


@dataclass(frozen=True)
class StageStart:
    name: str
    snapshot: dict[str, Any]  # memory in use as the stage starts


@dataclass(frozen=True)
class StageEnd:
    record: StageRecord


@dataclass(frozen=True)
class Step:
    step: int
    total: int


@dataclass(frozen=True)
class Result:
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)  # metric values in their JSON form
    stage: str | None = None
    error: str | None = None
    at: float = field(default_factory=time.time)  # which rank failed first: the cause, the others its echo


Message = Ready | StageStart | StageEnd | Step | Result
_KINDS: dict[str, type] = {"ready": Ready, "stage_start": StageStart, "stage_end": StageEnd, "step": Step,
                           "result": Result}
_NAMES = {cls: kind for kind, cls in _KINDS.items()}


def encode(message: Message) -> dict[str, Any]:
    data = dict(vars(message))
    if isinstance(message, StageEnd):
        data["record"] = message.record.to_dict()
    return {"kind": _NAMES[type(message)], **data}


def decode(data: Mapping[str, Any]) -> Message:
    fields = {k: v for k, v in data.items() if k != "kind"}
    cls = _KINDS[data["kind"]]
    if cls is StageEnd:
        return StageEnd(StageRecord.from_dict(fields["record"]))
    return cls(**fields)


def decode_line(line: str | bytes) -> Message:
    return decode(json.loads(line))
