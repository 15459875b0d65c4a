"""Checks declared by suites, the baselines they compare against, and the explicit baseline update.

A suite declares per-metric checks; `parse_check` validates one when the suite loads (sizes, percentages,
factors), `judge` turns the cases of a run into verdicts. Rules:

- exact          observed == expected (a literal, or a reference such as `spec.video_latent_shape`,
                 `params.<key>`)
- max / min      observed <= / >= limit (a size, duration or number, or `profile.<limit>`)
- relative       vs baseline: may grow by max(tolerance * baseline, floor), else regression
- time           vs baseline samples: a regression only when median(now) / median(baseline) >= min_factor
                 AND a one-sided Mann-Whitney U test says "slower" at alpha (with one sample on either
                 side, the factor alone), with times below `floor` counted as `floor` (default 0: a
                 kernel of microseconds timed by CUDA events swings by ~100 us with the host's launch
                 timing); the mirror image is `improved`
- same           vs baseline: another value (e.g. another attention kernel) is reported `changed`, which
                 is not a failure; the metrics it explains are judged by their own checks
- expect_status  the case ended with the expected status (ok, oom, ...)

A check applies to every case, or with `when: {axis: value}` only to the cases that match it all, and with
`unless: {axis: value}` to none that do (e.g. one threshold for every attention backend but one).
Samples are compared through their median. A missing baseline gives `no_baseline`, never a pass; a baseline
recorded on another hardware profile or device gives `error`, never a comparison.
Baselines live in `<dir>/<hardware>/<suite>.json`, keep only the metrics their suite's baseline checks read,
and change only through `update_baseline`; an older file is brought forward by `upgrade_file`.

CPU times hold on one processor model only: the matmul they are scaled by and the kernels they time do not
keep one ratio across models (an Intel Xeon ran the tiny attention 1.4x slower than an AMD EPYC and the
matmul 1.8x faster). So a CPU run's time checks read the baseline of its own model: the suite's file where
that names this model, else `<dir>/<hardware>/processors/<model>/<suite>.json` (`update_baseline(...,
this_processor=...)`), else they find no baseline. Files from before models were named are read as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from tabulate import tabulate

from ovi_bench.hardware import baseline_mismatch
from ovi_bench.records import (
    CASE_STATUSES,
    NOT_RUN_STATUSES,
    CaseResult,
    RunReport,
    Samples,
    Verdict,
    canonical_json,
    metric_from_json,
    metric_to_json,
    numeric,
    render_metric,
    write_atomic,
)
from ovi_bench.schema import BASELINE, SchemaError
from ovi_bench.units import parse_fraction, parse_quantity

RULES = ("exact", "max", "min", "relative", "time", "same", "expect_status")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one path component, no "..", no separators
MACHINE_SPEED = "machine.matmul_tflops"  # measured in every case's worker (ovi_bench.worker)
MAX_SPEED_RATIO = 4.0  # machines further apart than this are not compared at all
BASELINE_RULES = ("relative", "time", "same")
# A string of this form names a value instead of being one: spec.<key>, params.<key>, profile.<limit>.
REFERENCE = re.compile(r"^(spec|params|profile)\.([A-Za-z_][\w.]*)$")


class CheckError(ValueError):
    """A check in a suite that cannot be used; the suite loader adds the file and line."""


class Profile(Protocol):
    """What `judge` needs of a hardware profile (ovi_bench.hardware.HardwareProfile has it)."""

    name: str

    def limit(self, name: str) -> int: ...


@dataclass(frozen=True)
class Check:
    metric: str
    rule: str
    expected: Any = None  # exact, expect_status
    limit: float | str | None = None  # max, min: a number in the metric's unit, or a profile reference
    tolerance: float = 0.0  # relative: allowed growth as a fraction of the baseline
    floor: float | str = 0.0  # relative: allowed growth at least this; time: smaller times count as this
    # time: slowdown factor on the medians that may count as a regression; or params.<key> (per preset)
    min_factor: float | str = 1.0
    alpha: float = 0.05  # time: significance level of the one-sided Mann-Whitney U test
    when: dict[str, Any] = field(default_factory=dict)  # applies only to cases whose params match
    unless: dict[str, Any] = field(default_factory=dict)  # ... and to none whose params match this
    note: str = ""  # what a failure means, appended to a failing verdict's message
    # relative, time, same: metrics that must be as in the baseline for the comparison to mean anything (the
    # dtype a kernel computed in): where one is not, the verdict is `changed`, naming it, and nothing compared
    like: tuple[str, ...] = ()
    scale: str | None = None  # the check only holds at this scale ("full"): not judged at another
    # Added by the loader from the scenario's declared expectations; judged only where the case recorded the
    # expectation (a scenario derives some only for some cases, e.g. decoded counts when it decodes).
    implicit: bool = False

    def applies_to(self, case: CaseResult) -> bool:
        def matches(condition: dict[str, Any]) -> bool:
            return all(case.params.get(k) == v for k, v in condition.items())

        return matches(self.when) and not (self.unless and matches(self.unless))

    def describe(self) -> str:
        """A short name for messages and junit: 'peak.total.alloc_bytes max'."""
        return f"{self.metric} {self.rule}"


def parse_check(raw: Mapping[str, Any]) -> Check:
    """Validate one entry of a suite's `checks:` list; every threshold is parsed here, before any run."""
    if not isinstance(raw, Mapping):
        raise CheckError(f"a check must be a mapping, got {raw!r}")
    metric, rule = raw.get("metric"), raw.get("rule")
    if not isinstance(metric, str) or not metric:
        raise CheckError(f"check {dict(raw)!r}: 'metric' must be a non-empty string")
    if rule not in RULES:
        raise CheckError(f"check on {metric!r}: rule {rule!r} is not one of {', '.join(RULES)}")
    allowed = {"metric", "rule", "when", "unless", "note", "scale", *{
        "exact": ("expected",), "expect_status": ("expected",), "max": ("limit",), "min": ("limit",),
        "relative": ("tolerance", "floor", "like"), "time": ("min_factor", "alpha", "floor", "like"),
        "same": ("like",),
    }[rule]}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise CheckError(f"check {metric} {rule}: unknown key(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(allowed))})")
    when, unless = raw.get("when") or {}, raw.get("unless") or {}
    for key, value in (("when", when), ("unless", unless)):
        if not isinstance(value, Mapping):
            raise CheckError(f"check {metric} {rule}: '{key}' must be a mapping of case parameters")
    try:
        fields = _parse_rule_fields(metric, rule, raw)
    except ValueError as exc:
        raise CheckError(f"check {metric} {rule}: {exc}") from None
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise CheckError(f"check {metric} {rule}: 'note' must be a string")
    scale = raw.get("scale")
    if scale not in (None, "tiny", "full"):
        raise CheckError(f"check {metric} {rule}: 'scale' must be tiny or full, got {scale!r}")
    like = raw.get("like", [])
    like = [like] if isinstance(like, str) else like
    if not isinstance(like, list) or not all(isinstance(m, str) and m for m in like):
        raise CheckError(f"check {metric} {rule}: 'like' must be a metric name or a list of them")
    return Check(metric=metric, rule=rule, when=dict(when), unless=dict(unless), note=note.strip(),
                 scale=scale, like=tuple(like), **fields)


