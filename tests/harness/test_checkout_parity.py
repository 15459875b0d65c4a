"""Reference parity: the reference engine (ovi_engine, built directly here) and the checkout engine, at the
tiny preset and the same seed, hold identical tensors under the same names, component by component."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from ovi_bench.engines.base import EngineConfig
from ovi_bench.engines.checkout import PRESETS, CheckoutEngine

UPSTREAM_11 = Path("/work/shared/upstream/ovi-1.1")
SEED = 7

pytestmark = pytest.mark.skipif(not UPSTREAM_11.is_dir(), reason="needs shared/upstream/ovi-1.1")


def digests(module: torch.nn.Module) -> dict[str, str]:
    """sha256 of each tensor in bf16 (the checkout keeps its decoders in bf16, so both sides are compared
    at that precision; bf16 tensors are unchanged by it)."""
    return {name: hashlib.sha256(t.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy()
                                 .tobytes()).hexdigest()
            for name, t in module.state_dict().items()}


@pytest.fixture(scope="module")
def checkout() -> CheckoutEngine:
    engine = CheckoutEngine(UPSTREAM_11)
    engine.load(EngineConfig(variant="720x720_5s", preset="tiny", device="cpu", seed=SEED))
    return engine


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.nn.Module]:
    from ovi_engine.audio_vae import build_audio_codec
    from ovi_engine.fusion import build_fusion_model
    from ovi_engine.text_encoder import build_text_encoder
    from ovi_engine.video_vae import build_video_vae

    codec = build_audio_codec("tiny", device="cpu", dtype=torch.float32, seed=SEED)
    return {
        "fusion": build_fusion_model("tiny", device="cpu", dtype=torch.bfloat16, seed=SEED),
        "text_encoder": build_text_encoder("tiny", device="cpu", dtype=torch.bfloat16, seed=SEED),
        "video_vae": build_video_vae("tiny", device="cpu", dtype=torch.float32, seed=SEED),
        "audio_vae": codec.vae, "vocoder": codec.vocoder,
    }


def checkout_components(engine: CheckoutEngine) -> dict[str, torch.nn.Module]:
    ovi = engine.engine
    return {"fusion": ovi.model, "text_encoder": ovi.text_model.model, "video_vae": ovi.vae_model_video.model,
            "audio_vae": ovi.vae_model_audio.tod.vae, "vocoder": ovi.vae_model_audio.tod.vocoder.vocoder}


@pytest.mark.parametrize("component", ["fusion", "text_encoder", "video_vae", "vocoder"])
def test_same_names_and_tensors(checkout: CheckoutEngine, reference: dict, component: str) -> None:
    ours, theirs = digests(reference[component]), digests(checkout_components(checkout)[component])
    assert sorted(ours) == sorted(theirs), f"{component}: names differ: {sorted(set(ours) ^ set(theirs))[:8]}"
    different = [name for name in ours if ours[name] != theirs[name]]
    assert not different, f"{component}: {len(different)} of {len(ours)} tensors differ, e.g. {different[:5]}"


def test_audio_vae_differs_only_by_the_rounding_of_its_fold(checkout: CheckoutEngine,
                                                            reference: dict) -> None:
    """Both draw the same checkpoint-layout tensors; each folds EDM2's forced weight norm with its own
    float32 arithmetic, so a handful of elements land on the neighbouring bf16 value."""
    ours, theirs = (reference["audio_vae"].state_dict(),
                    checkout_components(checkout)["audio_vae"].state_dict())
    assert sorted(ours) == sorted(theirs)
    off = 0
    for name, tensor in ours.items():
        x, y = tensor.to(torch.bfloat16).float(), theirs[name].to(torch.bfloat16).float()
        torch.testing.assert_close(x, y, rtol=2**-7, atol=0, msg=name)
        off += int((x != y).sum())
    assert off <= 10, f"{off} elements differ"


def test_fusion_names_are_upstream_checkpoint_names(checkout: CheckoutEngine) -> None:
    """The schema lists all 30 block pairs; the tiny model has the first 3 of them and everything else."""
    import json
    import re

    schema = json.loads(Path(__file__).parents[1].joinpath("reference/ovi_fusion_11b.schema.json")
                        .read_text())
    layers = PRESETS["tiny"].fusion["num_layers"]
    names = {entry[0] for entry in schema["tensors"]
             if int((re.search(r"\.blocks\.(\d+)\.", entry[0]) or [0, 0])[1]) < layers}
    assert set(checkout.engine.model.state_dict()) == names


def test_tiny_preset_is_the_reference_engines() -> None:
    from ovi_engine.audio_vae import AUDIO_CODEC_PRESETS
    from ovi_engine.fusion import FUSION_PRESETS
    from ovi_engine.text_encoder import TEXT_ENCODER_PRESETS
    from ovi_engine.video_vae import VIDEO_VAE_PRESETS

    tiny, video = PRESETS["tiny"], FUSION_PRESETS["tiny"].video
    assert tiny.fusion == {"dim": video.dim, "ffn_dim": video.ffn_dim, "num_heads": video.num_heads,
                           "num_layers": video.num_layers, "freq_dim": video.freq_dim,
                           "text_dim": video.text_dim, "text_len": video.text_len}
    text = dataclasses.replace(TEXT_ENCODER_PRESETS["tiny"], dim=video.text_dim)
    assert tiny.text_encoder == {"vocab_size": text.vocab_size, "dim": text.dim, "dim_attn": text.dim_attn,
                                 "dim_ffn": text.dim_ffn, "num_heads": text.num_heads,
                                 "encoder_layers": text.num_layers}
    assert tiny.text_len == video.text_len
    vae = VIDEO_VAE_PRESETS["tiny"]
    assert tiny.video_vae == {"dim": vae.dim, "dec_dim": vae.dec_dim}
    codec = AUDIO_CODEC_PRESETS["tiny"]
    assert (tiny.audio_vae_dim, tiny.vocoder_channels) == (codec.vae_dim, codec.vocoder_channels)


def test_byte_tokenizer_matches_the_reference_stand_in(checkout: CheckoutEngine) -> None:
    from ovi_engine.text_encoder import ByteTokenizer

    prompt = "A cat plays the piano. <AUDCAP>Piano music, é.<ENDAUDCAP>"
    ids, mask = checkout.engine.text_model.tokenizer([prompt], return_mask=True, add_special_tokens=True)
    ref_ids, ref_mask = ByteTokenizer(PRESETS["tiny"].text_encoder["vocab_size"]).tokenize(
        [prompt], ids.shape[1])
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
