"""What the terminal shows: the verdict table a run ends with, and `list suites`."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from ovi_bench.cli import main
from ovi_bench.records import Verdict
from ovi_bench.report.terminal import render_terminal
from ovi_bench.suites import available_suites, load_suites, suite_path
from tests.harness.test_reports import EVIL_ID, make_report


def test_verdict_table_names_every_failure_missing_baseline_and_improvement() -> None:
    report = make_report()
    case_id = report.cases[0].case_id
    report.verdicts += [Verdict(case_id, "peak.denoise.bytes", "relative", "no_baseline",
                                message="peak.denoise.bytes relative: no baseline value"),
                        Verdict(case_id, "time.decode_s", "time", "improved",
                                message="time.decode_s time: median 1 s vs baseline 2 s")]
    text = render_terminal(report, Path("/runs/run-1"))
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:6] == ["suite", "cases", "pass", "fail", "error", "skipped"]
    row = next(line for line in lines if line.startswith("variant_latents"))
    assert row.split() == ["variant_latents", "4", "2", "1", "1", "0", "0", "1", "1", "1"]
    assert f"ERROR {EVIL_ID}: crash in denoise: worker exited with signal 11" in lines
    assert ("REGRESSION 960x960_10s-all_gpu-flash: peak.total.alloc_bytes relative: grew beyond allowed"
            in lines)
    assert f"NO BASELINE {case_id}: peak.denoise.bytes relative: no baseline value" in lines
    assert f"IMPROVED {case_id}: time.decode_s time: median 1 s vs baseline 2 s" in lines
    assert not any("expect_status" in line for line in lines)  # a plain pass is only counted
    assert lines[-2] == "FAIL: 4 case(s): 2 pass, 1 fail, 1 error, 0 skipped, 0 unsupported; " \
                        "checks: 3 pass, 1 regression, 1 improved, 1 no_baseline"
    assert lines[-1].startswith("report: /runs/run-1/report.html")


def test_a_clean_run_ends_with_its_table_and_pass() -> None:
    report = make_report()
    report.cases = report.cases[:1]
    report.verdicts = report.verdicts_for(report.cases[0].case_id)
    lines = render_terminal(report, Path("run")).splitlines()
    assert lines[-2].startswith("PASS: 1 case(s): 1 pass") and lines[-3] == ""
    assert len(lines) == 6  # header, rule, one suite, blank, verdict, report


def test_list_suites_shows_what_run_accepts() -> None:
    result = CliRunner().invoke(main, ["list", "suites"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert sorted(rows) == available_suites() and "smoke" in rows  # file names: smoke, no smoke.<suite>
    assert "includes 5 suites" in rows["smoke"]
    for name, line in rows.items():
        assert load_suites(name)  # `run NAME` accepts it
        full = " ".join(yaml.safe_load(suite_path(name).read_text())["description"].split())
        shown = line.split("  ")[-1].strip().removesuffix(" ...")
        assert len(line) <= 120 and full.startswith(shown)
        assert full == shown or full[len(shown)] == " ", f"{name}: description cut mid-word: {shown!r}"
