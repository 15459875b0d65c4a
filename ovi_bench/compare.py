"""Two run reports side by side (two engines, two releases, two machines): per case and metric, both
values, their ratio b / a, and for timings whether the difference is beyond noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from ovi_bench.records import RunReport, Samples, metric_to_json, numeric, render_metric

ALPHA = 0.05


@dataclass
class ComparisonRow:
    case_id: str
    metric: str
    a: Any  # None when the metric is absent on that side
    b: Any
    ratio: float | None  # b / a for numbers (Samples: medians)
    note: str


@dataclass
class Comparison:
    a_label: str
    b_label: str
    rows: list[ComparisonRow]

    def render(self, tablefmt: str = "github") -> str:
        rows = [[r.case_id, r.metric, render_metric(r.metric, r.a), render_metric(r.metric, r.b),
                 "-" if r.ratio is None else f"{r.ratio:.3f}", r.note] for r in self.rows]
        header = f"a = {self.a_label}\nb = {self.b_label}\n\n"
        headers = ["case", "metric", "a", "b", "b / a", "note"]
        return header + tabulate(rows, headers=headers, tablefmt=tablefmt)


def label(report: RunReport) -> str:
    commit = (report.environment.git_commit or "unknown")[:10]
    return f"{report.run_id} ({report.engine}, {report.weights}, {report.hardware}, {commit})"


def _note(a: Any, b: Any, ratio: float | None) -> str:
    if a is None or b is None:
        return f"only in {'b' if a is None else 'a'}"
    if ratio is None:
        return "same" if metric_to_json(a) == metric_to_json(b) else "differs"
    if isinstance(a, Samples) and isinstance(b, Samples):
        if a.n < 2 or b.n < 2:
            return "single sample: no significance test"
        from scipy.stats import mannwhitneyu

        p = float(mannwhitneyu(b.values, a.values, alternative="two-sided").pvalue)
        if p <= ALPHA:
            return f"b {'slower' if ratio > 1 else 'faster'}, significant (Mann-Whitney p={p:.3g})"
        return f"within noise (Mann-Whitney p={p:.3g})"
    return ""


def compare(a: RunReport, b: RunReport) -> Comparison:
    """Cases are matched by case_id; a case or metric on one side only is listed as such."""
    a_cases, b_cases = {c.case_id: c for c in a.cases}, {c.case_id: c for c in b.cases}
    rows = []
    for case_id in [*a_cases, *(cid for cid in b_cases if cid not in a_cases)]:
        case_a, case_b = a_cases.get(case_id), b_cases.get(case_id)
        if case_a is None or case_b is None:
            rows.append(ComparisonRow(case_id, "status", case_a and case_a.status, case_b and case_b.status,
                                      None, f"case only in {'a' if case_a else 'b'}"))
            continue
        rows.append(ComparisonRow(case_id, "status", case_a.status, case_b.status, None,
                                  _note(case_a.status, case_b.status, None)))
        for metric in [*case_a.metrics, *(m for m in case_b.metrics if m not in case_a.metrics)]:
            value_a, value_b = case_a.metrics.get(metric), case_b.metrics.get(metric)
            num_a, num_b = numeric(value_a), numeric(value_b)
            ratio = num_b / num_a if num_a and num_b is not None else None
            note = _note(value_a, value_b, ratio)
            rows.append(ComparisonRow(case_id, metric, value_a, value_b, ratio, note))
    return Comparison(label(a), label(b), rows)
