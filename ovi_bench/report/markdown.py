"""report.md: the run, its summary, cases, verdicts (failures first), metrics and stages, as tables."""

from __future__ import annotations

import re

from tabulate import tabulate

from ovi_bench.records import RunReport
from ovi_bench.report.tables import (
    Table,
    case_table,
    metric_table,
    run_table,
    stage_table,
    summary_table,
    verdict_table,
)

TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _table(table: Table) -> str:
    headers, rows = table
    if not rows:
        return "_none_"
    # Markdown renders raw HTML: neutralize tag openings (a plain "<=" stays readable), one line per row.
    cleaned = [[TAG_START.sub("&lt;", cell).replace("|", "\\|").replace("\n", " ") for cell in row]
               for row in rows]
    return tabulate(cleaned, headers=headers, tablefmt="github")


def render_markdown(report: RunReport) -> str:
    verdict = "PASS" if report.exit_status == 0 else "FAIL"
    sections = [
        f"# ovi-bench run {TAG_START.sub('&lt;', report.run_id)}: {verdict}",
        _table(run_table(report)),
        "## Summary", _table(summary_table(report)),
        "## Cases", _table(case_table(report)),
        "## Verdicts", _table(verdict_table(report)),
        "## Metrics", _table(metric_table(report)),
        "## Memory and time by stage", _table(stage_table(report)),
    ]
    return "\n\n".join(sections) + "\n"