def _parse_rule_fields(metric: str, rule: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    if rule in ("exact", "expect_status"):
        if "expected" not in raw:
            raise ValueError("needs 'expected'")
        if rule == "expect_status" and raw["expected"] not in CASE_STATUSES:
            raise ValueError(f"expected status {raw['expected']!r} is not one of {', '.join(CASE_STATUSES)}")
        return {"expected": raw["expected"]}
    if rule in ("max", "min"):
        if "limit" not in raw:
            raise ValueError("needs 'limit'")
        limit = raw["limit"]
        if isinstance(limit, str) and REFERENCE.match(limit):
            return {"limit": limit}
        return {"limit": parse_quantity(limit, metric)}
    if rule == "same":
        return {}
    if rule == "relative":
        if "tolerance" not in raw and "floor" not in raw:
            raise ValueError("needs 'tolerance' and/or 'floor'")
        return {"tolerance": parse_fraction(raw.get("tolerance", 0)),
                "floor": parse_quantity(raw.get("floor", 0), metric)}
    alpha = float(raw.get("alpha", 0.05))
    raw_floor = raw.get("floor", 0)
    floor = raw_floor if _is_params_reference(raw_floor) else time_floor(raw_floor, metric)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    raw_factor = raw.get("min_factor", 1.10)
    if _is_params_reference(raw_factor):
        return {"min_factor": raw_factor, "alpha": alpha, "floor": floor}
    min_factor = float(raw_factor)
    if min_factor < 1.0:
        raise ValueError(f"min_factor must be >= 1.0, got {min_factor}")
    return {"min_factor": min_factor, "alpha": alpha, "floor": floor}


def time_floor(value: Any, metric: str) -> float:
    """A time check's floor: a duration with its unit ('200 us'); a bare number other than 0 is refused,
    since read as seconds it would turn every time check into a pass."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0:
        raise ValueError(f"floor {value!r} needs a unit, e.g. '200 us'")
    return parse_quantity(value, metric)


def _is_params_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("params.") and bool(REFERENCE.match(value))


# ---- baselines -------------------------------------------------------------------------------------------

@dataclass
class Baseline:
    suite: str
    hardware: str
    provenance: dict[str, Any]  # run_id, engine, weights, git_commit, date, environment
    cases: dict[str, dict[str, Any]]  # case_id -> metric name -> value

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": BASELINE.version, "suite": self.suite, "hardware": self.hardware,
                "provenance": self.provenance,
                "cases": {cid: {k: metric_to_json(v) for k, v in metrics.items()}
                          for cid, metrics in self.cases.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> Baseline:
        BASELINE.check(data, source=source)
        try:
            return cls(suite=data["suite"], hardware=data["hardware"], provenance=dict(data["provenance"]),
                       cases={cid: {k: metric_from_json(v) for k, v in metrics.items()}
                              for cid, metrics in data["cases"].items()})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise SchemaError(f"{source}: not a valid baseline ({type(exc).__name__}: {exc})") from None


def baseline_path(directory: Path, hardware: str, suite: str) -> Path:
    return Path(directory) / hardware / f"{suite}.json"


def processor_baseline_path(directory: Path, hardware: str, suite: str, processor: str) -> Path:
    """Where one CPU model's times of a suite live, beside the suite's baseline."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", processor).strip("_.") or "unnamed"
    return Path(directory) / hardware / "processors" / slug / f"{suite}.json"


