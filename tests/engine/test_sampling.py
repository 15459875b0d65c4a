"""The CFG + skip-layer-guidance denoise loop, its numerical health check, and fp8 weights at tiny size."""

import pytest
import torch
from torch import nn

from ovi_engine.fusion import build_fusion_model
from ovi_engine.sampling import NonFiniteError, sample
from ovi_engine.solvers import make_solver
from ovi_engine.weights import load_into

VIDEO_SHAPE, AUDIO_SHAPE = (1, 48, 3, 4, 6), (1, 10, 20)


def noise(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(VIDEO_SHAPE, generator=gen).bfloat16(),
            torch.randn(AUDIO_SHAPE, generator=gen).bfloat16())


def contexts(text_dim: int, seed: int = 1) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(1, 24, text_dim, generator=gen)
    return pos, (torch.randn(1, 24, text_dim, generator=gen), torch.randn(1, 24, text_dim, generator=gen))


class Scripted(nn.Module):
    """A stand-in model: prediction 1 for the conditional pass, 0 for the unconditional; records calls."""

    def __init__(self, nan_at_call: int | None = None, nan_tower: str = "audio"):
        super().__init__()
        self.calls: list[dict] = []
        self.nan_at_call, self.nan_tower = nan_at_call, nan_tower

    def forward(self, video, audio, t, video_context, audio_context, **kw):
        kw.setdefault("skip_block", None)
        self.calls.append(dict(t=t, video_context=video_context, audio_context=audio_context, **kw))
        value = 0.0 if kw["skip_block"] is not None else 1.0
        out = [torch.full_like(video, value), torch.full_like(audio, value)]
        if len(self.calls) - 1 == self.nan_at_call:
            out[0 if self.nan_tower == "video" else 1][0, 0, 0] = float("nan")
        return tuple(out)

    def forward_passes(self, video, audio, t, passes, **kw):
        return [self(video, audio, t, p.video_context, p.audio_context, skip_block=p.skip_block, **kw)
                for p in passes]


def test_guidance_scales_slg_and_contexts_reach_the_model() -> None:
    model = Scripted()
    pos, neg = contexts(8)
    video, audio = sample(model, solver="euler", steps=1, shift=5.0, video_noise=torch.zeros(VIDEO_SHAPE),
                          audio_noise=torch.zeros(AUDIO_SHAPE), pos_context=pos, neg_context=neg,
                          video_guidance=4.0, audio_guidance=3.0, slg_layer=7)
    cond, uncond = model.calls
    assert cond["skip_block"] is None and uncond["skip_block"] == 7
    assert cond["video_context"] is pos and cond["audio_context"] is pos
    assert uncond["video_context"] is neg[0] and uncond["audio_context"] is neg[1]
    # One Euler step from sigma_0 to 0 with guided velocity neg + g * (pos - neg) = g.
    sigma0 = float(make_solver("euler", 1, 5.0).sigmas[0])
    torch.testing.assert_close(video, torch.full(VIDEO_SHAPE, -4.0 * sigma0))
    torch.testing.assert_close(audio, torch.full(AUDIO_SHAPE, -3.0 * sigma0))
    assert float(cond["t"]) == pytest.approx(1000 * sigma0, abs=1e-3)


@pytest.mark.parametrize(("slg_layer", "skipped"), [(0, None), (-1, None), (None, None), (1, 1)])
def test_slg_layer_zero_or_less_skips_nothing_as_upstream(slg_layer: int | None, skipped: int | None) -> None:
    model = Scripted()
    pos, neg = contexts(8)
    sample(model, solver="euler", steps=1, video_noise=torch.zeros(VIDEO_SHAPE),
           audio_noise=torch.zeros(AUDIO_SHAPE), pos_context=pos, neg_context=neg, slg_layer=slg_layer)
    assert [call["skip_block"] for call in model.calls] == [None, skipped]


@pytest.mark.parametrize("tower", ["video", "audio"])
def test_planted_nan_raises_naming_step_and_tower(tower: str) -> None:
    pos, neg = contexts(8)
    model = Scripted(nan_at_call=2 * 3 + 1, nan_tower=tower)  # the unconditional pass of step 3
    video, audio = noise()
    with pytest.raises(NonFiniteError, match=rf"{tower}.*step 3") as caught:
        sample(model, steps=6, video_noise=video, audio_noise=audio, pos_context=pos, neg_context=neg)
    assert caught.value.step == 3 and caught.value.tower == tower
    assert isinstance(caught.value, RuntimeError)


def test_tiny_model_full_50_step_denoise_is_finite() -> None:
    model = build_fusion_model("tiny", device="cpu", seed=0)
    pos, neg = contexts(model.config.text_dim)
    video_noise, audio_noise = noise()
    seen: list[tuple[int, int]] = []
    video, audio = sample(model, solver="unipc", steps=50, shift=5.0, video_noise=video_noise,
                          audio_noise=audio_noise, pos_context=pos, neg_context=neg, video_guidance=4.0,
                          audio_guidance=3.0, slg_layer=1, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 50) for i in range(50)]
    assert video.shape == VIDEO_SHAPE and audio.shape == AUDIO_SHAPE and video.dtype == torch.bfloat16
    assert torch.isfinite(video.float()).all() and torch.isfinite(audio.float()).all()
    assert float(video.float().abs().max()) < 100 and not torch.equal(video, video_noise)


def test_i2v_holds_the_first_frame() -> None:
    model = build_fusion_model("tiny", device="cpu", seed=0)
    pos, neg = contexts(model.config.text_dim)
    video_noise, audio_noise = noise()
    first = torch.randn(1, 48, 1, 4, 6).bfloat16()
    video, _ = sample(model, steps=3, video_noise=video_noise, audio_noise=audio_noise, pos_context=pos,
                      neg_context=neg, first_frame_latent=first, slg_layer=1)
    assert torch.equal(video[:, :, :1], first)
    assert not torch.equal(video_noise[:, :, :1], first)  # the caller's noise is left alone


def test_fp8_state_dict_loads_and_runs_in_bf16() -> None:
    reference = build_fusion_model("tiny", device="cpu", seed=0)
    fp8 = {name: t.to(torch.float8_e4m3fn) for name, t in reference.state_dict().items()}
    model = load_into(build_fusion_model("tiny"), fp8, device="cpu", dtype=torch.bfloat16, source="tiny fp8")
    weight = model.video_model.blocks[0].self_attn.q.weight
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight, fp8["video_model.blocks.0.self_attn.q.weight"].to(torch.bfloat16))
    pos, _ = contexts(model.config.text_dim)
    video_noise, audio_noise = noise()
    t = torch.tensor([500.0])
    with torch.inference_mode():
        video, audio = model(video_noise, audio_noise, t, pos, pos)
        want_video, _ = reference(video_noise, audio_noise, t, pos, pos)
    assert video.dtype == torch.bfloat16 and torch.isfinite(video.float()).all()
    assert torch.isfinite(audio.float()).all()
    # e4m3 keeps 3 mantissa bits: close to the bf16 model, not equal to it
    error = (video.float() - want_video.float()).norm() / want_video.float().norm()
    assert 0 < float(error) < 0.3
