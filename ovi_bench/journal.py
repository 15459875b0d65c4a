"""The run's journal (`journal.jsonl`): a header with the run's options and environment, then one line per
finished case, appended and fsynced as each case ends, so an interrupted run loses nothing it measured and
`--resume` runs only the cases the journal lacks.

A torn last line (disk full, power loss mid-write) is dropped with a warning and its case runs again; a
corrupt line anywhere else is an error naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovi_bench.job import RunOptions
from ovi_bench.records import CaseResult, Environment, OutputError
from ovi_bench.schema import JOURNAL, SchemaError

JOURNAL_NAME = "journal.jsonl"


class JournalError(ValueError):
    """A journal that cannot be resumed; the message names the file and line."""


@dataclass
class Journal:
    """What a journal holds: the run it belongs to and the cases already finished."""

    run_id: str
    options: RunOptions
    environment: Environment
    done: list[CaseResult]
    valid_bytes: int  # the journal up to its last whole line: a resumed run appends after it


def write_header(path: Path, run_id: str, options: RunOptions, environment: Environment) -> None:
    header = {"schema_version": JOURNAL.version, "kind": "header", "run_id": run_id,
              "options": options.to_dict(), "environment": environment.to_dict()}
    _append(path, header, mode="x")


def append_result(path: Path, result: CaseResult) -> None:
    _append(path, {"schema_version": JOURNAL.version, **result.to_dict()}, mode="a")


def _append(path: Path, data: dict[str, Any], mode: str) -> None:
    try:
        with open(path, mode, encoding="utf-8") as journal:
            journal.write(json.dumps(data) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
    except FileExistsError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_journal(path: Path, warn: Callable[[str], None] = lambda message: None) -> Journal:
    """The header and the finished cases of a journal; a corrupt line raises JournalError naming it."""
    if not path.is_file():
        raise JournalError(f"{path}: no journal to resume (expected {JOURNAL_NAME} in the run directory)")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn = lines.pop() if lines else b""  # what follows the last newline: empty unless a write was cut off
    if torn:
        warn(f"{path}:{len(lines) + 1}: torn last line ({len(torn)} bytes, no newline) ignored; "
             "its case runs again")
    journal: Journal | None = None
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
            JOURNAL.check(data, source=where)
            if journal is None:
                if data.get("kind") != "header":
                    raise ValueError("the first line must be the run header")
                journal = Journal(data["run_id"], RunOptions.from_dict(data["options"]),
                                  Environment.from_dict(data["environment"]), [], len(raw) - len(torn))
            else:
                journal.done.append(CaseResult.from_dict(data))
        except SchemaError as exc:
            raise JournalError(f"cannot resume: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"{where}: corrupt journal line ({type(exc).__name__}: {exc})") from None
    if journal is None:
        raise JournalError(f"{path}:1: empty journal, no run header")
    return journal
