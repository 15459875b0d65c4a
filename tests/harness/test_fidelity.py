"""output_fidelity: the comparison's pieces, and the suite through the CLI against planted engines (each must
fail naming the first divergent step and tower), the reference against itself and
against a stored reference."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ovi_bench.references import Output, StoredReference, output_from_json, output_to_json, summarize
from ovi_bench.scenarios.fidelity import Differences, compare, first_divergence

REPO = Path(__file__).resolve().parents[2]
PLANTED = "tests.harness.planted_engines"


def _output(scale: float = 1.0, steps: int = 3) -> Output:
    generator = torch.Generator().manual_seed(0)
    video = [torch.randn(48, 5, 4, 4, generator=generator) for _ in range(steps)]
    audio = [torch.randn(157, 20, generator=generator) for _ in range(steps)]
    frames = torch.randint(0, 256, (17, 32, 32, 3), generator=generator, dtype=torch.uint8)
    return Output({"video": [v * scale for v in video], "audio": audio},
                  {"video": video[-1] * scale, "audio": audio[-1]},
                  frames, torch.randn(80384, generator=generator), "p")


def test_an_output_is_identical_to_itself():
    diff = compare(_output(), _output())
    assert diff.steps == {"video": [0.0] * 3, "audio": [0.0] * 3}
    assert diff.frames_mse == 0 and diff.frames_ssim == pytest.approx(1.0) and diff.sound_noise == 0


def test_ssim_samples_frames_evenly_past_its_pixel_budget(monkeypatch):
    import skimage.metrics

    from ovi_bench.scenarios import fidelity

    frames = torch.arange(10, dtype=torch.uint8)[:, None, None, None].expand(10, 16, 16, 3).contiguous()
    seen: list[int] = []

    def ssim(got, want, **kwargs):
        seen.append(int(want[0, 0, 0]))  # each frame holds its own index
        return 1.0

    monkeypatch.setattr(skimage.metrics, "structural_similarity", ssim)
    fidelity.mean_ssim(frames, frames)
    assert seen == list(range(10))  # within the budget: every frame
    seen.clear()
    monkeypatch.setattr(fidelity, "SSIM_PIXEL_BUDGET", 4 * 16 * 16)
    fidelity.mean_ssim(frames, frames)
    assert seen == [0, 3, 6, 9]  # past it: 4 frames, evenly spaced from the first to the last


def test_first_divergence_names_the_step_and_the_tower():
    floor = Differences({"video": [1e-2] * 3, "audio": [1e-2] * 3}, {"video": 1e-2, "audio": 1e-2}, 1.0, 0.99,
                        1e-3)
    diff = Differences({"video": [0.0, 0.0, 5e-4], "audio": [0.0, 2e-4, 0.0]}, {"video": 0, "audio": 0}, 0, 1,
                       0)
    message = first_divergence(diff, floor, 0.01, "floor: x")
    assert message.startswith("first divergence at step 1 of 3 (0-based), audio tower: relative "
                              "error 0.0002 > 0.01")
    assert first_divergence(diff, floor, 0.1, "floor: x") is None


def test_a_summary_is_kilobytes_and_reads_back():
    summary = summarize(_output(steps=8))
    text = json.dumps(output_to_json(summary))
    assert len(text) < 100_000
    back = output_from_json(json.loads(text))
    assert all(torch.equal(a, b) for a, b in zip(back.steps["video"], summary.steps["video"]))
    assert torch.equal(back.frames, summary.frames) and back.prompt == "p"


def test_bf16_results_of_two_devices_are_not_compared():
    stored = StoredReference(summarize(_output()), {}, "bfloat16", "float32", "NVIDIA H100 80GB HBM3", {})
    assert "not compared" in stored.refusal("bfloat16", "AMD Radeon 8060S")
    assert stored.refusal("bfloat16", "NVIDIA H100 80GB HBM3") is None
    assert "store one in float32" in stored.refusal("float32", "NVIDIA H100 80GB HBM3")
    fp32 = StoredReference(summarize(_output()), {}, "float32", "bfloat16", "cpu", {})
    assert fp32.refusal("float32", "NVIDIA H100 80GB HBM3") is None


def _suite(mode: str = "t2v", solver: str = "unipc", reference: str = "auto") -> str:
    return f"""schema_version: 1
name: fidelity_test
description: one tiny output_fidelity case
scenario: fidelity
matrix: {{variant: [720x720_5s], mode: [{mode}], solver: [{solver}]}}
params: {{steps: 4, slg_layer: 1, area: 1024, image_size: [720, 720], reference: {reference}}}
checks:
  - {{metric: status, rule: expect_status, expected: ok}}
  - {{metric: fidelity.prompt.mismatch, rule: exact, expected: null}}
  - {{metric: fidelity.first_divergence, rule: exact, expected: null}}
  - {{metric: fidelity.final.divergence, rule: exact, expected: null}}
  - {{metric: fidelity.media.divergence, rule: exact, expected: null}}
