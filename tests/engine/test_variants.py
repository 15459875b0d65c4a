"""Variant specs against upstream's own numbers (tests/reference/ovi_variants.json, produced by running
upstream code), detection order and refusal, and prompt formats."""

import json
import logging
from pathlib import Path

import pytest
import torch

from ovi_engine import prompts
from ovi_engine.variants import (
    FINGERPRINTS_ENV,
    METADATA_KEY,
    VARIANTS,
    FingerprintRegistry,
    UnknownVariantError,
    detect_variant,
)
from ovi_engine.weights import save_checkpoint

REFERENCE = json.loads((Path(__file__).parents[1] / "reference" / "ovi_variants.json").read_text())


@pytest.mark.parametrize("name", ["720x720_5s", "960x960_5s", "960x960_10s"])
def test_spec_matches_upstream(name: str) -> None:
    ref, spec = REFERENCE["variants"][name], VARIANTS[name]
    assert (spec.fps, spec.sample_rate) == (REFERENCE["fps"], REFERENCE["sample_rate"])
    assert spec.area == ref["video_area"]
    assert spec.video_latent_frames == ref["video_latent_frames"]
    assert spec.audio_latent_length == ref["audio_latent_length"]
    assert spec.audio_samples == ref["audio_samples"]
    assert spec.audio_latent_shape() == tuple(ref["audio_latent_shape_engine"])
    for case in ref["t2v"]:
        h, w = case["requested_hw"]
        assert spec.frame_size(h, w) == tuple(case["snapped_hw"])
        assert spec.video_latent_shape(h, w) == tuple(case["video_latent_shape"])
        assert spec.video_tokens(h, w) == case["video_tokens"]
        assert spec.video_frames == case["decoded_frames"]


def test_spec_follows_from_first_principles() -> None:
    # Re-derived here from the facts alone: 24 fps, a x4 temporal VAE stride with a causal first frame,
    # 16 kHz audio with a 256-sample hop and a x2 latent downsampling, laid out in 5 s segments.
    for spec in VARIANTS.values():
        frames = spec.duration_s * 24
        assert spec.video_latent_frames == frames // 4 + 1
        assert spec.video_frames == frames + 1
        segments = spec.duration_s // 5
        assert spec.audio_latent_length == segments * -(-5 * 16000 // 512)
        assert spec.audio_samples / 16000 == pytest.approx(spec.duration_s, abs=0.05)
    assert VARIANTS["720x720_5s_fp8"].video_latent_shape() == VARIANTS["720x720_5s"].video_latent_shape()


def test_detection_order(tmp_path: Path) -> None:
    assert detect_variant(explicit="960x960_10s").how == "explicit"
    named = tmp_path / "Ovi-960x960-10s.safetensors"
    save_checkpoint({"x": torch.zeros(1)}, named, {})
    assert (detect_variant(named).variant.name, detect_variant(named).how) == ("960x960_10s", "file name")
    tagged = tmp_path / "Ovi-960x960-10s-renamed.safetensors"
    save_checkpoint({"x": torch.zeros(1)}, tagged, {METADATA_KEY: "960x960_5s"})
    assert detect_variant(tagged).how == "metadata"
    assert detect_variant(tmp_path / "model_fp8_e4m3fn.safetensors").variant.name == "720x720_5s_fp8"


def test_unknown_file_is_refused_then_fingerprint_registers_it(tmp_path: Path, monkeypatch) -> None:
    mystery = tmp_path / "my_finetune.safetensors"
    save_checkpoint({"x": torch.ones(4)}, mystery, {})
    monkeypatch.delenv(FINGERPRINTS_ENV, raising=False)
    with pytest.raises(UnknownVariantError) as err:
        detect_variant(mystery)
    assert "--variant" in str(err.value) and FINGERPRINTS_ENV in str(err.value)
    registry = FingerprintRegistry()
    registry.add(mystery, "960x960_10s")
    registry.save(tmp_path / "fp.json")
    monkeypatch.setenv(FINGERPRINTS_ENV, str(tmp_path / "fp.json"))
    found = detect_variant(mystery)
    assert (found.variant.name, found.how) == ("960x960_10s", "fingerprint")
    with pytest.raises(UnknownVariantError, match="unknown variant"):
        detect_variant(explicit="960x960_20s")


def test_prompt_formats(caplog) -> None:
    audcap = "A cat <S>meows loudly<E> at night. <AUDCAP>a cat meowing, wind<ENDAUDCAP>"
    with caplog.at_level(logging.WARNING):
        line = prompts.format_prompt(audcap, VARIANTS["960x960_10s"].prompt_format)
    assert line.endswith("\nAudio: a cat meowing, wind") and "<AUDCAP>" not in line
    assert "converted" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert prompts.format_prompt(audcap, "audcap") == audcap
    assert caplog.text == ""
    assert prompts.format_prompt(line, "audcap").endswith("<AUDCAP>a cat meowing, wind<ENDAUDCAP>")
    assert prompts.clean_text(audcap) == prompts.clean_text(line) == "A cat meows loudly at night."
    assert prompts.format_prompt("no description", "audio_line") == "no description"
