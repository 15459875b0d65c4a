"""Judging on the right hardware: a unified device's stage peaks are its VRAM + GTT footprint (not the
allocator's carve-out figure), and a baseline recorded on another profile or device is refused with an
`error` verdict naming the reason, never compared and never a pass."""

from __future__ import annotations

from pathlib import Path

from ovi_bench.baselines import judge_run, parse_check, update_baseline
from ovi_bench.metrics import stage_metrics
from ovi_bench.records import CaseResult, Environment, RunReport, Samples, StageRecord
from ovi_bench.trackers.unified import FOOTPRINT

GiB = 2**30


def unified_stage(name: str, alloc: int, footprint: int) -> StageRecord:
    return StageRecord(name, 1.0, alloc_peak=alloc, host_rss_peak=GiB,
                       extra={"memory": {"views": {FOOTPRINT: footprint}, "judged_on": FOOTPRINT,
                                         "judged_bytes": footprint}})


def test_a_unified_device_is_judged_on_its_footprint():
    stages = [unified_stage("load", 10 * GiB, 30 * GiB), unified_stage("denoise", 12 * GiB, 50 * GiB),
              unified_stage("denoise", 11 * GiB, 55 * GiB)]
    metrics = stage_metrics(stages)
    assert metrics["peak.load.bytes"] == 30 * GiB and metrics["peak.denoise.bytes"] == 55 * GiB
    assert metrics["peak.total.bytes"] == 55 * GiB
    assert metrics["peak.denoise.alloc_bytes"] == 12 * GiB  # the allocator's view stays beside it


def test_other_devices_keep_the_allocator_then_host_rss():
    metrics = stage_metrics([StageRecord("load", 1.0, alloc_peak=7, host_rss_peak=99),
                             StageRecord("decode", 1.0, host_rss_peak=40)])
    assert metrics["peak.load.bytes"] == 7 and metrics["peak.decode.bytes"] == 40


CHECK = parse_check({"metric": "time.denoise.step_s", "rule": "time", "min_factor": 1.2})
LIMIT = parse_check({"metric": "peak.total.bytes", "rule": "max", "limit": 100})


def report(hardware: str, device: str, step_s: float) -> RunReport:
    case = CaseResult("c", "s", {"variant": "960x960_10s"}, "ok",
                      metrics={"time.denoise.step_s": Samples([step_s]), "peak.total.bytes": 50,
                               "machine.matmul_tflops": 700.0})
    return RunReport("r", ["s"], "reference", "synthetic:full", hardware,
                     Environment(device_name=device, date="2026-11-23T00:00:00+00:00"), [case],
                     baseline_metrics={"s": ["machine.matmul_tflops", "time.denoise.step_s"]})


def judged(tmp_path: Path, stored: RunReport, now: RunReport, *, hardware: str | None = None) -> RunReport:
    update_baseline(stored, tmp_path, hardware)
    return judge_run(now, {"s": [CHECK, LIMIT]}, tmp_path)


def test_a_baseline_from_the_same_device_is_compared(tmp_path):
    result = judged(tmp_path, report("h200-141gb", "NVIDIA H200", 1.0),
                    report("h200-141gb", "NVIDIA H200", 1.0))
    assert [v.status for v in result.verdicts] == ["pass", "pass"] and result.exit_status == 0


def test_a_baseline_from_another_device_under_the_same_profile_is_refused(tmp_path):
    # An H100's results stored as h200-141gb with --hardware: same name, another device.
    result = judged(tmp_path, report("h100-80gb", "NVIDIA H100 80GB HBM3", 1.0),
                    report("h200-141gb", "NVIDIA H200", 1.0), hardware="h200-141gb")
    time_verdict, limit_verdict = result.verdicts
    assert time_verdict.status == "error" and result.exit_status == 1
    assert ("baseline refused" in time_verdict.message
            and "device_name 'NVIDIA H100 80GB HBM3'" in time_verdict.message)
    assert limit_verdict.status == "pass"  # the profile's limits do not need a baseline
    assert "not the same hardware" in result.baselines["s"]["refused"]


def test_a_baseline_file_of_another_profile_is_refused(tmp_path):
    update_baseline(report("h100-80gb", "NVIDIA H200", 1.0), tmp_path)
    (tmp_path / "h100-80gb").rename(tmp_path / "h200-141gb")  # the file moved, its content says h100-80gb
    result = judge_run(report("h200-141gb", "NVIDIA H200", 1.0), {"s": [CHECK]}, tmp_path)
    (verdict,) = result.verdicts
    assert verdict.status == "error" and "recorded on hardware profile 'h100-80gb'" in verdict.message