"""


def run_suite(tmp_path: Path, text: str, engine: str, name: str = "run",
              baselines: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "ovi_bench", "run", str(suite), "--engine", engine, "--hardware", "cpu-tiny",
         "--baselines", str(baselines or tmp_path / "baselines"), "--allow-missing-baseline",
         "--report-dir", str(tmp_path / name)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    return proc, json.loads((tmp_path / name / "report.json").read_text())


def failed(report: dict) -> list[str]:
    return [v["message"] for v in report["verdicts"] if v["status"] in ("fail", "regression", "error")]


@pytest.mark.slow
@pytest.mark.parametrize(("planted", "mode", "where"), [
    ("first_frame_not_clean", "i2v", "step 0 of 4 (0-based), video tower"),
    ("slg_on_conditional", "t2v", "step 0 of 4 (0-based), video tower"),
    ("shift_3", "t2v", "step 0 of 4 (0-based), video tower"),
    ("no_prompt_conversion", "t2v", "step 0 of 4 (0-based), video tower"),
    ("attention_perturbed", "t2v", "step 0 of 4 (0-based), video tower"),
])
def test_a_planted_change_of_the_result_fails_naming_step_and_tower(tmp_path, planted, mode, where):
    proc, report = run_suite(tmp_path, _suite(mode), f"{PLANTED}:{planted}")
    assert proc.returncode == 1, proc.stderr
    messages = failed(report)
    divergence = [m for m in messages if m.startswith("fidelity.first_divergence exact:")]
    assert divergence and f"first divergence at {where}" in divergence[0], messages
    if planted == "no_prompt_conversion":
        assert any(m.startswith("fidelity.prompt.mismatch exact: the engine fed its text encoder")
                   for m in messages)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["dpm++", "euler"])
def test_the_reference_passes_against_itself(tmp_path, solver):
    proc, report = run_suite(tmp_path, _suite("i2v", solver), "reference")
    assert proc.returncode == 0, proc.stderr
    (case,) = report["cases"]
    assert case["metrics"]["fidelity.steps.worst_floor_ratio"] == 0.0
    assert min(case["metrics"]["fidelity.video.step_floor"]) > 0  # the floor is measured, not zero


@pytest.mark.slow
def test_a_stored_reference_replaces_the_reference_engine(tmp_path):
    proc, _ = run_suite(tmp_path, _suite(), "reference", "first")
    assert proc.returncode == 0, proc.stderr
    baselines = tmp_path / "baselines"
    update = subprocess.run([sys.executable, "-m", "ovi_bench", "baseline", "update", str(tmp_path / "first"),
                             "--baselines", str(baselines)], cwd=REPO, capture_output=True, text=True,
                            check=False)
    assert update.returncode == 0, update.stderr
    stored = baselines / "cpu-tiny" / "references" / "fidelity_test.json"
    assert stored.is_file() and stored.stat().st_size < 200_000
    proc, again = run_suite(tmp_path, _suite(reference="stored"), "reference", "again", baselines)
    assert proc.returncode == 0, proc.stderr
    (case,) = again["cases"]
    assert case["metrics"]["fidelity.reference"].startswith("stored: ")
    assert case["metrics"]["fidelity.digests_match"] is True
    assert "time.reference.wall_s" not in case["metrics"]  # the reference engine did not run
    proc, planted = run_suite(tmp_path, _suite(reference="stored"), f"{PLANTED}:shift_3", "planted",
                              baselines)
    assert proc.returncode == 1
    assert any("first divergence at step 0" in m for m in failed(planted)), failed(planted)


def test_psnr_of_identical_frames_is_infinite_and_reports_hold_it():
    from ovi_bench.records import canonical_json, metric_from_json

    text = canonical_json({"psnr": math.inf, "steps": [0.1, math.nan]})
    data = json.loads(text)
    assert metric_from_json(data["psnr"]) == math.inf and math.isnan(metric_from_json(data["steps"])[1])


def test_non_finite_latents_fail_with_one_line_naming_stage_and_tower():
    from types import SimpleNamespace

    from ovi_bench.finite import NonFiniteOutput, check_latents

    audio = torch.zeros(157, 20)
    audio[3, 4] = math.nan
    with pytest.raises(NonFiniteOutput,
                       match=r"^non-finite output after denoise: the audio tower holds 1 NaN and 0 "
                                              r"Inf of 3140 values$"):
        check_latents(SimpleNamespace(video=torch.zeros(48, 2, 2, 2), audio=audio))
