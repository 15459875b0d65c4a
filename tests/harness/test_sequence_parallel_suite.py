"""The sequence_parallel suite through `ovi-bench run --nproc`: 2 gloo ranks under torchrun at the tiny preset
give the single-rank latents; a rank killed mid-run is a crash result naming the rank and its stage while
the run goes on; a split run that drifts from the single-rank one fails its check; bad --nproc is exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ovi_bench.cli import main
from ovi_bench.engines.fake import FAULTS_ENV, FakeEngine, FakeLatents
from ovi_bench.records import CaseResult, RunReport, Samples
from ovi_bench.scenarios.sequence_parallel import add_scaling_efficiency
from ovi_bench.variant_facts import variant_facts

DRIFT = 1e-3


class DriftingEngine(FakeEngine):
    """Splits 'badly': its latents move by DRIFT when sequence parallelism is on."""

    def denoise(self, text, **kwargs) -> FakeLatents:  # type: ignore[no-untyped-def]
        latents = super().denoise(text, **kwargs)
        assert self.config is not None
        if self.config.sequence_parallel:
            latents.video = latents.video + DRIFT
        return latents


def drifting_engine() -> DriftingEngine:
    return DriftingEngine()


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def report_of(run_dir) -> RunReport:
    return RunReport.from_dict(json.loads((run_dir / "report.json").read_text()))


def test_two_gloo_ranks_give_the_single_rank_latents(tmp_path):
    result = invoke("run", "sequence_parallel", "--nproc", "2", "--hardware", "cpu-tiny",
                    "--baselines", str(tmp_path / "baselines"), "--allow-missing-baseline", "--report-dir",
                    str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    report = report_of(tmp_path / "run")
    (case,) = report.cases
    assert (case.status, case.params["nproc"]) == ("ok", 2)
    metrics = case.metrics
    assert metrics["sp.world_size"] == 2
    # the 720x720_5s latents at the tiny preset's 32x32 frames, from the harness's own derivation
    facts = variant_facts("720x720_5s")
    assert metrics["video_latent_shape"] == facts.video_latent_shape(None, None, 1024)
    assert metrics["audio_latent_shape"] == facts.audio_latent_shape()
    assert metrics["sp.shape_mismatches"] == []
    assert metrics["sp.latents_rel_err"] <= 1e-4
    ranks = metrics["peak.denoise.rank_bytes"]
    assert len(ranks) == 2 and min(ranks) > 0 and metrics["peak.denoise.max_rank_bytes"] == max(ranks)
    assert metrics["time.denoise.step_s"].n == 1  # 2 steps, the first one warm-up
    assert [s.name for s in case.stages][:3] == ["load", "encode_text", "denoise"]
    checked = {v.metric: v.status for v in report.verdicts}
    assert checked["sp.latents_rel_err"] == checked["sp.shape_mismatches"] == "pass"
    assert "time.denoise.step_s" not in checked  # the time check holds only at full scale (scale: full)


def test_killed_rank_is_a_crash_and_drift_fails_the_check(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "720x720_5s:denoise:sigkill@1")
    result = invoke("run", "sequence_parallel", "--engine", f"{__name__}:drifting_engine", "--nproc", "2",
                    "--variant", "720x720_5s", "--variant", "960x960_10s", "--hardware", "cpu-tiny",
                    "--baselines", str(tmp_path / "baselines"), "--allow-missing-baseline", "--report-dir",
                    str(tmp_path / "run"))
    assert result.exit_code == 1, result.output
    report = report_of(tmp_path / "run")
    killed, drifted = report.cases
    assert (killed.status, killed.stage) == ("crash", "denoise")
    assert killed.error == "rank 1 died from signal SIGKILL without a result"
    assert killed.metrics["at_end.host_rss_bytes"] > 0
    assert drifted.status == "ok"  # the run went on
    assert report.outcomes == {killed.case_id: "error", drifted.case_id: "fail"}
    (failed,) = [v for v in report.verdicts if v.status == "fail" and v.case_id == drifted.case_id]
    assert failed.metric == "sp.latents_rel_err"
    assert failed.observed > 1e-4 and "did not compute what one rank computes" in failed.message


def test_scaling_efficiency_is_t1_over_n_tn():
    def case(nproc: int, variant: str, steps: list[float], status: str = "ok") -> CaseResult:
        return CaseResult(f"sp[{variant},{nproc}]", "sp", {"variant": variant, "nproc": nproc, "steps": 2},
                          status, metrics={"time.denoise.step_s": Samples(steps)})

    one, two, four = case(1, "a", [8.0, 9.0, 10.0]), case(2, "a", [5.0]), case(4, "a", [3.0, 2.0, 2.5])
    lonely, broken = case(2, "b", [1.0]), case(8, "a", [1.0], status="oom")
    add_scaling_efficiency([one, two, four, lonely, broken])
    assert two.metrics["sp.efficiency"] == pytest.approx(9.0 / (2 * 5.0))
    assert four.metrics["sp.efficiency"] == pytest.approx(9.0 / (4 * 2.5))
    for unmatched in (one, lonely, broken):  # no 1-rank case of its variant, itself 1 rank, or not ok
        assert "sp.efficiency" not in unmatched.metrics


@pytest.mark.parametrize(("args", "message"), [
    (["run", "sequence_parallel", "--nproc", "0"], "--nproc must be >= 1"),
    (["run", "variant_latents", "--nproc", "2"], "has an nproc axis"),
])
def test_bad_nproc_is_one_line_and_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_suite_file_nproc_must_be_a_rank_count(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text("schema_version: 1\nname: bad\ndescription: x\nscenario: sequence_parallel\n"
                     "matrix:\n  nproc: [2, 0]\n")
    result = invoke("run", str(suite))
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {suite}:6: nproc must be a whole number of ranks >= 1, got 0"


def test_fake_fault_for_another_rank_is_ignored(monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "720x720_5s:load:error@1")
    monkeypatch.setenv("RANK", "0")
    from ovi_bench.engines.base import EngineConfig

    FakeEngine().load(EngineConfig(variant="720x720_5s"))  # rank 0: no fault
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="injected error in load"):
        FakeEngine().load(EngineConfig(variant="720x720_5s"))
