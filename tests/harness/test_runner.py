"""Fault injection: OOM, host MemoryError under a real budget, SIGKILL and a hang each become a case result
with its stage, the other cases are kept, and --resume finishes an interrupted run."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from click.testing import CliRunner

from ovi_bench.cli import main
from ovi_bench.engines.fake import FAULTS_ENV
from ovi_bench.records import RunReport

FAULT_SUITE = """\
schema_version: 1
name: faults
description: one healthy case and three that fail in different ways
scenario: pipeline
timeout: 2 s
matrix:
  variant: [720x720_5s, 720x720_5s_fp8, 960x960_5s, 960x960_10s]
params: {steps: 2}
checks:
  - {metric: video_latent_shape, rule: exact, expected: spec.video_latent_shape}
  - {metric: status, rule: expect_status, expected: oom, when: {variant: 720x720_5s_fp8}}
"""
FAULTS = "720x720_5s_fp8:decode_video:oom,960x960_5s:denoise:sigkill,960x960_10s:encode_text:hang"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    suite = root / "faults.yaml"
    suite.write_text(textwrap.dedent(FAULT_SUITE))
    os.environ[FAULTS_ENV] = FAULTS
    try:
        result = invoke("run", str(suite), "--engine", "fake", "--hardware", "cpu-tiny",
                        "--baselines", str(root / "baselines"), "--allow-missing-baseline", "--report-dir",
                        str(root / "run"))
    finally:
        del os.environ[FAULTS_ENV]
    return root, result


def cases_by_variant(run_dir):
    report = RunReport.from_dict(json.loads((run_dir / "report.json").read_text()))
    return report, {c.params["variant"]: c for c in report.cases}


def test_each_fault_becomes_a_result_and_the_run_goes_on(fault_run):
    root, result = fault_run
    assert result.exit_code == 1, result.output  # the crash and the timeout were not expected
    report, cases = cases_by_variant(root / "run")
    assert (cases["720x720_5s"].status, cases["720x720_5s"].stage) == ("ok", None)
    assert [s.name for s in cases["720x720_5s"].stages] == [
        "load", "encode_text", "denoise", "release", "decode_video", "decode_audio", "decode"]
    assert (cases["720x720_5s_fp8"].status, cases["720x720_5s_fp8"].stage) == ("oom", "decode_video")
    assert (cases["960x960_5s"].status, cases["960x960_5s"].stage) == ("crash", "denoise")
    assert "SIGKILL" in cases["960x960_5s"].error
    assert (cases["960x960_10s"].status, cases["960x960_10s"].stage) == ("timeout", "encode_text")
    # the parent kept what the dead workers had reported before they died
    assert [s.name for s in cases["960x960_5s"].stages] == ["load", "encode_text"]
    assert cases["960x960_5s"].metrics["at_end.host_rss_bytes"] > 0
    # the time outside the stages, where the worker's messages split it; a killed worker has no exit time
    healthy = cases["720x720_5s"]
    outside = sum(healthy.metrics[f"case.{part}_s"] for part in ("start", "setup", "exit"))
    inside = sum(s.wall_s for s in healthy.stages if s.name != "decode")  # decode holds decode_video/audio
    assert 0 < outside and outside + inside <= healthy.duration_s
    assert "case.start_s" in cases["960x960_5s"].metrics and "case.exit_s" not in cases["960x960_5s"].metrics
    assert report.outcomes == {c.case_id: o for c, o in zip(
        report.cases, ["pass", "pass", "error", "error"])}  # the OOM was expected by the suite
    assert "ERROR faults[variant=960x960_5s" in result.output and ": crash in denoise:" in result.output
    assert ("ERROR faults[variant=960x960_10s" in result.output
            and ": timeout in encode_text:" in result.output)


def test_resume_runs_only_the_missing_cases(fault_run, tmp_path):
    root, _ = fault_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = (root / "run" / "journal.jsonl").read_text().splitlines()
    healthy = '"case_id": "faults[variant=720x720_5s,'
    kept = [line for line in lines if healthy not in line]  # drop the healthy case, as if interrupted
    assert len(kept) == len(lines) - 1
    (run_dir / "journal.jsonl").write_text("\n".join(kept) + "\n")
    result = invoke("run", "--resume", str(run_dir))
    assert result.exit_code == 1
    assert result.output.count("already in the journal") == 3
    journal = (run_dir / "journal.jsonl").read_text().splitlines()
    assert len(journal) == len(lines)
    _, cases = cases_by_variant(run_dir)
    assert cases["720x720_5s"].status == "ok" and cases["960x960_5s"].status == "crash"


def test_corrupt_journal_line_is_named(fault_run, tmp_path):
    root, _ = fault_run
    lines = (root / "run" / "journal.jsonl").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    (tmp_path / "journal.jsonl").write_text("\n".join(lines) + "\n")
    result = invoke("run", "--resume", str(tmp_path))
    assert result.exit_code == 2
    assert f"{tmp_path / 'journal.jsonl'}:3: corrupt journal line" in result.output


def test_host_budget_is_a_real_limit(tmp_path):
    suite = tmp_path / "budget.yaml"
    suite.write_text(FAULT_SUITE.replace("[720x720_5s, 720x720_5s_fp8, 960x960_5s, 960x960_10s]",
                                         "[720x720_5s]")
                     .replace("timeout: 2 s", "timeout: 60 s")
                     .replace("  - {metric: status, rule: expect_status, expected: oom, when: {variant: "
                              "720x720_5s_fp8}}\n",
                              ""))
    os.environ[FAULTS_ENV] = "720x720_5s:release:alloc=2GiB"
    try:
        result = invoke("run", str(suite), "--engine", "fake", "--hardware", "cpu-tiny", "--budget", "1 GiB",
                        "--baselines", str(tmp_path / "b"), "--allow-missing-baseline", "--report-dir",
                        str(tmp_path / "run"))
    finally:
        del os.environ[FAULTS_ENV]
    assert result.exit_code == 1
    _, cases = cases_by_variant(tmp_path / "run")
    assert (cases["720x720_5s"].status, cases["720x720_5s"].stage) == ("oom", "release")


def test_time_outside_the_stages_is_split_by_the_workers_messages():
    from ovi_bench.launchers import overhead_metrics

    marks = {"ready": 4.0, "first_stage": 6.5, "result": 14.0}
    assert overhead_metrics(marks, 15.25) == {"case.start_s": 4.0, "case.setup_s": 2.5, "case.exit_s": 1.25}
    assert overhead_metrics({}, 3.0) == {}  # the worker died before it was ready: nothing to split
