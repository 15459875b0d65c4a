"""Reference engines with a planted regression, to prove the suites can fail (run via
--engine MODULE:FACTORY).

- `fusion_kept`: release() frees nothing, so the fusion model and the text encoder stay through decode
  (the seed's OOM); oom_regression's release check must fail.
- `short_10s`: asked for 960x960_10s, it builds the 5 s model's lengths (the seed's 10 s bug);
  variant_latents must fail on the latent shapes and the variant description.
- `own_area_ignored`, `own_area_snap_64`: right whenever the harness hands them an `area`, wrong when they
  choose the frame size themselves; variant_latents' own-area run must name it in `latents.mismatches`.
- `slow_attention`: its attention kernel does the work three times (a 3x slowdown); smoke's attention time
  checks must fail however fast or slow the machine is that day (benchmarks/gate_flakiness.py).
- `math_claiming_flash`: its attention kernel claims sdpa_flash and runs SDPA's math kernel; on a GPU the
  attention suites must fail it (tests/harness/test_kernel_proof.py fakes the GPU's device context).
- output_fidelity must name the first divergent step and tower of: `first_frame_not_clean` (i2v),
  `slg_on_conditional`, `shift_3`, `no_prompt_conversion` (also the prompt check), `attention_perturbed`.
- repeated_generation must catch `leaky` (1 MiB kept per generation) and `reloads_fusion` (rebuilt under
  keep_resident).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ovi_bench.engines.base import AttentionKernel, EngineConfig
from ovi_bench.engines.reference import ReferenceEngine


class FusionKept(ReferenceEngine):
    def release(self) -> None:
        pass


class Short10s(ReferenceEngine):
    def load(self, config: EngineConfig) -> None:
        if config.variant == "960x960_10s":
            config = replace(config, variant="960x960_5s")
        super().load(config)


class SlowAttention(ReferenceEngine):
    def attention_kernel(self, backend: str, device: str, dtype: str) -> AttentionKernel:
        kernel = super().attention_kernel(backend, device, dtype)

        def three_times(q, k, v):  # type: ignore[no-untyped-def]
            kernel.fn(q, k, v)
            kernel.fn(q, k, v)
            return kernel.fn(q, k, v)

        return replace(kernel, fn=three_times)


class OwnAreaIgnored(ReferenceEngine):
    """Without an `area` it snaps the requested size as given, never scaling it to the variant's area."""

    def denoise(self, text: Any, **kwargs: Any) -> Any:
        from ovi_engine.variants import VariantSpec

        original = VariantSpec.frame_size

        def frame_size(spec: Any, height: int | None = None, width: int | None = None,
                       area: int | None = None) -> tuple[int, int]:
            height, width = height or spec.side, width or spec.side
            return original(spec, height, width, area or height * width)

        with mock.patch.object(VariantSpec, "frame_size", frame_size):
            return super().denoise(text, **kwargs)


class OwnAreaSnap64(ReferenceEngine):
    """Without an `area` it snaps each side of the scaled size to a multiple of 64 instead of 32."""

    def denoise(self, text: Any, **kwargs: Any) -> Any:
        from ovi_engine import variants

        if self.pipeline.config.area is not None:
            return super().denoise(text, **kwargs)
        with mock.patch.object(variants, "SIZE_MULTIPLE", 64):
            return super().denoise(text, **kwargs)


def own_area_ignored() -> OwnAreaIgnored:
    return OwnAreaIgnored()


def own_area_snap_64() -> OwnAreaSnap64:
    return OwnAreaSnap64()


def slow_attention() -> SlowAttention:
    return SlowAttention()


def fusion_kept() -> FusionKept:
    return FusionKept()


def short_10s() -> Short10s:
    return Short10s()


class MathClaimingFlash(ReferenceEngine):
    """Says its attention kernel is sdpa_flash (whatever is asked for) and runs SDPA's math kernel: a math
    fallback that the backend's name cannot show, only the profiler."""

    def attention_kernel(self, backend: str, device: str, dtype: str) -> AttentionKernel:
        def math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel(SDPBackend.MATH):
                out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            return out.transpose(1, 2)

        return AttentionKernel(backend, "sdpa_flash", math)


def math_claiming_flash() -> MathClaimingFlash:
    return MathClaimingFlash()


class SilentHalfCast(ReferenceEngine):
    """Its attention casts q/k/v to bf16 before SDPA and casts the output back: the dtype that comes back is
    the one asked for, the precision is bf16's. `declares` says so in AttentionKernel.computes_in."""

    declares = False

    def attention_kernel(self, backend: str, device: str, dtype: str) -> AttentionKernel:
        def half(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            q, k, v = (t.to(torch.bfloat16).transpose(1, 2) for t in (q, k, v))
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).to(torch.float32)

        return AttentionKernel(backend, "sdpa", half, computes_in="bfloat16" if self.declares else None)


