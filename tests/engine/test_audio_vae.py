"""MMAudio 16k VAE + BigVGAN vocoder: upstream layouts, sample counts, weight-norm folding, strict loading,
and the anti-aliased SnakeBeta / mel filters against straightforward re-implementations written here."""

import copy
import json
import math
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from ovi_engine.audio_vae import (
    AUDIO_CODEC_PRESETS,
    SAMPLE_RATE,
    SAMPLES_PER_LATENT,
    VAE,
    VAE_SYNTHETIC_RULES,
    Activation1d,
    AudioCodec,
    Vocoder,
    build_audio_codec,
    kaiser_sinc_filter,
    slaney_mel_filterbank,
    vocoder_synthetic_rules,
)
from ovi_engine.weights import CheckpointError, build_on_meta, synthesize

REFERENCE = Path(__file__).parents[1] / "reference"
FULL, TINY = AUDIO_CODEC_PRESETS["full"], AUDIO_CODEC_PRESETS["tiny"]


def schema(name: str) -> dict:
    return json.loads((REFERENCE / f"{name}.schema.json").read_text())


def layout(state: dict[str, torch.Tensor]) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in state.items()]


def schema_layout(tensors: list) -> list[tuple[str, list[int]]]:
    return [(name, shape) for name, shape, _ in tensors]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def checkpoint_vae(seed: int) -> VAE:
    """A tiny VAE in checkpoint form (weights before forced weight norm), float32 on the CPU."""
    vae = build_on_meta(lambda: VAE(TINY))
    return cast(VAE, synthesize(vae, seed=seed, device="cpu", dtype=torch.float32, rules=VAE_SYNTHETIC_RULES))


def checkpoint_vocoder(seed: int) -> Vocoder:
    voc = build_on_meta(lambda: Vocoder(TINY))
    rules = vocoder_synthetic_rules(TINY)
    return cast(Vocoder, synthesize(voc, seed=seed, device="cpu", dtype=torch.float32, rules=rules))


@pytest.fixture(scope="module")
def tiny_codec() -> AudioCodec:
    return build_audio_codec("tiny", device="cpu", dtype=torch.float32, seed=0)


@pytest.fixture(scope="module")
def full_meta_codec() -> AudioCodec:
    return build_audio_codec("full")  # meta: nothing allocated


@pytest.fixture(scope="module")
def checkpoint_modules() -> tuple[VAE, Vocoder]:
    """Tiny VAE and vocoder in checkpoint form (before weight-norm folding); never to be changed by a test."""
    return checkpoint_vae(seed=7), checkpoint_vocoder(seed=7)


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory: pytest.TempPathFactory, checkpoint_modules) -> dict[str, Path]:
    """v1-16.pth, best_netG.pt (parametrized names) and a legacy weight_g/weight_v best_netG.pt."""
    vae, voc = checkpoint_modules
    root = tmp_path_factory.mktemp("audio_ckpt")
    paths = {"vae": root / "v1-16.pth", "vocoder": root / "best_netG.pt", "legacy": root / "legacy_netG.pt"}
    torch.save(vae.state_dict(), paths["vae"])
    torch.save({"generator": voc.state_dict()}, paths["vocoder"])
    legacy = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in voc.state_dict().items()
    }
    torch.save({"generator": legacy}, paths["legacy"])
    return paths


# --- layouts (meta, full preset) ------------------------------------------------------------------------


def test_vae_layout_is_the_checkpoint_schema_including_buffers() -> None:
    ref = schema("mmaudio_vae_16k")
    vae = build_on_meta(lambda: VAE(FULL))
    assert layout(vae.state_dict()) == schema_layout(ref["tensors"])
    assert [name for name, _ in vae.named_buffers()] == ref["buffer_keys"]
    assert n_params(vae) == ref["params"]


def test_vocoder_layout_parametrized_then_runtime() -> None:
    ref = schema("bigvgan_vocoder_16k")
    voc = cast(Vocoder, build_on_meta(lambda: Vocoder(FULL)))
    assert layout(voc.state_dict()) == schema_layout(ref["tensors"])
    assert [name for name, _ in voc.named_buffers()] == ref["buffer_keys"]
    assert n_params(voc) == ref["params"]
    voc.remove_weight_norm()
    assert layout(voc.state_dict()) == schema_layout(ref["runtime_tensors_after_weight_norm_removal"])
    assert n_params(voc) == ref["runtime_params_after_weight_norm_removal"]


def test_runtime_state_dict_is_the_featuresutils_layout(full_meta_codec: AudioCodec) -> None:
    ref = schema("mmaudio_featuresutils_16k_runtime")
    assert layout(full_meta_codec.runtime_state_dict()) == schema_layout(ref["tensors"])
    assert n_params(full_meta_codec) == ref["params"]


# --- sample counts ---------------------------------------------------------------------------------------


