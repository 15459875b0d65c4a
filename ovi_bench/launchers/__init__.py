"""Launching a case: a spawned worker, or torchrun ranks for `nproc` > 1, behind one `Launcher` protocol,
and the case loop that follows its messages until a result, a death or the time limit.

OOM, crash and timeout come back as the case's status, with the stage the worker was in and what it held.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ovi_bench.job import Job
from ovi_bench.launchers.base import Failure, Launcher
from ovi_bench.metrics import stage_metrics
from ovi_bench.protocol import Ready, Result, StageEnd, StageStart, Step
from ovi_bench.records import CaseResult, StageRecord, metric_from_json

# spawning and importing torch; the case's own timeout starts when the worker is ready
STARTUP_TIMEOUT_S = 300.0
POLL_S = 0.1
Progress = Callable[[str], None]


def launch(job: Job) -> Launcher:
    from ovi_bench.launchers.spawn import SpawnLauncher
    from ovi_bench.launchers.torchrun import TorchrunLauncher

    return TorchrunLauncher(job) if job.nproc > 1 else SpawnLauncher(job)


def run_case(job: Job, *, progress: Progress, label: str = "") -> CaseResult:
    """Run one case in its own process(es) and turn whatever happens into its CaseResult."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.monotonic()
    worker = launch(job)
    open_stages: list[str] = []
    stages: list[StageRecord] = []
    last_stage: str | None = None
    snapshot: dict[str, Any] = {}
    rss: int | None = None
    result: Result | None = None
    timed_out = False
    deadline = start + STARTUP_TIMEOUT_S
    marks: dict[str, float] = {}  # when the worker was ready, began its first stage, sent its result
    try:
        while result is None:
            if time.monotonic() > deadline:
                timed_out = True
                break
            if not worker.poll(POLL_S):
                rss = worker.rss() or rss
                continue
            try:
                message = worker.recv()
            except EOFError:  # the worker is gone without a result
                break
            elapsed = time.monotonic() - start
            if isinstance(message, Ready):
                deadline = time.monotonic() + job.timeout_s
                marks["ready"] = elapsed
            elif isinstance(message, StageStart):
                marks.setdefault("first_stage", elapsed)
                open_stages.append(message.name)
                last_stage, snapshot = message.name, message.snapshot
                progress(f"{label} {message.name} +{elapsed:.1f}s")
            elif isinstance(message, StageEnd):
                stages.append(message.record)
                if open_stages and open_stages[-1] == message.record.name:
                    open_stages.pop()
            elif isinstance(message, Step):
                progress(f"{label} {last_stage} step {message.step + 1}/{message.total} +{elapsed:.1f}s")
            else:
                result = message
                marks["result"] = elapsed
    finally:
        failure = worker.stop(None if timed_out else result)
    ended = time.monotonic() - start

    metrics = stage_metrics(stages)
    metrics.update(overhead_metrics(marks, ended))
    stage = open_stages[-1] if open_stages else last_stage
    if result is not None:
        metrics.update({k: metric_from_json(v) for k, v in result.metrics.items()})
    error: str | None
    if timed_out:
        status, error = "timeout", f"no result within the {job.timeout_s:g} s time limit (worker killed)"
    elif failure is not None:  # no result, or another rank's failure explains rank 0's
        status, error, stage = failure.status, failure.error, failure.stage or stage
    else:
        assert result is not None
        status, error, stage = result.status, result.error, result.stage
    if status not in ("ok", "skipped", "unsupported"):
        # What the case held when it ended: the worker's last report and the parent's last RSS sample.
        metrics["at_end.alloc_bytes"] = snapshot.get("alloc_bytes")
        metrics["at_end.device_used_bytes"] = snapshot.get("device_used_bytes")
        metrics["at_end.host_rss_bytes"] = rss or snapshot.get("host_rss_bytes")
    return CaseResult(case_id=job.case_id, suite=job.suite, params=job.case_params, status=status,
                      stage=stage if status != "ok" else None, error=error, stages=stages, metrics=metrics,
                      started_at=started_at, duration_s=ended)


def overhead_metrics(marks: dict[str, float], ended: float) -> dict[str, float]:
    """Where a case's time goes outside its stages (seconds from its launch): `case.start_s` to the worker's
    ready (spawn, imports, the engine's capability check), `case.setup_s` from there to the first stage
    (the scenario's own preparation), `case.exit_s` from the result to the process's end."""
    metrics = {}
    if "ready" in marks:
        metrics["case.start_s"] = marks["ready"]
        if "first_stage" in marks:
            metrics["case.setup_s"] = marks["first_stage"] - marks["ready"]
    if "result" in marks:
        metrics["case.exit_s"] = ended - marks["result"]
    return metrics


__all__ = ["Failure", "Launcher", "Progress", "launch", "overhead_metrics", "run_case"]
