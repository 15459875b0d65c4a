"""ovi_engine: a reference implementation of Ovi inference in plain PyTorch (it never imports ovi_bench)."""

from ovi_engine.fusion import build_fusion_model
from ovi_engine.pipeline import Latents, Media, OviPipeline, PipelineConfig, StageEvent
from ovi_engine.variants import VARIANTS, VariantSpec, detect_variant

__all__ = [
    "VARIANTS", "Latents", "Media", "OviPipeline", "PipelineConfig", "StageEvent", "VariantSpec",
    "build_fusion_model", "detect_variant",
]