def test_rate_and_samples_per_latent_follow_the_config() -> None:
    variants = json.loads((REFERENCE / "ovi_variants.json").read_text())
    assert SAMPLE_RATE == variants["sample_rate"] == 16000
    assert SAMPLES_PER_LATENT == math.prod(FULL.upsample_rates) * 2 == 512
    assert TINY.samples_per_latent == SAMPLES_PER_LATENT
    assert (TINY.latent_dim, TINY.num_mels) == (FULL.latent_dim, FULL.num_mels) == (20, 80)


def test_full_decode_shapes_match_upstream_variants(full_meta_codec: AudioCodec) -> None:
    variants = json.loads((REFERENCE / "ovi_variants.json").read_text())["variants"]
    for spec in variants.values():
        latents = torch.empty(1, *spec["audio_latent_shape_engine"], device="meta")
        assert list(full_meta_codec.decode(latents).shape) == [1, spec["audio_samples"]]


# few distinct shapes: on the CPU each new one pays oneDNN set-up for every conv (seconds on a busy CI box)
@pytest.mark.parametrize("batch, length", [(2, 2), (1, 157)])
def test_tiny_decode_gives_512_samples_per_latent(tiny_codec: AudioCodec, batch: int, length: int) -> None:
    wave = tiny_codec.decode(torch.randn(batch, length, 20, generator=torch.Generator().manual_seed(length)))
    assert wave.shape == (batch, 512 * length) and wave.dtype == torch.float32
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1 and wave.std() > 1e-3


def test_encode_gives_one_latent_per_512_samples(tiny_codec: AudioCodec) -> None:
    wave = torch.sin(torch.arange(512 * 6) * 0.05)[None].repeat(2, 1)
    latents = tiny_codec.encode(wave)
    assert latents.shape == (2, 6, 20) and torch.isfinite(latents).all()


# --- weight norm --------------------------------------------------------------------------------------


