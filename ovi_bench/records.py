"""Plain-data records the harness produces: samples, stages, case results, environment, verdicts, run report.

Workers return these as JSON-able dicts (`to_dict`), the journal keeps them, the comparator adds verdicts
and the report writers render them. A run report carries the report format's `schema_version`
(`ovi_bench.schema.REPORT`); reading another version raises `SchemaError` with one clear line.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from ovi_bench.schema import REPORT, SchemaError

# skipped: cannot run on this machine (a backend not installed, too few GPUs); unsupported: the engine
# declares it does not implement what the case needs (a variant, a policy, a feature). Neither is a pass.
CASE_STATUSES = ("ok", "oom", "crash", "timeout", "error", "skipped", "unsupported")
NOT_RUN_STATUSES = ("skipped", "unsupported")
ABNORMAL_STATUSES = ("oom", "crash", "timeout", "error")
# unsupported: the engine declares it cannot give what the check reads (e.g. no detect_variant); never a pass,
# never a failure of the engine, always shown. changed: another value than the baseline's where a change is
# news, not a failure (rule `same`).
VERDICT_STATUSES = ("pass", "fail", "regression", "improved", "changed", "no_baseline", "unsupported",
                    "error")
FAILED_VERDICTS = ("fail", "regression", "error")
# Per-case outcome, derived from its status and verdicts; what every report format and the exit code use.
OUTCOMES = ("pass", "fail", "error", "skipped", "unsupported")

# Environment variables that change what a measurement means; recorded with every run.
FLAG_PREFIXES = ("PYTORCH_", "TORCH_", "HSA_", "HIP_", "ROCR_", "CUDA_", "NCCL_", "OMP_", "OVI_")


@dataclass
class Samples:
    """Repeated measurements of one quantity; statistics are computed once, on demand."""

    values: list[float]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("Samples needs at least one value")
        self.values = [float(v) for v in self.values]

    @cached_property
    def n(self) -> int:
        return len(self.values)

    @cached_property
    def median(self) -> float:
        return statistics.median(self.values)

    @cached_property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @cached_property
    def stdev(self) -> float:
        if not all(math.isfinite(v) for v in self.values):
            return math.nan  # statistics.stdev cannot take a NaN or an infinity
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @cached_property
    def iqr(self) -> float:
        if self.n < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.values, n=4, method="inclusive")
        return q3 - q1

    @cached_property
    def min(self) -> float:
        return min(self.values)

    @cached_property
    def max(self) -> float:
        return max(self.values)

    def render(self, fmt: Callable[[float], str] | None = None) -> str:
        """'median ± iqr (n=…)', each number through `fmt` (the unit's formatter; plain by default)."""
        show = fmt or "{:.4g}".format
        if self.n == 1:
            return show(self.median)
        return f"{show(self.median)} ± {show(self.iqr)} (n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        # The statistics are written for readers of the JSON; only `values` is read back.
        return {"type": "samples", "values": self.values, "n": self.n, "median": self.median,
                "mean": self.mean, "stdev": self.stdev, "iqr": self.iqr, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Samples:
        return cls(list(data["values"]))


# JSON has no NaN or Infinity: a non-finite float is written as {"type": "float", "value": "nan" | "inf" |
# "-inf"} (in a metric, a list item or a sample) and read back as the float.
NON_FINITE = "float"


def encode_floats(value: Any) -> Any:
    """`value` with every non-finite float, at any depth of lists and mappings, in its JSON-safe form."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"type": NON_FINITE, "value": str(value)}
    if isinstance(value, (list, tuple)):
        return [encode_floats(v) for v in value]
    if isinstance(value, Mapping):
        return {k: encode_floats(v) for k, v in value.items()}
    return value


def decode_floats(value: Any) -> Any:
    """The inverse of `encode_floats`."""
    if isinstance(value, Mapping):
        if value.get("type") == NON_FINITE and set(value) == {"type", "value"}:
            return float(value["value"])
        return {k: decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    return value


def metric_to_json(value: Any) -> Any:
    return encode_floats(value.to_dict() if isinstance(value, Samples) else value)


def metric_from_json(value: Any) -> Any:
    value = decode_floats(value)
    if isinstance(value, Mapping) and value.get("type") == "samples":
        return Samples.from_dict(value)
    return value


def numeric(value: Any) -> float | None:
    """The number a rule compares: a Samples' median, a plain number, else None (NaN is not a number: no
    rule may pass it)."""
    if isinstance(value, Samples):
        value = value.median
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def render_metric(name: str, value: Any) -> str:
    """One uniform text rendering of a metric value, with the unit implied by the metric's name."""
    from ovi_bench.units import format_duration, format_size

    fmt: Callable[[float], str] | None = None
    if name.endswith("bytes"):
        fmt = format_size
    elif name.endswith("_s"):
        fmt = format_duration
    if isinstance(value, Samples):
        return value.render(fmt)
    if fmt is not None and numeric(value) is not None:
        return fmt(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "-" if value is None else str(value)


@dataclass
class StageRecord:
    name: str
    wall_s: float
    device_s: float | None = None
    alloc_peak: int | None = None
    reserved_peak: int | None = None
    alloc_end: int | None = None
    device_used_peak: int | None = None
    host_rss_peak: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageRecord:
        return cls(**data)


@dataclass
class CaseResult:
    case_id: str
    suite: str
    params: dict[str, Any]
    status: str
    stage: str | None = None
    error: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in CASE_STATUSES:
            raise ValueError(f"case {self.case_id!r}: status {self.status!r} is not one of {CASE_STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "suite": self.suite,
                "params": self.params, "status": self.status, "stage": self.stage, "error": self.error,
                "stages": [s.to_dict() for s in self.stages],
                "metrics": {k: metric_to_json(v) for k, v in self.metrics.items()},
                "started_at": self.started_at, "duration_s": self.duration_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseResult:
        return cls(case_id=data["case_id"], suite=data["suite"], params=dict(data["params"]),
                   status=data["status"], stage=data.get("stage"), error=data.get("error"),
                   stages=[StageRecord.from_dict(s) for s in data.get("stages", [])],
                   metrics={k: metric_from_json(v) for k, v in data.get("metrics", {}).items()},
                   started_at=data.get("started_at", ""), duration_s=data.get("duration_s", 0.0))


@dataclass
class Environment:
    git_commit: str | None = None
    torch: str | None = None
    cuda: str | None = None
    hip: str | None = None
    device_name: str | None = None
    device_arch: str | None = None
    driver: str | None = None
    device_total_bytes: int | None = None
    unified_memory: bool = False
    host: str | None = None
    cpu: str | None = None
    python: str | None = None
    platform: str | None = None
    flags: dict[str, str] = field(default_factory=dict)
    date: str | None = None

    @classmethod
    def capture(cls, device_index: int = 0) -> Environment:
        """Provenance of this process: versions, device, relevant environment flags, commit, date."""
        import torch

        env = cls(git_commit=_git_commit(), torch=torch.__version__, cuda=torch.version.cuda,
                  hip=getattr(torch.version, "hip", None), host=socket.gethostname(),
                  cpu=cpu_model(), python=sys.version.split()[0],
                  platform=platform.platform(),
                  flags={k: v for k, v in sorted(os.environ.items()) if k.startswith(FLAG_PREFIXES)},
                  date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(device_index)
            env.device_name = props.name
            from ovi_bench.hardware import device_architecture

            env.device_arch = device_architecture(props)
            env.device_total_bytes = props.total_memory
            env.unified_memory = bool(getattr(props, "is_integrated", False))
            env.driver = _driver_version()
        else:
            env.device_name = "cpu"
        return env

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        return cls(**data)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name where Linux gives it ("AMD EPYC 7B13"), else what platform knows
    ("x86_64"): CPU times compare only on the same model (baselines.times_baseline)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """HEAD of this checkout; OVI_BENCH_COMMIT names it where the copy has no .git (a GPU job's tree)."""
    if commit := os.environ.get("OVI_BENCH_COMMIT"):
        return commit
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                             timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _driver_version() -> str | None:
    for cmd in (["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                ["rocm-smi", "--showdriverversion", "--csv"]):
        try:
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[-1].strip()
    return None


@dataclass
class Verdict:
    case_id: str
    metric: str
    rule: str
    status: str
    observed: Any = None
    reference: Any = None
    message: str = ""

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"verdict status {self.status!r} is not one of {VERDICT_STATUSES}")

    @property
    def failed(self) -> bool:
        return self.status in FAILED_VERDICTS

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "metric": self.metric, "rule": self.rule, "status": self.status,
                "observed": metric_to_json(self.observed), "reference": metric_to_json(self.reference),
                "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(case_id=data["case_id"], metric=data["metric"], rule=data["rule"], status=data["status"],
                   observed=metric_from_json(data.get("observed")),
                   reference=metric_from_json(data.get("reference")), message=data.get("message", ""))


@dataclass
class RunReport:
    run_id: str
    suites: list[str]
    engine: str
    weights: str
    hardware: str
    environment: Environment
    cases: list[CaseResult] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    # suite -> provenance of the baseline the verdicts were judged against (None: no baseline found)
    baselines: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # suite -> the metrics its baseline checks read: what `baseline update` stores of each case
    baseline_metrics: dict[str, list[str]] = field(default_factory=dict)
    # The run said --allow-missing-baseline (first run on new hardware): a suite with baseline checks and no
    # baseline here does not fail the run; its verdicts still say no_baseline.
    allow_missing_baseline: bool = False

    def verdicts_for(self, case_id: str) -> list[Verdict]:
        return [v for v in self.verdicts if v.case_id == case_id]

    @cached_property
    def outcomes(self) -> dict[str, str]:
        """case_id -> pass | fail | error | skipped | unsupported.

        error: the case ended abnormally (oom, crash, ...) and no expect_status check passed for it;
        fail: a verdict failed or flagged a regression; no_baseline and improved do not fail a case.
        """
        result = {}
        for case in self.cases:
            verdicts = self.verdicts_for(case.case_id)
            expected = any(v.rule == "expect_status" and v.status == "pass" for v in verdicts)
            if case.status in NOT_RUN_STATUSES:
                result[case.case_id] = case.status
            elif case.status in ABNORMAL_STATUSES and not expected:
                result[case.case_id] = "error"
            elif any(v.failed for v in verdicts):
                result[case.case_id] = "fail"
            else:
                result[case.case_id] = "pass"
        return result

    @cached_property
    def summary(self) -> dict[str, int]:
        """Counts of case outcomes and verdict statuses: {'cases': 4, 'pass': 3, ..., 'verdict.pass': 9}."""
        counts: dict[str, int] = {"cases": len(self.cases)}
        for outcome in OUTCOMES:
            counts[outcome] = sum(1 for o in self.outcomes.values() if o == outcome)
        for status in VERDICT_STATUSES:
            counts[f"verdict.{status}"] = sum(1 for v in self.verdicts if v.status == status)
        return counts

    @cached_property
    def case_suites(self) -> dict[str, str]:
        return {c.case_id: c.suite for c in self.cases}

    @cached_property
    def missing_baselines(self) -> list[str]:
        """Suites whose checks compare with a baseline and found none for this hardware."""
        return [suite for suite in self.suites if self.baseline_metrics.get(suite)
                and self.baselines.get(suite) is None]

    @cached_property
    def problems(self) -> list[str]:
        """Why the run as a whole is not a pass, beyond its cases' outcomes."""
        problems = []
        if self.missing_baselines and not self.allow_missing_baseline:
            problems.append(f"no baseline for {self.hardware} of {', '.join(self.missing_baselines)} "
                            "(first run on this hardware: --allow-missing-baseline, then `ovi-bench "
                            "baseline update`)")
        # A baseline file that lacks a case or a metric a check reads is as missing, for that check.
        lacking = [v for v in self.verdicts if v.status == "no_baseline"
                   and self.case_suites.get(v.case_id) not in self.missing_baselines]
        if lacking and not self.allow_missing_baseline:
            suites = ", ".join(dict.fromkeys(self.case_suites.get(v.case_id, "?") for v in lacking))
            problems.append(f"{len(lacking)} check(s) found no baseline value in the {self.hardware} "
                            f"baseline of {suites} (a case or metric it lacks): re-record it with "
                            "`ovi-bench baseline update`, or run with --allow-missing-baseline")
        if self.cases and all(o in NOT_RUN_STATUSES for o in self.outcomes.values()):
            problems.append("no case ran (every case was skipped or unsupported)")
        if not self.cases:
            problems.append("the suites have no cases")
        return problems

    @cached_property
    def input_error(self) -> str | None:
        """The one line every case failed on, when each failed on the same bad input (a file, a value) that
        only the worker could find before computing (`error.kind` input, worker.classify_failure): the run is
        then a usage error, not a failed check."""
        if not self.cases or any(c.status != "error" or c.metrics.get("error.kind") != "input"
                                 for c in self.cases):
            return None
        lines = {next(iter((c.error or "").splitlines()), "") for c in self.cases}
        return lines.pop() if len(lines) == 1 else None

    @cached_property
    def exit_status(self) -> int:
        """0 when every case passed (or could not run here, with its reason) and the run has no problem; 1 on
        a failed check, a regression, an error, a missing baseline or a run where nothing ran; 2 when every
        case failed on the same bad input."""
        if self.input_error is not None:
            return 2
        return 1 if self.problems or any(o in ("fail", "error") for o in self.outcomes.values()) else 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": REPORT.version, "run_id": self.run_id, "suites": self.suites,
                "engine": self.engine, "weights": self.weights, "hardware": self.hardware,
                "environment": self.environment.to_dict(), "summary": self.summary,
                "exit_status": self.exit_status, "baselines": self.baselines,
                "baseline_metrics": self.baseline_metrics,
                "allow_missing_baseline": self.allow_missing_baseline, "problems": self.problems,
                "cases": [c.to_dict() for c in self.cases], "verdicts": [v.to_dict() for v in self.verdicts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "run report") -> RunReport:
        REPORT.check(data, source=source)
        try:
            return cls(run_id=data["run_id"], suites=list(data["suites"]), engine=data["engine"],
                       weights=data["weights"], hardware=data["hardware"],
                       environment=Environment.from_dict(data["environment"]),
                       cases=[CaseResult.from_dict(c) for c in data["cases"]],
                       verdicts=[Verdict.from_dict(v) for v in data["verdicts"]],
                       baselines=dict(data["baselines"]), baseline_metrics=dict(data["baseline_metrics"]),
                       allow_missing_baseline=bool(data["allow_missing_baseline"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{source}: not a valid run report ({type(exc).__name__}: {exc})") from None


REPORT_FILE_MODE = 0o644


class OutputError(OSError):
    """A report directory or baseline file cannot be written (the CLI maps it to exit status 2)."""


def canonical_json(data: Any) -> str:
    """The one JSON form the harness writes: sorted keys, 2-space indent, UTF-8, final newline; a NaN or
    Infinity anywhere is written in `encode_floats`' form (metric_from_json reads it back)."""
    return json.dumps(encode_floats(data), indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the new one, never a torn one.

    A temp file in the same directory is written and fsynced, then renamed over `path` (os.replace).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes it 0600; reports and baselines are for everyone to read
        os.chmod(tmp, REPORT_FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
