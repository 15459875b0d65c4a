"""Reference engines with a planted regression, to prove the suites can fail (run via --engine MODULE:FACTORY).

- `fusion_kept`: release() frees nothing, so the fusion model and the text encoder stay through decode
  (the seed's OOM); oom_regression's release check must fail.
- `short_10s`: asked for 960x960_10s, it builds the 5 s model's lengths (the seed's 10 s bug);
  variant_latents must fail on the latent shapes and the variant description.
- `slow_attention`: its attention kernel does the work three times (a 3x slowdown); smoke's attention time
  checks must fail however fast or slow the machine is that day (benchmarks/gate_flakiness.py).
- `math_claiming_flash`: its attention kernel claims sdpa_flash and runs SDPA's math kernel; on a GPU the
  attention suites must fail it (tests/harness/test_kernel_proof.py fakes the GPU's device context).
"""

from __future__ import annotations

from dataclasses import replace

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
