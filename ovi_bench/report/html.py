"""report.html: one self-contained page (no script, no network). The verdicts first (per suite, then every
check that did not simply pass), then a section per suite with its charts (report/charts.py), its cases and
the metrics its checks read; then stages, the run's provenance, and every check and every metric in
collapsed <details>. Tables wrap long cells to the page width; every string from the run is escaped."""

from __future__ import annotations

import re
from html import escape

from ovi_bench.records import RunReport
from ovi_bench.report.charts import Chart, suite_charts
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
    verdict_table,
)

STATUS_CLASSES = {"pass", "fail", "error", "regression", "improved", "changed", "no_baseline", "skipped",
                  "ok", "oom", "crash", "timeout"}

WRAP_AFTER = re.compile(r"(?<=[,\[])(?=\S)|(?<=\.)(?=[A-Za-z])")

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 17px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-size: 14px;
         vertical-align: middle; } .badge.pass { background: #1a7f37; } .badge.fail { background: #cf222e; }
.box { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #eaeef2; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #f6f8fa; font-weight: 600; } tr:last-child td { border-bottom: none; }
td { font-variant-numeric: tabular-nums; }
td.pass, td.ok, td.improved { color: #1a7f37; } td.no_baseline, td.skipped { color: #6e7781; }
td.changed { color: #9a6700; }
td.fail, td.error, td.regression, td.oom, td.crash, td.timeout { color: #cf222e; font-weight: 600; }
figure.chart { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 0 0 16px;
               padding: 12px; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
figcaption { font-weight: 600; margin-bottom: 6px; }
details { margin: 12px 0; } summary { cursor: pointer; font-weight: 600; margin-bottom: 8px; }
p.empty { color: #6e7781; font-style: italic; }
"""


def cell_text(text: str) -> str:
    """Escaped, with a break opportunity after ',', '[' and a '.' before a letter, so that case ids and
    metric names wrap."""
    return WRAP_AFTER.sub("<wbr>", escape(text))


def html_table(table: Table, table_id: str) -> str:
    headers, rows = table
    if not rows:
        return f'<p class="empty" id="{escape(table_id)}">none</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{cell}">{escape(cell)}</td>' if cell in STATUS_CLASSES
                         else f"<td>{cell_text(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="box"><table id="{escape(table_id)}"><thead><tr>{head}</tr></thead>' \
           f"<tbody>{body}</tbody></table></div>"


def html_chart(chart: Chart) -> str:
    # matplotlib escapes the text it writes into the SVG (case ids, backend names)
    return f'<figure class="chart" id="{escape(chart.chart_id)}"><figcaption>{escape(chart.title)}' \
           f"</figcaption>{chart.svg}</figure>"


def to_read_table(report: RunReport) -> Table:
    """Errored cases and every check that did not simply pass, each with its message in full."""
    rows = [[c.case_id, "-", "status", "error", error_line(c)] for c in errored_cases(report)]
    headers, verdict_rows = verdict_table(notable_verdicts(report))
    return headers, rows + verdict_rows


def suite_section(report: RunReport, index: int, suite: str) -> str:
    cases = [c for c in report.cases if c.suite == suite]
    headers, rows = case_table(report)
    suite_cases = [row for row in rows if row[1] == suite]
    charts = "".join(html_chart(c) for c in suite_charts(report, suite)) or '<p class="empty">no chart</p>'
    return (f'<section class="suite" id="suite-{index}"><h2>{escape(suite)} ({len(cases)} case(s))</h2>'
            f"{charts}<h3>Cases</h3>{html_table((headers, suite_cases), f'table-cases-{index}')}"
            f"<h3>Metrics read by a check</h3>"
            f"{html_table(metric_table(report, suite=suite, checked_only=True), f'table-metrics-{index}')}"
            f"</section>")


def section(title: str, content: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{content}</section>"


def details(summary: str, content: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{content}</details>"


def render_html(report: RunReport) -> str:
    verdict = "pass" if report.exit_status == 0 else "fail"
    n_metrics = sum(len(c.metrics) for c in report.cases)
    checks = html_table(verdict_table(report.verdicts), "table-checks")
    body = [
        f'<p id="summary">{escape(summary_line(report))}</p>',
        section("Verdicts by suite", html_table(suite_table(report), "table-suites")
                + "<h3>Checks to read</h3>" + html_table(to_read_table(report), "table-to-read")),
        *(suite_section(report, i, suite) for i, suite in enumerate(report.suites)),
        section("Memory and time by stage", html_table(stage_table(report), "table-stages")),
        section("Run", html_table(run_table(report), "table-run")
                + details(f"All {len(report.verdicts)} checks", checks)
                + details(f"All {n_metrics} metrics", html_table(metric_table(report), "table-metrics"))),
    ]
    title = f"ovi-bench run {report.run_id}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>"
            f'<body><main><h1>{escape(title)} <span class="badge {verdict}">{verdict.upper()}</span></h1>'
            f"{''.join(body)}</main></body></html>\n")
