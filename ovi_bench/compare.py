"""Two run reports side by side (two engines, two releases, two machines), per suite and case: the run's
provenance, each case's status, params (prompt, area, resolution asked for), metrics (shapes, token counts,
prompt format, peaks, times) and each stage's time and memory peaks.

A value changed when a number differs from the other run's by more than a relative tolerance (Samples: their
medians) or any other value is not equal; by default only changes are shown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from ovi_bench.records import (
    CaseResult,
    RunReport,
    Samples,
    metric_to_json,
    numeric,
    render_metric,
)
from ovi_bench.report.markdown import markdown_table, markdown_text
from ovi_bench.report.tables import STAGE_FIELDS, case_label, clip, stage_names
from ovi_bench.schema import COMPARISON

DEFAULT_TOLERANCE = 0.05
ALPHA = 0.05
RUN = "run"  # the suite name of the rows about the runs themselves
VALUE_WIDTH = 40


@dataclass
class ComparisonRow:
    suite: str
    case_id: str
    metric: str  # a metric's name, "status", "param.<name>", "stage.<stage>.<field>" or a run field
    a: Any  # None when the value is absent on that side
    b: Any
    ratio: float | None  # b / a for numbers (Samples: medians)
    changed: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "case_id": self.case_id, "metric": self.metric,
                "a": metric_to_json(self.a), "b": metric_to_json(self.b), "ratio": self.ratio,
                "changed": self.changed, "note": self.note}


@dataclass
class Comparison:
    a_label: str
    b_label: str
    tolerance: float
    rows: list[ComparisonRow]  # every value either run has

    def shown(self, show_all: bool) -> list[ComparisonRow]:
        return self.rows if show_all else [r for r in self.rows if r.changed]

    def summary(self) -> str:
        """'3 of 812 values changed beyond 5% (1 status); 1 case only in b'."""
        changed = [r for r in self.rows if r.changed]
        statuses = sum(r.metric == "status" and r.a is not None and r.b is not None for r in changed)
        only = {side: sum(r.note == f"case only in {side}" for r in self.rows) for side in ("a", "b")}
        text = f"{len(changed)} of {len(self.rows)} values changed beyond {self.tolerance:.0%}"
        text += f" ({statuses} status{'es' if statuses != 1 else ''})"
        return text + "".join(f"; {n} case(s) only in {side}" for side, n in only.items() if n)

    def to_dict(self, show_all: bool = False) -> dict[str, Any]:
        return {"schema_version": COMPARISON.version, "a": self.a_label, "b": self.b_label,
                "tolerance": self.tolerance, "summary": self.summary(),
                "rows": [r.to_dict() for r in self.shown(show_all)]}

    def render(self, fmt: str = "text", show_all: bool = False) -> str:
        """`fmt`: text (tables per suite), md (the same as markdown) or json."""
        if fmt == "json":
            return json.dumps(self.to_dict(show_all), indent=2, ensure_ascii=False)
        hint = "" if show_all else " (--all shows every value)"
        lines = [self.summary() + hint, "", f"a = {self.a_label}", f"b = {self.b_label}"]
        if fmt == "md":
            lines = [f"**{lines[0]}**", "", f"- a = {self.a_label}", f"- b = {self.b_label}"]
        rows = self.shown(show_all)
        for suite in dict.fromkeys(r.suite for r in rows):
            headers = ["case", "value", "a", "b", "b / a", "note"]
            table = [[case_label(r.case_id, r.suite), r.metric,
                      *(clip(render_metric(r.metric, v), VALUE_WIDTH) for v in (r.a, r.b)),
                      "-" if r.ratio is None else f"{r.ratio:.3f}", r.note] for r in rows if r.suite == suite]
            if fmt == "md":
                lines += ["", f"## {markdown_text(suite)}", "", markdown_table((headers, table))]
            else:
                lines += ["", suite, "", tabulate(table, headers=headers)]
        return "\n".join(lines)


def label(report: RunReport) -> str:
    commit = (report.environment.git_commit or "unknown")[:10]
    return f"{report.run_id} ({report.engine}, {report.weights}, {report.hardware}, {commit})"


def _significance(a: Samples, b: Samples, ratio: float) -> str:
    if a.n < 2 or b.n < 2:
        return "single sample: no significance test"
    from scipy.stats import mannwhitneyu

    p = float(mannwhitneyu(b.values, a.values, alternative="two-sided").pvalue)
    if p <= ALPHA:
        return f"b {'slower' if ratio > 1 else 'faster'}, significant (Mann-Whitney p={p:.3g})"
    return f"within noise (Mann-Whitney p={p:.3g})"


def compare_values(suite: str, case_id: str, name: str, a: Any, b: Any, tolerance: float) -> ComparisonRow:
    if a is None or b is None:
        return ComparisonRow(suite, case_id, name, a, b, None, True, f"only in {'b' if a is None else 'a'}")
    num_a, num_b = numeric(a), numeric(b)
    if num_a is None or num_b is None:
        same = metric_to_json(a) == metric_to_json(b)
        return ComparisonRow(suite, case_id, name, a, b, None, not same, "same" if same else "differs")
    ratio = num_b / num_a if num_a else None
    changed = abs(num_b - num_a) > tolerance * abs(num_a)
    note = _significance(a, b, ratio or 1.0) if isinstance(a, Samples) and isinstance(b, Samples) else ""
    return ComparisonRow(suite, case_id, name, a, b, ratio, changed, note)


def case_values(case: CaseResult) -> dict[str, Any]:
    """Everything compared about one case, by name (a stage that ran twice is `<stage>#2` the second time)."""
    values: dict[str, Any] = {"status": case.status, "stage": case.stage, "error": case.error}
    values.update({f"param.{k}": v for k, v in case.params.items()})
    values.update(case.metrics)
    for stage, name in zip(case.stages, stage_names(case)):
        values[f"stage.{name}.wall_s"] = stage.wall_s
        values[f"stage.{name}.device_s"] = stage.device_s
        values.update({f"stage.{name}.{f}.bytes": getattr(stage, f) for f in STAGE_FIELDS})
    return {k: v for k, v in values.items() if v is not None}


def run_values(report: RunReport) -> dict[str, Any]:
    env = report.environment
    return {"engine": report.engine, "weights": report.weights, "hardware": report.hardware,
            "commit": env.git_commit, "torch": env.torch, "device": env.device_name, "cuda": env.cuda,
            "hip": env.hip, "driver": env.driver}


def compare(a: RunReport, b: RunReport, tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """Cases are matched by case_id; a case or value on one side only is listed (and counts as changed)."""
    rows = [compare_values(RUN, "-", name, value, run_values(b)[name], tolerance)
            for name, value in run_values(a).items() if value is not None or run_values(b)[name] is not None]
    a_cases, b_cases = {c.case_id: c for c in a.cases}, {c.case_id: c for c in b.cases}
    for case_id in [*a_cases, *(cid for cid in b_cases if cid not in a_cases)]:
        case_a, case_b = a_cases.get(case_id), b_cases.get(case_id)
        if case_a is None or case_b is None:
            only = case_a or case_b
            assert only is not None
            rows.append(ComparisonRow(only.suite, case_id, "status", case_a and case_a.status,
                                      case_b and case_b.status, None, True,
                                      f"case only in {'a' if case_a else 'b'}"))
            continue
        values_a, values_b = case_values(case_a), case_values(case_b)
        for name in [*values_a, *(n for n in values_b if n not in values_a)]:
            rows.append(compare_values(case_a.suite, case_id, name, values_a.get(name), values_b.get(name),
                                       tolerance))
    return Comparison(label(a), label(b), tolerance, rows)
