"""Ovi's denoising loop: classifier-free guidance with skip-layer guidance, one solver per modality.

Each step runs the conditional forward (positive prompt) and the unconditional forward (negative prompt,
with one block pair skipped), then mixes them with separate guidance scales for video and audio
(upstream `ovi/ovi_fusion_engine.py`; defaults from `ovi/configs/inference/inference_fusion.yaml`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ovi_engine.fusion import FusionModel, Pass
from ovi_engine.solvers import make_solver

Context = Tensor | tuple[Tensor, Tensor]  # one text embedding for both towers, or (video, audio)

DEFAULT_STEPS = 50
DEFAULT_SHIFT = 5.0
DEFAULT_SOLVER = "unipc"
DEFAULT_VIDEO_GUIDANCE = 4.0
DEFAULT_AUDIO_GUIDANCE = 3.0
DEFAULT_SLG_LAYER = 11


class NonFiniteError(RuntimeError):
    """A NaN or Inf appeared in a guided prediction; raised instead of carrying it into the output."""

    def __init__(self, step: int, tower: str):
        super().__init__(f"non-finite values (NaN/Inf) in the {tower} prediction at denoising step {step}")
        self.step = step
        self.tower = tower


def _pair(context: Context) -> tuple[Tensor, Tensor]:
    return context if isinstance(context, tuple) else (context, context)


def _guided(pos: Tensor, neg: Tensor, scale: float, step: int, tower: str) -> Tensor:
    out = torch.lerp(neg.float(), pos.float(), scale)  # neg + scale * (pos - neg)
    if not torch.isfinite(out).all():
        raise NonFiniteError(step, tower)
    return out


@torch.inference_mode()
def sample(
    model: FusionModel,
    *,
    video_noise: Tensor,
    audio_noise: Tensor,
    pos_context: Context,
    neg_context: Context,
    solver: str = DEFAULT_SOLVER,
    steps: int = DEFAULT_STEPS,
    shift: float = DEFAULT_SHIFT,
    video_guidance: float = DEFAULT_VIDEO_GUIDANCE,
    audio_guidance: float = DEFAULT_AUDIO_GUIDANCE,
    slg_layer: int | None = DEFAULT_SLG_LAYER,
    first_frame_latent: Tensor | None = None,
    attention: str = "auto",
    on_step: Callable[[int, int], None] | None = None,
    on_latents: Callable[[int, Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Denoise video [B,48,F,h,w] and audio [B,L,20] noise into latents of the same shapes and dtypes.

    Both passes of a step go through `model.forward_passes`, which computes their shared part once.
    slg_layer: the block pair the unconditional pass skips; None or <= 0 skips none (as upstream).
    Contexts are [B, Ltext, text_dim]. first_frame_latent [B,48,1,h,w] makes it i2v: the first latent
    frame is held at the clean image and the model sees it at t = 0. on_step(i, steps) runs after each step,
    after on_latents(i, video, audio) with that step's latents ([48,F,h,w] and [L,20] of the first batch item;
    live tensors the loop goes on updating: copy what you keep).
    """
    video_solver = make_solver(solver, steps, shift, device=video_noise.device)
    audio_solver = make_solver(solver, steps, shift, device=audio_noise.device)
    pos, neg = _pair(pos_context), _pair(neg_context)
    i2v = first_frame_latent is not None
    # Upstream skips a pair only for slg_layer > 0 (`if slg_layer > 0 and i == slg_layer`): 0 turns SLG off.
    skip = slg_layer if slg_layer is not None and slg_layer > 0 else None
    video, audio = video_noise.clone(), audio_noise
    for i, t in enumerate(video_solver.timesteps):
        if first_frame_latent is not None:
            video[:, :, :1] = first_frame_latent
        t_batch = t.expand(video.shape[0])
        (video_pos, audio_pos), (video_neg, audio_neg) = model.forward_passes(
            video, audio, t_batch, [Pass(*pos), Pass(*neg, skip_block=skip)], first_frame_clean=i2v,
            attention=attention)
        video = video_solver.step(_guided(video_pos, video_neg, video_guidance, i, "video"), i, video)
        audio = audio_solver.step(_guided(audio_pos, audio_neg, audio_guidance, i, "audio"), i, audio)
        if on_latents is not None:
            on_latents(i, video[0], audio[0])
        if on_step is not None:
            on_step(i, steps)
    if first_frame_latent is not None:
        video[:, :, :1] = first_frame_latent
    return video, audio
