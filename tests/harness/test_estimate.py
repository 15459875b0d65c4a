"""The memory model (ovi_bench.estimate) and the OOM frontier's bisection (ovi_bench.frontier), on the CPU.

Full scale: the estimate reproduces measured H100 stage peaks of the engine (the oom_regression baseline as
committed at 626c742, restated below to the byte, less what the engine has changed since in the stages it
changed) within 2% (the worst, -1.4%, is a load whose audio codec build held two float32 copies of the
codec's VAE at a24e1cd, one since f1ece55), and committed H200 reports of the current engine within the 5%
the estimate promises; the policies' placement rules order
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
from ovi_bench.estimate import ESTIMATE_TOLERANCE, EstimateRequest, estimate
from ovi_bench.hardware import GiB, get_profile
from ovi_bench.model_shapes import DIMS, block_pair_bytes
from ovi_bench.records import RunReport
from ovi_bench.variant_facts import variant_facts

# baselines/h100-80gb/oom_regression.json as committed at 626c742, peak.<stage>.alloc_bytes (H100,
# synthetic:full, bf16). Its 5 s cases were recorded at a24e1cd (committed in b26a979), its 960x960_10s cases
# at 4b2590d (committed in 3879dc1): both engines predate 9ef1b58 and cee60b7, corrected for below.
H100 = {
    ("720x720_5s", "all_gpu"): (37550590976, 36873174528, 26097992192, 25371882496, 6758092800, 2088805888),
    ("960x960_5s", "cpu_offload"): (8401190912, 12966516736, 4822987776, 2199832576, 12330200064, 2806776832),
    ("960x960_10s", "all_gpu"): (36946784768, 36875501056, 27604179456, 25389005312, 11457012224, 2142851072),
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# The engine of those runs kept one streamed block pair on the device from denoise on (the pair prefetched for
# the block skip-layer guidance leaves out; fixed at cee60b7): the fixed engine holds that much less from
# denoise on. The pair's bytes come from the checkpoint schema (tests/harness/test_model_shapes.py checks them
# there).
STALE_PAIR = block_pair_bytes(DIMS["full"], 2)
FROM_DENOISE = ("denoise", "release", "decode_video", "decode_audio")


def clone_bytes(variant: str) -> int:
    """What 9ef1b58 added to denoise: the first CFG pass works on a clone of the shared hidden state
    (ovi_engine/fusion.py forward_passes), one hidden state of (video + audio tokens) x dim in bf16, from the
    shapes alone; bench_fusion's peak grew by that, 6.1 to 7.1 hidden states, across the commit."""
    facts = variant_facts(variant)
    return (facts.video_tokens() + facts.audio_latent_length) * DIMS["full"]["dim"] * 2


@pytest.mark.parametrize(("variant", "policy"), sorted(H100))
def test_full_scale_matches_the_measured_h100_peaks(variant: str, policy: str) -> None:
    result = estimate(EstimateRequest(variant, policy))
    for stage, measured in zip(result.stages, H100[variant, policy]):
        if policy == "cpu_offload" and stage.stage in FROM_DENOISE:
            measured -= STALE_PAIR
        if stage.stage == "denoise":
            measured += clone_bytes(variant)
        assert abs(stage.bytes - measured) / measured < 0.02, stage


# Committed H200 reports of the current engine (each with its environment): file, case id prefix. The
# 2026-12-02d runs measured again the configurations the model was fitted on (2026-12-02b/c, 12-01), after
# the fit: all_gpu's denoise at 5 s (its fit points were earlier runs), cpu_offload through another placement,
# its load after bcb68d9 drew the token embedding alone (call 5), 960x960_10s all_gpu at 3 steps and
# sequential (call 4; sequential builds the audio codec in float32 parts in its first decode_audio,
# estimate.codec_build_bytes, and keeps it through later decodes). 960x960_10s cpu_offload (call 1) is from
# before bcb68d9: its load (-4.2%) still had other draws beside the embedding's.
RESULTS = Path(__file__).parents[2] / "benchmarks/results/h200-141gb_2026-12-02d/suites"
H200_CASES = [
    ("call5_oom_regression_cpu_offload/report.json", "oom_regression[variant=720x720_5s,policy=cpu_offload"),
    ("call5_oom_regression_cpu_offload/report.json", "oom_regression[variant=960x960_5s,policy=cpu_offload"),
    ("call3_oom_regression_5s_variants/report.json", "oom_regression[variant=720x720_5s,policy=all_gpu"),
    ("call3_oom_regression_5s_variants/report.json", "oom_regression[variant=960x960_5s,policy=all_gpu"),
    ("call1_oom_regression_960x960_10s_cpu_offload/report.json",
     "oom_regression[variant=960x960_10s,policy=cpu_offload"),
    ("call4_peak_memory_10s/report.json", "peak_memory_10s[variant=960x960_10s,policy=all_gpu"),
    ("call4_peak_memory_10s_sequential/report.json", "peak_memory_10s[variant=960x960_10s,policy=sequential"),
]


def _axes(case_id: str) -> dict[str, str]:
    return dict(kv.split("=") for kv in case_id.split("[")[1].split(","))


@pytest.mark.parametrize(("path", "case_id"), H200_CASES,
                         ids=["{variant}-{policy}".format(**_axes(c)) for _, c in H200_CASES])
def test_full_scale_matches_the_current_engine_on_the_h200(path: str, case_id: str) -> None:
    """Every stage within the 5% the estimate promises: cpu_offload's denoise holds two streamed pairs once no
    skipped pair is left behind, and the clone 9ef1b58 added (at 960x960_10s cpu_offload a hidden state less
    is -6.3%); sequential's decode_audio builds the audio codec in float32 (a fraction of its bf16 bytes as
    the draw is -10.7%)."""
    cases = json.loads((RESULTS / path).read_text())["cases"]
    case = next(c for c in cases if c["case_id"].startswith(case_id))
    assert case["status"] == "ok"
    axes = _axes(case_id)
    for stage in estimate(EstimateRequest(axes["variant"], axes["policy"])).stages:
        measured = case["metrics"][f"peak.{stage.stage}.bytes"]
        assert abs(stage.bytes - measured) / measured < ESTIMATE_TOLERANCE, (stage, measured)


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
