"""`ovi-bench qualify` and `ovi-bench check-bundle`: one qualification at the tiny preset on this CPU against
the committed cpu-tiny baselines (peak_memory_10s only, one case, to stay near a minute on a 2-core
machine), whose bundle verifies and, tampered with, does not; bad input stops before anything runs (exit 2,
one line); a doctor warning that makes the run meaningless stops it; a first run without baselines is not a
qualification."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

from ovi_bench.bundle import qualification, suite_outcomes
from ovi_bench.cli import main
from ovi_bench.doctor import DoctorWarning
from ovi_bench.qualify import QualifyOptions, qualification_suites, qualify
from ovi_bench.records import CaseResult, Environment, RunReport
from ovi_bench.suites import load_suites


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def qualified(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("qualify") / "bundle"
    result = invoke("qualify", "cpu-tiny", "--device", "cpu", "--preset", "tiny", "--suites",
                    "peak_memory_10s", "--bundle-dir", str(bundle))
    return bundle, result


def test_qualify_runs_the_suite_and_writes_a_bundle(qualified):
    bundle, result = qualified
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "qualified: cpu-tiny (only smoke.peak_memory_10s)"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["qualified"] is True and manifest["required_suites"] == ["smoke.peak_memory_10s"]
    assert set(manifest["inputs"]["suites"]) == {"suites/smoke.yaml", "suites/peak_memory_10s.yaml"}
    assert set(manifest["inputs"]["baselines"]) == {"baselines/cpu-tiny/smoke.peak_memory_10s.json"}
    (run,) = [name for name in manifest["files"] if name.endswith("/report.json")]
    report = json.loads((bundle / run).read_text())
    (case,) = report["cases"]
    assert case["metrics"]["attention.kernel_expected"] == "any"  # the CPU: recorded, not expected fused
    assert "attention.kernel" in case["metrics"] and "time.decode.first_s" in case["metrics"]
    doctor = json.loads((bundle / "environment.json").read_text())["environment"]["doctor"]
    assert ["hardware profile", "cpu-tiny"] in doctor["facts"]
    assert not (bundle.parent / "bundle.runs").exists()  # the staged runs moved into the bundle


def test_the_bundle_checks_clean_and_a_tampered_one_does_not(qualified, tmp_path):
    bundle, _ = qualified
    checked = invoke("check-bundle", str(bundle))
    assert checked.exit_code == 0 and "complete, unedited, qualified" in checked.output
    whole = invoke("check-bundle", str(bundle), "--require", "smoke.peak_memory_10s", "--require",
                   "smoke.variant_latents")
    assert whole.exit_code == 1 and "required suite smoke.variant_latents did not run" in whole.output
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    (report,) = tampered.glob("runs/*/report.json")
    report.write_text(report.read_text().replace('"status": "pass"', '"status": "fail"', 1))
    result = invoke("check-bundle", str(tampered))
    assert result.exit_code == 1
    assert f"{report.relative_to(tampered).as_posix()}: sha256 differs from the manifest" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["no-such-profile", "--device", "cpu"], "unknown hardware profile 'no-such-profile'"),
    (["h200-141gb", "--device", "cuda:7"], "--device cuda:7: no CUDA/HIP device on this machine"),
    (["h200-141gb", "--device", "cpu"], "hardware h200-141gb is a cuda profile, --device cpu is not"),
    (["cpu-tiny", "--device", "cpu", "--suites", "smoke"], "--suites smoke: not a qualification suite"),
    (["cpu-tiny", "--device", "cpu", "--engine", "nope"], "unknown engine 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = invoke("qualify", *args, "--preset", "tiny", "--bundle-dir", str(tmp_path / "b"))
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert message in line
    assert not (tmp_path / "b").exists()


def test_no_baseline_needs_the_first_qualification_flag(tmp_path):
    (tmp_path / "baselines").mkdir()
    result = invoke("qualify", "cpu-tiny", "--device", "cpu", "--preset", "tiny", "--suites",
                    "peak_memory_10s",
                    "--baselines", str(tmp_path / "baselines"), "--bundle-dir", str(tmp_path / "b"))
    assert result.exit_code == 2 and "add --allow-missing-baseline" in result.output
    assert "no baseline for cpu-tiny of smoke.peak_memory_10s" in result.output


def test_a_used_bundle_dir_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    result = invoke("qualify", "cpu-tiny", "--device", "cpu", "--preset", "tiny", "--bundle-dir",
                    str(tmp_path / "b"))
    assert result.exit_code == 2 and "is not empty" in result.output


def test_check_bundle_of_no_directory_is_exit_2(tmp_path):
    result = invoke("check-bundle", str(tmp_path / "none"))
    assert result.exit_code == 2 and "no such directory" in result.output


def test_a_stopping_doctor_warning_ends_it_before_any_run(tmp_path):
    def doctor(device: str):
        return [["device", device]], [DoctorWarning("aotriton_flag", "the flag is unset"),
                                      DoctorWarning("mem_get_info", "free > total")]

    progress: list[str] = []
    options = QualifyOptions("cpu-tiny", "cpu", preset="tiny", bundle_dir=tmp_path / "b")
    result = qualify(options, progress.append, doctor=doctor)
    assert not result.qualified and result.bundle is None and not (tmp_path / "b").exists()
    (reason,) = result.reasons
    assert reason.startswith("doctor [aotriton_flag]: SDPA will run the math kernel")
    assert [w.code for w in result.warnings] == ["mem_get_info"]  # recorded, not stopping
    assert not [line for line in progress if line.startswith("== qualify")]


def test_the_suites_in_order_and_the_smoke_cuts_at_tiny():
    assert qualification_suites("full") == ["attention_backends", "variant_latents", "oom_regression",
                                            "peak_memory_10s", "qualify.output_fidelity"]
    assert qualification_suites("tiny", ["peak_memory_10s", "attention_backends"]) == [
        "smoke.attention_backends", "smoke.peak_memory_10s"]


def test_the_full_scale_fidelity_cut_is_two_clips_at_two_steps():
    """What the cut keeps, from the matrix of the whole suite: both durations, t2v with unipc, 2 steps."""
    from ovi_bench.suites import find_suite, load_suite

    whole, cut = load_suite("output_fidelity"), find_suite("qualify.output_fidelity")
    assert cut.checks == whole.checks and cut.scenario == whole.scenario
    assert cut.matrix == {"variant": ["720x720_5s", "960x960_10s"], "mode": ["t2v"], "solver": ["unipc"]}
    assert set(cut.matrix["variant"]) <= set(whole.matrix["variant"]) and cut.params["steps"] == 2


def test_a_first_run_without_baselines_is_not_a_qualification():
    case = CaseResult("s[a]", "s", {}, "ok", metrics={"peak.load.bytes": 1})
    report = RunReport("r", ["s"], "reference", "synthetic:full", "h200-141gb", Environment(), [case],
                       baseline_metrics={"s": ["peak.load.bytes"]}, allow_missing_baseline=True)
    assert report.exit_status == 0  # the run itself may pass: the flag says a first run
    qualified, reasons = qualification(suite_outcomes({"runs/r": report}, ["s"]), ["s"])
    assert not qualified
    assert reasons == [("required suite s failed: no baseline for h200-141gb: its baseline "
                        "checks were not judged")]


def test_an_included_suite_runs_alone_by_its_name():
    (suite,) = load_suites("smoke.peak_memory_10s")
    assert suite.name == "smoke.peak_memory_10s" and suite.path.name == "peak_memory_10s.yaml"
    assert suite.params["steps"] == 1  # smoke's override, not the suite's own


def test_an_interrupted_qualification_resumes_where_it_stopped(tmp_path):
    bundle = tmp_path / "b"
    # two cases and no time checks: with attention_backends, its time checks' CPU noise (2.001x
    # against a 2.0x limit once) could fail the qualification this test expects to pass
    options = QualifyOptions("cpu-tiny", "cpu", preset="tiny", bundle_dir=bundle,
                             suites=["variant_latents"])
    lines: list[str] = []

    def interrupt_after_the_first_case(line: str) -> None:
        lines.append(line)
        if line.startswith("[1/2]") and " ok (" in line:  # its result is in the journal
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        qualify(options, interrupt_after_the_first_case)
    assert "--resume" in lines[-1] and not bundle.exists()
    refused = invoke("qualify", "cpu-tiny", "--device", "cpu", "--preset", "tiny", "--suites",
                     "variant_latents", "--bundle-dir", str(bundle))
    assert refused.exit_code == 2 and "is not empty" in refused.output  # a new run would lose the first case

    resumed: list[str] = []
    result = qualify(replace(options, resume=True), resumed.append)
    assert result.qualified, result.reasons
    assert any(line.startswith("[1/2]") and "already in the journal" in line for line in resumed)
    assert invoke("check-bundle", str(bundle)).exit_code == 0


def test_resume_keeps_a_finished_run_and_refuses_a_foreign_one(tmp_path):
    from ovi_bench.qualify import run_suite, staging_dir

    staged = staging_dir(tmp_path / "b") / "smoke.attention_backends"
    staged.mkdir(parents=True)
    (staged / "report.json").write_text("{}")
    options = QualifyOptions("cpu-tiny", "cpu", preset="tiny", bundle_dir=tmp_path / "b", resume=True)
    lines: list[str] = []
    assert run_suite(options, "smoke.attention_backends", staged, lines.append) == staged
    assert lines == [f"smoke.attention_backends: finished before, kept ({staged})"]
    (staged.parent / "other").mkdir()
    result = invoke("qualify", "cpu-tiny", "--device", "cpu", "--preset", "tiny", "--bundle-dir",
                    str(tmp_path / "b"), "--resume")
    assert result.exit_code == 2 and "holds runs of other" in result.output
    nothing = invoke("qualify", "cpu-tiny", "--device", "cpu", "--preset", "tiny", "--bundle-dir",
                     str(tmp_path / "none"), "--resume")
    assert nothing.exit_code == 2 and "no staged qualification there" in nothing.output
