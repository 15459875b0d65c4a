"""Check rules (pass and fail sides), baseline files (versioned, provenance, atomic explicit update) and
compare(a, b). Expected values come from arithmetic on the constructed samples or from VARIANTS.md."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from ovi_bench.baselines import (
    MACHINE_SPEED,
    Baseline,
    CheckError,
    baseline_path,
    judge,
    judge_run,
    load_baseline,
    parse_check,
    update_baseline,
)
from ovi_bench.compare import compare
from ovi_bench.records import CaseResult, Environment, OutputError, RunReport, Samples, SchemaError

GiB, MiB = 2**30, 2**20


def case(metrics: dict, *, status: str = "ok", case_id: str = "c", **params) -> CaseResult:
    return CaseResult(case_id, "s", {"variant": "960x960_10s", "policy": "all_gpu", **params}, status,
                      stage="decode" if status != "ok" else None, metrics=metrics)


def baseline(metrics: dict, case_id: str = "c") -> Baseline:
    return Baseline("s", "h100-80gb", {"run_id": "old"}, {case_id: metrics})


def one(raw: dict, c: CaseResult, base: Baseline | None = None, profile=None) -> str:
    verdicts = judge([c], [parse_check(raw)], base, profile=profile)
    assert len(verdicts) == 1
    return verdicts[0].status


class FakeProfile:
    name = "fake"

    def limit(self, name: str) -> int:
        return {"total_peak": 76 * GiB}[name]


# ---- exact, max/min, expect_status -----------------------------------------------------------------------

def test_exact_against_recorded_spec_and_params() -> None:
    # VARIANTS.md: 10 s at 24 fps -> 241 frames -> 1 + 240/4 = 61 latent frames; 960 / 16 = 60 latent rows.
    spec = {"spec.video_latent_shape": (48, 61, 60, 60)}  # a tuple: JSON gives lists back, both compare equal
    rule = {"metric": "video_latent_shape", "rule": "exact", "expected": "spec.video_latent_shape"}
    assert one(rule, case({"video_latent_shape": [48, 61, 60, 60], **spec})) == "pass"
    # 5 s lengths, 10 s run
    assert one(rule, case({"video_latent_shape": [48, 31, 60, 60], **spec})) == "fail"
    assert one(rule, case({"video_latent_shape": [48, 61, 60, 60]})) == "error"  # nothing to compare with
    by_param = {"metric": "attention", "rule": "exact", "expected": "params.attention"}
    assert one(by_param, case({"attention": "sdpa"}, attention="sdpa")) == "pass"
    assert one(by_param, case({"attention": "math"}, attention="sdpa")) == "fail"
    assert one({"metric": "x", "rule": "exact", "expected": 3}, case({"x": 3})) == "pass"


def test_max_min_with_sizes_and_profile() -> None:
    peak = {"metric": "peak.total.alloc_bytes", "rule": "max", "limit": "100 GB"}
    assert one(peak, case({"peak.total.alloc_bytes": 100 * 10**9})) == "pass"
    assert one(peak, case({"peak.total.alloc_bytes": 100 * 10**9 + 1})) == "fail"
    profiled = {"metric": "peak.total.alloc_bytes", "rule": "max", "limit": "profile.total_peak"}
    assert one(profiled, case({"peak.total.alloc_bytes": 75 * GiB}), profile=FakeProfile()) == "pass"
    assert one(profiled, case({"peak.total.alloc_bytes": 77 * GiB}), profile=FakeProfile()) == "fail"
    assert one(profiled, case({"peak.total.alloc_bytes": 1}), profile=None) == "error"  # no profile to read
    frames = {"metric": "video_frames", "rule": "min", "limit": 241}
    assert one(frames, case({"video_frames": 241})) == "pass"
    assert one(frames, case({"video_frames": 121})) == "fail"
    step = {"metric": "time.denoise.step_s", "rule": "max", "limit": "2s"}  # Samples: judged by median
    assert one(step, case({"time.denoise.step_s": Samples([1.0, 1.9, 5.0])})) == "pass"
    assert one(step, case({"time.denoise.step_s": Samples([1.0, 2.1, 5.0])})) == "fail"


def test_expect_status_and_abnormal_cases() -> None:
    checks = [parse_check({"metric": "status", "rule": "expect_status", "expected": "oom",
                           "when": {"policy": "keep_resident"}}),
              parse_check({"metric": "peak.total.alloc_bytes", "rule": "max", "limit": "1 GB"})]
    oom = case({}, status="oom", case_id="kr", policy="keep_resident")
    survived = case({"peak.total.alloc_bytes": 10}, case_id="kr-ok", policy="keep_resident")
    other = case({"peak.total.alloc_bytes": 10}, case_id="ag")
    crashed = case({}, status="crash", case_id="boom")
    verdicts = judge([oom, survived, other, crashed], checks, None)
    got = {(v.case_id, v.rule): v.status for v in verdicts}
    assert got == {("kr", "expect_status"): "pass", ("kr-ok", "expect_status"): "fail",
                   ("kr-ok", "max"): "pass", ("ag", "max"): "pass"}  # abnormal cases: status checks only
    report = RunReport("r", ["s"], "e", "w", "h", Environment(), [oom, survived, other, crashed], verdicts)
    assert report.outcomes == {"kr": "pass", "kr-ok": "fail", "ag": "pass", "boom": "error"}


def test_missing_metric_is_an_error_not_a_pass() -> None:
    assert one({"metric": "video_frames", "rule": "min", "limit": 1}, case({})) == "error"


# ---- relative and time (need a baseline) -----------------------------------------------------------------

RELATIVE = {"metric": "peak.decode_video.alloc_bytes", "rule": "relative", "tolerance": "2%",
            "floor": "256 MiB"}


@pytest.mark.parametrize(("base", "now", "expected"), [
    # 10 GiB: 2% = 204.8 MiB < floor, so 256 MiB of growth is allowed
    (10 * GiB, 10 * GiB + 250 * MiB, "pass"),
    (10 * GiB, 10 * GiB + 300 * MiB, "regression"),
    # 100 GiB: 2% = 2 GiB > floor
    (100 * GiB, 101.5 * GiB, "pass"),
    (100 * GiB, 102.5 * GiB, "regression"),
    (100 * GiB, 97 * GiB, "improved"),
])
def test_relative_rule(base: float, now: float, expected: str) -> None:
    name = RELATIVE["metric"]
    assert one(RELATIVE, case({name: now}), baseline({name: base})) == expected


def test_missing_baseline_is_reported_not_passed() -> None:
    name = RELATIVE["metric"]
    assert one(RELATIVE, case({name: GiB}), None) == "no_baseline"
    assert one(RELATIVE, case({name: GiB}), baseline({"other": 1})) == "no_baseline"


TIME = {"metric": "time.denoise.step_s", "rule": "time", "min_factor": 1.10, "alpha": 0.05}
SPEED = MACHINE_SPEED
BASE_TIMES = [1.00, 1.01, 0.99, 1.02, 0.98, 1.00]


@pytest.mark.parametrize(("now", "expected"), [
    # every sample 1.5x slower: fully separated ranks, exact one-sided p = 1/C(12,6) = 1/924 -> regression
    ([1.50, 1.51, 1.49, 1.52, 1.48, 1.50], "regression"),
    # fully separated (significant) but only 1.05x slower: below min_factor -> pass
    ([1.05, 1.06, 1.04, 1.07, 1.045, 1.055], "pass"),
    # median 1.2x slower but the spread covers the baseline (ranks interleave): noise -> pass
    ([0.90, 1.20, 1.25, 1.15, 0.95, 3.0], "pass"),
    # every sample 1.5x faster -> improved
    ([0.66, 0.67, 0.65, 0.68, 0.66, 0.67], "improved"),
])
def test_time_rule_on_repeats(now: list[float], expected: str) -> None:
    name = TIME["metric"]
    assert one(TIME, case({name: Samples(now), SPEED: 1.0}),
               baseline({name: Samples(BASE_TIMES), SPEED: 1.0})) == expected


def test_time_rule_single_sample_uses_factor_alone() -> None:
    name = TIME["metric"]
    same = {SPEED: 0.5}
    assert one(TIME, case({name: Samples([1.12]), **same}),
               baseline({name: Samples(BASE_TIMES), **same})) == "regression"
    assert one(TIME, case({name: Samples([1.08]), **same}),
               baseline({name: Samples(BASE_TIMES), **same})) == "pass"
    assert one(TIME, case({name: 2.0, **same}), baseline({name: 1.0, **same})) == "regression"


def test_time_rule_compares_like_with_like_across_machine_speeds() -> None:
    """Issue 12.2: a baseline from a 3x slower machine made a 2x slowdown read as 'improved'. Times are
    scaled by the machine speed each run measured, and machines too far apart are not compared at all."""
    name = TIME["metric"]
    slow_baseline = baseline({name: Samples([3.0 * t for t in BASE_TIMES]), SPEED: 1.0})
    twice_as_slow_on_a_3x_faster_machine = case({name: Samples([2.0 * t for t in BASE_TIMES]), SPEED: 3.0})
    assert one(TIME, twice_as_slow_on_a_3x_faster_machine, slow_baseline) == "regression"
    unchanged = case({name: Samples(BASE_TIMES), SPEED: 3.0})
    assert one(TIME, unchanged, slow_baseline) == "pass"
    far_apart = case({name: Samples(BASE_TIMES), SPEED: 80.0})
    verdicts = judge([far_apart], [parse_check(TIME)], slow_baseline)
    assert verdicts[0].status == "error" and "80.0x slower" in verdicts[0].message
    assert one(TIME, case({name: Samples(BASE_TIMES)}), slow_baseline) == "error"  # no speed measured now


# audio_self (157 tokens) with sdpa_flash on the H200, two qualifications 2026-12-02 (12-02e): CUDA events
# around a ~17 us kernel read the host's launch timing, not the kernel
AUDIO_SELF_BASE = [160.1, 19.2, 16.7, 17.5, 18.0, 16.8, 17.0, 18.2, 17.9, 17.0]
AUDIO_SELF_NOW = [281.9, 141.7, 96.9, 122.1, 93.2, 146.2, 115.6, 95.8, 99.2, 73.7]


def test_time_floor_leaves_microsecond_launch_noise_out_and_still_sees_real_slowdowns() -> None:
    name = "time.attention.audio_self_s"
    raw = {"metric": name, "rule": "time", "min_factor": 1.5, "alpha": 0.05}
    base_s = [1e-6 * t for t in AUDIO_SELF_BASE]
    base = baseline({name: Samples(base_s), SPEED: 1.0})

    def now(values_s: list[float]) -> CaseResult:
        return case({name: Samples(values_s), SPEED: 1.0})

    noisy = now([1e-6 * t for t in AUDIO_SELF_NOW])
    assert one(raw, noisy, base) == "regression"  # 6x by the factor and the test alone
    floored = {**raw, "floor": "200 us"}
    assert parse_check(floored).floor == pytest.approx(200e-6)
    assert one(floored, noisy, base) == "pass"  # both medians under the floor: 1.0x
    assert one(floored, now([t + 300e-6 for t in base_s]), base) == "regression"  # ~318 us: 1.6x the floor
    assert one(floored, now([t + 1e-3 for t in base_s]), base) == "regression"
    # a kernel above the floor keeps its own ratio: 400 us -> 800 us is 2x
    above = baseline({name: Samples([4e-4 + 1e-6 * i for i in range(6)]), SPEED: 1.0})
    assert one(floored, now([8e-4 + 1e-6 * i for i in range(6)]), above) == "regression"
    with pytest.raises(CheckError, match="needs a unit"):
        parse_check({**raw, "floor": 200})


@pytest.mark.parametrize(("raw", "message"), [
    ({"metric": "x", "rule": "fuzzy"}, "rule 'fuzzy' is not one of"),
    ({"metric": "peak.total.alloc_bytes", "rule": "max", "limit": "100 GX"}, "unknown size unit"),
    ({"metric": "peak.total.alloc_bytes", "rule": "max"}, "needs 'limit'"),
    ({"metric": "a_bytes", "rule": "relative", "tolerance": "two percent"}, "expected a fraction"),
    ({"metric": "t_s", "rule": "time", "min_factor": 0.9}, "min_factor must be >= 1.0"),
    ({"metric": "t_s", "rule": "time", "alpha": 1.5}, "alpha must be between 0 and 1"),
    ({"metric": "status", "rule": "expect_status", "expected": "exploded"}, "is not one of"),
    ({"metric": "x", "rule": "exact", "expected": 1, "limit": 3}, "unknown key(s) limit"),
])
def test_bad_checks_fail_at_parse(raw: dict, message: str) -> None:
    with pytest.raises(CheckError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_check(raw)


# ---- baseline files --------------------------------------------------------------------------------------

def run_report(values: dict[str, float], *, run_id: str = "run-1", status: str = "ok") -> RunReport:
    env = Environment(git_commit="abc123", torch="2.11", date="2026-11-23T00:00:00+00:00")
    cases = [CaseResult(cid, "s", {"variant": "960x960_10s"}, status,
                        metrics={"peak.total.alloc_bytes": v, "time.denoise.step_s": Samples([v / GiB])})
             for cid, v in values.items()]
    return RunReport(run_id, ["s"], "reference", "synthetic:tiny", "h100-80gb", env, cases,
                     baseline_metrics={"s": ["peak.total.alloc_bytes", "time.denoise.step_s"]})


def test_update_writes_versioned_baseline_with_provenance(tmp_path: Path) -> None:
    diff = update_baseline(run_report({"a": 10 * GiB, "b": 20 * GiB}), tmp_path)
    path = tmp_path / "h100-80gb" / "s.json"
    assert diff.paths == {"s": path} and len(diff.changes) == 4 and diff.unchanged == 0
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2
    assert data["provenance"]["run_id"] == "run-1" and data["provenance"]["git_commit"] == "abc123"
    assert data["provenance"]["date"] == "2026-11-23T00:00:00+00:00"
    stored = load_baseline(tmp_path, "h100-80gb", "s")
    assert stored is not None and stored.cases["b"]["peak.total.alloc_bytes"] == 20 * GiB
    assert stored.cases["a"]["time.denoise.step_s"].values == [10.0]


def test_update_shows_changes_and_keeps_cases_not_rerun(tmp_path: Path) -> None:
    update_baseline(run_report({"a": 10 * GiB, "b": 20 * GiB}), tmp_path)
    preview = update_baseline(run_report({"a": 11 * GiB}, run_id="run-2"), tmp_path, write=False)
    changes = [(c.case_id, c.metric, c.old, c.new) for c in preview.changes]
    assert changes[0] == ("a", "peak.total.alloc_bytes", 10 * GiB, 11 * GiB)
    assert (changes[1][2].values, changes[1][3].values) == ([10.0], [11.0]) and len(changes) == 2
    assert preview.kept == ["b"] and "11.00 GiB" in preview.render()
    stored = load_baseline(tmp_path, "h100-80gb", "s")
    assert stored is not None and stored.provenance["run_id"] == "run-1"  # write=False changed nothing
    update_baseline(run_report({"a": 11 * GiB}, run_id="run-2"), tmp_path)
    update_baseline(run_report({"b": 99 * GiB}, run_id="run-3", status="oom"), tmp_path)  # not ok: not stored
    stored = load_baseline(tmp_path, "h100-80gb", "s")
    assert stored is not None and stored.provenance["run_id"] == "run-3"
    assert stored.cases["a"]["peak.total.alloc_bytes"] == 11 * GiB
    assert stored.cases["b"]["peak.total.alloc_bytes"] == 20 * GiB


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_update_leaves_old_baseline_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  failing: str) -> None:
    update_baseline(run_report({"a": 10 * GiB}), tmp_path)
    path = baseline_path(tmp_path, "h100-80gb", "s")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, crash)
    with pytest.raises(OutputError, match="No space left on device"):
        update_baseline(run_report({"a": 50 * GiB}, run_id="run-2"), tmp_path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.json"]  # no temp file left behind


def test_baseline_of_other_schema_is_a_one_line_error(tmp_path: Path) -> None:
    path = baseline_path(tmp_path, "h100-80gb", "s")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema_version": 7, "suite": "s", "hardware": "h", "provenance": {},
                                "cases": {}}))
    with pytest.raises(SchemaError) as info:
        load_baseline(tmp_path, "h100-80gb", "s")
    assert ("\n" not in str(info.value) and "schema_version 7" in str(info.value)
            and str(path) in str(info.value))
    assert load_baseline(tmp_path, "h100-80gb", "missing-suite") is None


def test_judge_run_reads_baselines_and_records_provenance(tmp_path: Path) -> None:
    update_baseline(run_report({"a": 10 * GiB}), tmp_path)
    checks = {"s": [parse_check(RELATIVE | {"metric": "peak.total.alloc_bytes"})]}
    judged = judge_run(run_report({"a": 11 * GiB}, run_id="run-2"), checks, tmp_path)
    assert [v.status for v in judged.verdicts] == ["regression"] and judged.exit_status == 1
    assert judged.baselines["s"]["run_id"] == "run-1"
    fresh = judge_run(run_report({"a": 11 * GiB}), checks, tmp_path / "empty")
    assert [v.status for v in fresh.verdicts] == ["no_baseline"] and fresh.baselines == {"s": None}
    # No baseline is never a pass (issue 12.1): the run fails unless it is a first run on new hardware.
    assert fresh.exit_status == 1 and "no baseline for h100-80gb of s" in fresh.problems[0]
    first_run = judge_run(replace(run_report({"a": 11 * GiB}), allow_missing_baseline=True), checks,
                          tmp_path / "empty")
    assert first_run.exit_status == 0 and first_run.missing_baselines == ["s"]


def test_a_baseline_file_lacking_a_case_or_a_metric_a_check_reads_is_not_a_pass(tmp_path: Path) -> None:
    update_baseline(run_report({"a": 10 * GiB}), tmp_path)  # stores case a only
    checks = {"s": [parse_check(RELATIVE | {"metric": "peak.total.alloc_bytes"})]}
    judged = judge_run(run_report({"a": 10 * GiB, "b": 10 * GiB}), checks, tmp_path)
    assert [v.status for v in judged.verdicts] == ["pass", "no_baseline"] and judged.missing_baselines == []
    assert judged.exit_status == 1
    (problem,) = judged.problems
    assert problem == ("1 check(s) found no baseline value in the h100-80gb baseline of s (a case or metric "
                       "it lacks): re-record it with `ovi-bench baseline update`, or run with "
                       "--allow-missing-baseline")
    allowed = judge_run(replace(run_report({"a": 10 * GiB, "b": 10 * GiB}), allow_missing_baseline=True),
                        checks, tmp_path)
    assert allowed.exit_status == 0 and allowed.problems == []


def test_like_compares_only_where_its_metrics_are_as_in_the_baseline() -> None:
    rule = RELATIVE | {"metric": "err", "tolerance": "50%", "floor": 0, "like": "dtype"}
    base = baseline({"err": 1e-6, "dtype": "float32"})
    assert one(rule, case({"err": 3e-3, "dtype": "float32"}), base) == "regression"
    assert one(rule, case({"err": 3e-3, "dtype": "bfloat16"}), base) == "changed"
    assert one(rule, case({"err": 3e-3, "dtype": "float32"}), baseline({"err": 1e-6})) == "no_baseline"
    assert one(rule, case({"err": 3e-3}), base) == "error"  # the case did not record what makes it alike
    assert parse_check(rule).like == ("dtype",)
    assert parse_check(rule | {"like": ["a", "b"]}).like == ("a", "b")
    with pytest.raises(CheckError, match="unknown key"):
        parse_check({"metric": "err", "rule": "max", "limit": 1, "like": "dtype"})
    with pytest.raises(CheckError, match="'like' must be"):
        parse_check(rule | {"like": 3})


# ---- compare(a, b) ---------------------------------------------------------------------------------------

def test_compare_side_by_side() -> None:
    env = Environment(git_commit="abc")
    slow, same = [2.0, 2.1, 2.05, 1.95, 2.02], [1.0, 1.1, 1.05, 0.95, 1.02]
    a = RunReport("A", ["s"], "reference", "w", "h", env, [
        CaseResult("x", "s", {}, "ok",
                   metrics={"t_s": Samples([1.0, 1.1, 1.05, 0.95, 1.02]), "m_bytes": 100}),
        CaseResult("y", "s", {}, "ok", metrics={"t_s": Samples(same)}),
        CaseResult("only-a", "s", {}, "ok")])
    b = RunReport("B", ["s"], "fork", "w", "h", env, [
        CaseResult("x", "s", {}, "ok", metrics={"t_s": Samples(slow), "m_bytes": 150}),
        CaseResult("y", "s", {}, "ok", metrics={"t_s": Samples(list(reversed(same)))})])
    rows = {(r.case_id, r.metric): r for r in compare(a, b).rows}
    assert rows[("x", "m_bytes")].ratio == 1.5
    assert rows[("x", "t_s")].ratio == pytest.approx(2.02 / 1.02)
    assert "slower, significant" in rows[("x", "t_s")].note
    assert rows[("y", "t_s")].ratio == 1.0 and "within noise" in rows[("y", "t_s")].note
    assert rows[("only-a", "status")].note == "case only in a"
    text = compare(a, b).render()
    assert "fork" in text and "1.500" in text


# ---- CPU times belong to one processor model -------------------------------------------------------------

def cpu_report(processor: str, times: list[float], *, speed: float = 1.0, run_id: str = "run") -> RunReport:
    env = Environment(git_commit="abc123", device_name="cpu", cpu=processor, date="2026-12-03T00:00:00+00:00")
    cases = [CaseResult("a", "s", {"variant": "960x960_10s"}, "ok",
                        metrics={"peak.total.alloc_bytes": GiB, "time.denoise.step_s": Samples(times),
                                 SPEED: speed})]
    return RunReport(run_id, ["s"], "reference", "synthetic:tiny", "cpu-tiny", env, cases,
                     baseline_metrics={"s": ["peak.total.alloc_bytes", "time.denoise.step_s", SPEED]})


CPU_CHECKS = {"s": [parse_check(TIME), parse_check(RELATIVE | {"metric": "peak.total.alloc_bytes"})]}


def statuses(report: RunReport, directory: Path) -> dict[str, str]:
    return {v.metric: v.status for v in judge_run(report, CPU_CHECKS, directory).verdicts}


def test_cpu_times_are_judged_only_against_the_same_processor_model(tmp_path: Path) -> None:
    """On an Intel Xeon the tiny attention read 2.0-2.6x an AMD EPYC baseline with the engine unmodified:
    the matmul times are scaled by does not keep one ratio to the kernels across models."""
    update_baseline(cpu_report("AMD EPYC 7B13", BASE_TIMES), tmp_path)
    stored = load_baseline(tmp_path, "cpu-tiny", "s")
    assert stored is not None and stored.provenance["processor"] == "AMD EPYC 7B13"
    slower = [2 * t for t in BASE_TIMES]
    assert statuses(cpu_report("AMD EPYC 7B13", slower), tmp_path)["time.denoise.step_s"] == "regression"
    # another model: its times have no baseline (never a pass), the memory check still reads the suite's
    xeon = judge_run(cpu_report("Intel Xeon", BASE_TIMES), CPU_CHECKS, tmp_path)
    by_metric = {v.metric: v for v in xeon.verdicts}
    assert by_metric["peak.total.alloc_bytes"].status == "pass"
    assert by_metric["time.denoise.step_s"].status == "no_baseline" and xeon.exit_status == 1
    assert "'Intel Xeon'" in by_metric["time.denoise.step_s"].message
    assert "--this-processor" in by_metric["time.denoise.step_s"].message

    diff = update_baseline(cpu_report("Intel Xeon", [3 * t for t in BASE_TIMES], speed=2.0, run_id="xeon"),
                           tmp_path, this_processor=CPU_CHECKS)
    own = tmp_path / "cpu-tiny" / "processors" / "Intel_Xeon" / "s.json"
    assert diff.paths == {"s": own}
    stored_own = load_baseline(tmp_path, "cpu-tiny", "s")
    assert stored_own is not None and stored_own.provenance["run_id"] == "run"  # the suite's file untouched
    xeon_times = json.loads(own.read_text())["cases"]["a"]
    assert set(xeon_times) == {"time.denoise.step_s", SPEED}  # only what belongs to the processor
    judged = judge_run(cpu_report("Intel Xeon", [3 * t for t in BASE_TIMES], speed=2.0), CPU_CHECKS, tmp_path)
    assert {v.metric: v.status for v in judged.verdicts} == {"time.denoise.step_s": "pass",
                                                             "peak.total.alloc_bytes": "pass"}
    assert judged.baselines["s"]["times"] == str(own) and judged.exit_status == 0
    assert statuses(cpu_report("Intel Xeon", [6 * t for t in BASE_TIMES], speed=2.0),
                    tmp_path)["time.denoise.step_s"] == "regression"
    # the suite's own model still reads the suite's file
    assert statuses(cpu_report("AMD EPYC 7B13", BASE_TIMES), tmp_path)["time.denoise.step_s"] == "pass"


def test_a_baseline_from_before_processors_were_named_is_read_as_before(tmp_path: Path) -> None:
    update_baseline(cpu_report("AMD EPYC 7B13", BASE_TIMES), tmp_path)
    path = baseline_path(tmp_path, "cpu-tiny", "s")
    data = json.loads(path.read_text())
    del data["provenance"]["processor"]
    path.write_text(json.dumps(data))
    assert statuses(cpu_report("Intel Xeon", BASE_TIMES), tmp_path)["time.denoise.step_s"] == "pass"
    slow_model = [3 * t for t in BASE_TIMES]
    update_baseline(cpu_report("Intel Xeon", slow_model), tmp_path, this_processor=CPU_CHECKS)
    assert statuses(cpu_report("Intel Xeon", slow_model), tmp_path)["time.denoise.step_s"] == "pass"
    assert statuses(cpu_report("Intel Xeon", BASE_TIMES), tmp_path)["time.denoise.step_s"] == "improved"


def test_an_accelerator_baseline_is_not_split_by_processor(tmp_path: Path) -> None:
    update_baseline(run_report({"a": GiB}), tmp_path)  # device_name unset: not a CPU run
    assert "processor" not in json.loads(baseline_path(tmp_path, "h100-80gb", "s").read_text())["provenance"]
    with pytest.raises(SchemaError, match="--this-processor stores a CPU's times"):
        update_baseline(run_report({"a": GiB}), tmp_path, this_processor=CPU_CHECKS)


def test_another_model_of_the_same_file_name_is_not_read_as_this_ones(tmp_path: Path) -> None:
    update_baseline(cpu_report("AMD EPYC 7B13", BASE_TIMES), tmp_path)
    update_baseline(cpu_report("Intel(R) Xeon", BASE_TIMES), tmp_path, this_processor=CPU_CHECKS)
    # "Intel R Xeon" shares the file name Intel_R_Xeon but is another model: it has no times of its own
    assert statuses(cpu_report("Intel R Xeon", BASE_TIMES), tmp_path)["time.denoise.step_s"] == "no_baseline"
    assert statuses(cpu_report("Intel(R) Xeon", BASE_TIMES), tmp_path)["time.denoise.step_s"] == "pass"
