"""Reference engines with a planted regression, to prove the suites can fail (run via --engine MODULE:FACTORY).

- `fusion_kept`: release() frees nothing, so the fusion model and the text encoder stay through decode
  (the seed's OOM); oom_regression's release check must fail.
- `short_10s`: asked for 960x960_10s, it builds the 5 s model's lengths (the seed's 10 s bug);
  variant_latents must fail on the latent shapes and the variant description.
- `slow_attention`: its attention kernel does the work three times (a 3x slowdown); smoke's attention time
  checks must fail however fast or slow the machine is that day (benchmarks/gate_flakiness.py).
"""

from __future__ import annotations

from dataclasses import replace

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
