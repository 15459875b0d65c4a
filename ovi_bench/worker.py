"""The worker: runs one Job in its own process and reports to the parent through `ovi_bench.protocol`.

Everything it sends is plain data: ready, each stage's start (with the memory in use) and end (its
record), each denoise step, and the result. A failure of any kind is the case's result (oom, error, ...),
with the stage it happened in. `python -m ovi_bench.worker DIR` is one torchrun rank of a multi-rank case:
the job from `DIR/job.json`, its messages to `DIR/rank<RANK>.jsonl`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from ovi_bench.engines import engine_factory
from ovi_bench.engines.base import Capabilities, Engine
from ovi_bench.job import Job
from ovi_bench.protocol import Message, Ready, Result, StageEnd, StageStart, Step, encode
from ovi_bench.records import metric_to_json


class Sender(Protocol):
    """Where a worker's messages go: a multiprocessing pipe, or a rank's JSON-lines file."""

    def send(self, obj: Any) -> None: ...

    def close(self) -> None: ...


class JsonLinesSender:
    """A torchrun rank's messages, one JSON line each, flushed at once so the parent
    sees them as they happen."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by worker_main
        self.status: str | None = None  # of the result sent

    def send(self, obj: Any) -> None:
        if obj["kind"] == "result":
            self.status = obj["status"]
        self.file.write(json.dumps(obj) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# The stages before anything is computed: the worker building the job, the engine and the scenario (setup),
# and the engine reading its files (load). Only there is a rejected file or value the user's input.
INPUT_STAGES = ("setup", "load")


def classify_failure(exc: BaseException, stage: str | None) -> tuple[str, str]:
    """(status, kind) of a case's failure. Status: oom for device or host memory exhaustion (torch's CPU
    allocator raises a plain RuntimeError), else error. Kind: `input` (a run whose every case failed on the
    same one exits 2, RunReport.input_error) for a FileNotFoundError or ValueError raised in INPUT_STAGES, or
    an exception whose class says `is_input_error = True` in any stage (the reference engine's file errors:
    its sequential policy reads files in denoise and decode); else `harness_or_engine`, since a KeyError or
    ValueError once computing started is a bug, not bad input."""
    import torch

    text = str(exc).lower()
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
            isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)):
        return "oom", "harness_or_engine"
    bad_input = getattr(exc, "is_input_error", False) is True or (
        stage in INPUT_STAGES and isinstance(exc, (FileNotFoundError, ValueError)))
    return "error", "input" if bad_input else "harness_or_engine"


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


def machine_speed(device: str) -> float:
    """This machine's speed on a fixed reference kernel, measured in the worker right after its case: what
    time checks scale by to compare a run with a baseline recorded on another day or machine."""
    import torch

    from ovi_bench.trackers.timing import matmul_tflops

    dev = torch.device(device)
    if dev.type == "cuda":
        return matmul_tflops(4096, torch.bfloat16, dev, reps=20)
    threads = torch.get_num_threads()
    # One thread: a pool on a busy 2-core machine stalls at random (see the attention scenario).
    torch.set_num_threads(1)
    try:
        return matmul_tflops(384, torch.float32, dev, reps=30)
    finally:
        torch.set_num_threads(threads)


def unsupported_reason(job: Job, capabilities: Capabilities, scenario_axes: tuple[str, ...],
                       features: tuple[str, ...]) -> tuple[str, str] | None:
    """(status, reason) when the engine declares it cannot run this job: `unsupported` for a variant,
    policy or feature it does not implement, `skipped` for an attention backend unavailable here."""
    wanted = [("variants", job.config.variant)]
    if "policy" in scenario_axes:
        wanted.append(("policies", job.config.policy))
    wanted += [("features", feature) for feature in features]
    for kind, name in wanted:
        reason = capabilities.why_not(kind, name)
        if reason is not None:
            return "unsupported", reason
    if "attention" in scenario_axes:
        reason = capabilities.why_not("attention", job.config.attention)
        if reason is not None:
            return "skipped", f"attention backend {job.config.attention!r} unavailable: {reason}"
    return None


def worker_main(job_data: dict[str, Any], conn: Sender) -> None:
    """Runs one case; everything it sends is plain data."""
    from ovi_bench.scenarios import CaseSkipped, ScenarioContext, get_scenario
    from ovi_bench.trackers import MemoryConfig, MemoryTracker, StageMeter, TimingConfig, TimingTracker

    def send(message: Message) -> None:
        conn.send(encode(message))

    meter = None
    try:
        job = Job.from_dict(job_data)
        apply_budget(job.budget_bytes, job.config.device)
        memory = MemoryTracker(MemoryConfig(device=job.config.device, unified_memory=job.unified_memory))
        meter = StageMeter(
            memory, TimingTracker(TimingConfig(device=job.config.device)),
            on_stage_start=lambda name, snapshot: send(StageStart(name, snapshot)),
            on_stage_end=lambda record: send(StageEnd(record)),
            on_step=lambda step, total: send(Step(step, total)),
        )
        factory = engine_factory(job.engine)
        scenario = get_scenario(job.scenario)
        engine: Engine = factory()
        capabilities = engine.capabilities(job.config.device, job.config.dtype)
        refusal = unsupported_reason(job, capabilities, scenario.axes, scenario.features(job))
        if refusal is not None:
            send(Result(status=refusal[0], error=refusal[1]))
            return
        send(Ready())
        metrics = scenario.run(ScenarioContext(engine, job, meter, factory, capabilities))
        if "machine.matmul_tflops" not in metrics:  # a scenario may have timed it beside its own work
            metrics["machine.matmul_tflops"] = machine_speed(job.config.device)
        metrics["host.ru_maxrss_bytes"] = memory.process_peak_rss()
        memory.close()
        send(Result(status="ok", metrics={k: metric_to_json(v) for k, v in metrics.items()}))
    except CaseSkipped as exc:
        send(Result(status="skipped", error=str(exc)))
    except BaseException as exc:  # noqa: BLE001 - every failure is the case's result
        if meter is not None and (meter.current is not None or meter.records):
            stage = meter.failed_stage or meter.current
        else:
            stage = "setup"  # no stage begun: the worker was still building the job, the engine, the scenario
        status, kind = classify_failure(exc, stage)
        send(Result(status=status, stage=stage, error=f"{type(exc).__name__}: {exc}",
                    metrics={"error.traceback": traceback.format_exc(limit=8), "error.kind": kind}))
    finally:
        conn.close()


def rank_main(scratch: Path) -> None:
    """One torchrun rank of a multi-rank case. A rank with a GPU of its own computes on cuda:LOCAL_RANK from
    the start (the trackers read that device); with too few GPUs the scenario skips the case."""
    job = Job.from_dict(json.loads((scratch / "job.json").read_text(encoding="utf-8")))
    if job.config.device.startswith("cuda"):
        import torch

        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
            job = replace(job, config=replace(job.config, device=f"cuda:{local_rank}"))
    sender = JsonLinesSender(scratch / f"rank{os.environ['RANK']}.jsonl")
    worker_main(job.to_dict(), sender)
    # A failed rank exits non-zero, so torchrun stops the ranks still waiting for it in a collective.
    sys.exit(0 if sender.status in ("ok", "skipped", "unsupported") else 1)


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
