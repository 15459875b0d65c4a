"""Qualification bundles: written from run directories made here, then tampered with; check_bundle must
name every problem (missing file, edited file, added file, failing or missing suite, other schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovi_bench.bundle import BUNDLE_SCHEMA_VERSION, MANIFEST, SUMMARY, check_bundle, write_bundle
from ovi_bench.hardware import get_profile
from ovi_bench.records import CaseResult, Environment, RunReport, Verdict
from ovi_bench.report import write_all

REQUIRED = ["attention_backends", "peak_memory_10s"]
CASE_SECONDS = {"attention_backends": 72.0, "peak_memory_10s": 150.0, "variant_latents": 6.0}


def make_run(root: Path, run_id: str, suite: str, *, failing: bool = False) -> Path:
    case = CaseResult(f"{suite}.a", suite, {"variant": "960x960_10s"}, "ok", metrics={"peak.total.bytes": 9},
                      duration_s=CASE_SECONDS[suite])
    verdict = Verdict(case.case_id, "peak.total.bytes", "max", "fail" if failing else "pass", 9, 5,
                      "peak 9 B above the profile's 5 B" if failing else "")
    report = RunReport(run_id, [suite], "reference", "full", "gfx1151-128gb", Environment(device_name="fake"),
                       cases=[case], verdicts=[verdict])
    run_dir = root / "reports" / run_id
    write_all(report, run_dir)
    (run_dir / "journal.jsonl").write_text('{"schema_version": 1}\n')
    return run_dir


def make_bundle(tmp_path: Path, *, failing: bool = False, runs: tuple[str, ...] = tuple(REQUIRED)) -> Path:
    run_dirs = [make_run(tmp_path, f"run{i}", suite, failing=failing and i == 1)
                for i, suite in enumerate(runs)]
    suite_file = tmp_path / "suites/peak_memory_10s.yaml"
    baseline = tmp_path / "baselines/gfx1151-128gb/peak_memory_10s.json"
    reference = tmp_path / "baselines/gfx1151-128gb/references/output_fidelity.json"
    for path, text in ((suite_file, "name: peak_memory_10s\n"), (baseline, '{"schema_version": 1}\n'),
                       (reference, '{"schema_version": 1}\n')):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    bundle = tmp_path / "bundle"
    write_bundle(bundle, run_dirs=run_dirs, environment=Environment(device_name="fake").to_dict(),
                 profile=get_profile("gfx1151-128gb"), suite_files=[suite_file],
                 baseline_files=[baseline, reference],
                 required_suites=REQUIRED)
    return bundle


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def test_a_passing_bundle_checks_clean(tmp_path):
    bundle = make_bundle(tmp_path)
    manifest = manifest_of(bundle)
    assert manifest["schema_version"] == BUNDLE_SCHEMA_VERSION and manifest["qualified"] is True
    assert manifest["required_suites"] == REQUIRED
    assert {"runs/run0/report.json", "runs/run1/junit.xml", "runs/run1/journal.jsonl", "environment.json",
            "profile.json", SUMMARY, "suites/peak_memory_10s.yaml",
            "baselines/gfx1151-128gb/peak_memory_10s.json"} <= set(manifest["files"])
    assert manifest["inputs"]["baselines"]["baselines/gfx1151-128gb/peak_memory_10s.json"] == \
        manifest["files"]["baselines/gfx1151-128gb/peak_memory_10s.json"]
    # a stored fidelity reference keeps its references/ folder under the hardware's
    assert "baselines/gfx1151-128gb/references/output_fidelity.json" in manifest["inputs"]["baselines"]
    assert [manifest["suites"][s]["case_time_s"] for s in REQUIRED] == [72.0, 150.0]
    assert "Case time in all: 3.7 min" in (bundle / SUMMARY).read_text()
    for name in ("environment.json", "profile.json"):
        assert json.loads((bundle / name).read_text())["schema_version"] == BUNDLE_SCHEMA_VERSION
    assert "gfx1151-128gb: qualified" in (bundle / SUMMARY).read_text()
    assert check_bundle(bundle) == []


def test_a_failing_suite_is_named_with_its_check(tmp_path):
    bundle = make_bundle(tmp_path, failing=True)
    manifest = manifest_of(bundle)
    assert manifest["qualified"] is False and manifest["suites"]["peak_memory_10s"]["outcome"] == "fail"
    summary = (bundle / SUMMARY).read_text()
    assert "not qualified" in summary and "peak 9 B above the profile&#x27;s 5 B" in summary
    problems = check_bundle(bundle)
    assert len(problems) == 1 and problems[0].startswith("required suite peak_memory_10s failed")


def test_a_missing_required_suite(tmp_path):
    bundle = make_bundle(tmp_path, runs=("attention_backends",))
    assert manifest_of(bundle)["reasons"] == ["required suite peak_memory_10s did not run"]
    assert check_bundle(bundle) == ["required suite peak_memory_10s did not run"]
    assert check_bundle(make_bundle(tmp_path / "b"), required_suites=[*REQUIRED, "output_fidelity"]) == [
        "required suite output_fidelity did not run"]  # the checker's list, not the bundle's


def test_an_edited_report_is_caught_even_when_its_outcome_is_unchanged(tmp_path):
    bundle = make_bundle(tmp_path)
    report = bundle / "runs/run1/report.json"
    report.write_text(report.read_text().replace('"full"', '"tiny"'))
    assert check_bundle(bundle) == [("runs/run1/report.json: sha256 differs from the manifest "
                                     "(edited after the run)")]


def test_a_report_turned_from_fail_to_pass_is_caught_twice(tmp_path):
    bundle = make_bundle(tmp_path, failing=True)
    report = bundle / "runs/run1/report.json"
    report.write_text(report.read_text().replace('"status": "fail"', '"status": "pass"'))
    problems = check_bundle(bundle)
    assert "runs/run1/report.json: sha256 differs from the manifest (edited after the run)" in problems
    assert "suite peak_memory_10s: the manifest says fail, its report says pass" in problems


def test_missing_and_added_files(tmp_path):
    bundle = make_bundle(tmp_path)
    (bundle / "runs/run0/junit.xml").unlink()
    (bundle / "suites/extra.yaml").write_text("name: extra\n")
    assert check_bundle(bundle) == ["missing file runs/run0/junit.xml",
                                    "suites/extra.yaml: not in the manifest (added after the run)"]


def test_a_removed_report_makes_its_suite_missing(tmp_path):
    bundle = make_bundle(tmp_path)
    (bundle / "runs/run0/report.json").unlink()
    problems = check_bundle(bundle)
    assert "missing file runs/run0/report.json" in problems
    assert "required suite attention_backends did not run" in problems


def test_a_manifest_of_another_schema_version(tmp_path):
    bundle = make_bundle(tmp_path)
    manifest = manifest_of(bundle)
    manifest["schema_version"] = BUNDLE_SCHEMA_VERSION + 1
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    expected = f"{MANIFEST}: bundle schema_version {BUNDLE_SCHEMA_VERSION + 1}, this checker reads 1"
    assert check_bundle(bundle) == [expected]
    (bundle / MANIFEST).unlink()
    assert check_bundle(bundle)[0].startswith(f"{MANIFEST}: cannot read")


def test_a_bundle_is_written_into_an_empty_directory_only(tmp_path):
    bundle = make_bundle(tmp_path / "a")
    with pytest.raises(ValueError, match="not empty"):
        write_bundle(bundle, run_dirs=[], environment={}, profile=get_profile("cpu-tiny"), suite_files=[],
                     baseline_files=[], required_suites=[])
