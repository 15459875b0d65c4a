"""Every command, through click's runner and once through the installed console script; bad input gives
one clear line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovi_bench.cli import main

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "ovi-bench"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """The example engine of docs/engines.md, run by the real console script through MODULE:FACTORY."""
    root = tmp_path_factory.mktemp("example")
    (root / "baselines").mkdir()
    proc = subprocess.run(
        [str(SCRIPT), "run", "tests/harness/suites/shapes.yaml", "--engine",
         "docs.example_engine:make_engine", "--variant", "960x960_10s",
         "--hardware", "cpu-tiny", "--baselines", str(root / "baselines"), "--report-dir", str(root / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    return root, proc


def test_console_script_runs_the_example_engine(example_run):
    root, proc = example_run
    assert proc.returncode == 0, proc.stderr
    report = json.loads((root / "run" / "report.json").read_text())
    (case,) = report["cases"]
    assert case["status"] == "ok"
    assert case["metrics"]["video_latent_shape"] == [48, 61, 60, 60]  # VARIANTS.md: 960x960_10s at 960x960
    assert case["metrics"]["audio_samples"] == 160768
    assert {v["status"] for v in report["verdicts"]} == {"pass"}
    assert "[1/1]" in proc.stderr and "ok" in proc.stderr


def test_report_compare_and_baselines(example_run, tmp_path):
    root, _ = example_run
    run_dir = root / "run"
    assert invoke("report", str(run_dir), "--format", "json").output.startswith("{")
    for fmt in ("md", "html", "junit"):
        assert invoke("report", str(run_dir), "--format", fmt).exit_code == 0
    compared = invoke("compare", "--all", str(run_dir), str(run_dir / "report.json"))
    assert compared.exit_code == 0 and "video_latent_shape" in compared.output
    baselines = tmp_path / "baselines"
    # the shapes suite compares nothing with a baseline: an update stores no file and says why
    dry = invoke("baseline", "update", str(run_dir), "--baselines", str(baselines), "--dry-run")
    assert dry.exit_code == 0 and "shapes: no check compares with a baseline" in dry.output
    assert invoke("baseline", "update", str(run_dir), "--baselines", str(baselines)).exit_code == 0
    assert not baselines.exists()


def test_baseline_of_another_schema_version(tmp_path):
    stored = tmp_path / "cpu-tiny" / "smoke.json"
    stored.parent.mkdir()
    stored.write_text(json.dumps({"schema_version": 99, "suite": "smoke", "hardware": "cpu-tiny",
                                  "provenance": {}, "cases": {}}))
    result = invoke("baseline", "show", "--baselines", str(tmp_path))
    assert result.exit_code == 2
    expected = (f"error: {stored}: baseline of schema_version 99 was written by a newer ovi-bench "
                "(this one reads 2): upgrade ovi-bench")
    assert result.output.strip().splitlines() == [expected]
    stored.write_text(json.dumps({"schema_version": 1, "suite": "smoke", "hardware": "cpu-tiny",
                                  "provenance": {}, "cases": {}}))
    older = invoke("baseline", "show", "--baselines", str(tmp_path))
    expected = (f"error: {stored}: baseline of schema_version 1, older than this ovi-bench's 2: "
                "run `ovi-bench baseline upgrade`")
    assert older.exit_code == 2 and older.output.strip().splitlines() == [expected]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_suite"], "unknown suite 'no_such_suite'"),
        (["run", "smoke", "--engine", "no_such_module:make"], "cannot import 'no_such_module'"),
        (["run", "smoke", "--engine", "warp"], "unknown engine 'warp'"),
        (["run", "smoke", "--variant", "1080p_5s"], "unknown variant '1080p_5s'"),
        (["run", "smoke", "--attention", "warp_drive"], "unknown attention 'warp_drive'"),
        (["run", "smoke", "--policy", "on_the_moon"], "unknown policy 'on_the_moon'"),
        (["run", "smoke", "--hardware", "tpu-v9"], "unknown hardware profile 'tpu-v9'"),
        (["run", "smoke", "--budget", "lots"], "--budget"),
        (["run"], "give at least one SUITE"),
        (["run", "attention_backends", "--hardware", "cpu-tiny", "--preset", "full",
          "--variant", "960x960_5s", "--attention", "sdpa_math"], "attention_backends: no case to run"),
        (["compare", "nowhere_a", "nowhere_b"], "nowhere_a"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_suite_file_error_names_file_and_line(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text("schema_version: 1\nname: bad\ndescription: x\nscenario: pipeline\n"
                     "matrix:\n  variant: [720x720_5s]\n  colour: [blue]\n")
    result = invoke("run", str(suite))
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {suite}:7: scenario 'pipeline' has no axis 'colour' " \
                                    "(axes: variant, policy, attention)"


def test_unwritable_report_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = invoke("run", "smoke", "--engine", "fake", "--hardware", "cpu-tiny", "--report-dir",
                    str(blocker / "run"))
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"error: cannot write report directory {blocker / 'run'}")


@pytest.mark.parametrize(("what", "expected"), [
    ("suites", "smoke"), ("engines", "reference"), ("variants", "960x960_10s"), ("policies", "keep_resident"),
    ("hardware", "gfx1151-128gb"), ("backends", "auto"),
])
def test_list(what, expected):
    result = invoke("list", what)
    assert result.exit_code == 0 and expected in result.output


def test_list_rejects_unknown_topic():
    assert invoke("list", "planets").exit_code == 2


def test_doctor_reports_versions_and_flags(monkeypatch):
    monkeypatch.setenv("PYTORCH_HIP_ALLOC_CONF", "expandable_segments:True")
    result = invoke("doctor", "--device", "cpu")
    assert result.exit_code == 0
    import torch

    assert torch.__version__ in result.output
    assert "expandable_segments:True" in result.output and "HSA_OVERRIDE_GFX_VERSION" in result.output
