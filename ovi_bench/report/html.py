"""report.html: one self-contained page (no script, no network): the tables of report.md plus inline SVG
charts drawn here: memory by stage per case, speed per case/backend, and now vs baseline. Every string from
the run is escaped."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from ovi_bench.records import RunReport, Samples, numeric, render_metric
from ovi_bench.report.tables import (
    Table,
    case_table,
    metric_table,
    run_table,
    stage_table,
    suite_table,
    verdict_table,
)
from ovi_bench.units import format_size

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")
STATUS_COLORS = {"pass": "#4c78a8", "improved": "#54a24b", "regression": "#e45756", "fail": "#e45756",
                 "error": "#e45756", "no_baseline": "#bab0ac"}
STATUS_CLASSES = {"pass", "fail", "error", "regression", "improved", "no_baseline", "skipped", "ok", "oom",
                  "crash", "timeout"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 16px; } h2 { font-size: 17px; margin: 28px 0 10px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-size: 14px;
         vertical-align: middle; } .badge.pass { background: #1a7f37; } .badge.fail { background: #cf222e; }
.scroll { overflow-x: auto; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; } tr:last-child td { border-bottom: none; }
td { font-variant-numeric: tabular-nums; }
td.pass, td.ok, td.improved { color: #1a7f37; } td.no_baseline, td.skipped { color: #6e7781; }
td.fail, td.error, td.regression, td.oom, td.crash, td.timeout { color: #cf222e; font-weight: 600; }
figure { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 0 0 16px; padding: 12px; }
figcaption { font-weight: 600; margin-bottom: 6px; } svg text { font: 12px system-ui, sans-serif; }
svg text.group { font-weight: 600; }
p.empty { color: #6e7781; font-style: italic; }
"""


@dataclass
class Bar:
    label: str
    value: float
    text: str  # the value as shown next to the bar
    color: str
    low: float | None = None  # optional whisker (e.g. min and max of samples)
    high: float | None = None
    group: str = ""  # consecutive bars of one group sit under a heading row (e.g. the case id)


LABEL_W, PLOT_W, VALUE_W, ROW_H, TOP = 220, 460, 220, 24, 28


def _starts_group(bars: list[Bar], i: int) -> bool:
    return bool(bars[i].group) and (i == 0 or bars[i - 1].group != bars[i].group)


def bar_chart(chart_id: str, title: str, bars: list[Bar], *, legend: dict[str, str] | None = None,
              reference: float | None = None) -> str:
    """A horizontal bar chart as a <figure> with inline SVG; `reference` draws a dashed vertical line."""
    groups = sum(1 for i in range(len(bars)) if _starts_group(bars, i))
    if not bars:
        return f'<figure id="{escape(chart_id)}"><figcaption>{escape(title)}</figcaption>' \
               f'<p class="empty">no data in this run</p></figure>'
    top = max([b.high or b.value for b in bars] + [reference or 0.0]) * 1.05 or 1.0

    def x(value: float) -> float:
        return LABEL_W + PLOT_W * max(value, 0.0) / top

    width = LABEL_W + PLOT_W + VALUE_W
    # Legend entries sized to their labels (about 7 px a character), wrapping onto further rows.
    legend_items, lx, ly = [], 8, 6
    for name, color in (legend or {}).items():
        item_w = 30 + 7 * len(name)
        if lx + item_w > width and lx > 8:
            lx, ly = 8, ly + 18
        legend_items.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{color}"/>'
                            f'<text x="{lx + 16}" y="{ly + 10}">{escape(name)}</text>')
        lx += item_w
    shift = ly - 6  # extra legend rows push the bars down
    height = TOP + shift + ROW_H * (len(bars) + groups) + 8
    size = f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" role="img" {size}>'
    parts = [svg, *legend_items]
    y = TOP + shift - ROW_H
    for i, bar in enumerate(bars):
        y += ROW_H
        if _starts_group(bars, i):
            parts.append(f'<text class="group" x="8" y="{y + 16}">{escape(bar.group)}</text>')
            y += ROW_H
        short = bar.label if len(bar.label) <= 32 else bar.label[:29] + "..."
        parts.append(f'<g class="bar"><title>{escape(bar.label)}: {escape(bar.text)}</title>'
                     f'<text x="{LABEL_W - 6}" y="{y + 15}" text-anchor="end">{escape(short)}</text>'
                     f'<rect x="{LABEL_W}" y="{y + 3}" width="{x(bar.value) - LABEL_W:.1f}" '
                     f'height="{ROW_H - 6}" fill="{bar.color}"/>')
        if bar.low is not None and bar.high is not None:
            parts.append(f'<line x1="{x(bar.low):.1f}" x2="{x(bar.high):.1f}" y1="{y + ROW_H / 2}" '
                         f'y2="{y + ROW_H / 2}" stroke="#1f2328" stroke-width="1.5"/>')
        end = x(max(bar.value, bar.high or 0.0))
        parts.append(f'<text x="{end + 6:.1f}" y="{y + 15}">{escape(bar.text)}</text></g>')
    if reference is not None:
        at = f"{x(reference):.1f}"
        parts.append(f'<line class="reference" x1="{at}" x2="{at}" y1="{TOP - 4}" '
                     f'y2="{height - 4}" stroke="#6e7781" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return (f'<figure id="{escape(chart_id)}"><figcaption>{escape(title)}</figcaption>'
            f'<div class="scroll">{"".join(parts)}</div></figure>')


