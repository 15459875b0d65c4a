"""The charts of report.html: per suite, what its cases show, drawn with matplotlib as inline SVG.

Attention suites: the median time per attention shape and backend (log axis, whiskers min to max).
Other suites: the memory peak per stage and case, on an axis that starts near the smallest peak so that
differences of a few percent are visible, every bar labelled with its value; and the step times (or, without
per-step timings, each stage's wall time). output_fidelity: the divergence from the reference per step.
Any suite judged against a baseline: now / baseline per metric.

matplotlib's SVG backend is used through `Figure` (no pyplot, no global backend); text stays <text> in the
page's own font stack, so nothing is fetched, and ids and metadata are fixed, so the same run draws the same
SVG.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ovi_bench.records import CaseResult, RunReport, Samples, numeric, render_metric
from ovi_bench.report.tables import case_label, stage_names
from ovi_bench.units import format_duration, format_size

RC = {"svg.fonttype": "none", "svg.hashsalt": "ovi-bench", "font.family": "sans-serif",
      "font.sans-serif": ["DejaVu Sans"], "font.size": 9, "text.parse_math": False,
      "axes.spines.top": False, "axes.spines.right": False}
STATUS_COLORS = {"pass": "#4c78a8", "improved": "#54a24b", "regression": "#e45756", "fail": "#e45756",
                 "error": "#e45756", "no_baseline": "#bab0ac"}
MiB, GiB = 2**20, 2**30
WIDTH_IN, BAR_IN = 9.0, 0.22  # figure width, height per bar (inches)
ATTENTION_PREFIX = "time.attention."


@dataclass
class Chart:
    chart_id: str
    title: str
    svg: str

    def __post_init__(self) -> None:
        # Several charts share one page: scope matplotlib's element ids (and the references to them) by chart.
        for start in ('id="', 'url(#', 'href="#'):
            self.svg = self.svg.replace(start, f"{start}{self.chart_id}-")


@dataclass
class Bar:
    category: str  # the y-axis label (a stage, an attention shape, a metric)
    series: str  # the legend entry (a case, a backend)
    value: float
    low: float | None = None  # whisker ends (a Samples' min and max)
    high: float | None = None
    metric: str = ""  # the metric the value is of, if it is one


def suite_charts(report: RunReport, suite: str) -> list[Chart]:
    cases = [c for c in report.cases if c.suite == suite]
    name = suite.replace(" ", "_")
    charts: list[Chart | None]
    if any(m.startswith(ATTENTION_PREFIX) for c in cases for m in c.metrics):
        charts = [attention_chart(name, cases)]
    else:
        charts = [memory_chart(name, cases), time_chart(name, cases)]
    charts.append(divergence_chart(name, cases))
    charts.append(baseline_chart(name, report, {c.case_id for c in cases}))
    return [c for c in charts if c is not None]


def memory_chart(name: str, cases: list[CaseResult]) -> Chart | None:
    """Per stage, one bar per case: the first memory view the run recorded (allocator first)."""
    stages = [s for c in cases for s in c.stages]
    field = next((f for f in ("alloc_peak", "device_used_peak", "reserved_peak", "host_rss_peak")
                  if any(getattr(s, f) is not None for s in stages)), None)
    if field is None:
        return None
    # Plotted in MiB (GiB above 4 GiB) so that the ticks fall on round numbers of the unit shown.
    unit = float(GiB if max(getattr(s, field) or 0 for s in stages) >= 4 * GiB else MiB)
    bars = [Bar(stage_name, case_label(c.case_id, c.suite), getattr(s, field) / unit) for c in cases
            for s, stage_name in zip(c.stages, stage_names(c)) if getattr(s, field) is not None]
    values = [b.value for b in bars]
    low, high = min(values), max(values)
    start = max(0.0, low - 0.5 * max(high - low, 0.02 * high))
    title = f"Memory peak by stage ({field}; the axis starts at {format_size(start * unit)})"
    svg = draw(bars, lambda value: format_size(value * unit), start=start)
    return Chart(f"chart-{name}-memory", title, svg)


def time_chart(name: str, cases: list[CaseResult]) -> Chart | None:
    """Per-step timings (time.*step_s) when the cases have them, else each stage's wall time."""
    bars = [_metric_bar(metric, metric, case_label(c.case_id, c.suite), value) for c in cases
            for metric, value in c.metrics.items()
            if metric.startswith("time.") and metric.endswith("step_s") and numeric(value) is not None]
    title, fmt = "Time per step (median, whiskers min to max)", _metric_format(bars)
    if not bars:
        bars = [Bar(stage_name, case_label(c.case_id, c.suite), s.wall_s)
                for c in cases for s, stage_name in zip(c.stages, stage_names(c))]
        title, fmt = "Wall time by stage", format_duration
    bars = _positive(bars)
    if not bars:
        return None
    return Chart(f"chart-{name}-time", title, draw(bars, fmt, log=True))


