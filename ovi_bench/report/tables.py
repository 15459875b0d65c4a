"""The tables every human-readable format shows, as (headers, rows of strings): one source for markdown,
HTML and the terminal, so all say the same thing in the same words. Long values are clipped here."""

from __future__ import annotations

from ovi_bench.records import OUTCOMES, CaseResult, RunReport, StageRecord, Verdict, render_metric
from ovi_bench.units import format_duration, format_size

Table = tuple[list[str], list[list[str]]]

STAGE_FIELDS = ("alloc_peak", "reserved_peak", "alloc_end", "device_used_peak", "host_rss_peak")
CELL_WIDTH = 60  # characters a value may take in a table before it is clipped
# Verdicts are listed in this order: what failed, then what has nothing to compare with or cannot be given,
# then what changed (another value than the baseline's, not a failure), then what improved.
VERDICT_ORDER = ("error", "fail", "regression", "no_baseline", "unsupported", "changed", "improved", "pass")


def clip(text: str, width: int = CELL_WIDTH) -> str:
    """`text` on one line, at most `width` characters (an ellipsis marks what was cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def case_label(case_id: str, suite: str) -> str:
    """The case id without its suite's name, for places that already say the suite."""
    return case_id[len(suite):] if case_id.startswith(suite + "[") else case_id


def stage_names(case: CaseResult) -> list[str]:
    """Its stages' names, a stage that ran more than once named `<stage>#2`, `#3`... after the first time."""
    seen: dict[str, int] = {}
    names = []
    for stage in case.stages:
        seen[stage.name] = seen.get(stage.name, 0) + 1
        names.append(stage.name if seen[stage.name] == 1 else f"{stage.name}#{seen[stage.name]}")
    return names


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
                     f"run {provenance.get('run_id') or '-'}, "
                     f"commit {(provenance.get('git_commit') or '-')[:10]}, "
                     f"{provenance.get('date') or 'no date'}"])
    return ["field", "value"], rows


def summary_line(report: RunReport) -> str:
    """'7 cases: 6 pass, 1 fail, 0 error, 0 skipped; checks: 54 pass, 1 regression'."""
    counts = report.summary
    checks = ", ".join(f"{counts[k]} {k.removeprefix('verdict.')}" for k in counts
                       if k.startswith("verdict.") and counts[k])
    return (f"{counts['cases']} case(s): {counts['pass']} pass, {counts['fail']} fail, "
            f"{counts['error']} error, {counts['skipped']} skipped, {counts['unsupported']} unsupported; "
            f"checks: {checks or 'none'}")


def suite_table(report: RunReport) -> Table:
    """Per suite: its cases' outcomes and its checks' notable statuses."""
    headers = ["suite", "cases", *OUTCOMES, "checks failed", "improved", "no baseline"]
    rows = []
    for suite in report.suites:
        ids = {c.case_id for c in report.cases if c.suite == suite}
        outcomes = [report.outcomes[i] for i in ids]
        verdicts = [v for v in report.verdicts if v.case_id in ids]
        rows.append([suite, str(len(ids)), *(str(outcomes.count(o)) for o in OUTCOMES),
                     str(sum(v.failed for v in verdicts)),
                     *(str(sum(v.status == s for v in verdicts)) for s in ("improved", "no_baseline"))])
    return headers, rows


def sorted_verdicts(verdicts: list[Verdict]) -> list[Verdict]:
    """In VERDICT_ORDER, each status in run order."""
    return sorted(verdicts, key=lambda v: VERDICT_ORDER.index(v.status))


def notable_verdicts(report: RunReport) -> list[Verdict]:
    """Every verdict that is not a plain pass: failures first, then no_baseline, then improvements."""
    return [v for v in sorted_verdicts(report.verdicts) if v.status != "pass"]


def errored_cases(report: RunReport) -> list[CaseResult]:
    return [c for c in report.cases if report.outcomes[c.case_id] == "error"]


def cases_not_run(report: RunReport) -> list[CaseResult]:
    """Skipped and unsupported cases: never a pass, each shown with its reason."""
    return [c for c in report.cases if report.outcomes[c.case_id] in ("skipped", "unsupported")]


def error_line(case: CaseResult) -> str:
    first_line = next(iter((case.error or "").splitlines()), "")
    return f"{case.status} in {case.stage or '-'}: {first_line}"


def case_table(report: RunReport) -> Table:
    headers = ["case", "suite", "status", "outcome", "stage", "duration", "error"]
    rows = [[c.case_id, c.suite, c.status, report.outcomes[c.case_id], c.stage or "-",
             format_duration(c.duration_s), clip(c.error or "")] for c in report.cases]
    return headers, rows


def _baseline_of(verdicts: list[Verdict], metric: str) -> str:
    for v in verdicts:
        if v.metric == metric and v.rule in ("relative", "time") and v.reference is not None:
            return clip(render_metric(metric, v.reference))
    return "-"


def metric_table(report: RunReport, *, suite: str | None = None, checked_only: bool = False) -> Table:
    """Every metric of every case (of `suite`: cases named without it); `checked_only`: those a check read."""
    headers = ["case", "metric", "value", "baseline", "verdicts"]
    rows = []
    for case in report.cases:
        if suite is not None and case.suite != suite:
            continue
        verdicts = report.verdicts_for(case.case_id)
        for metric, value in case.metrics.items():
            judged = ", ".join(f"{v.rule}: {v.status}" for v in verdicts if v.metric == metric)
            if checked_only and not judged:
                continue
            name = case_label(case.case_id, suite) if suite else case.case_id
            rows.append([name, metric, clip(render_metric(metric, value)), _baseline_of(verdicts, metric),
                         judged or "-"])
    return headers, rows


def verdict_table(verdicts: list[Verdict]) -> Table:
    headers = ["case", "metric", "rule", "status", "message"]
    return headers, [[v.case_id, v.metric, v.rule, v.status, v.message] for v in sorted_verdicts(verdicts)]


def stage_value(stage: StageRecord, name: str) -> str:
    value = getattr(stage, name)
    return "-" if value is None else format_size(value)


def stage_table(report: RunReport) -> Table:
    """Time and memory per stage; a memory view no stage recorded (the allocator's, on a CPU) is left out."""
    stages = [(c, s) for c in report.cases for s in c.stages]
    fields = [f for f in STAGE_FIELDS if any(getattr(s, f) is not None for _, s in stages)]
    headers = ["case", "stage", "wall", "device time", *fields]
    rows = [[c.case_id, s.name, format_duration(s.wall_s), format_duration(s.device_s),
             *(stage_value(s, f) for f in fields)] for c, s in stages]
    return headers, rows
