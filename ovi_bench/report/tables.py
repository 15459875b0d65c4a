"""The tables every human-readable format shows, as (headers, rows of strings): one source for markdown
and HTML, so both say the same thing in the same words."""

from __future__ import annotations

from ovi_bench.records import RunReport, StageRecord, Verdict, render_metric
from ovi_bench.units import format_duration, format_size

Table = tuple[list[str], list[list[str]]]

STAGE_FIELDS = ("alloc_peak", "reserved_peak", "alloc_end", "device_used_peak", "host_rss_peak")


def run_table(report: RunReport) -> Table:
    env = report.environment
    unified = " (unified with host)" if env.unified_memory else ""
    rows = [["run", report.run_id], ["suites", ", ".join(report.suites)], ["engine", report.engine],
            ["weights", report.weights], ["hardware", report.hardware],
            ["device", " ".join(dict.fromkeys([env.device_name or "-", env.device_arch or ""])).strip()],
            ["memory", format_size(env.device_total_bytes) + unified],
            ["torch", f"{env.torch or '-'} (CUDA {env.cuda or '-'}, HIP {env.hip or '-'})"],
            ["driver", env.driver or "-"],
            ["commit", env.git_commit or "-"], ["date", env.date or "-"],
            ["host", f"{env.host or '-'} ({env.cpu or '-'})"],
            ["python / platform", f"{env.python or '-'} / {env.platform or '-'}"]]
    rows += [[f"flag {k}", v] for k, v in sorted(env.flags.items())]
    for suite, provenance in sorted(report.baselines.items()):
        rows.append([f"baseline {suite}", "none" if provenance is None else
                     f"run {provenance.get('run_id') or '-'}, commit {provenance.get('git_commit') or '-'}, "
                     f"{provenance.get('date') or 'no date'}"])
    return ["field", "value"], rows


def summary_table(report: RunReport) -> Table:
    counts = report.summary
    keys = ["cases", "pass", "fail", "error", "skipped"]
    keys += [k for k in counts if k.startswith("verdict.") and counts[k]]
    return keys, [[str(counts[k]) for k in keys]]


def case_table(report: RunReport) -> Table:
    headers = ["case", "suite", "status", "outcome", "stage", "duration", "error"]
    rows = [[c.case_id, c.suite, c.status, report.outcomes[c.case_id], c.stage or "-",
             format_duration(c.duration_s), c.error or ""] for c in report.cases]
    return headers, rows


def _baseline_of(verdicts: list[Verdict], metric: str) -> str:
    for v in verdicts:
        if v.metric == metric and v.rule in ("relative", "time") and v.reference is not None:
            return render_metric(metric, v.reference)
    return "-"


def metric_table(report: RunReport) -> Table:
    headers = ["case", "metric", "value", "baseline", "verdicts"]
    rows = []
    for case in report.cases:
        verdicts = report.verdicts_for(case.case_id)
        for metric, value in case.metrics.items():
            judged = ", ".join(f"{v.rule}: {v.status}" for v in verdicts if v.metric == metric)
            rows.append([case.case_id, metric, render_metric(metric, value), _baseline_of(verdicts, metric),
                         judged or "-"])
    return headers, rows


def verdict_table(report: RunReport) -> Table:
    """Failures first, then the rest, each in run order."""
    order = {"error": 0, "fail": 0, "regression": 0, "no_baseline": 1, "improved": 2, "pass": 3}
    verdicts = sorted(report.verdicts, key=lambda v: order[v.status])
    headers = ["case", "metric", "rule", "status", "message"]
    return headers, [[v.case_id, v.metric, v.rule, v.status, v.message] for v in verdicts]


def stage_value(stage: StageRecord, name: str) -> str:
    value = getattr(stage, name)
    return "-" if value is None else format_size(value)


def stage_table(report: RunReport) -> Table:
    headers = ["case", "stage", "wall", "device time", *STAGE_FIELDS]
    rows = [[c.case_id, s.name, format_duration(s.wall_s), format_duration(s.device_s),
             *(stage_value(s, f) for f in STAGE_FIELDS)] for c in report.cases for s in c.stages]
    return headers, rows
