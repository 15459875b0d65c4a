"""report.md: the verdicts first (per suite, then every check that did not simply pass), then the metrics a
check read, the cases, the stages and the run's provenance. The full metric dump stays in report.json."""

from __future__ import annotations

import re

from tabulate import tabulate

from ovi_bench.records import RunReport
from ovi_bench.report.tables import (
    Table,
    case_table,
    error_line,
    errored_cases,
    metric_table,
    notable_verdicts,
    run_table,
    stage_table,
    suite_table,
    summary_line,
)

TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def markdown_text(text: str) -> str:
    """Markdown renders raw HTML: neutralize tag openings (a plain "<=" stays readable)."""
    return TAG_START.sub("&lt;", text)


def markdown_table(table: Table) -> str:
    headers, rows = table
    if not rows:
        return "_none_"
    cleaned = [[markdown_text(cell).replace("|", "\\|").replace("\n", " ") for cell in row] for row in rows]
    return tabulate(cleaned, headers=headers, tablefmt="github")


def _checks_to_read(report: RunReport) -> str:
    """One bullet per errored case and per check that failed, has no baseline or improved, message in full."""
    lines = [f"- **error** `{markdown_text(c.case_id)}`: {markdown_text(error_line(c))}"
             for c in errored_cases(report)]
    lines += [f"- **{v.status}** `{markdown_text(v.case_id)}`: {markdown_text(v.message)}"
              for v in notable_verdicts(report)]
    return "\n".join(lines) or "_every check passed_"


def render_markdown(report: RunReport) -> str:
    verdict = "PASS" if report.exit_status == 0 else "FAIL"
    n_metrics = sum(len(c.metrics) for c in report.cases)
    sections = [
        f"# ovi-bench run {markdown_text(report.run_id)}: {verdict}",
        markdown_text(summary_line(report)),
        "## Verdicts by suite", markdown_table(suite_table(report)),
        "## Checks to read", _checks_to_read(report),
        "## Metrics read by a check",
        *(f"### {markdown_text(suite)}\n\n"
          + markdown_table(metric_table(report, suite=suite, checked_only=True)) for suite in report.suites),
        f"All {n_metrics} metrics of the {len(report.cases)} cases are in report.json.",
        "## Cases", markdown_table(case_table(report)),
        "## Memory and time by stage", markdown_table(stage_table(report)),
        "## Run", markdown_table(run_table(report)),
    ]
    return "\n\n".join(sections) + "\n"
