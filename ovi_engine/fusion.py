"""Ovi's fusion transformer: a video tower and an audio tower whose blocks run in pairs
and attend to each other.

Per block pair (upstream `ovi/modules/fusion.py`): audio self-attention, video self-attention, audio
cross-attention (text + the updated video tokens), audio FFN, video cross-attention (text + the audio tokens
from before audio's cross-attention), video FFN. Skip-layer guidance drops one whole pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, cast

import torch
from torch import Tensor, nn

from ovi_engine import dit
from ovi_engine.dit import DiTTower, TowerConfig, TowerState
from ovi_engine.weights import Rule, build_module, load_file, normal, resolve_preset

if TYPE_CHECKING:
    from ovi_engine.parallel import SequenceParallel

__all__ = ["FUSION_PRESETS", "BlockPair", "FusionConfig", "FusionModel", "Pass", "TowerConfig",
           "build_fusion_model", "load_fusion_model"]

AUDIO_ROPE_SCALE = 0.19676  # upstream audio.json temporal_rope_scaling_factor


@dataclass(frozen=True)
class FusionConfig:
    video: TowerConfig
    audio: TowerConfig

    def __post_init__(self) -> None:
        v, a = self.video, self.audio
        if (v.modality, a.modality) != ("video", "audio"):
            raise ValueError("FusionConfig needs a video tower config and an audio tower config")
        # Fusion K/V project the other tower's tokens (dim -> dim) and the blocks run in pairs.
        if (v.dim, v.num_heads, v.num_layers) != (a.dim, a.num_heads, a.num_layers):
            raise ValueError("video and audio towers must share dim, num_heads and num_layers")
        if v.text_dim != a.text_dim:
            raise ValueError("video and audio towers must read the same text width")

    @property
    def text_dim(self) -> int:
        return self.video.text_dim

    @property
    def num_layers(self) -> int:
        return self.video.num_layers


def _towers(
    dim: int, ffn_dim: int, num_heads: int, num_layers: int, freq_dim: int, text_dim: int, text_len: int = 512
) -> FusionConfig:
    def tower(modality: str, in_dim: int, patch_size: tuple[int, ...], rope_scale: float) -> TowerConfig:
        return TowerConfig(modality, in_dim, dim, ffn_dim, num_heads, num_layers, patch_size,
                           freq_dim=freq_dim, text_dim=text_dim, text_len=text_len, rope_scale=rope_scale)

    return FusionConfig(tower("video", 48, (1, 2, 2), 1.0), tower("audio", 20, (1,), AUDIO_ROPE_SCALE))


FUSION_PRESETS: dict[str, FusionConfig] = {
    "full": _towers(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, freq_dim=256, text_dim=4096),
    # Real head_dim (128) and text width at an eighth of the weights: a cheap GPU run of the same kernels.
    "small": _towers(dim=1536, ffn_dim=7168, num_heads=12, num_layers=8, freq_dim=256, text_dim=4096),
    # CPU/CI size. Contexts shorter than text_len are zero-padded to it; 32 keeps the text attention cheap.
    "tiny": _towers(dim=64, ffn_dim=128, num_heads=2, num_layers=3, freq_dim=32, text_dim=64, text_len=32),
}


def get_fusion_config(preset: str | FusionConfig) -> FusionConfig:
    return resolve_preset(preset, FUSION_PRESETS, "fusion")


PairPart = Literal["all", "self", "rest"]


class BlockPair(nn.Module):
    """The audio and video block of one depth, run in Ovi's order.

    Not registered under FusionModel (the checkpoint keys stay upstream's); it exists so that code which
    moves weights around a forward (block streaming) can hook one module that encloses the pair's work.
    """

    def __init__(self, video_block: dit.Block, audio_block: dit.Block):
        super().__init__()
        self.video_block = video_block
        self.audio_block = audio_block

    def forward(self, video: TowerState, audio: TowerState, backend: str, part: PairPart = "all") -> None:
        """part: "all", or "self" (the self-attentions, which do not read the text) and later "rest"."""
        vb, ab = self.video_block, self.audio_block
        video_mod, audio_mod = vb.modulation_table(video.e0), ab.modulation_table(audio.e0)
        if part != "rest":
            ab.self_attention_(audio, audio_mod, backend)
            vb.self_attention_(video, video_mod, backend)
        if part == "self":
            return
        audio_before = audio.x.clone()  # video's cross-attention reads audio from before audio's
        ab.cross_attention_(audio, video, video.x, backend)
        ab.ffn_(audio, audio_mod)
        vb.cross_attention_(video, audio, audio_before, backend)
        vb.ffn_(video, video_mod)


@dataclass(frozen=True)
class Pass:
    """One forward over shared latents (CFG runs two): its text contexts and the block pair it skips."""

    video_context: Tensor
    audio_context: Tensor
    skip_block: int | None = None


class FusionModel(nn.Module):
    """Upstream's FusionModel: `video_model` and `audio_model` towers, same checkpoint keys."""

    # Synthetic weights that keep bf16 activations finite and O(1) through 30 pairs and 50 CFG steps:
    # upstream's modulation init and damped residual-branch outputs; everything else weights.py's default.
    SYNTHETIC_RULES: ClassVar[tuple[Rule, ...]] = (
        (r"modulation(\.modulation)?$", normal(lambda shape: 1 / math.sqrt(shape[-1]))),
        (r"(attn\.o|ffn\.2)\.weight$", normal(lambda shape: 0.25 / math.sqrt(shape[1]))),
    )

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.video_model = DiTTower(config.video)
        self.audio_model = DiTTower(config.audio)
        self.block_pairs = [
            BlockPair(cast(dit.Block, v), cast(dit.Block, a))
            for v, a in zip(self.video_model.blocks, self.audio_model.blocks)
        ]
        self.sequence_parallel: SequenceParallel | None = None  # parallel.enable_sequence_parallel sets it

    def forward(
        self,
        video: Tensor,
        audio: Tensor,
        t: Tensor,
        video_context: Tensor,
        audio_context: Tensor,
        *,
        first_frame_clean: bool = False,
        skip_block: int | None = None,
        attention: str = "auto",
    ) -> tuple[Tensor, Tensor]:
        """Velocity predictions for video [B,48,F,H,W] and audio [B,L,20] at timesteps t [B] (0..1000).

        first_frame_clean (i2v): the first latent frame is the clean image, so its tokens get t = 0.
        skip_block: index of the block pair left out (skip-layer guidance in the unconditional pass); an
        index past the last pair skips nothing, as upstream.
        """
        passes = [Pass(video_context, audio_context, skip_block)]
        return self.forward_passes(video, audio, t, passes, first_frame_clean=first_frame_clean,
                                   attention=attention)[0]

    def forward_passes(
        self,
        video: Tensor,
        audio: Tensor,
        t: Tensor,
        passes: list[Pass],
        *,
        first_frame_clean: bool = False,
        attention: str = "auto",
    ) -> list[tuple[Tensor, Tensor]]:
        """One `forward` per pass over the same latents and timesteps, as CFG's conditional and unconditional
        predictions. What does not read the text is computed once: the embeddings, the modulation and RoPE
        tables, and pair 0's self-attentions when no pass skips pair 0 (their inputs are still identical).
        """
        frames = video.shape[2] // self.config.video.patch_size[0]
        video_t = t[:, None].expand(-1, frames)  # one timestep per latent frame
        if first_frame_clean:
            video_t = torch.cat([torch.zeros_like(video_t[:, :1]), video_t[:, 1:]], dim=1)
        v = self.video_model.prepare(video, video_t, passes[0].video_context)
        a = self.audio_model.prepare(audio, t[:, None], passes[0].audio_context)
        if self.sequence_parallel is not None:
            v, a = self.sequence_parallel.shard(v), self.sequence_parallel.shard(a)
        share_first = len(passes) > 1 and all(p.skip_block != 0 for p in passes)
        if share_first:
            self.block_pairs[0](v, a, attention, "self")
        def start(tower: DiTTower, shared: TowerState, context: Tensor, n: int) -> TowerState:
            """Pass n's state: its own text (pass 0's is embedded already); earlier passes work on copies of
            the shared tokens, which the last pass may then update in place."""
            last = n == len(passes) - 1
            return replace(shared, x=shared.x if last else shared.x.clone(),
                           context=shared.context if n == 0 else tower.embed_context(context))

        outputs = []
        for n, p in enumerate(passes):
            pv = start(self.video_model, v, p.video_context, n)
            pa = start(self.audio_model, a, p.audio_context, n)
            for i, pair in enumerate(self.block_pairs):
                if i != p.skip_block:
                    pair(pv, pa, attention, "rest" if i == 0 and share_first else "all")
            outputs.append((self.video_model.finish(pv), self.audio_model.finish(pa)))
        return outputs


def build_fusion_model(
    preset: str | FusionConfig = "full",
    *,
    device: str | torch.device = "meta",
    dtype: torch.dtype = torch.bfloat16,
    seed: int | None = 0,
    compile: bool = False,
) -> FusionModel:
    """On `meta` (or with seed None): an unmaterialized model to load a checkpoint into. Otherwise
    deterministic synthetic weights from `seed`. `compile` torch.compiles the small elementwise helpers."""
    config = get_fusion_config(preset)
    if compile:
        dit.compile_helpers()
    return build_module(lambda: FusionModel(config), device=device, dtype=dtype, seed=seed,
                        rules=FusionModel.SYNTHETIC_RULES)


def load_fusion_model(
    path: str | Path,
    *,
    preset: str | FusionConfig = "full",
    device: str | torch.device,
    dtype: torch.dtype = torch.bfloat16,
) -> FusionModel:
    """Read an Ovi fusion checkpoint (bf16 or fp8 safetensors) strictly into a model computing in `dtype`."""
    model = build_fusion_model(preset, dtype=dtype)
    return load_file(model, path, device=device, dtype=dtype)
