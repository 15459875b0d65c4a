"""The versions of the files the harness writes, one per format, and the check every reader makes.

A file of an older version is refused with the command that upgrades it; a newer one is refused as written
by a newer ovi-bench. Bump a format's version when its meaning changes, and add the step that upgrades the
version before it where that format is read (baselines: `ovi_bench.baselines.UPGRADES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SchemaError(ValueError):
    """A file or record of another schema version, or one that is not a record at all."""


@dataclass(frozen=True)
class Format:
    name: str
    version: int
    upgrade_hint: str  # what to do with an older file

    def check(self, data: Any, *, source: str) -> None:
        if not isinstance(data, Mapping):
            raise SchemaError(f"{source}: expected a JSON object ({self.name}), found {type(data).__name__}")
        found = data.get("schema_version")
        if found == self.version:
            return
        if isinstance(found, int) and not isinstance(found, bool) and 0 < found < self.version:
            raise SchemaError(f"{source}: {self.name} of schema_version {found}, older than this ovi-bench's "
                              f"{self.version}: {self.upgrade_hint}")
        if isinstance(found, int) and not isinstance(found, bool) and found > self.version:
            raise SchemaError(f"{source}: {self.name} of schema_version {found} was written by a "
                              f"newer ovi-bench (this one reads {self.version}): upgrade ovi-bench")
        raise SchemaError(f"{source}: not a {self.name} (schema_version {found!r})")


# v2: the `unsupported` case status and outcome; the metrics each suite's baseline keeps.
REPORT = Format("run report", 2, "re-render it by running the suites again, or read it with that ovi-bench")
# v2: the header's options are RunOptions v2 (dtype "auto", baselines found like suites).
JOURNAL = Format("journal", 2, "finish it with the ovi-bench that started it, or run the suites again")
# v2: only the metrics a baseline check reads are stored (checks name them in the suite).
BASELINE = Format("baseline", 2, "run `ovi-bench baseline upgrade`")
COMPARISON = Format("comparison", 1, "compare the two runs again")
BENCHMARK = Format("benchmark result", 1, "run the benchmark again")