def test_vocoder_weight_norm_removal_keeps_the_function() -> None:
    voc = checkpoint_vocoder(seed=7)  # not a deepcopy: torch parametrizations share their class with copies
    mel = torch.randn(2, 80, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = voc(mel)
        voc.remove_weight_norm()
        after = voc(mel)
    assert not any("parametrizations" in k for k in voc.state_dict())
    assert before.abs().max() > 1e-2
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_vae_weight_fold_is_edm2_forced_weight_norm_and_keeps_the_function(checkpoint_modules) -> None:
    vae = copy.deepcopy(checkpoint_modules[0])
    raw = vae.decoder.conv_in.weight.detach().double().clone()
    z = torch.randn(2, 20, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = vae.decode(z)
        vae.remove_weight_norm()
        after = vae.decode(z)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # EDM2: w / (eps + ||w_o|| / sqrt(fan_in)) / sqrt(fan_in), per output channel o
    fan_in = raw[0].numel()
    row_norm = raw.flatten(1).norm(dim=1)[:, None, None]
    expected = raw / (1e-4 + row_norm / math.sqrt(fan_in)) / math.sqrt(fan_in)
    torch.testing.assert_close(vae.decoder.conv_in.weight.double(), expected, rtol=1e-6, atol=1e-7)


# --- loading -------------------------------------------------------------------------------------------


def test_pth_round_trip_loads_strictly_and_decodes_like_the_source(
    checkpoint_modules, checkpoint_files
) -> None:
    codec = build_audio_codec("tiny", device="cpu", dtype=torch.float32, seed=None)
    z = torch.randn(2, 2, 20, generator=torch.Generator().manual_seed(3))
    with pytest.raises(RuntimeError, match="load_vae"):
        codec.decode(z)
    codec.load_vae(checkpoint_files["vae"]).load_vocoder(checkpoint_files["vocoder"])
    vae, voc = (
        copy.deepcopy(checkpoint_modules[0]).remove_weight_norm(),
        checkpoint_vocoder(seed=7).remove_weight_norm(),
    )
    with torch.no_grad():  # the reference: the saved modules themselves, folded here
        expected = voc(vae.decode(z.transpose(1, 2)))[:, 0]
    torch.testing.assert_close(codec.decode(z), expected, rtol=1e-5, atol=1e-5)


def test_legacy_weight_g_v_naming_loads_to_the_same_weights(checkpoint_files) -> None:
    new = build_audio_codec("tiny", device="cpu", dtype=torch.float32, seed=None)
    old = build_audio_codec("tiny", device="cpu", dtype=torch.float32, seed=None)
    new.load_vocoder(checkpoint_files["vocoder"])
    old.load_vocoder(checkpoint_files["legacy"])
    for (k, a), (k2, b) in zip(new.vocoder.state_dict().items(), old.vocoder.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    # folded weight = g * v / ||v|| (norm over every dim but 0), computed here from the legacy tensors
    generator = torch.load(checkpoint_files["legacy"], weights_only=True)["generator"]
    g, v = generator["conv_pre.weight_g"].double(), generator["conv_pre.weight_v"].double()
    expected = g * v / v.flatten(1).norm(dim=1)[:, None, None]
    torch.testing.assert_close(old.vocoder.conv_pre.weight.double(), expected, rtol=1e-6, atol=1e-7)


def test_bad_checkpoints_name_every_offending_tensor(tmp_path: Path, checkpoint_modules) -> None:
    vae, voc = checkpoint_modules
    state = vae.state_dict()
    del state["decoder.conv_out.weight"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["encoder.conv_in.weight"] = torch.zeros(3, 3, 3)
    torch.save(state, tmp_path / "bad_vae.pth")
    codec = build_audio_codec("tiny", device="cpu", dtype=torch.float32, seed=None)
    with pytest.raises(CheckpointError) as err:
        codec.load_vae(tmp_path / "bad_vae.pth")
    for name in ("decoder.conv_out.weight", "decoder.extra.weight", "encoder.conv_in.weight"):
        assert name in str(err.value)

    generator = voc.state_dict()
    del generator["conv_post.bias"]
    torch.save({"generator": generator}, tmp_path / "bad_voc.pt")
    with pytest.raises(CheckpointError, match=r"conv_post\.bias"):
        codec.load_vocoder(tmp_path / "bad_voc.pt")
    torch.save({"discriminator": {"x": torch.zeros(1)}, "steps": 3}, tmp_path / "no_generator.pt")
    with pytest.raises(CheckpointError, match="generator"):
        codec.load_vocoder(tmp_path / "no_generator.pt")


# --- anti-aliased SnakeBeta and mel filters vs independent re-implementations ---------------------------


def bessel_i0(x: float) -> float:
    return sum(((x / 2) ** k / math.factorial(k)) ** 2 for k in range(40))


def reference_lowpass(size: int = 12, cutoff: float = 0.25, half_width: float = 0.3) -> np.ndarray:
    """Kaiser-windowed sinc at half-integer taps, from Kaiser's design formulas, normalized to DC gain 1."""
    a = 2.285 * (size // 2 - 1) * math.pi * 4 * half_width + 7.95
    beta = 0.1102 * (a - 8.7) if a > 50 else 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    n = np.arange(size)
    window = np.array(
        [bessel_i0(beta * math.sqrt(1 - (2 * i / (size - 1) - 1) ** 2)) for i in n]
    ) / bessel_i0(beta)
    t = n - size / 2 + 0.5
    taps = 2 * cutoff * window * np.sinc(2 * cutoff * t)
    return taps / taps.sum()


def reference_activation(x: np.ndarray, log_alpha: np.ndarray, log_beta: np.ndarray) -> np.ndarray:
    """Per channel: zero-stuff x2, filter (gain 2), SnakeBeta, filter, keep even samples; replicated edges."""
    h = reference_lowpass()
    out = np.empty_like(x)
    for c in range(x.shape[0]):
        padded = np.pad(x[c], 5, mode="edge")
        stuffed = np.zeros(2 * len(padded))
        stuffed[::2] = padded
        up = 2 * np.convolve(stuffed, h)[15 : 15 + 2 * x.shape[1]]
        alpha, beta = math.exp(log_alpha[c]), math.exp(log_beta[c])
        act = up + np.sin(alpha * up) ** 2 / beta
        act = np.pad(act, (5, 6), mode="edge")
        out[c] = [np.dot(h, act[j : j + 12]) for j in range(0, 2 * x.shape[1], 2)]
    return out


def test_lowpass_filter_matches_kaiser_design() -> None:
    np.testing.assert_allclose(
        kaiser_sinc_filter(0.25, 0.3, 12)[0, 0].numpy(), reference_lowpass(), atol=1e-6
    )


def test_antialiased_snakebeta_matches_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    act = Activation1d(3, kernel_size=12)
    with torch.no_grad():
        act.act.alpha.copy_(torch.randn(3, generator=gen) * 0.5)
        act.act.beta.copy_(torch.randn(3, generator=gen) * 0.5)
    x = torch.randn(1, 3, 40, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        got = act.double()(x)[0].numpy()
    expected = reference_activation(
        x[0].numpy(), act.act.alpha.detach().numpy(), act.act.beta.detach().numpy()
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_mel_filterbank_matches_slaney_definition() -> None:
    sr, n_fft, n_mels, fmax = 16000, 1024, 80, 8000.0

    def hz_to_mel(f: float) -> float:  # Slaney: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4
        return f * 3 / 200 if f < 1000 else 15 + 27 * math.log(f / 1000) / math.log(6.4)

    def mel_to_hz(m: float) -> float:
        return m * 200 / 3 if m < 15 else 1000 * 6.4 ** ((m - 15) / 27)

    top = hz_to_mel(fmax)
    edges = [mel_to_hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    expected = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = edges[m : m + 3]
        for b in range(n_fft // 2 + 1):
            f = b * sr / n_fft
            tri = (f - lo) / (mid - lo) if f <= mid else (hi - f) / (hi - mid)
            expected[m, b] = max(tri, 0.0) * 2 / (hi - lo)  # unit area in Hz
    got = slaney_mel_filterbank(sr, n_fft, n_mels, 0.0, fmax).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)