def memory_chart(report: RunReport) -> str:
    """Per case, one bar per stage, with the first memory view the run recorded (allocator first)."""
    stages = [(c, s) for c in report.cases for s in c.stages]
    field = next((f for f in ("alloc_peak", "device_used_peak", "host_rss_peak")
                  if any(getattr(s, f) is not None for _, s in stages)), None)
    if field is None:
        return bar_chart("chart-memory", "Memory by stage", [])
    names = list(dict.fromkeys(s.name for _, s in stages))
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    bars = [Bar(s.name, getattr(s, field), format_size(getattr(s, field)), colors[s.name], group=c.case_id)
            for c, s in stages if getattr(s, field) is not None]
    return bar_chart("chart-memory", f"Memory by stage per case ({field})", bars, legend=colors)


def speed_charts(report: RunReport) -> str:
    """One chart per per-step timing (time.*step_s): the median per case, labelled by the case's attention
    backend when it has one, whiskers from min to max. Whole-stage times are in the stage table."""
    metrics = list(dict.fromkeys(m for c in report.cases for m in c.metrics
                                 if m.startswith("time.") and m.endswith("step_s")))
    charts = []
    for metric in metrics:
        bars = []
        for case in report.cases:
            value = case.metrics.get(metric)
            median = numeric(value)
            if median is None:
                continue
            label = str(case.params.get("attention", metric))
            low, high = (value.min, value.max) if isinstance(value, Samples) else (None, None)
            bars.append(Bar(label, median, render_metric(metric, value), PALETTE[0], low, high, case.case_id))
        title = f"Speed: {metric} by case and backend (median, min-max)"
        charts.append(bar_chart(f"chart-speed-{metric}", title, bars))
    return "".join(charts) or bar_chart("chart-speed", "Speed by case and backend", [])


def baseline_chart(report: RunReport) -> str:
    """now / baseline for every metric judged against a baseline; the dashed line is 1.0 (unchanged)."""
    bars = []
    for v in report.verdicts:
        now, base = numeric(v.observed), numeric(v.reference)
        if v.rule not in ("relative", "time") or now is None or not base:
            continue
        ratio = now / base
        text = f"{ratio:.3f}x ({render_metric(v.metric, now)} vs {render_metric(v.metric, base)})"
        bars.append(Bar(v.metric, ratio, text, STATUS_COLORS[v.status], group=v.case_id))
    legend = {s: STATUS_COLORS[s] for s in ("pass", "improved", "regression")}
    return bar_chart("chart-baseline", "Now vs baseline (ratio, dashed line 1.0 = unchanged)", bars,
                     legend=legend, reference=1.0)


def html_table(table: Table, table_id: str) -> str:
    headers, rows = table
    if not rows:
        return f'<p class="empty" id="{escape(table_id)}">none</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{cell}">{escape(cell)}</td>' if cell in STATUS_CLASSES
                         else f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table id="{escape(table_id)}"><thead><tr>{head}</tr></thead>' \
           f"<tbody>{body}</tbody></table></div>"


def render_html(report: RunReport) -> str:
    verdict = "pass" if report.exit_status == 0 else "fail"
    sections = [
        ("Run", html_table(run_table(report), "table-run")),
        ("Verdicts by suite", html_table(suite_table(report), "table-suites")),
        ("Charts", memory_chart(report) + speed_charts(report) + baseline_chart(report)),
        ("Cases", html_table(case_table(report), "table-cases")),
        ("Verdicts", html_table(verdict_table(report.verdicts), "table-verdicts")),
        ("Metrics", html_table(metric_table(report), "table-metrics")),
        ("Memory and time by stage", html_table(stage_table(report), "table-stages")),
    ]
    body = "".join(f"<section><h2>{escape(title)}</h2>{content}</section>" for title, content in sections)
    title = f"ovi-bench run {report.run_id}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>"
            f'<body><main><h1>{escape(title)} <span class="badge {verdict}">{verdict.upper()}</span></h1>'
            f"{body}</main></body></html>\n")

