"""The engine interface: everything a suite needs from an engine, and nothing more.

The reference engine (`ovi_engine.pipeline.OviPipeline`) and any plugin given as `MODULE:FACTORY` have
this shape. The engine does not know it is measured: the harness wraps each call in trackers. An engine
that also announces its inner stages (e.g. decode_video, decode_audio) offers `add_stage_listener`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ovi_engine.placement import POLICIES as PLACEMENT_POLICIES
from ovi_engine.variants import VARIANTS as VARIANT_SPECS

VARIANTS = tuple(VARIANT_SPECS)
POLICIES = tuple(PLACEMENT_POLICIES)
PRESETS = ("tiny", "full")
STAGES = ("load", "encode_text", "denoise", "release", "decode")


def attention_backends() -> tuple[str, ...]:
    """Names --attention accepts: auto and every backend registered in ovi_engine.attention."""
    from ovi_engine.attention import BACKENDS

    return ("auto", *BACKENDS)


@dataclass
class EngineConfig:
    variant: str
    preset: str = "tiny"  # synthetic weights at this preset, unless checkpoint_dir is given
    checkpoint_dir: Path | None = None  # upstream ckpts/ layout or a ComfyUI models folder
    policy: str = "all_gpu"
    attention: str = "auto"
    device: str = "cpu"
    dtype: str = "auto"  # auto: bfloat16 on an accelerator, float32 on the CPU (bf16 convs are slow there)
    seed: int = 0
    area: int | None = None  # frame area override (cheap CPU decodes); None: the variant's own. Lengths stay.
    sequence_parallel: bool = False  # split denoise over the ranks torchrun started (WORLD_SIZE > 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checkpoint_dir"] = str(self.checkpoint_dir) if self.checkpoint_dir else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineConfig:
        ckpt = data.get("checkpoint_dir")
        return cls(**{**data, "checkpoint_dir": Path(ckpt) if ckpt else None})


class Latents(Protocol):
    video: Any  # tensor [48, F, h, w]
    audio: Any  # tensor [L, 20]


class Media(Protocol):
    video_frames: int
    audio_samples: int
    fps: float
    sample_rate: int


StageListener = Callable[[str, str, dict[str, Any]], None]  # (stage name, "start" | "end", engine's info)


@runtime_checkable
class Engine(Protocol):
    def load(self, config: EngineConfig) -> None: ...

    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> Any: ...

    def denoise(
        self,
        text: Any,
        *,
        steps: int,
        seed: int,
        solver: str = "unipc",
        image: Path | None = None,
        height: int | None = None,
        width: int | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Latents: ...

    def release(self) -> None: ...

    def decode_latents(self, latents: Latents) -> Media: ...

    def describe(self) -> dict: ...


def stage_listener_hook(engine: Engine) -> Callable[[StageListener], None] | None:
    """The engine's optional `add_stage_listener(fn)`, through which it announces its inner stages."""
    return getattr(engine, "add_stage_listener", None)
