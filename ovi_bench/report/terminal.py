"""What a run prints when it ends: per suite the cases' outcomes, then every errored case, failed check,
missing baseline, improvement, skipped or unsupported case (with its reason) and run-level problem, one line
each, then the overall verdict and where the reports are."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from ovi_bench.records import RunReport
from ovi_bench.report.tables import (
    cases_not_run,
    error_line,
    errored_cases,
    notable_verdicts,
    suite_table,
    summary_line,
)

LABELS = {"error": "ERROR", "fail": "FAIL", "regression": "REGRESSION", "no_baseline": "NO BASELINE",
          "improved": "IMPROVED", "unsupported": "UNSUPPORTED", "changed": "CHANGED"}


def render_terminal(report: RunReport, run_dir: Path) -> str:
    headers, rows = suite_table(report)
    notable = [f"ERROR {c.case_id}: {error_line(c)}" for c in errored_cases(report)]
    notable += [f"{LABELS[v.status]} {v.case_id}: {v.message}" for v in notable_verdicts(report)]
    notable += [f"{c.status.upper()} {c.case_id}: {c.error}" for c in cases_not_run(report)]
    notable += [f"FAIL {problem}" for problem in report.problems]
    verdict = "PASS" if report.exit_status == 0 else "FAIL"
    ending = (f"{verdict}: {summary_line(report)}\n"
              f"report: {Path(run_dir) / 'report.html'} (also report.md, report.json, junit.xml)")
    blocks = [tabulate(rows, headers=headers), "\n".join(notable), ending]
    return "\n\n".join(block for block in blocks if block)