def divergence_chart(name: str, cases: list[CaseResult]) -> Chart | None:
    """output_fidelity: per case and tower, the relative error against the reference after each step (solid)
    and the allowed multiple of the floor (dashed); a symmetric-log axis, so an exact 0 is drawn too."""
    lines = [(c, tower) for c in cases for tower in ("video", "audio")
             if isinstance(c.metrics.get(f"fidelity.{tower}.step_rel_err"), list)]
    if not lines:
        return None
    palette = matplotlib.colormaps["tab10"]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, 3.2))
        ax = fig.add_subplot()
        for i, (case, tower) in enumerate(lines):
            errors = case.metrics[f"fidelity.{tower}.step_rel_err"]
            allowed = [case.metrics.get("fidelity.floor_multiple", 1.0) * f
                       for f in case.metrics.get(f"fidelity.{tower}.step_floor", [])]
            color = palette(i % palette.N)
            ax.plot(range(len(errors)), errors, color=color, marker="o", markersize=3,
                    label=f"{case_label(case.case_id, case.suite)} {tower}")
            ax.plot(range(len(allowed)), allowed, color=color, linestyle="--", linewidth=0.8)
        ax.set_yscale("symlog", linthresh=1e-7)
        ax.set_xlabel("denoising step")
        ax.set_ylabel("relative L2 error")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.grid(color="#eaeef2")
        out = io.StringIO()
        fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = out.getvalue()
    return Chart(f"chart-{name}-divergence", "Divergence from the reference per step (dashed: allowed, the "
                 "declared multiple of the fp32-vs-bf16 floor)", svg[svg.index("<svg"):])


def attention_chart(name: str, cases: list[CaseResult]) -> Chart | None:
    """Per attention shape (kind and query x key tokens), one bar per backend: the median call time."""
    bars = []
    for case in cases:
        backend = str(case.params.get("attention", case_label(case.case_id, case.suite)))
        resolved = case.metrics.get("attention.resolved")
        if resolved and resolved != backend:
            backend = f"{backend} ({resolved})"
        for metric, value in case.metrics.items():
            if not metric.startswith(ATTENTION_PREFIX) or numeric(value) is None:
                continue
            kind = metric.removeprefix(ATTENTION_PREFIX).removesuffix("_s")
            tokens = case.metrics.get(f"attention.{kind}.tokens")
            shape = f"{kind} {'x'.join(map(str, tokens))}" if isinstance(tokens, list) else kind
            bars.append(_metric_bar(metric, shape, backend, value))
    bars = _positive(bars)
    if not bars:
        return None
    title = "Attention time per shape and backend (median, whiskers min to max)"
    return Chart(f"chart-{name}-attention", title, draw(bars, _metric_format(bars), log=True))