def baseline_files(directory: Path, hardware: str = "*") -> list[Path]:
    """Every baseline file under `directory` (a hardware profile's, or every profile's): the suites' own,
    then the processor models' times."""
    directory = Path(directory)
    return (sorted(directory.glob(f"{hardware}/*.json"))
            + sorted(directory.glob(f"{hardware}/processors/*/*.json")))


def processor_metrics(checks: Sequence[Check]) -> list[str]:
    """What belongs to one processor model: what time checks read (their `like` metrics too) and the
    machine's speed they are scaled by."""
    timed = [m for c in checks if c.rule == "time" for m in (c.metric, *c.like)]
    return sorted(set(timed) | ({MACHINE_SPEED} if timed else set()))


def times_baseline(directory: Path, hardware: str, suite: str, main: Baseline | None,
                   environment: Mapping[str, Any]) -> Baseline | str | None:
    """The baseline a run's time checks read, or why there is none for this run's processor model. An
    accelerator is pinned by its device name (hardware.baseline_mismatch): only CPU runs differ here."""
    processor = environment.get("cpu")
    if main is None or environment.get("device_name") != "cpu" or not processor:
        return main
    recorded = main.provenance.get("processor")
    if recorded == processor:
        return main
    own = load_baseline_file(processor_baseline_path(directory, hardware, suite, processor))
    if own is not None and own.provenance.get("processor") == processor:  # not another model of one slug
        return own
    if recorded is None:  # recorded before processors were named: compared as it always was
        return main
    return (f"no baseline times for processor {processor!r} (this baseline's are from {recorded!r}, and CPU "
            "times compare only on one model): record them here with `ovi-bench baseline update RUN "
            "--this-processor`")


