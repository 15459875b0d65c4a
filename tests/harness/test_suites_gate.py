"""The shipped suites load and expand at both presets, smoke includes all five, and the gate fails on planted
regressions (tests/harness/planted_engines.py) with a message naming the check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ovi_bench.job import RunOptions
from ovi_bench.suites import available_suites, load_suites
from ovi_bench.variant_facts import variant_facts

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "ovi-bench"


@pytest.mark.parametrize("name", available_suites())
def test_every_suite_loads_and_expands(name):
    for suite in load_suites(name):
        for preset in ("tiny", "full"):
            assert suite.expand(RunOptions(preset=preset))


def test_smoke_includes_the_five_suites_at_tiny_sizes():
    suites = {s.name: s for s in load_suites("smoke")}
    assert set(suites) == {f"smoke.{n}" for n in ("variant_latents", "oom_regression", "attention_backends",
                                                   "peak_memory_10s", "sequence_parallel")}
    assert ([c.axes["nproc"] for c in suites["smoke.sequence_parallel"].expand(RunOptions(preset="tiny"))]
            == [2])
    for suite in suites.values():
        for case in suite.expand(RunOptions(preset="tiny")):
            assert case.params["area"] == 1024  # small CPU frames; full-scale runs use the variant's area
            assert case.params.get("steps", 1) <= 2


@pytest.mark.parametrize(("name", "video", "audio", "frames", "samples"), [
    # shared/reference/VARIANTS.md: latent shape at the 960x960 request, audio latents, decoded counts
    ("720x720_5s", [48, 31, 44, 44], 157, 121, 80384),
    ("960x960_5s", [48, 31, 60, 60], 157, 121, 80384),
    ("960x960_10s", [48, 61, 60, 60], 314, 241, 160768),
])
def test_harness_derivation_matches_the_fact_sheet(name, video, audio, frames, samples):
    facts = variant_facts(name)
    assert facts.video_latent_shape(960, 960) == video
    assert (facts.audio_latent_length, facts.video_frames, facts.audio_samples) == (audio, frames, samples)


def test_harness_derivation_snaps_like_upstream():
    assert variant_facts("720x720_5s").video_tokens(704, 1280) == 15810  # VARIANTS.md worked example
    assert variant_facts("960x960_10s").video_tokens(704, 1280) == 53680
    assert variant_facts("720x720_5s").video_tokens() == 15004


def _run(tmp_path: Path, suite_text: str, engine: str) -> tuple[subprocess.CompletedProcess, dict]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text)
    proc = subprocess.run(
        [str(SCRIPT), "run", str(suite), "--engine", engine, "--hardware", "cpu-tiny",
         "--baselines", str(tmp_path / "baselines"), "--allow-missing-baseline", "--report-dir",
         str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    return proc, json.loads((tmp_path / "run" / "report.json").read_text())


def _failed(report: dict) -> list[str]:
    return [v["message"] for v in report["verdicts"] if v["status"] in ("fail", "regression", "error")]


@pytest.mark.slow
def test_fusion_kept_through_decode_fails_oom_regression(tmp_path):
    text = (REPO / "suites" / "oom_regression.yaml").read_text()
    text = text.replace("  variant: [720x720_5s, 720x720_5s_fp8, 960x960_5s, 960x960_10s]\n",
                        "  variant: [720x720_5s]\n")
    text = text.replace("  policy: [all_gpu, cpu_offload, keep_resident]\n", "  policy: [all_gpu]\n")
    proc, report = _run(tmp_path, text, "tests.harness.planted_engines:fusion_kept")
    assert proc.returncode == 1, proc.stderr
    held, unexpected = sorted(_failed(report))  # by bytes, and by the placement report's module list
    assert held.startswith("release.held_bytes max:") and "modules decoding does not need" in held
    assert unexpected.startswith("release.unexpected_modules exact:") and "fusion" in unexpected
    assert f"FAIL oom_regression[variant=720x720_5s,policy=all_gpu,attention=auto]: {held}" in proc.stderr


@pytest.mark.slow
def test_10s_with_5s_lengths_fails_variant_latents(tmp_path):
    text = (REPO / "suites" / "variant_latents.yaml").read_text()
    text = text.replace("  variant: [720x720_5s, 720x720_5s_fp8, 960x960_5s, 960x960_10s]\n",
                        "  variant: [960x960_10s]\n")
    tiny = "  tiny: {params: {area: 1024, image_size: [720, 720], "
    assert tiny in text
    text = text.replace(tiny, tiny + "sizes: [[960, 960]], decode: false, ")
    proc, report = _run(tmp_path, text, "tests.harness.planted_engines:short_10s")
    assert proc.returncode == 1, proc.stderr
    failed = _failed(report)
    assert any(m.startswith("latents.mismatches exact:") and "[48, 31, 2, 2]" in m for m in failed), failed
    assert any(m.startswith("variant.mismatches exact:") and "duration_s" in m for m in failed), failed


@pytest.mark.slow
def test_offload_and_release_pass_the_oom_gate_with_the_reference_engine(tmp_path):
    """cpu_offload builds nothing in decode that was released (its first use of a module is no reload), and
    all_gpu releases what decode does not need: both pass the same gate the planted engine fails."""
    text = (REPO / "suites" / "oom_regression.yaml").read_text()
    text = text.replace("  variant: [720x720_5s, 720x720_5s_fp8, 960x960_5s, 960x960_10s]\n",
                        "  variant: [720x720_5s]\n")
    text = text.replace("  policy: [all_gpu, cpu_offload, keep_resident]\n",
                        "  policy: [all_gpu, cpu_offload]\n")
    proc, report = _run(tmp_path, text, "reference")
    assert proc.returncode == 0, (proc.stderr, _failed(report))
    reloads = [v for v in report["verdicts"] if v["metric"] == "decode.reloads"]
    assert len(reloads) == 2 and all(v["status"] == "pass" for v in reloads)
