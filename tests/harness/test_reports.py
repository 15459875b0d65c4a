"""Report formats: json round-trip, markdown tables, junit structure, HTML escaping and charts, errors."""

from __future__ import annotations

import json
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
    """Four cases: a pass, a regression, an expected oom, an unexpected crash (plus one with markup in its id)."""
    def stages(scale: float) -> list[StageRecord]:
        return [StageRecord("encode_text", 0.5, 0.4, int(2 * GiB * scale), int(3 * GiB * scale), GiB, None, GiB),
                StageRecord("denoise", 7.0, 6.9, int(30 * GiB * scale), int(32 * GiB * scale), GiB, None, GiB),
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
        Verdict(cases[0].case_id, "time.denoise.step_s", "time", "pass", cases[0].metrics["time.denoise.step_s"],
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
    assert data["schema_version"] == 1 and data["exit_status"] == 1
    assert data["cases"][0]["metrics"]["time.denoise.step_s"]["median"] == 7.75


def test_load_report_rejects_other_schema(tmp_path: Path) -> None:
    data = make_report().to_dict()
    data["schema_version"] = 2
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="schema_version 2, this ovi-bench reads schema_version 1"):
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
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")


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
        ["variant_latents", "4", "2", "1", "1", "0", "1", "0", "0"]
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


def test_html_escapes_everything_and_draws_charts() -> None:
    html = render_html(make_report())
    assert "<script>" not in html and "</script>" not in html
    assert escape(EVIL_ID) in html
    for chart in ('id="chart-memory"', 'id="chart-speed-time.denoise.step_s"', 'id="chart-baseline"'):
        assert chart in html
    # memory chart: one bar per recorded stage (3 + 3 + 2), speed chart: one per case with a timing
    memory = html.split('id="chart-memory"')[1].split("</figure>")[0]
    assert memory.count('<g class="bar">') == 8
    speed = html.split('id="chart-speed-time.denoise.step_s"')[1].split("</figure>")[0]
    assert speed.count('<g class="bar">') == 2 and "flash" in speed
    baseline = html.split('id="chart-baseline"')[1].split("</figure>")[0]
    assert "1.200x" in baseline  # 36 GiB now vs 30 GiB baseline


def test_unwritable_report_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create report directory"):
        write_all(make_report(), blocker / "run")