def load_baseline(directory: Path, hardware: str, suite: str) -> Baseline | None:
    """The stored baseline, or None when there is none; an unreadable one raises SchemaError."""
    return load_baseline_file(baseline_path(directory, hardware, suite))


def load_baseline_file(path: Path) -> Baseline | None:
    if not path.exists():
        return None
    return Baseline.from_dict(_read(path), source=str(path))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read baseline ({exc})") from None


def baseline_metrics(checks: Sequence[Check]) -> list[str]:
    """The metrics a suite's baseline checks read (a time check also the machine's speed): all its baseline
    file needs to keep."""
    speed = [MACHINE_SPEED] if any(c.rule == "time" for c in checks) else []
    return sorted({m for c in checks if c.rule in BASELINE_RULES for m in (c.metric, *c.like)} | set(speed))


def _upgrade_1_to_2(data: dict[str, Any], checks: Sequence[Check]) -> dict[str, Any]:
    """v1 stored every metric of a case; v2 keeps only what the suite's baseline checks read."""
    keep = set(baseline_metrics(checks))
    cases = {cid: {k: v for k, v in metrics.items() if k in keep} for cid, metrics in data["cases"].items()}
    return {**data, "schema_version": 2, "cases": cases}


# version found -> the step to the next one (asv's update_to_N); upgrade_file applies them in turn.
UPGRADES = {1: _upgrade_1_to_2}


def upgrade_file(path: Path, checks: Sequence[Check], *, write: bool = True) -> int | None:
    """Bring a baseline file to this ovi-bench's version; the version it had, or None when it was current.
    A file newer than this ovi-bench, or not a baseline, raises SchemaError."""
    data = _read(path)
    found = data.get("schema_version") if isinstance(data, dict) else None
    if found == BASELINE.version:
        return None
    if found not in UPGRADES:
        BASELINE.check(data, source=str(path))  # says newer, or not a baseline
    version = found
    while data["schema_version"] in UPGRADES:
        data = UPGRADES[data["schema_version"]](data, checks)
    Baseline.from_dict(data, source=str(path))  # the result must read back
    if write:
        write_atomic(path, canonical_json(data))
    return version


@dataclass
class MetricChange:
    suite: str
    case_id: str
    metric: str
    old: Any  # None when the metric is new
    new: Any


@dataclass
class BaselineDiff:
    """What an update changes (or would change, with write=False), per suite file."""

    paths: dict[str, Path]  # suite -> baseline file
    changes: list[MetricChange]
    unchanged: int  # metrics whose stored value stays the same
    kept: list[str]  # case ids in the baseline the report did not rerun successfully (left as they were)
    without_checks: list[str] = field(default_factory=list)  # suites no baseline check of which reads a file

    def render(self) -> str:
        none = "".join(f"\n{suite}: no check compares with a baseline, nothing stored"
                       for suite in self.without_checks)
        if not self.changes:
            return f"baselines unchanged ({self.unchanged} metric(s) identical){none}"
        rows = [[c.suite, c.case_id, c.metric, "(new)" if c.old is None else render_metric(c.metric, c.old),
                 render_metric(c.metric, c.new)] for c in self.changes]
        table = tabulate(rows, headers=["suite", "case", "metric", "baseline", "new"], tablefmt="simple")
        counts = f"{len(self.changes)} change(s), {self.unchanged} unchanged, {len(self.kept)} case(s) kept"
        return f"{table}\n{counts}{none}"


