"""Run suites: expand them into cases, run each case in its own worker process, journal every result.

A worker is a spawned process, so an OOM, a segfault, a SIGKILL or a hang ends only its own case. The worker
tells the parent each stage as it starts (with the memory in use) and each stage record as it ends, so the
parent knows where a case was even when the worker dies without a word. Results are appended to
`journal.jsonl` as each case ends; `--resume` runs only the cases the journal lacks.

A case with `nproc` N > 1 runs on N ranks started by PyTorch's launcher (`python -m torch.distributed.run
--standalone`, NCCL_NVLS_ENABLE=0); every rank runs `worker_main` and writes its messages as JSON lines to
`rank<r>.jsonl` in a scratch directory. The parent follows rank 0's file as it follows the pipe of a spawned
worker; when rank 0 leaves no result, the other ranks' files and the launcher's log say which rank failed,
how, and in which stage.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

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
    nproc: list[int] = field(default_factory=list)  # ranks per case, instead of the suite's nproc axis

    def overrides(self) -> dict[str, list[Any]]:
        return {"variant": self.variants, "policy": [self.policy] if self.policy else [],
                "attention": self.attention, "nproc": self.nproc}

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


class Sender(Protocol):
    """Where a worker's messages go: a multiprocessing pipe, or a rank's JSON-lines file."""

    def send(self, obj: Any) -> None: ...

    def close(self) -> None: ...


class JsonLinesSender:
    """A torchrun rank's messages, one JSON line each, flushed at once so the parent sees them as they happen."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by worker_main
        self.status: str | None = None  # of the result sent

    def send(self, obj: Any) -> None:
        if obj["kind"] == "result":
            self.status = obj["status"]
            obj = {**obj, "at": time.time()}  # which rank failed first: the cause, the others its echo
        self.file.write(json.dumps(obj) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def worker_main(job: dict[str, Any], conn: Sender) -> None:
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
        factory = engine_factory(job["engine"])
        scenario = get_scenario(job["scenario"])
        send("ready")
        metrics = scenario.run(ScenarioContext(factory(), config, job["params"], meter, job["repeat"], factory))
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


@dataclass
class Failure:
    """How a case's worker(s) failed, where the result the parent received does not say it (or none came)."""

    status: str
    error: str
    stage: str | None = None  # where the failing worker or rank was


class SpawnedWorker:
    """One case in one spawned process, talking over a pipe."""

    def __init__(self, job: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(target=worker_main, args=(job, sender), daemon=True)
        self.process.start()
        sender.close()

    def poll(self, timeout: float) -> bool:
        return self.receiver.poll(timeout)

    def recv(self) -> dict[str, Any]:
        return self.receiver.recv()

    def rss(self) -> int | None:
        return _rss([self.process.pid or 0])

    def stop(self, result: dict[str, Any] | None) -> Failure | None:
        """Wait for the worker (kill it when it gave no result); without a result, what its exit says."""
        if result is None:
            self.process.kill()
        self.process.join(timeout=30)
        self.receiver.close()
        if result is not None:
            return None
        code = self.process.exitcode
        if code is not None and code < 0:
            return Failure("crash", f"worker died from signal {signal.Signals(-code).name}")
        return Failure("crash", f"worker exited with code {code} without a result")


RANK_EXIT = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*exitcode\s*:\s*(-?\d+)")  # torchrun's summary


class TorchrunWorkers:
    """One case on job["nproc"] ranks under torchrun; follows rank 0's messages file."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.nproc = int(job["nproc"])
        self.dir = Path(tempfile.mkdtemp(prefix="ovi-bench-ranks-"))
        (self.dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        self.log = open(self.dir / "torchrun.log", "w+", encoding="utf-8")  # noqa: SIM115 - closed in stop
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(self.nproc),
                   "--standalone", "-m", "ovi_bench.runner", str(self.dir)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "NCCL_NVLS_ENABLE": "0"})
        self.offset = 0
        self.pending: deque[dict[str, Any]] = deque()

    def _read(self) -> None:
        path = self.dir / "rank0.jsonl"
        if not path.exists():
            return
        with open(path, "rb") as messages:
            messages.seek(self.offset)
            data = messages.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += end
        self.pending.extend(json.loads(line) for line in data[:end].splitlines())

    def poll(self, timeout: float) -> bool:
        if not self.pending:
            self._read()
        if self.pending:
            return True
        if self.process.poll() is not None:
            self._read()  # what rank 0 wrote before the launcher ended; else recv() says EOF
            return True
        time.sleep(timeout)
        return False

    def recv(self) -> dict[str, Any]:
        if not self.pending:
            raise EOFError("torchrun ended")
        return self.pending.popleft()

    def rss(self) -> int | None:
        try:
            ranks = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return None
        return _rss([p.pid for p in ranks])

    def stop(self, result: dict[str, Any] | None) -> Failure | None:
        """Wait for the launcher (kill every rank when rank 0 gave no result); the failure that explains
        the case when rank 0's result did not end ok."""
        if result is None:
            with_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with_group(self.process.pid, signal.SIGKILL)
            self.process.wait()
        try:
            return None if result is not None and result["status"] in ("ok", "skipped") else self._failure(result)
        finally:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _failure(self, result: dict[str, Any] | None) -> Failure | None:
        """The first cause among the ranks: one killed by a signal (torchrun's own SIGTERM to the survivors
        aside), else the earliest failed result (a peer's death reaches the others as a collective error)."""
        ranks = [_read_rank(self.dir / f"rank{r}.jsonl") for r in range(self.nproc)]
        self.log.seek(0)
        log = self.log.read()
        exits = {int(rank): int(code) for rank, code in RANK_EXIT.findall(log)}
        killed = sorted(r for r, code in exits.items() if code < 0 and -code != signal.SIGTERM and r < self.nproc)
        if killed:
            rank = killed[0]
            return Failure("crash", f"rank {rank} died from signal {signal.Signals(-exits[rank]).name} "
                                    "without a result", ranks[rank][0])
        failed = sorted((r["at"], rank, r) for rank, (_, r) in enumerate(ranks)
                        if r is not None and r["status"] not in ("ok", "skipped"))
        if failed:
            _, rank, first = failed[0]
            return None if rank == 0 else Failure(first["status"], f"rank {rank}: {first.get('error')}",
                                                  first.get("stage"))
        if result is not None:
            return None
        tail = " | ".join(log.strip().splitlines()[-3:])
        return Failure("crash", f"torchrun exited with code {self.process.returncode} without a result: {tail}",
                       ranks[0][0])


def with_group(pid: int, sig: signal.Signals) -> None:
    """Signal the launcher and every rank (they share its session's process group)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _read_rank(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """A rank's last open stage and its result, from its messages file."""
    stages: list[str] = []
    result = None
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                message = json.loads(line)
            except json.JSONDecodeError:  # the last line of a killed rank may be cut short
                continue
            if message["kind"] == "stage_start":
                stages.append(message["name"])
            elif message["kind"] == "stage_end" and stages and stages[-1] == message["record"]["name"]:
                stages.pop()
            elif message["kind"] == "result":
                result = message
    return (stages[-1] if stages else None), result


def _rss(pids: list[int]) -> int | None:
    """Resident memory of these processes together; None when none can be read."""
    total = None
    for pid in pids:
        try:
            total = (total or 0) + psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total


def run_case(job: dict[str, Any], *, timeout_s: float, progress: Progress, label: str = "") -> CaseResult:
    """Run one case in a spawned worker (or on torchrun's ranks); OOM, crash and timeout come back as the
    case's status."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.monotonic()
    worker: SpawnedWorker | TorchrunWorkers = (
        TorchrunWorkers(job) if job.get("nproc", 1) > 1 else SpawnedWorker(job))
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
            if not worker.poll(POLL_S):
                rss = worker.rss() or rss
                continue
            try:
                message = worker.recv()
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
        failure = worker.stop(None if timed_out else result)

    duration = time.monotonic() - start
    metrics = stage_metrics(stages)
    stage = open_stages[-1] if open_stages else last_stage
    if result is not None:
        metrics.update({k: metric_from_json(v) for k, v in result["metrics"].items()})
    error: str | None
    if timed_out:
        status, error = "timeout", f"no result within the {timeout_s:g} s time limit (worker killed)"
    elif failure is not None:  # no result, or another rank's failure explains rank 0's
        status, error, stage = failure.status, failure.error, failure.stage or stage
    else:
        assert result is not None
        status, error, stage = result["status"], result.get("error"), result.get("stage")
    if status != "ok":
        # What the case held when it ended: the worker's last report and the parent's last RSS sample.
        metrics["at_end.alloc_bytes"] = snapshot.get("alloc_bytes")
        metrics["at_end.device_used_bytes"] = snapshot.get("device_used_bytes")
        metrics["at_end.host_rss_bytes"] = rss or snapshot.get("host_rss_bytes")
    return CaseResult(case_id=job["case_id"], suite=job["suite"], params=job["params_record"], status=status,
                      stage=stage if status != "ok" else None, error=error, stages=stages, metrics=metrics,
                      started_at=started_at, duration_s=duration)


def make_job(case: Case, suite: Suite, options: RunOptions, profile: HardwareProfile) -> dict[str, Any]:
    nproc = int(case.axes.get("nproc", 1))
    config = EngineConfig(variant=case.axes["variant"], preset=options.preset,
                          checkpoint_dir=Path(options.checkpoint_dir) if options.checkpoint_dir else None,
                          policy=case.axes.get("policy", "all_gpu"), attention=case.axes.get("attention", "auto"),
                          device=options.device, dtype=options.dtype, seed=options.seed, area=case.params.get("area"),
                          sequence_parallel=nproc > 1)
    budget = options.budget if options.budget is not None else suite.budget_for(options.preset)
    return {"case_id": case.case_id, "suite": suite.name, "scenario": case.scenario, "engine": options.engine,
            "config": config.to_dict(), "params": case.params, "params_record": case.to_params(),
            "repeat": options.repeat, "budget_bytes": budget_bytes(budget, profile),
            "unified_memory": profile.unified_memory, "nproc": nproc}


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
    from ovi_bench.scenarios import get_scenario

    for suite in suites:
        derive = get_scenario(suite.scenario).derive
        if derive is not None:
            derive([c for c in results if c.suite == suite.name])
    weights = f"checkpoint:{options.checkpoint_dir}" if options.checkpoint_dir else f"synthetic:{options.preset}"
    report = RunReport(run_id=run_id, suites=[s.name for s in suites], engine=options.engine, weights=weights,
                       hardware=profile.name, environment=environment, cases=results)
    return judge_run(report, {s.name: s.checks for s in suites}, Path(options.baselines), profile=profile)


def rank_main(scratch: Path) -> None:
    """One torchrun rank of a multi-rank case: the job from `scratch/job.json`, messages to
    `scratch/rank<RANK>.jsonl`. A rank with a GPU of its own computes on cuda:LOCAL_RANK from the start (the
    trackers read that device); with too few GPUs the scenario skips the case."""
    job = json.loads((scratch / "job.json").read_text(encoding="utf-8"))
    if job["config"]["device"].startswith("cuda"):
        import torch

        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
            job["config"]["device"] = f"cuda:{local_rank}"
    sender = JsonLinesSender(scratch / f"rank{os.environ['RANK']}.jsonl")
    worker_main(job, sender)
    # A failed rank exits non-zero, so torchrun stops the ranks still waiting for it in a collective.
    sys.exit(0 if sender.status in ("ok", "skipped") else 1)


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
