"""Records: statistics over raw samples, round trips, schema versions, units, atomic writes."""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ovi_bench.records import (
    CaseResult,
    Environment,
    RunReport,
    Samples,
    SchemaError,
    StageRecord,
    Verdict,
    cpu_model,
    render_metric,
    write_atomic,
)
from ovi_bench.units import format_duration, parse_duration, parse_fraction, parse_quantity, parse_size


def test_samples_statistics_match_numpy() -> None:
    values = [3.0, 1.0, 2.0, 10.0, 4.0]
    s = Samples(values)
    q1, q3 = np.percentile(values, [25, 75])  # numpy's default "linear" == statistics' "inclusive"
    assert (s.n, s.median, s.min, s.max) == (5, 3.0, 1.0, 10.0)
    assert s.mean == pytest.approx(np.mean(values))
    assert s.stdev == pytest.approx(np.std(values, ddof=1))
    assert s.iqr == pytest.approx(q3 - q1)
    single = Samples([2.5])
    assert (single.stdev, single.iqr, single.render()) == (0.0, 0.0, "2.5")
    with pytest.raises(ValueError, match="at least one value"):
        Samples([])


def test_render_metric_uses_the_unit_in_the_name() -> None:
    assert render_metric("peak.total.alloc_bytes", 3 * 2**30) == "3.00 GiB"
    assert render_metric("time.denoise.step_s", Samples([1.0, 2.0, 3.0])) == "2 s ± 1 s (n=3)"
    assert render_metric("video_latent_shape", [48, 61, 60, 60]) == "[48, 61, 60, 60]"
    assert render_metric("anything", None) == "-"


def test_case_round_trip_keeps_samples_and_stages() -> None:
    case = CaseResult("c", "s", {"variant": "720x720_5s"}, "oom", stage="decode", error="OOM",
                      stages=[StageRecord("denoise", 1.5, 1.4, 10, 20, 5, 30, 40, {"steps": 2})],
                      metrics={"time.denoise.step_s": Samples([0.5, 0.6]), "video_frames": 121},
                      started_at="2026-11-23T00:00:00+00:00", duration_s=2.0)
    back = CaseResult.from_dict(case.to_dict())
    assert back == case and isinstance(back.metrics["time.denoise.step_s"], Samples)
    with pytest.raises(ValueError, match="status 'melted'"):
        CaseResult("c", "s", {}, "melted")


def test_report_round_trip_and_schema_mismatch() -> None:
    env = Environment(git_commit="abc", flags={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    report = RunReport("r1", ["s"], "reference", "synthetic:tiny", "cpu-tiny", env,
                       [CaseResult("c", "s", {}, "ok", metrics={"x": 1})],
                       [Verdict("c", "x", "exact", "pass", 1, 1, "ok")])
    data = report.to_dict()
    assert RunReport.from_dict(data).to_dict() == data
    with pytest.raises(SchemaError, match="schema_version 3 was written by a newer ovi-bench"):
        RunReport.from_dict({**data, "schema_version": 3}, source="new.json")
    with pytest.raises(SchemaError, match="old.json: run report of schema_version 1, older than"):
        RunReport.from_dict({**data, "schema_version": 1}, source="old.json")
    with pytest.raises(SchemaError, match="not a valid run report"):
        RunReport.from_dict({"schema_version": 2, "run_id": "x"})


def test_exit_status_from_outcomes() -> None:
    def report(status: str, verdict: str | None) -> RunReport:
        verdicts = [Verdict("c", "m", "time", verdict)] if verdict else []
        return RunReport("r", ["s"], "e", "w", "h", Environment(), [CaseResult("c", "s", {}, status)],
                         verdicts)

    assert report("ok", "pass").exit_status == 0
    assert report("ok", "no_baseline").exit_status == 1  # a check with nothing to compare with is no pass
    assert replace(report("ok", "no_baseline"), allow_missing_baseline=True).exit_status == 0
    assert report("ok", "improved").exit_status == 0
    assert report("ok", "regression").exit_status == 1
    assert report("ok", "error").exit_status == 1
    assert report("timeout", None).exit_status == 1
    # A run where nothing ran is not a pass (issue 12.3); a skip beside a passing case is.
    assert report("skipped", None).exit_status == 1 and report("unsupported", None).exit_status == 1
    assert "no case ran" in report("skipped", None).problems[0]
    mixed = RunReport("r", ["s"], "e", "w", "h", Environment(),
                      [CaseResult("a", "s", {}, "ok"), CaseResult("b", "s", {}, "unsupported", error="why")])
    assert mixed.exit_status == 0 and mixed.outcomes == {"a": "pass", "b": "unsupported"}


def test_environment_capture_records_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("UNRELATED_VARIABLE", "1")
    env = Environment.capture()
    assert env.flags["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "UNRELATED_VARIABLE" not in env.flags and env.torch and env.date
    assert Environment.from_dict(env.to_dict()) == env


def test_the_cpu_is_named_by_its_model_where_linux_gives_it(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_model(info) == "AMD EPYC 7B13"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # e.g. some aarch64 kernels: no model name
    assert cpu_model(info) == (platform.processor() or platform.machine())
    assert cpu_model(tmp_path / "absent") == (platform.processor() or platform.machine())


def test_units() -> None:
    assert parse_size("100 GB") == 100 * 10**9 and parse_size("256 MiB") == 256 * 2**20
    assert parse_fraction("2%") == pytest.approx(0.02)
    assert parse_duration("250ms") == pytest.approx(0.25) and parse_duration("5 min") == 300
    assert parse_quantity("1 GiB", "peak.total.alloc_bytes") == 2**30
    assert parse_quantity("90s", "time.total_s") == 90
    with pytest.raises(ValueError, match="has no unit"):
        parse_quantity("3 GB", "video_frames")
    assert format_duration(387.3) == "6 min 27 s" and format_duration(0.0123) == "12.3 ms"


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "f.json"
    write_atomic(path, "old")
    write_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["f.json"]