def update_baseline(report: RunReport, directory: Path, hardware: str | None = None, *,
                    write: bool = True,
                    this_processor: Mapping[str, Sequence[Check]] | None = None) -> BaselineDiff:
    """Store, for every successful case of `report`, the metrics its suite's baseline checks read
    (`report.baseline_metrics`) as the baseline of its suite.

    With `this_processor` (each suite's checks), a CPU run stores only the metrics that belong to its
    processor model (`processor_metrics`), in that model's file; the suite's own baseline stays as it was.
    Cases that did not end `ok` keep their stored values; cases the report did not run stay as they were.
    Each file is replaced atomically, so a failure leaves the previous baseline intact.
    """
    hardware = hardware or report.hardware
    _refuse_outside(directory, hardware, report.suites)
    env = report.environment
    processor = env.cpu if env.device_name == "cpu" else None
    if this_processor is not None and not processor:
        raise SchemaError(f"--this-processor stores a CPU's times; run {report.run_id} ran on "
                          f"{env.device_name or 'an unknown device'}, whose baseline its device name pins")
    provenance = {"run_id": report.run_id, "engine": report.engine, "weights": report.weights,
                  "git_commit": env.git_commit, "date": env.date, "environment": env.to_dict(),
                  **({"processor": processor} if processor else {})}
    diff = BaselineDiff(paths={}, changes=[], unchanged=0, kept=[])
    for suite in report.suites:
        keep = set(report.baseline_metrics.get(suite, ()))
        path = baseline_path(directory, hardware, suite)
        if this_processor is not None:
            assert processor is not None
            keep &= set(processor_metrics(this_processor.get(suite, ())))
            path = processor_baseline_path(directory, hardware, suite, processor)
        if not keep:  # no check of this suite reads a baseline: no file to keep
            diff.without_checks.append(suite)
            continue
        old = load_baseline_file(path)
        cases = dict(old.cases) if old else {}
        for case in report.cases:
            if case.suite != suite or case.status != "ok":
                continue
            before = cases.get(case.case_id, {})
            kept = {k: v for k, v in case.metrics.items() if k in keep}
            for metric, value in kept.items():
                if metric in before and metric_to_json(before[metric]) == metric_to_json(value):
                    diff.unchanged += 1
                else:
                    diff.changes.append(MetricChange(suite, case.case_id, metric, before.get(metric), value))
            cases[case.case_id] = kept
        rerun = {c.case_id for c in report.cases if c.suite == suite and c.status == "ok"}
        diff.kept += sorted(set(old.cases if old else ()) - rerun)
        diff.paths[suite] = path
        if write:
            write_atomic(path, canonical_json(Baseline(suite, hardware, provenance, cases).to_dict()))
    return diff


def _refuse_outside(directory: Path, hardware: str, suites: Sequence[str]) -> None:
    """Baseline files live at <dir>/<hardware>/<suite>.json: names that would reach elsewhere are refused."""
    root = Path(directory).resolve()
    for suite in suites:
        path = baseline_path(directory, hardware, suite).resolve()
        if path.parent.parent != root or not SAFE_NAME.match(hardware) or not SAFE_NAME.match(suite):
            raise SchemaError(f"refused: hardware {hardware!r} / suite {suite!r} would write {path}, outside "
                              f"{root}/<hardware>/ (names must be plain identifiers)")


# ---- judging ---------------------------------------------------------------------------------------------

def _resolve(reference: str, case: CaseResult, profile: Profile | None) -> Any:
    """params.<key>: the case's parameter; profile.<limit>: the hardware profile's limit; spec.<key>: the
    metric of that name the worker recorded from the variant's spec (the scenario derives it)."""
    kind, key = REFERENCE.match(reference).groups()  # type: ignore[union-attr]
    if kind == "params":
        if key not in case.params:
            raise LookupError(f"case has no parameter {key!r}")
        return case.params[key]
    if kind == "profile":
        if profile is None:
            raise LookupError(f"{reference} needs a hardware profile and the run has none")
        return profile.limit(key)
    if reference not in case.metrics:
        raise LookupError(f"the case recorded no {reference}")
    return case.metrics[reference]


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal when their items do; JSON gives lists back."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _as_samples(value: Any) -> Samples | None:
    if isinstance(value, Samples):
        return value
    number = numeric(value)
    return None if number is None else Samples([number])


