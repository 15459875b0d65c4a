"""Metric declarations and the metrics every case gets from its stage records.

A scenario declares each metric it records (`Metric`: name, unit, kind); a name may hold `*` for a stage,
shape or rank. The suite loader refuses a check on a metric no declaration matches, and the unit of a
value comes from its declaration, never from its spelling. Kinds: `observed` (measured on the engine:
what checks judge and baselines keep), `expected` (the harness's own derivation, `spec.*`), `info`
(context for the report: the engine's description, a traceback).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ovi_bench.records import Samples, StageRecord
from ovi_bench.trackers.memory import judged_peak

UNITS = ("bytes", "s", "count", "hz", "ratio", "flag", "text", "list", "tflops")
KINDS = ("observed", "expected", "info")


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. "release.held_bytes", or a pattern "peak.*.bytes"
    unit: str
    kind: str = "observed"
    # An expected metric names the observed ones it is the expectation of and the rule that compares them
    # (exact, or min/max for a bound): every suite compares them, whether or not its file says so.
    expects: tuple[str, ...] = ()
    rule: str = "exact"

    def __post_init__(self) -> None:
        if self.unit not in UNITS or self.kind not in KINDS:
            raise ValueError(f"metric {self.name}: unit {self.unit!r} / kind {self.kind!r} not in "
                             f"{UNITS} / {KINDS}")

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.name)


# What the launcher derives from every case's stage records, and what it adds when a case ends badly.
STAGE_METRICS = (
    Metric("peak.*.bytes", "bytes"),  # what limits are judged on (trackers.memory.judged_peak)
    Metric("peak.*.alloc_bytes", "bytes"),
    Metric("peak.*.reserved_bytes", "bytes"),
    Metric("peak.*.device_used_bytes", "bytes"),
    Metric("peak.*.host_rss_bytes", "bytes"),
    Metric("end.*.alloc_bytes", "bytes"),
    Metric("time.*.wall_s", "s"),
    Metric("time.*.device_s", "s"),
    Metric("machine.matmul_tflops", "tflops", "info"),  # the worker's reference kernel, for time checks
    # unsupported.<prefix> = why the engine cannot give the metrics under <prefix>: checks on them say so
    Metric("unsupported.*", "text", "info"),  # the worker's reference kernel, for time checks
    Metric("at_end.*", "bytes", "info"),
    Metric("host.ru_maxrss_bytes", "bytes", "info"),
    Metric("case.*_s", "s", "info"),  # time outside the stages (launchers.overhead_metrics)
    Metric("error.traceback", "text", "info"),
    # input (a missing file or rejected value before computing: worker.classify_failure) or harness_or_engine
    Metric("error.kind", "text", "info"),
)


def find(name: str, declared: Iterable[Metric]) -> Metric | None:
    """The first declaration matching `name` (exact names before patterns)."""
    declared = list(declared)
    exact = [m for m in declared if m.name == name]
    return exact[0] if exact else next((m for m in declared if m.matches(name)), None)


@functools.cache
def _all_declared() -> tuple[Metric, ...]:
    from ovi_bench.scenarios import SCENARIO_MODULES, get_scenario

    return tuple(m for name in SCENARIO_MODULES for m in get_scenario(name).metrics) + STAGE_METRICS


def unit_of(name: str) -> str | None:
    """The unit any scenario declares for this metric name; None for an undeclared one."""
    metric = find(name, _all_declared())
    return metric.unit if metric else None


def stage_metrics(stages: list[StageRecord]) -> dict[str, Any]:
    """Flat metrics from stage records: peak.<stage>.*_bytes, end.<stage>.alloc_bytes, time.<stage>.*_s,
    and peak.total.* over all stages; peak.<stage>.bytes is the figure the stage's limits are judged on
    (`judged_peak`: the VRAM + GTT footprint on a unified device, the allocator's peak on another GPU, host
    RSS on the CPU).
    A stage that ran several times (denoise x repeat) gives the max of its peaks and
    one time sample per run."""
    peaks = {"alloc_peak": "alloc_bytes", "reserved_peak": "reserved_bytes",
             "device_used_peak": "device_used_bytes", "host_rss_peak": "host_rss_bytes"}
    metrics: dict[str, Any] = {}
    for name in dict.fromkeys(s.name for s in stages):
        runs = [s for s in stages if s.name == name]
        for attr, metric in peaks.items():
            values = [getattr(s, attr) for s in runs if getattr(s, attr) is not None]
            if values:
                metrics[f"peak.{name}.{metric}"] = max(values)
        # One figure per stage on any device, the one its limits are judged on: the unified footprint on a
        # unified device, else the allocator's peak where there is one, else host RSS.
        judged = [peak for _, peak in map(judged_peak, runs) if peak is not None]
        if judged:
            metrics[f"peak.{name}.bytes"] = max(judged)
        if runs[-1].alloc_end is not None:
            metrics[f"end.{name}.alloc_bytes"] = runs[-1].alloc_end
        metrics[f"time.{name}.wall_s"] = Samples([s.wall_s for s in runs])
        device_s = [s.device_s for s in runs if s.device_s is not None]
        if device_s:
            metrics[f"time.{name}.device_s"] = Samples(device_s)
    for attr, metric in peaks.items():
        values = [getattr(s, attr) for s in stages if getattr(s, attr) is not None]
        if values:
            metrics[f"peak.total.{metric}"] = max(values)
    stage_peaks = [v for k, v in metrics.items() if k.startswith("peak.") and k.endswith(".bytes")
                   and k.count(".") == 2]
    if stage_peaks:
        metrics["peak.total.bytes"] = max(stage_peaks)
    return metrics
