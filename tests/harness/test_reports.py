"""Report formats: json round-trip, markdown tables, junit structure, HTML escaping and charts, errors."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import pytest

from ovi_bench.records import (
    CaseResult,
    Environment,
    OutputError,
    RunReport,
    Samples,
    SchemaError,
    StageRecord,
    Verdict,
)
from ovi_bench.report import load_report, write_all
from ovi_bench.report.html import render_html
from ovi_bench.report.markdown import render_markdown
from ovi_bench.report.tables import CELL_WIDTH, metric_table

GiB = 2**30
EVIL_ID = '<script>alert("x")</script>&case'


def make_report() -> RunReport:
    """Four cases: a pass, a regression, an expected oom, an unexpected crash (plus one
    with markup in its id)."""
    def stages(scale: float) -> list[StageRecord]:
        return [StageRecord("encode_text", 0.5, 0.4, int(2 * GiB * scale), int(3 * GiB * scale), GiB, None,
                            GiB),
                StageRecord("denoise", 7.0, 6.9, int(30 * GiB * scale), int(32 * GiB * scale), GiB, None,
                            GiB),
                StageRecord("decode", 2.0, 1.9, int(20 * GiB * scale), int(22 * GiB * scale), GiB, None, GiB)]

    cases = [
        CaseResult("960x960_10s-all_gpu-sdpa", "variant_latents",
                   {"variant": "960x960_10s", "policy": "all_gpu", "attention": "sdpa"}, "ok",
                   stages=stages(1.0), started_at="2026-11-23T10:00:00+00:00", duration_s=12.5,
                   metrics={"video_latent_shape": [48, 61, 60, 60], "peak.total.alloc_bytes": 30 * GiB,
                            "time.denoise.step_s": Samples([7.70, 7.75, 7.80])}),
        CaseResult("960x960_10s-all_gpu-flash", "variant_latents",
                   {"variant": "960x960_10s", "policy": "all_gpu", "attention": "flash"}, "ok",
                   stages=stages(1.2), duration_s=11.0,
                   metrics={"video_latent_shape": [48, 61, 60, 60], "peak.total.alloc_bytes": 36 * GiB,
                            "time.denoise.step_s": Samples([9.1, 9.2, 9.3])}),
        CaseResult("960x960_10s-keep_resident", "variant_latents",
                   {"variant": "960x960_10s", "policy": "keep_resident"}, "oom", stage="decode",
                   error="CUDA out of memory", stages=stages(1.5)[:2], duration_s=20.0),
        CaseResult(EVIL_ID, "variant_latents", {"variant": "720x720_5s", "policy": "all_gpu"}, "crash",
                   stage="denoise", error="worker exited with signal 11", duration_s=3.0),
    ]
    verdicts = [
        Verdict(cases[0].case_id, "video_latent_shape", "exact", "pass", [48, 61, 60, 60], [48, 61, 60, 60],
                "video_latent_shape exact: equal"),
        Verdict(cases[0].case_id, "time.denoise.step_s", "time", "pass",
                cases[0].metrics["time.denoise.step_s"],
                Samples([7.6, 7.7, 7.8]), "time.denoise.step_s time: within noise"),
        Verdict(cases[1].case_id, "peak.total.alloc_bytes", "relative", "regression", 36 * GiB, 30 * GiB,
                "peak.total.alloc_bytes relative: grew beyond allowed"),
        Verdict(cases[2].case_id, "status", "expect_status", "pass", "oom", "oom",
                "status expect_status: status oom, expected oom"),
    ]
    env = Environment(git_commit="0123456789abcdef", torch="2.11.0", cuda="13.0", device_name="NVIDIA H100",
                      device_arch="sm_90", device_total_bytes=80 * 10**9, python="3.11", date="2026-11-23")
    return RunReport("run-1", ["variant_latents"], "reference", "synthetic:tiny", "h100-80gb", env, cases,
                     verdicts, baselines={"variant_latents": {"run_id": "run-0", "git_commit": "fedcba"}})


def test_outcomes_drive_exit_status() -> None:
    report = make_report()
    assert report.outcomes == {"960x960_10s-all_gpu-sdpa": "pass", "960x960_10s-all_gpu-flash": "fail",
                               "960x960_10s-keep_resident": "pass", EVIL_ID: "error"}
    assert report.exit_status == 1


def test_json_round_trips_through_run_dir(tmp_path: Path) -> None:
    report = make_report()
    written = write_all(report, tmp_path / "run")
    assert sorted(written) == ["junit.xml", "report.html", "report.json", "report.md"]
    assert load_report(tmp_path / "run").to_dict() == report.to_dict()
    assert load_report(written["report.json"]).to_dict() == report.to_dict()
    data = json.loads(written["report.json"].read_text())
    assert data["schema_version"] == 2 and data["exit_status"] == 1
    assert data["cases"][0]["metrics"]["time.denoise.step_s"]["median"] == 7.75


def test_load_report_rejects_other_schema(tmp_path: Path) -> None:
    data = make_report().to_dict()
    data["schema_version"] = 3
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="schema_version 3 was written by a newer ovi-bench"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{truncated")
    with pytest.raises(SchemaError, match="cannot read run report"):
        load_report(tmp_path / "report.json")


def test_junit_one_testcase_per_case(tmp_path: Path) -> None:
    report = make_report()
    write_all(report, tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    testcases = root.findall("./testsuite/testcase")
    assert [t.get("name") for t in testcases] == [c.case_id for c in report.cases]
    by_name = {t.get("name"): t for t in testcases}
    assert by_name["960x960_10s-all_gpu-sdpa"].find("failure") is None
    failure = by_name["960x960_10s-all_gpu-flash"].find("failure")
    assert failure is not None and "peak.total.alloc_bytes relative" in failure.get("message", "")
    assert by_name["960x960_10s-keep_resident"].find("error") is None  # the oom was expected
    error = by_name[EVIL_ID].find("error")
    assert error is not None and error.get("type") == "crash" and "denoise" in error.get("message", "")
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"),
                                  suite.get("errors")) == ("4", "1", "1")


def test_markdown_has_the_tables() -> None:
    report = make_report()
    text = render_markdown(report)
    for heading in ("## Verdicts by suite", "## Checks to read", "## Metrics read by a check", "## Cases",
                    "## Memory and time by stage", "## Run"):
        assert heading in text
    assert "| case " in text and "960x960_10s-all_gpu-flash" in text
    assert "regression" in text and "30.00 GiB" in text
    assert "<script>" not in text and "&lt;script>" in text  # markup in a case id stays text


def test_markdown_puts_verdicts_first_and_lists_only_checked_metrics() -> None:
    report = make_report()
    long_value = list(range(200))
    report.cases[0].metrics.update({"engine.placement": long_value, "unchecked.metric": 42})
    text = render_markdown(report)
    # the verdicts (per suite, then what did not simply pass) come before any metric
    assert text.index("## Verdicts by suite") < text.index("## Checks to read") < text.index("## Metrics")
    suite_row = next(line for line in text.splitlines() if line.startswith("| variant_latents "))
    assert [cell.strip() for cell in suite_row.strip("|").split("|")] == \
        ["variant_latents", "4", "2", "1", "1", "0", "0", "1", "0", "0"]
    to_read = text.split("## Checks to read")[1].split("## Metrics")[0]
    assert "**regression** `960x960_10s-all_gpu-flash`: peak.total.alloc_bytes relative" in to_read
    assert "**error**" in to_read and "crash in denoise: worker exited with signal 11" in to_read
    # unchecked metrics stay in report.json; a checked metric's long value would be clipped
    assert "unchecked.metric" not in text and "engine.placement" not in text
    assert "video_latent_shape" in text and "All 8 metrics of the 4 cases are in report.json." in text
    assert max(len(line) for line in text.splitlines() if line.startswith("|")) < 200


def test_tables_clip_long_values() -> None:
    report = make_report()
    report.verdicts.append(Verdict(report.cases[0].case_id, "engine.placement", "exact", "pass",
                                   list(range(200)), None, "placement exact"))
    report.cases[0].metrics["engine.placement"] = list(range(200))
    _, rows = metric_table(report, checked_only=True)
    value = next(row[2] for row in rows if row[1] == "engine.placement")
    assert len(value) == CELL_WIDTH and value.startswith("[0, 1, 2") and value.endswith("…")


def chart(html: str, chart_id: str) -> str:
    return html.split(f'<figure class="chart" id="{chart_id}">')[1].split("</figure>")[0]


def test_html_escapes_everything_and_draws_charts_per_suite() -> None:
    html = render_html(make_report())
    assert "<script>" not in html and "</script>" not in html
    assert escape(EVIL_ID) in html
    section = html.split('<section class="suite" id="suite-0">')[1].split("</section>")[0]
    assert "<h2>variant_latents (4 case(s))</h2>" in section
    memory = chart(section, "chart-variant_latents-memory")
    # every bar is labelled with its value
    assert all(f">{size:.2f} GiB<" in memory for size in (2, 30, 20, 2.4, 36, 24, 3, 45))
    # one distinct colour per case (sdpa, flash, keep_resident), named in the legend
    assert len(set(re.findall(r"fill: (#[0-9a-f]{6})", memory)) - {"#ffffff"}) == 3
    assert "[variant=720x720_5s" not in memory and "960x960_10s-all_gpu-flash" in memory
    step = chart(section, "chart-variant_latents-time")
    assert "Time per step" in step and ">7.75 s<" in step and ">9.2 s<" in step
    assert "mathdefault" not in html and "$" not in html  # every tick label through render_metric, no TeX
    baseline = chart(section, "chart-variant_latents-baseline")
    assert ">1.2x<" in baseline and ">1.01x<" in baseline  # 36 vs 30 GiB; medians 7.75 s vs 7.7 s
    # the full dump is collapsed at the end
    assert "<details><summary>All 6 metrics</summary>" in html and 'id="table-metrics"' in html


def test_html_baseline_chart_leaves_out_what_was_not_compared() -> None:
    # `changed`: the case attended in another dtype than the baseline's (a check's `like`), nothing compared
    report = make_report()
    report.verdicts.append(Verdict(report.cases[1].case_id, "time.denoise.step_s", "time", "changed",
                                   Samples([90.0]), Samples([7.7]), "time.denoise.step_s time: not compared"))
    baseline = chart(render_html(report), "chart-variant_latents-baseline")
    assert ">1.2x<" in baseline and ">11.7x<" not in baseline  # 90 / 7.7 would be 11.7x


def test_html_memory_axis_makes_small_differences_visible() -> None:
    """Host RSS peaks of 250-360 MiB (the smoke run's) on an axis from 0 would look alike."""
    report = make_report()
    for case, peaks in zip(report.cases, ([253, 283, 323], [253.5, 284, 360])):
        case.stages = [StageRecord(name, 1.0, host_rss_peak=int(mib * 2**20))
                       for name, mib in zip(("load", "denoise", "decode"), peaks)]
    report.cases = report.cases[:2]
    memory = chart(render_html(report), "chart-variant_latents-memory")
    start = float(re.search(r"the axis starts at ([0-9.]+) MiB", memory).group(1))
    assert 150 < start < 253
    assert ">323.00 MiB<" in memory and ">360.00 MiB<" in memory and "host_rss_peak" in memory


def test_html_attention_chart_shows_time_per_shape_and_backend() -> None:
    env = Environment(device_name="cpu")
    cases = [CaseResult(f"attention_backends[attention={backend}]", "attention_backends",
                        {"attention": backend},
                        "ok", metrics={"time.attention.video_self_s": Samples([scale * 1e-3, scale * 2e-3]),
                                       "attention.video_self.tokens": [15004, 15004],
                                       "time.attention.video_to_text_s": Samples([scale * 1e-4]),
                                       "attention.video_to_text.tokens": [15004, 512],
                                       "attention.resolved": "sdpa" if backend == "auto" else backend})
             for backend, scale in (("auto", 1.0), ("sdpa_math", 10.0))]
    report = RunReport("r", ["attention_backends"], "reference", "w", "cpu", env, cases)
    attention = chart(render_html(report), "chart-attention_backends-attention")
    for label in ("video_self 15004x15004", "video_to_text 15004x512", "auto (sdpa)", "sdpa_math",
                  ">1.5 ms<", ">15 ms<", ">100 µs<", ">1 ms<"):
        assert label in attention
    assert "no data" not in attention


def test_unwritable_report_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create report directory"):
        write_all(make_report(), blocker / "run")


def test_report_files_are_readable_by_everyone(tmp_path: Path) -> None:
    """Issue 12.9: reports were written 0600 (mkstemp's mode); like the journal they are 0644."""
    written = write_all(make_report(), tmp_path / "run")
    assert ({name: path.stat().st_mode & 0o777 for name, path in written.items()}
            == dict.fromkeys(written, 0o644))