def _verdict(case: CaseResult, check: Check, status: str, observed: Any, reference: Any,
             message: str) -> Verdict:
    if check.note and status in ("fail", "regression", "error"):
        message = f"{message}: {check.note}"
    return Verdict(case.case_id, check.metric, check.rule, status, observed, reference,
                   f"{check.describe()}: {message}")


def _judge_one(case: CaseResult, check: Check, baseline: Mapping[str, Any] | None,
               profile: Profile | None, refused: str | None = None) -> Verdict:
    name = check.metric
    if check.rule == "expect_status":
        ok = case.status == check.expected
        where = f" in stage {case.stage}" if case.stage and case.status != "ok" else ""
        return _verdict(case, check, "pass" if ok else "fail", case.status, check.expected,
                        f"status {case.status}{where}, expected {check.expected}")
    if name not in case.metrics:
        why = next((v for k, v in case.metrics.items()
                    if k.startswith("unsupported.")
                    and name.startswith(k.removeprefix("unsupported.") + ".")), None)
        if why is not None:
            return _verdict(case, check, "unsupported", None, None, str(why))
        return _verdict(case, check, "error", None, None, "metric not recorded by this case")
    observed = case.metrics[name]
    try:
        if check.rule == "exact":
            expected = check.expected
            if isinstance(expected, str) and REFERENCE.match(expected):
                expected = _resolve(expected, case, profile)
            ok = _plain(observed) == _plain(expected)
            sign = "==" if ok else "!="
            relation = f"{render_metric(name, observed)} {sign} {render_metric(name, expected)}"
            return _verdict(case, check, "pass" if ok else "fail", observed, expected, relation)
        if check.rule in ("max", "min"):
            raw_limit: Any = (_resolve(check.limit, case, profile) if isinstance(check.limit, str)
                              else check.limit)
            limit = float(raw_limit)
            value = numeric(observed)
            if value is None:
                return _verdict(case, check, "error", observed, limit, f"{observed!r} is not a number")
            ok = value <= limit if check.rule == "max" else value >= limit
            op = ("<=" if ok else ">") if check.rule == "max" else (">=" if ok else "<")
            source = f" ({check.limit})" if isinstance(check.limit, str) else ""
            return _verdict(case, check, "pass" if ok else "fail", observed, limit,
                            f"{render_metric(name, value)} {op} limit {render_metric(name, limit)}{source}")
    except LookupError as exc:
        return _verdict(case, check, "error", observed, None, str(exc).strip("'\""))
    if refused is not None:
        return _verdict(case, check, "error", observed, None, f"baseline refused: {refused}")
    if baseline is None or name not in baseline:
        return _verdict(case, check, "no_baseline", observed, None, "no baseline value")
    reference = baseline[name]
    for metric in check.like:
        if metric not in case.metrics:
            return _verdict(case, check, "error", observed, reference,
                            f"the case recorded no {metric} to compare like with like")
        if metric not in baseline:
            return _verdict(case, check, "no_baseline", observed, reference,
                            f"the baseline has no {metric} to compare like with like: re-record it")
        now, then = case.metrics[metric], baseline[metric]
        if _plain(now) != _plain(then):
            return _verdict(case, check, "changed", observed, reference,
                            f"{render_metric(name, observed)} with {metric} {render_metric(metric, now)}, "
                            f"the baseline's {render_metric(name, reference)} with "
                            f"{render_metric(metric, then)}: not compared")
    if check.rule == "same":
        base, now = render_metric(name, reference), render_metric(name, observed)
        if _plain(observed) == _plain(reference):
            return _verdict(case, check, "pass", observed, reference, f"{now}, as in the baseline")
        return _verdict(case, check, "changed", observed, reference, f"{now}, the baseline had {base}")
    if check.rule == "relative":
        return _judge_relative(case, check, observed, reference)
    return _judge_time(case, check, observed, reference, _speed_ratio(case, baseline))


