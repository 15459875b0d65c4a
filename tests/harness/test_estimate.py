"""The memory model (ovi_bench.estimate) and the OOM frontier's bisection (ovi_bench.frontier), on the CPU.

Full scale: the estimate reproduces measured H100 stage peaks of the engine (626c742's oom_regression
baseline, restated below to the byte) within 2% (the
worst, 1.6%, is a load whose synthetic draw was smaller in that run), and the policies' placement rules order
the stages the way the engine's placement does. Tiny scale against a real run through the harness: on the CPU
torch keeps no allocator figure and the host RSS is the interpreter and torch (~0.4 GiB) around a few MB of
model, so a stage's peak cannot be compared. What can be compared honestly is the model's module bytes (the
engine's describe() placement after release, for every module, from a cpu_offload run where all four stay on
the host) and which modules are held after release (release.held_bytes, the bytes of the modules the engine's
placement still lists, under all_gpu and keep_resident).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ovi_bench.cli import main
from ovi_bench.estimate import EstimateRequest, estimate
from ovi_bench.hardware import GiB, get_profile
from ovi_bench.model_shapes import DIMS, block_pair_bytes
from ovi_bench.records import RunReport

# 626c742:baselines/h100-80gb/oom_regression.json, peak.<stage>.alloc_bytes (H100, synthetic:full, bf16)
H100 = {
    ("720x720_5s", "all_gpu"): (37550590976, 36873174528, 26097992192, 25371882496, 6758092800, 2088805888),
    ("960x960_5s", "cpu_offload"): (8401190912, 12966516736, 4822987776, 2199832576, 12330200064, 2806776832),
    ("960x960_10s", "all_gpu"): (36946784768, 36875501056, 27604179456, 25389005312, 11457012224, 2142851072),
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# 626c742 kept one streamed block pair on the device from denoise on (the pair prefetched for the block
# skip-layer guidance leaves out; fixed at cee60b7): the fixed engine holds that much less from denoise on.
# The pair's bytes come from the checkpoint schema (tests/harness/test_model_shapes.py checks them there).
STALE_PAIR = block_pair_bytes(DIMS["full"], 2)
FROM_DENOISE = ("denoise", "release", "decode_video", "decode_audio")
# The fixed engine measured on an H200 (52db8ce), committed with its environment.
H200_REPORT = (Path(__file__).parents[2] / "benchmarks/results/h200-141gb_2026-12-02b/suites"
               / "call3_oom_regression_720x720_5s_cpu_offload.report.json")


@pytest.mark.parametrize(("variant", "policy"), sorted(H100))
def test_full_scale_matches_the_measured_h100_peaks(variant: str, policy: str) -> None:
    result = estimate(EstimateRequest(variant, policy))
    for stage, measured in zip(result.stages, H100[variant, policy]):
        if policy == "cpu_offload" and stage.stage in FROM_DENOISE:
            measured -= STALE_PAIR
        assert abs(stage.bytes - measured) / measured < 0.02, stage


def test_full_scale_matches_the_fixed_engine_on_the_h200() -> None:
    """cpu_offload's denoise holds two streamed pairs once no skipped pair is left behind; within the 5% the
    estimate promises (load varies with the synthetic draw's chunks, denoise's working set by 0.1 GiB)."""
    case = json.loads(H200_REPORT.read_text())["cases"][0]
    assert case["case_id"].startswith("oom_regression[variant=720x720_5s,policy=cpu_offload")
    assert case["status"] == "ok"
    for stage in estimate(EstimateRequest("720x720_5s", "cpu_offload")).stages:
        measured = case["metrics"][f"peak.{stage.stage}.bytes"]
        assert abs(stage.bytes - measured) / measured < 0.05, (stage, measured)


def test_policies_place_what_the_engine_places() -> None:
    peaks = {p: {s.stage: s.bytes for s in estimate(EstimateRequest("960x960_10s", p)).stages}
             for p in ("all_gpu", "cpu_offload", "keep_resident", "sequential")}
    assert peaks["keep_resident"]["decode_video"] > peaks["all_gpu"]["decode_video"] + 30 * GiB
    assert peaks["cpu_offload"]["denoise"] < 8 * GiB < peaks["all_gpu"]["denoise"]
    assert peaks["sequential"]["load"] < 12 * GiB < peaks["all_gpu"]["load"]  # the text encoder alone
    tiled = estimate(EstimateRequest("960x960_10s", "all_gpu", tiled=True)).stage("decode_video").bytes
    assert tiled < peaks["all_gpu"]["decode_video"] - 4 * GiB


def test_fit_reports_the_margin_against_the_profile() -> None:
    fits = {f.stage: f
            for f in estimate(EstimateRequest("960x960_10s", "all_gpu")).fit(get_profile("consumer-24gb"))}
    assert not fits["load"].fits and fits["load"].margin < 0
    assert fits["decode_audio"].fits and fits["decode_audio"].margin == 22 * GiB - fits["decode_audio"].bytes


def test_cli_prints_the_table_and_the_verdict() -> None:
    result = invoke("estimate", "--variant", "960x960_10s", "--policy", "cpu_offload", "--hardware",
                    "consumer-24gb")
    assert result.exit_code == 0, result.output
    assert "decode_video" in result.output and "verdict: fits" in result.output
    result = invoke("estimate", "--variant", "960x960_10s", "--policy", "all_gpu", "--format", "json",
                    "--tiled")
    data = json.loads(result.output)
    assert data["schema_version"] == 1 and data["hardware"]["fits"] is False and data["request"]["tiled"]


@pytest.mark.parametrize("args", [("--variant", "960x961_10s", "--policy", "all_gpu"),
                                  ("--variant", "1x1_5s", "--policy", "all_gpu"),  # well-formed, no Ovi
                                  ("--variant", "960x960_10s", "--policy", "nope"),
                                  ("--variant", "960x960_10s", "--policy", "all_gpu", "--hardware", "nope")])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, ["estimate", *args])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


# ---- tiny preset against a real run of the reference engine through the harness --------------------------
SUITE = """\
schema_version: 1
name: estimate_tiny
description: the tiny pipeline under three policies, for the memory model's CPU comparison
scenario: pipeline
matrix:
  variant: [720x720_5s]
  policy: [all_gpu, cpu_offload, keep_resident]
