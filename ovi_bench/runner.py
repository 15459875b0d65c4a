"""Run suites: expand them into cases, run each case in its own worker process, journal every result.

A worker is a spawned process, so an OOM, a segfault, a SIGKILL or a hang ends only its own case. The worker
tells the parent each stage as it starts (with the memory in use) and each stage record as it ends, so the
parent knows where a case was even when the worker dies without a word. Results are appended to
`journal.jsonl` as each case ends; `--resume` runs only the cases the journal lacks.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from ovi_bench.engines import engine_factory
from ovi_bench.engines.base import EngineConfig
from ovi_bench.hardware import HardwareProfile
from ovi_bench.records import (
    SCHEMA_VERSION,
    CaseResult,
    Environment,
    RunReport,
    Samples,
    SchemaError,
    StageRecord,
    check_schema,
    metric_from_json,
    metric_to_json,
)
from ovi_bench.suites import Case, Suite
from ovi_bench.units import parse_size

JOURNAL_NAME = "journal.jsonl"
DEFAULT_TIMEOUT_S = 3600.0
STARTUP_TIMEOUT_S = 300.0  # spawning and importing torch; the case's own timeout starts when the worker is ready
POLL_S = 0.1
Progress = Callable[[str], None]


class JournalError(ValueError):
    """A journal that cannot be resumed; the message names the file and line."""


@dataclass
class RunOptions:
    """Everything `ovi-bench run` was asked for; stored in the journal header so a resume repeats it."""

    suites: list[str]
    engine: str = "reference"
    checkpoint_dir: str | None = None
    preset: str = "tiny"
    variants: list[str] = field(default_factory=list)
    policy: str | None = None
    attention: list[str] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "bfloat16"
    seed: int = 0
    hardware: str | None = None  # None: detected from the device
    baselines: str = "baselines"
    repeat: int = 1
    timeout_s: float | None = None  # None: the suite's timeout, else DEFAULT_TIMEOUT_S
    budget: str | None = None  # a size or "profile"; None: the suite's budget

    def overrides(self) -> dict[str, list[Any]]:
        return {"variant": self.variants, "policy": [self.policy] if self.policy else [],
                "attention": self.attention}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        return cls(**data)


def budget_bytes(budget: str | int | None, profile: HardwareProfile) -> int | None:
    if budget is None:
        return None
    return profile.usable_bytes if budget == "profile" else parse_size(budget)


# ---- journal ---------------------------------------------------------------------------------------------

def write_header(path: Path, run_id: str, options: RunOptions, environment: Environment) -> None:
    header = {"schema_version": SCHEMA_VERSION, "kind": "header", "run_id": run_id, "suites": options.suites,
              "options": options.to_dict(), "environment": environment.to_dict()}
    with open(path, "x", encoding="utf-8") as journal:
        journal.write(json.dumps(header) + "\n")


def append_result(path: Path, result: CaseResult) -> None:
    with open(path, "a", encoding="utf-8") as journal:
        journal.write(json.dumps(result.to_dict()) + "\n")
        journal.flush()
        os.fsync(journal.fileno())


def read_journal(path: Path) -> tuple[dict[str, Any], list[CaseResult]]:
    """The header and the finished cases of a journal; a corrupt line raises JournalError naming it."""
    if not path.is_file():
        raise JournalError(f"{path}: no journal to resume (expected {JOURNAL_NAME} in the run directory)")
    header: dict[str, Any] | None = None
    results: list[CaseResult] = []
    with open(path, encoding="utf-8") as journal:
        for number, line in enumerate(journal, start=1):
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
                if header is None:
                    check_schema(data, source=where)
                    if data.get("kind") != "header":
                        raise ValueError("the first line must be the run header")
                    header = data
                else:
                    results.append(CaseResult.from_dict(data, source=where))
            except SchemaError as exc:
                raise JournalError(f"corrupt journal line: {exc}") from None
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"{where}: corrupt journal line ({type(exc).__name__}: {exc})") from None
    if header is None:
        raise JournalError(f"{path}:1: empty journal, no run header")
    return header, results


# ---- the worker process ------------------------------------------------------------------------------------

def classify_failure(exc: BaseException) -> str:
    """oom for device or host memory exhaustion (torch's CPU allocator raises a plain RuntimeError)."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return "oom"
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"
    return "error"


def apply_budget(limit: int | None, device: str) -> None:
    """A real limit: the caching allocator's fraction on a GPU; on the host, the data segment limit set to
    the worker's footprint now plus the budget, so that (like the allocator's figure on a GPU) the budget
    counts what the case allocates, not the interpreter and torch it starts with."""
    if limit is None:
        return
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is None:  # the allocator's fraction is set per device index
            dev = torch.device("cuda", torch.cuda.current_device())
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), dev)
    else:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        soft = data_segment_bytes() + limit
        soft = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def data_segment_bytes() -> int:
    """What RLIMIT_DATA counts for this process now (VmData: private writable mappings)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmData in /proc/self/status: cannot enforce a host memory budget here")


def worker_main(job: dict[str, Any], conn: Connection) -> None:
    """Runs one case; everything it sends is plain data: stage starts, stage records, steps, the result."""
    from ovi_bench.scenarios import CaseSkipped, ScenarioContext, get_scenario
    from ovi_bench.trackers import MemoryConfig, MemoryTracker, StageMeter, TimingConfig, TimingTracker

    def send(kind: str, **data: Any) -> None:
        conn.send({"kind": kind, **data})

    meter = None
    try:
        config = EngineConfig.from_dict(job["config"])
        apply_budget(job["budget_bytes"], config.device)
        memory = MemoryTracker(MemoryConfig(device=config.device, unified_memory=job["unified_memory"]))
        meter = StageMeter(
            memory, TimingTracker(TimingConfig(device=config.device)),
            on_stage_start=lambda name, snapshot: send("stage_start", name=name, snapshot=snapshot),
            on_stage_end=lambda record: send("stage_end", record=record.to_dict()),
            on_step=lambda step, total: send("step", step=step, total=total),
        )
        engine = engine_factory(job["engine"])()
        scenario = get_scenario(job["scenario"])
        send("ready")
        metrics = scenario.run(ScenarioContext(engine, config, job["params"], meter, job["repeat"]))
        metrics["host.ru_maxrss_bytes"] = memory.process_peak_rss()
        memory.close()
        send("result", status="ok", metrics={k: metric_to_json(v) for k, v in metrics.items()})
    except CaseSkipped as exc:
        send("result", status="skipped", stage=None, error=str(exc), metrics={})
    except BaseException as exc:  # noqa: BLE001 - every failure is the case's result
        stage = (meter.failed_stage or meter.current) if meter else "setup"
        send("result", status=classify_failure(exc), stage=stage, error=f"{type(exc).__name__}: {exc}",
             metrics={"error.traceback": traceback.format_exc(limit=8)})
    finally:
        conn.close()


# ---- the parent side -----------------------------------------------------------------------------------------

def stage_metrics(stages: list[StageRecord]) -> dict[str, Any]:
    """Flat metrics from stage records: peak.<stage>.*_bytes, end.<stage>.alloc_bytes, time.<stage>.*_s,
    and peak.total.* over all stages; peak.<stage>.bytes is the allocator's peak, or host RSS without one. A stage that ran several times (denoise x repeat) gives the max
    of its peaks and one time sample per run."""
    peaks = {"alloc_peak": "alloc_bytes", "reserved_peak": "reserved_bytes",
             "device_used_peak": "device_used_bytes", "host_rss_peak": "host_rss_bytes"}
    metrics: dict[str, Any] = {}
    for name in dict.fromkeys(s.name for s in stages):
        runs = [s for s in stages if s.name == name]
        for attr, metric in peaks.items():
            values = [getattr(s, attr) for s in runs if getattr(s, attr) is not None]
            if values:
                metrics[f"peak.{name}.{metric}"] = max(values)
        # One figure per stage on any device: the allocator's peak where there is one, else host RSS.
        for attr in ("alloc_peak", "host_rss_peak"):
            values = [getattr(s, attr) for s in runs if getattr(s, attr) is not None]
            if values:
                metrics[f"peak.{name}.bytes"] = max(values)
                break
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


def _child_rss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def run_case(job: dict[str, Any], *, timeout_s: float, progress: Progress, label: str = "") -> CaseResult:
    """Run one case in a spawned worker; OOM, crash and timeout come back as the case's status."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=worker_main, args=(job, sender), daemon=True)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.monotonic()
    process.start()
    sender.close()
    open_stages: list[str] = []
    stages: list[StageRecord] = []
    last_stage: str | None = None
    snapshot: dict[str, Any] = {}
    rss: int | None = None
    result: dict[str, Any] | None = None
    timed_out = False
    deadline = start + STARTUP_TIMEOUT_S
    try:
        while result is None:
            if time.monotonic() > deadline:
                timed_out = True
                break
            if not receiver.poll(POLL_S):
                rss = _child_rss(process.pid or 0) or rss
                continue
            try:
                message = receiver.recv()
            except EOFError:  # the worker is gone without a result
                break
            elapsed = time.monotonic() - start
            if message["kind"] == "ready":
                deadline = time.monotonic() + timeout_s
            elif message["kind"] == "stage_start":
                open_stages.append(message["name"])
                last_stage, snapshot = message["name"], message["snapshot"]
                progress(f"{label} {message['name']} +{elapsed:.1f}s")
            elif message["kind"] == "stage_end":
                stages.append(StageRecord.from_dict(message["record"]))
                if open_stages and open_stages[-1] == stages[-1].name:
                    open_stages.pop()
            elif message["kind"] == "step":
                progress(f"{label} {last_stage} step {message['step'] + 1}/{message['total']} +{elapsed:.1f}s")
            elif message["kind"] == "result":
                result = message
    finally:
        if result is None or timed_out:
            process.kill()
        process.join(timeout=30)
        receiver.close()

    duration = time.monotonic() - start
    metrics = stage_metrics(stages)
    stage = open_stages[-1] if open_stages else last_stage
    if result is not None:
        metrics.update({k: metric_from_json(v) for k, v in result["metrics"].items()})
        status, error, stage = result["status"], result.get("error"), result.get("stage")
    elif timed_out:
        status, error = "timeout", f"no result within the {timeout_s:g} s time limit (worker killed)"
    else:
        code = process.exitcode
        if code is not None and code < 0:
            error = f"worker died from signal {signal.Signals(-code).name}"
        else:
            error = f"worker exited with code {code} without a result"
        status = "crash"
    if status != "ok":
        # What the case held when it ended: the worker's last report and the parent's last RSS sample.
        metrics["at_end.alloc_bytes"] = snapshot.get("alloc_bytes")
        metrics["at_end.device_used_bytes"] = snapshot.get("device_used_bytes")
        metrics["at_end.host_rss_bytes"] = rss or snapshot.get("host_rss_bytes")
    return CaseResult(case_id=job["case_id"], suite=job["suite"], params=job["params_record"], status=status,
                      stage=stage if status != "ok" else None, error=error, stages=stages, metrics=metrics,
                      started_at=started_at, duration_s=duration)