def _judge_relative(case: CaseResult, check: Check, observed: Any, reference: Any) -> Verdict:
    now, base = numeric(observed), numeric(reference)
    if now is None or base is None:
        return _verdict(case, check, "error", observed, reference, "not a number")
    allowed = max(check.tolerance * abs(base), float(check.floor))
    change = f"{render_metric(check.metric, now)} vs baseline {render_metric(check.metric, base)}"
    bound = f"allowed ±{render_metric(check.metric, allowed)}"
    if now > base + allowed:
        return _verdict(case, check, "regression", observed, reference, f"{change}, grew beyond {bound}")
    if now < base - allowed:
        return _verdict(case, check, "improved", observed, reference, f"{change}, shrank beyond {bound}")
    return _verdict(case, check, "pass", observed, reference, f"{change}, within {bound}")


def slowdown_test(now: Samples, base: Samples, alternative: str) -> float | None:
    """One-sided Mann-Whitney U p-value that `now` is 'greater' (slower) or 'less' than `base`;
    None when either side has a single sample, where no test is meaningful."""
    if now.n < 2 or base.n < 2:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(now.values, base.values, alternative=alternative).pvalue)


def _speed_ratio(case: CaseResult, baseline: Mapping[str, Any]) -> float | str:
    """How much faster this machine ran the reference kernel than the baseline's did, measured in each run's
    own worker (`machine.matmul_tflops`); a reason string when the two cannot be compared."""
    now, then = numeric(case.metrics.get(MACHINE_SPEED)), numeric(baseline.get(MACHINE_SPEED))
    if now is None or then is None or now <= 0 or then <= 0:
        return (f"no machine speed recorded {'now' if now is None else 'in the baseline'}: "
                "re-record the baseline with this ovi-bench")
    ratio = now / then
    if not 1 / MAX_SPEED_RATIO <= ratio <= MAX_SPEED_RATIO:
        return (f"the baseline was recorded on a machine {max(ratio, 1 / ratio):.1f}x "
                f"{'slower' if ratio > 1 else 'faster'} (matmul {then:.3g} vs {now:.3g} TFLOP/s): times of "
                "machines that different are not compared; re-record the baseline here")
    return ratio


def _judge_time(case: CaseResult, check: Check, observed: Any, reference: Any, speed: float | str) -> Verdict:
    """Times compared like with like: this run's samples are scaled by how much faster this machine ran the
    reference kernel than the baseline's, so a faster machine cannot hide a slowdown (or fake one)."""
    now, base = _as_samples(observed), _as_samples(reference)
    if now is None or base is None or base.median <= 0:
        return _verdict(case, check, "error", observed, reference, "not a positive duration")
    if isinstance(speed, str):
        return _verdict(case, check, "error", observed, reference, speed)
    now = Samples([v * speed for v in now.values])
    min_factor, floor = check.min_factor, check.floor
    try:
        if isinstance(min_factor, str):
            min_factor = float(_resolve(min_factor, case, None))
        if isinstance(floor, str):
            floor = time_floor(_resolve(floor, case, None), check.metric)
    except (LookupError, TypeError, ValueError) as exc:
        return _verdict(case, check, "error", now, base,
                        f"min_factor {check.min_factor}, floor {check.floor}: {exc}")
    floored = ""
    if floor:  # times below the floor count as the floor: what is under it is the timer's noise
        now, base = (Samples([max(v, floor) for v in s.values]) for s in (now, base))
        floored = f", times below {render_metric(check.metric, floor)} counted as it"
    ratio = now.median / base.median
    facts = (f"median {render_metric(check.metric, now.median)} (at the baseline machine's "
             f"speed, x{speed:.2f}) vs baseline {render_metric(check.metric, base.median)} ({ratio:.3f}x"
             f"{floored})")
    for status, factor, alternative in (("regression", ratio, "greater"), ("improved", 1 / ratio, "less")):
        if factor < min_factor:
            continue
        p = slowdown_test(now, base, alternative)
        # With the exact test p can reach alpha but not go below it at small n (3 vs 3 -> 0.05): use <=.
        if p is None or p <= check.alpha:
            test = "single sample, factor alone" if p is None else f"Mann-Whitney p={p:.3g} <= {check.alpha}"
            return _verdict(case, check, status, now, base, f"{facts}, beyond {min_factor}x ({test})")
        return _verdict(case, check, "pass", now, base,
                        f"{facts}, within noise (Mann-Whitney p={p:.3g} > {check.alpha})")
    return _verdict(case, check, "pass", now, base, f"{facts}, below the {min_factor}x factor")