params: {steps: 1, warmup_steps: 0, area: 1024}
checks:
  - {metric: video_latent_shape, rule: exact, expected: spec.video_latent_shape}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimate")
    (root / "estimate_tiny.yaml").write_text(textwrap.dedent(SUITE))
    result = invoke("run", str(root / "estimate_tiny.yaml"), "--preset", "tiny", "--hardware", "cpu-tiny",
                    "--baselines", str(root / "baselines"), "--allow-missing-baseline",
                    "--report-dir", str(root / "run"))
    assert result.exit_code == 0, result.output
    report = RunReport.from_dict(json.loads((root / "run" / "report.json").read_text()))
    return {c.params["policy"]: c for c in report.cases}


def test_tiny_module_bytes_are_the_engines(tiny_run) -> None:
    placement = {p["module"]: p["bytes"] for p in tiny_run["cpu_offload"].metrics["engine.placement"]}
    assert set(placement) == {"text_encoder", "fusion", "video_vae", "audio_codec"}
    modelled = estimate(EstimateRequest("720x720_5s", "keep_resident", "tiny", "cpu",
                                        area=1024)).stage("load")
    assert {m: modelled.resident[m] for m in placement} == placement


@pytest.mark.parametrize("policy", ["all_gpu", "keep_resident"])
def test_tiny_modules_held_after_release_are_the_engines(tiny_run, policy: str) -> None:
    case = tiny_run[policy]
    held = estimate(EstimateRequest("720x720_5s", policy, "tiny", "cpu",
                                    area=1024)).stage("decode_video").resident
    assert case.metrics["release.held_bytes"] == sum(held.values())
    assert sorted(case.metrics["release.held_modules"]) == sorted(held)
    assert "estimate.denoise.bytes" in case.metrics and "estimate_error.denoise" in case.metrics