def make_job(case: Case, suite: Suite, options: RunOptions, profile: HardwareProfile) -> dict[str, Any]:
    config = EngineConfig(variant=case.axes["variant"], preset=options.preset,
                          checkpoint_dir=Path(options.checkpoint_dir) if options.checkpoint_dir else None,
                          policy=case.axes.get("policy", "all_gpu"), attention=case.axes.get("attention", "auto"),
                          device=options.device, dtype=options.dtype, seed=options.seed, area=case.params.get("area"))
    budget = options.budget if options.budget is not None else suite.budget_for(options.preset)
    return {"case_id": case.case_id, "suite": suite.name, "scenario": case.scenario, "engine": options.engine,
            "config": config.to_dict(), "params": case.params, "params_record": case.to_params(),
            "repeat": options.repeat, "budget_bytes": budget_bytes(budget, profile),
            "unified_memory": profile.unified_memory}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def run_cases(suites: list[Suite], options: RunOptions, profile: HardwareProfile, journal: Path,
              done: list[CaseResult], progress: Progress) -> list[CaseResult]:
    """Run every case not already in `done`, appending each result to the journal as it ends."""
    cases = [(suite, case) for suite in suites for case in suite.expand(options.overrides(), options.preset)]
    finished = {c.case_id: c for c in done}
    results = []
    for number, (suite, case) in enumerate(cases, start=1):
        label = f"[{number}/{len(cases)}] {case.case_id}"
        if case.case_id in finished:
            progress(f"{label} already in the journal ({finished[case.case_id].status})")
            results.append(finished[case.case_id])
            continue
        timeout = options.timeout_s or suite.timeout_s or DEFAULT_TIMEOUT_S
        result = run_case(make_job(case, suite, options, profile), timeout_s=timeout, progress=progress,
                          label=label)
        append_result(journal, result)
        where = f" in {result.stage}" if result.stage else ""
        progress(f"{label} {result.status}{where} ({result.duration_s:.1f}s)")
        results.append(result)
    return results


def build_report(run_id: str, suites: list[Suite], options: RunOptions, profile: HardwareProfile,
                 environment: Environment, results: list[CaseResult]) -> RunReport:
    """The run's report with verdicts from each suite's checks against the stored baselines."""
    from ovi_bench.baselines import judge_run

    weights = f"checkpoint:{options.checkpoint_dir}" if options.checkpoint_dir else f"synthetic:{options.preset}"
    report = RunReport(run_id=run_id, suites=[s.name for s in suites], engine=options.engine, weights=weights,
                       hardware=profile.name, environment=environment, cases=results)
    return judge_run(report, {s.name: s.checks for s in suites}, Path(options.baselines), profile=profile)