def _reference_of(check: Check) -> Any:
    return check.expected if check.rule == "exact" else check.limit


def judge(cases: Sequence[CaseResult], checks: Sequence[Check], baseline: Baseline | None, *,
          profile: Profile | None = None, refused: str | None = None,
          times: Baseline | str | None = None) -> list[Verdict]:
    """Verdicts for one suite's cases. A case that ended abnormally is judged only by expect_status checks
    (its other metrics are incomplete); a skipped or unsupported case is not judged (it is shown with its
    reason, and a run where nothing ran is not a pass). `refused`: why the baseline must not be compared
    with (another profile or device); each baseline check is then an `error` saying so. `times`: the
    baseline time checks read (`times_baseline`; `baseline` when None), or why this processor has none."""
    times = baseline if times is None else times
    verdicts = []
    for case in cases:
        if case.status in NOT_RUN_STATUSES:
            continue
        stored = baseline.cases.get(case.case_id) if baseline else None
        stored_times = times.cases.get(case.case_id) if isinstance(times, Baseline) else None
        for check in checks:
            if not check.applies_to(case):
                continue
            if case.status != "ok" and check.rule != "expect_status":
                continue
            if check.implicit and _reference_of(check) not in case.metrics:
                continue
            if check.rule == "time" and isinstance(times, str) and refused is None:
                verdicts.append(_verdict(case, check, "no_baseline", case.metrics.get(check.metric), None,
                                         times))
                continue
            verdicts.append(_judge_one(case, check, stored_times if check.rule == "time" else stored,
                                       profile, refused))
    return verdicts


def judge_run(report: RunReport, checks: Mapping[str, Sequence[Check]], baseline_dir: Path, *,
              profile: Profile | None = None) -> RunReport:
    """The report with verdicts for every suite (checks: suite name -> its checks) and the provenance of
    the baselines used, read from `<baseline_dir>/<report.hardware>/<suite>.json`. A baseline recorded on
    another profile or device (`hardware.baseline_mismatch` on its stored environment) is refused: its
    checks give `error` verdicts naming the reason, and its provenance says `refused`."""
    verdicts, used = [], {}
    for suite in report.suites:
        baseline = load_baseline(baseline_dir, report.hardware, suite)
        refused = None if baseline is None else baseline_mismatch(
            baseline.hardware, baseline.provenance.get("environment"), report.hardware,
            report.environment.to_dict())
        used[suite] = None if baseline is None else {
            **{k: baseline.provenance.get(k) for k in ("run_id", "engine", "weights", "git_commit", "date")},
            "path": str(baseline_path(baseline_dir, report.hardware, suite)),
            **({"refused": refused} if refused else {})}
        times = times_baseline(baseline_dir, report.hardware, suite, baseline, report.environment.to_dict())
        if isinstance(times, Baseline) and times is not baseline and used[suite] is not None:
            used[suite]["times"] = str(processor_baseline_path(baseline_dir, report.hardware, suite,
                                                               report.environment.cpu or ""))
        verdicts += judge([c for c in report.cases if c.suite == suite], checks.get(suite, ()), baseline,
                          profile=profile, refused=refused, times=times)
    return replace(report, verdicts=verdicts, baselines=used,
                   baseline_metrics={suite: baseline_metrics(checks.get(suite, ()))
                                     for suite in report.suites})