def silent_half_cast() -> SilentHalfCast:
    return SilentHalfCast()


class DeclaredHalfCast(SilentHalfCast):
    declares = True
# ---- output_fidelity: each changes the result, not the shapes or the memory ------------------------------
# Patches apply only inside this engine's own calls, so the reference engine the scenario runs in the same
# worker afterwards is the unmodified one.

class FirstFrameNotClean(ReferenceEngine):
    """i2v: the image's latent starts the first frame, but it is neither held clean nor seen at t = 0."""

    def denoise(self, text: Any, **kwargs: Any) -> Any:
        from ovi_engine import pipeline

        original = pipeline.sample

        def sample(model: Any, *, video_noise: Any, first_frame_latent: Any = None, **rest: Any) -> Any:
            if first_frame_latent is not None:
                video_noise = video_noise.clone()
                video_noise[:, :, :1] = first_frame_latent
            return original(model, video_noise=video_noise, first_frame_latent=None, **rest)

        with mock.patch.object(pipeline, "sample", sample):
            return super().denoise(text, **kwargs)


class SlgOnConditional(ReferenceEngine):
    """Skip-layer guidance applied to the conditional pass instead of the unconditional one."""

    def denoise(self, text: Any, **kwargs: Any) -> Any:
        from ovi_engine.fusion import FusionModel

        original = FusionModel.forward_passes

        def forward_passes(model: Any, video: Any, audio: Any, t: Any, passes: list, **rest: Any) -> Any:
            cond, uncond = passes
            swapped = [replace(cond, skip_block=uncond.skip_block),
                       replace(uncond, skip_block=cond.skip_block)]
            return original(model, video, audio, t, swapped, **rest)

        with mock.patch.object(FusionModel, "forward_passes", forward_passes):
            return super().denoise(text, **kwargs)


class Shift3(ReferenceEngine):
    """The solver's shift changed from Ovi's 5 to 3."""

    def load(self, config: EngineConfig) -> None:
        super().load(config)
        self.pipeline.config.shift = 3.0


class NoPromptConversion(ReferenceEngine):
    """The prompt is fed to the text encoder as given, not converted to the variant's format."""

    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> Any:
        from ovi_engine import pipeline

        with mock.patch.object(pipeline, "format_prompt", lambda text, prompt_format: text):
            return super().encode_text(prompt, negative_prompt)


class AttentionPerturbed(ReferenceEngine):
    """Every attention output perturbed by 1e-2 relative (seeded Gaussian noise): a drifting new kernel."""

    def denoise(self, text: Any, **kwargs: Any) -> Any:
        from ovi_engine import dit

        original = dit.attend
        generator = torch.Generator().manual_seed(0)

        def attend(q: Any, k: Any, v: Any, **rest: Any) -> Any:
            out = original(q, k, v, **rest)
            noise = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
            return out + 1e-2 * out.float().pow(2).mean().sqrt().to(out.dtype) * noise

        with mock.patch.object(dit, "attend", attend):
            return super().denoise(text, **kwargs)


# ---- repeated_generation -------------------------------------------------------------------------------

LEAK_BYTES = 1 << 20


class Leaky(ReferenceEngine):
    """Keeps a 1 MiB tensor per generation (a cache that only grows)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[torch.Tensor] = []

    def decode_latents(self, latents: Any) -> Any:
        self.kept.append(torch.ones(LEAK_BYTES, dtype=torch.uint8, device=latents.video.device))
        return super().decode_latents(latents)


class ReloadsFusion(ReferenceEngine):
    """Frees the fusion model after every denoise, whatever the policy keeps: the next
    generation rebuilds it."""

    def denoise(self, text: Any, **kwargs: Any) -> Any:
        latents = super().denoise(text, **kwargs)
        self.pipeline.placement.free("fusion")
        return latents


def first_frame_not_clean() -> FirstFrameNotClean:
    return FirstFrameNotClean()


def slg_on_conditional() -> SlgOnConditional:
    return SlgOnConditional()


def shift_3() -> Shift3:
    return Shift3()


def no_prompt_conversion() -> NoPromptConversion:
    return NoPromptConversion()


def attention_perturbed() -> AttentionPerturbed:
    return AttentionPerturbed()


def leaky() -> Leaky:
    return Leaky()


def reloads_fusion() -> ReloadsFusion:
    return ReloadsFusion()
