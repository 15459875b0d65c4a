"""The engine interface: everything a suite needs from an engine, and nothing more.

The harness owns its vocabulary: the variants (`ovi_bench.variant_facts`), the placement policies and the
attention backend names below mean the same thing for every engine. An engine declares which of them it
supports, and why not for each it does not (`capabilities`); the harness checks that before a case runs,
and a case the engine cannot run is reported `unsupported` with the engine's reason, never run and never a
pass. The reference engine (`ovi_bench.engines.reference`), upstream checkouts and any plugin given as
`MODULE:FACTORY` all have this shape. The engine does not know it is measured: the harness wraps each call
in trackers. An engine that also announces its inner stages (e.g. decode_video, decode_audio) offers
`add_stage_listener`; one that lets the attention suites time its own kernels offers `attention_kernel`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ovi_bench.variant_facts import VARIANTS

# What each policy means, whoever implements it (the suites' `policy` axis).
POLICIES: dict[str, str] = {
    "all_gpu": "every module on the device; the text encoder freed after encoding, the fusion model before "
               "decode",
    "cpu_offload": "modules on the host, each on the device only for its stage (fusion blocks streamed)",
    "keep_resident": "nothing released (the behaviour before the seed's OOM fix; the negative control)",
    "sequential": "prompts encoded, the text encoder released, then the fusion model loaded: "
                  "the text encoder and the fusion model are never resident together (the text encoder "
                  "reloads per prompt)",
}
# Attention backend names the `attention` axis may take; `auto` is the engine's own choice.
ATTENTION_BACKENDS = ("auto", "sdpa", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_math", "flex",
                      "sage", "flash_attn_2", "flash_attn_3", "flash_attn_4", "xformers", "reference")
# Optional things an engine may or may not do; a scenario that needs one says so. step_latents: denoise
# takes `on_step_latents`; slg_layer: denoise takes `slg_layer` (both passed only to an
# engine declaring them).
# variant_area: a request of another size is scaled to the variant's area (and snapped) by the engine itself
FEATURES = ("sequence_parallel", "i2v", "attention_kernel", "prompt_conversion", "step_latents", "slg_layer",
            "variant_area")
PRESETS = ("tiny", "full")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def attention_dtype(dtype: str, device: str) -> str:
    """The dtype attention is timed in for a run's `dtype`. Ovi attends in bf16, which is what "auto" means on
    a GPU. On the CPU "auto" is float32: many CPUs have no native bf16 matmul (a 2-core EPYC ran a 128^3 one
    19x slower than in float32), so bf16 times there would measure the CPU model, not the kernel."""
    if dtype != "auto":
        return dtype
    return "float32" if device.split(":")[0] == "cpu" else "bfloat16"


@dataclass(frozen=True)
class Capabilities:
    """What an engine can run on a device: for each name of the harness's vocabulary, None when it is
    supported, else the reason it is not. Names an engine leaves out are unsupported ("not declared")."""

    variants: Mapping[str, str | None]
    policies: Mapping[str, str | None]
    attention: Mapping[str, str | None]  # None: available on this device (the engine's own probe passed)
    features: Mapping[str, str | None] = field(default_factory=dict)

    def why_not(self, kind: str, name: str) -> str | None:
        """None when `name` of `kind` (variants, policies, attention, features) is supported, else why not."""
        table: Mapping[str, str | None] = getattr(self, kind)
        if name not in table:
            return ("the engine does not declare "
                    f"{kind[:-1] if kind != 'attention' else 'attention backend'} {name!r}")
        return table[name]

    def to_dict(self, attention: Collection[str] | None = None) -> dict[str, Any]:
        """Plain tables; `attention`: only these backends (a table may probe each one when it is read)."""
        data = {f.name: dict(getattr(self, f.name)) for f in fields(self) if f.name != "attention"}
        names = self.attention if attention is None else [n for n in attention if n in self.attention]
        return {**data, "attention": {name: self.attention[name] for name in names}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        return cls(**{k: dict(data.get(k, {})) for k in ("variants", "policies", "attention", "features")})

    @classmethod
    def everything(cls, **reasons: Mapping[str, str | None]) -> Capabilities:
        """Every name of the vocabulary supported, except those `reasons` sets (e.g. attention={...})."""
        tables: dict[str, dict[str, str | None]] = {
            "variants": dict.fromkeys(VARIANTS), "policies": dict.fromkeys(POLICIES),
            "attention": dict.fromkeys(ATTENTION_BACKENDS), "features": dict.fromkeys(FEATURES)}
        for kind, overrides in reasons.items():
            tables[kind].update(overrides)
        return cls(**tables)


@dataclass(frozen=True)
class EngineConfig:
    """What an engine is built with: the part of a case's Job the engine sees."""

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
    def from_dict(cls, data: Mapping[str, Any]) -> EngineConfig:
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


@dataclass(frozen=True)
class AttentionKernel:
    """An engine's own attention entry point, for the attention suites to time at Ovi's shapes.

    `fn(q, k, v)` takes [B, L, H, D] tensors and returns [B, Lq, H, D]; `resolved` names the backend that
    runs (what `auto` stands for on this device); `first_call_s`, where the engine measured it, is the
    seconds of the backend's first call in this process (a JIT backend's compile), apart from steady speed.
    `computes_in` is the dtype it attends in where that is not its inputs' (flash-attn casts float32 to
    bf16): the attention suites prove the dtype with the profiler and fail a cast nobody declared."""

    requested: str
    resolved: str
    fn: Callable[[Any, Any, Any], Any]
    first_call_s: float | None = None
    computes_in: str | None = None

    def attends_in(self, given: str) -> str:
        """The dtype it attends in when handed `given`."""
        return self.computes_in or given


@runtime_checkable
class Engine(Protocol):
    def capabilities(self, device: str, dtype: str) -> Capabilities: ...

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
        # Feature step_latents: called after step i with that step's video [48, F, h, w] and audio [L, 20]
        # latents (the harness copies what it keeps), before on_step.
        on_step_latents: Callable[[int, Any, Any], None] | None = None,
        # Feature slg_layer: the block pair the unconditional pass skips (skip-layer guidance); None: the
        # engine's default; <= 0: none, as upstream.
        slg_layer: int | None = None,
    ) -> Latents: ...

    def release(self) -> None: ...

    def decode_latents(self, latents: Latents) -> Media: ...

    def describe(self) -> dict: ...


def stage_listener_hook(engine: Engine) -> Callable[[StageListener], None] | None:
    """The engine's optional `add_stage_listener(fn)`, through which it announces its inner stages."""
    return getattr(engine, "add_stage_listener", None)


def check_inputs_hook(engine: Engine) -> Callable[[EngineConfig], None] | None:
    """The engine's optional `check_inputs(config)`: what it can tell of its inputs before anything runs (a
    checkpoint directory's layout, which variant its files are); it raises ValueError with one line."""
    return getattr(engine, "check_inputs", None)


def attention_kernel_hook(engine: Engine) -> Callable[[str, str, str], AttentionKernel] | None:
    """The engine's optional `attention_kernel(backend, device, dtype)`; it raises for a backend that
    cannot run there, with the reason."""
    return getattr(engine, "attention_kernel", None)
