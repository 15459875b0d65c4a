"""Issue 12: the gate is never green by accident. Each test here failed on the code before the fix: bad input
is one line and exit 2 before anything runs, names cannot write outside the baselines directory, and a torn
journal line does not make --resume impossible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovi_bench.baselines import update_baseline
from ovi_bench.cli import main
from ovi_bench.journal import read_journal
from ovi_bench.records import Environment, RunReport
from ovi_bench.schema import SchemaError
from ovi_bench.suites import SuiteError, load_suite

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "tests" / "harness" / "suites" / "shapes.yaml"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line_exit_2(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def write_suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


# ---- 12.3 silent passes on bad input ---------------------------------------------------------------------

def test_a_suite_with_no_checks_is_refused(tmp_path):
    text = SHAPES.read_text().split("checks:")[0]
    with pytest.raises(SuiteError, match="has no checks"):
        load_suite(str(write_suite(tmp_path, text)))


def test_a_when_value_no_case_can_have_is_refused(tmp_path):
    text = SHAPES.read_text() + "  - {metric: video_frames, rule: min, limit: 1, when: {policy: all_gpuu}}\n"
    with pytest.raises(SuiteError, match=r"when: unknown policy 'all_gpuu'"):
        load_suite(str(write_suite(tmp_path, text)))


def test_an_unless_value_no_case_can_have_is_refused(tmp_path):
    check = "  - {metric: video_frames, rule: min, limit: 1, unless: {policy: all_gpuu}}\n"
    text = SHAPES.read_text() + check
    with pytest.raises(SuiteError, match=r"unless: unknown policy 'all_gpuu'"):
        load_suite(str(write_suite(tmp_path, text)))


@pytest.mark.parametrize("key", ["when", "unless"])
def test_a_condition_that_is_not_a_mapping_is_one_line_and_exit_2(tmp_path, key):
    check = f"  - {{metric: video_frames, rule: min, limit: 1, {key}: [720x720_5s]}}\n"
    result = invoke("run", str(write_suite(tmp_path, SHAPES.read_text() + check)))
    one_line_exit_2(result, f"{key} must map matrix axes")


def test_unless_leaves_out_the_cases_it_matches():
    from ovi_bench.baselines import parse_check
    from ovi_bench.records import CaseResult

    def case(attention: str) -> CaseResult:
        return CaseResult(suite="s", case_id=f"s[attention={attention}]", status="ok",
                          params={"variant": "960x960_10s", "attention": attention})

    check = parse_check({"metric": "time.attention.video_self_s", "rule": "time", "min_factor": 2.0,
                         "when": {"variant": "960x960_10s"}, "unless": {"attention": "sdpa_math"}})
    assert [check.applies_to(case(a)) for a in ("auto", "sdpa_math", "flex")] == [True, False, True]


def test_a_zero_timeout_is_refused():
    one_line_exit_2(invoke("run", "smoke", "--timeout", "0"), "--timeout 0: a time limit must be positive")


def test_an_unavailable_backend_is_a_visible_skip_and_a_run_of_skips_fails(tmp_path):
    result = invoke("run", "attention_backends", "--attention", "sage", "--variant", "720x720_5s",
                    "--hardware", "cpu-tiny", "--allow-missing-baseline", "--report-dir",
                    str(tmp_path / "run"))
    assert result.exit_code == 1, result.output
    assert ("SKIPPED attention_backends[variant=720x720_5s,attention=sage]: attention backend "
            "'sage' unavailable" in result.output)
    assert "no case ran" in result.output


# ---- 12.4 validated before the first case ----------------------------------------------------------------

@pytest.mark.parametrize(("content", "needle"), [
    ("{truncated", "cannot read baseline"),
    (json.dumps({"schema_version": 9, "suite": "shapes", "hardware": "cpu-tiny", "provenance": {},
                 "cases": {}}),
     "written by a newer ovi-bench"),
])
def test_a_broken_baseline_is_found_before_any_case_runs(tmp_path, content, needle):
    baselines = tmp_path / "baselines"
    (baselines / "cpu-tiny").mkdir(parents=True)
    (baselines / "cpu-tiny" / "shapes.json").write_text(content)
    result = invoke("run", str(SHAPES), "--hardware", "cpu-tiny", "--baselines", str(baselines),
                    "--report-dir", str(tmp_path / "run"))
    one_line_exit_2(result, needle)
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(("args", "needle"), [
    (["--dtype", "float8"], "--dtype 'float8': use one of auto"),
    (["--device", "cuda"], "no CUDA/HIP device on this machine"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_bad_run_options_are_one_line_exit_2(tmp_path, args, needle):
    one_line_exit_2(invoke("run", str(SHAPES), *args, "--report-dir", str(tmp_path / "run")), needle)


def test_param_types_are_checked_when_the_suite_loads(tmp_path):
    text = SHAPES.read_text().replace("params: {steps: 2, mode: t2v}", 'params: {steps: "many", mode: t2v}')
    with pytest.raises(SuiteError, match=r"param steps must be int or float .*got 'many'"):
        load_suite(str(write_suite(tmp_path, text)))


def test_a_check_on_a_metric_the_scenario_never_records_is_refused_with_its_line(tmp_path):
    text = SHAPES.read_text().replace("metric: video_frames,", "metric: video_frame,")
    path = write_suite(tmp_path, text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "video_frame," in row)
    with pytest.raises(SuiteError,
                       match=rf"{path}:{line}: check on 'video_frame'.*did you mean video_frames"):
        load_suite(str(path))


# ---- 12.5 paths stay where they belong --------------------------------------------------------------------

def test_a_suite_name_that_is_a_path_is_refused(tmp_path):
    text = SHAPES.read_text().replace("name: shapes", "name: ../../../../tmp/x")
    with pytest.raises(SuiteError, match="must be a plain identifier"):
        load_suite(str(write_suite(tmp_path, text)))


def test_baseline_update_never_writes_outside_its_directory(tmp_path):
    report = RunReport("r", ["../../escape"], "reference", "synthetic:tiny", "cpu-tiny", Environment(), [])
    with pytest.raises(SchemaError, match="outside"):
        update_baseline(report, tmp_path / "baselines")
    with pytest.raises(SchemaError, match="outside"):
        update_baseline(RunReport("r", ["shapes"], "e", "w", "cpu-tiny", Environment(), []), tmp_path,
                        "../../x")
    assert not (tmp_path.parent / "escape.json").exists()


def test_baseline_update_refuses_an_unknown_hardware(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    report = RunReport("r", ["shapes"], "e", "w", "cpu-tiny", Environment(), [])
    (run / "report.json").write_text(json.dumps(report.to_dict()))
    result = invoke("baseline", "update", str(run), "--hardware", "h100-80gbb", "--baselines",
                    str(tmp_path / "b"))
    one_line_exit_2(result, "--hardware 'h100-80gbb': not a known profile")
    assert not (tmp_path / "b").exists()


# ---- 12.6 a torn journal line ------------------------------------------------------------------------------

def test_a_torn_last_journal_line_is_dropped_with_a_warning(tmp_path):
    header = {"schema_version": 2, "kind": "header", "run_id": "r", "environment": Environment().to_dict(),
              "options": {"suites": ["shapes"]}}
    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps(header) + "\n" + '{"schema_version": 2, "case_id": "shapes[va')
    warnings: list[str] = []
    read = read_journal(journal, warn=warnings.append)
    assert read.done == [] and read.valid_bytes == len(json.dumps(header)) + 1
    assert len(warnings) == 1 and "journal.jsonl:2: torn last line" in warnings[0]


# ---- 12.1 baselines are found like suites, and said -------------------------------------------------------

def test_baselines_are_found_from_the_package_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", str(SHAPES), "--engine", "fake", "--variant", "720x720_5s", "--hardware",
                    "cpu-tiny", "--report-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert f"baselines: {REPO / 'baselines'}" in result.output.splitlines()


def test_a_typo_in_baselines_is_refused_before_anything_runs(tmp_path):
    one_line_exit_2(invoke("run", "smoke", "--baselines", str(tmp_path / "typo")),
                    f"--baselines {tmp_path / 'typo'}: no such directory")


# ---- 12.8 the documented example engine passes the documented command -------------------------------------

@pytest.mark.slow
def test_the_example_engine_passes_smoke_as_documented(tmp_path):
    import subprocess
    import sys

    script = Path(sys.executable).parent / "ovi-bench"
    proc = subprocess.run([str(script), "run", "smoke", "--engine", "docs.example_engine:make_engine",
                           "--report-dir", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    # what it cannot do is shown with the engine's reason, never passed
    unsupported = {c["case_id"]: c["error"] for c in report["cases"] if c["status"] == "unsupported"}
    assert unsupported and all("example engine" in why for why in unsupported.values())
    assert "PASS: 7 case(s): 4 pass" in proc.stderr


# ---- 12.4 inputs only the engine or the worker can read --------------------------------------------------

def test_a_checkpoint_directory_without_the_files_is_refused_before_any_case(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    result = invoke("run", str(SHAPES), "--checkpoint-dir", str(ckpts), "--variant", "720x720_5s",
                    "--hardware", "cpu-tiny", "--report-dir", str(tmp_path / "run"))
    one_line_exit_2(result, "--checkpoint-dir:")
    assert "missing fusion" in result.output and not (tmp_path / "run").exists()


def test_every_case_failing_on_the_same_input_is_exit_2(tmp_path, monkeypatch):
    from ovi_bench.engines.fake import FAULTS_ENV

    monkeypatch.setenv(FAULTS_ENV, "720x720_5s:load:error,960x960_10s:load:error")
    result = invoke("run", str(SHAPES), "--engine", "fake", "--hardware", "cpu-tiny",
                    "--report-dir", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert ("error: every case failed on the same input: ValueError: fake engine: injected error in load"
            in result.output.splitlines())


def test_a_checkpoint_file_of_another_schema_is_exit_2_from_the_worker(tmp_path):
    import torch

    from tests.engine.test_pipeline import _write_checkpoints

    # Every file is where check_inputs looks, so the case starts; its worker's load finds that the text
    # encoder file (the first module built) holds another model's tensors.
    ckpts = tmp_path / "ckpts"
    paths = _write_checkpoints(ckpts, "upstream")  # tiny files of 960x960_10s
    torch.save({"not_a_text_encoder": torch.zeros(1)}, paths["text"])
    result = invoke("run", str(SHAPES), "--checkpoint-dir", str(ckpts), "--variant", "960x960_10s",
                    "--hardware", "cpu-tiny", "--report-dir", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    verdict = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(verdict) == 1 and verdict[0].startswith(
        f"error: every case failed on the same input: CheckpointError: {paths['text']}: "), verdict
    assert "1 unexpected: not_a_text_encoder" in verdict[0]


def one_fake_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str):
    """A one-case run of the fake engine with `fault` (stage:kind) injected."""
    from ovi_bench.engines.fake import FAULTS_ENV

    monkeypatch.setenv(FAULTS_ENV, f"720x720_5s:{fault}")
    return invoke("run", str(SHAPES), "--engine", "fake", "--variant", "720x720_5s", "--hardware",
                  "cpu-tiny", "--report-dir", str(tmp_path / "run"))


@pytest.mark.parametrize(("fault", "error"), [("load:error=FileNotFoundError", "FileNotFoundError"),
                                              ("load:error", "ValueError")])
def test_a_missing_file_or_rejected_value_in_load_is_exit_2(tmp_path, monkeypatch, fault, error):
    result = one_fake_case(tmp_path, monkeypatch, fault)
    assert result.exit_code == 2, result.output
    assert (f"error: every case failed on the same input: {error}: fake engine: injected error in load"
            in result.output.splitlines())


@pytest.mark.parametrize(("fault", "error"), [("denoise:error=KeyError", "KeyError"),
                                              ("denoise:error=IndexError", "IndexError"),
                                              ("denoise:error", "ValueError")])
def test_an_engine_bug_in_denoise_is_a_failed_run_not_bad_input(tmp_path, monkeypatch, fault, error):
    """A plugin engine's KeyError or ValueError while computing, in a one-case run, is that case's error and
    exit 1; it says nothing about the user's input."""
    result = one_fake_case(tmp_path, monkeypatch, fault)
    assert result.exit_code == 1, result.output
    assert "every case failed on the same input" not in result.output
    assert f": error in denoise: {error}: " in result.output and "injected error in denoise" in result.output
    report = RunReport.from_dict(json.loads((tmp_path / "run" / "report.json").read_text()))
    [case] = report.cases
    assert (case.status, case.stage, case.metrics["error.kind"]) == ("error", "denoise", "harness_or_engine")