def baseline_chart(name: str, report: RunReport, case_ids: set[str]) -> Chart | None:
    """now / baseline for every metric judged against a baseline; the dashed line is 1.0 (unchanged)."""
    bars, colors = [], []
    for v in report.verdicts:
        now, base = numeric(v.observed), numeric(v.reference)
        # `changed`: not compared (a `like` metric differs from the baseline's); a log axis shows positive
        # ratios only
        if v.case_id not in case_ids or v.rule not in ("relative", "time") or v.status == "changed" \
                or not now or not base or now / base <= 0:
            continue
        case = next(c for c in report.cases if c.case_id == v.case_id)
        bars.append(Bar(f"{case_label(v.case_id, case.suite)} {v.metric}", "", now / base))
        colors.append(STATUS_COLORS[v.status])
    if not bars:
        return None
    title = "Now / baseline per checked metric (dashed line: unchanged; green improved, red regression)"
    svg = draw(bars, "{:.3g}x".format, log=True, reference=1.0, colors=colors)
    return Chart(f"chart-{name}-baseline", title, svg)


def _metric_bar(metric: str, category: str, series: str, value: object) -> Bar:
    median = numeric(value)
    assert median is not None
    if isinstance(value, Samples):
        return Bar(category, series, median, value.min, value.max, metric)
    return Bar(category, series, median, metric=metric)


def _positive(bars: list[Bar]) -> list[Bar]:
    """What a log axis can show: a time of 0 (a stage that did nothing) has no bar."""
    return [b for b in bars if b.value > 0]


def _metric_format(bars: list[Bar]) -> Callable[[float], str]:
    """Values of metrics are rendered as everywhere else: render_metric, by the (first) metric's name."""
    metric = next((b.metric for b in bars if b.metric), "")
    return lambda value: render_metric(metric, value)


def draw(bars: list[Bar], fmt: Callable[[float], str], *, start: float = 0.0, log: bool = False,
         reference: float | None = None, colors: list[str] | None = None) -> str:
    """Horizontal bars grouped by category (top to bottom in first-seen order), one colour per series with a
    legend when there are several, each bar labelled with its value; `start` is where the axis begins."""
    categories = list(dict.fromkeys(b.category for b in bars))
    series = list(dict.fromkeys(b.series for b in bars))
    palette = matplotlib.colormaps["tab10" if len(series) <= 10 else "tab20"]
    height = 1 / (len(series) + 0.6)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, 0.9 + BAR_IN * len(bars) + 0.12 * len(categories)))
        ax = fig.add_subplot()
        labelled: set[str] = set()
        for i, bar in enumerate(bars):
            y = categories.index(bar.category) + (series.index(bar.series) - (len(series) - 1) / 2) * height
            color = colors[i] if colors else palette(series.index(bar.series) % palette.N)
            whisker = None
            if bar.low is not None and bar.high is not None:
                whisker = [[bar.value - bar.low], [bar.high - bar.value]]
            label = bar.series if colors is None and bar.series not in labelled else None
            labelled.add(bar.series)
            drawn = ax.barh(y, bar.value - start, left=start, height=height * 0.9, color=color, xerr=whisker,
                            error_kw={"elinewidth": 0.8, "capsize": 2}, label=label)
            ax.bar_label(drawn, labels=[fmt(bar.value)], padding=3, fontsize=8)
        ax.set_yticks(range(len(categories)), categories)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
            values = [b.low or b.value for b in bars]
            ax.set_xlim(min(values) / 1.5, max(b.high or b.value for b in bars) * 6)
        else:
            ax.set_xlim(start, start + (max(b.value for b in bars) - start) * 1.25)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt(x)))
        ax.xaxis.set_minor_formatter(NullFormatter())  # a log axis labels minor ticks in TeX otherwise
        if reference is not None:
            ax.axvline(reference, color="#6e7781", linestyle="--", linewidth=1)
        if colors is None and len(series) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.grid(axis="x", color="#eaeef2")
        ax.set_axisbelow(True)
        out = io.StringIO()
        fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = out.getvalue()
    return svg[svg.index("<svg"):]  # the XML declaration and doctype do not belong inside HTML
