"""The reference engine (`ovi_engine.OviPipeline`) behind the Engine interface: the only part of the harness
that imports `ovi_engine`.

The pipeline takes its configuration when built and emits StageEvent objects; this adapter builds it in
`load` and forwards its events to the harness as (stage, phase, info). It declares what the engine supports
from the engine's own tables (variants, placement policies, the attention registry's probes) and exposes
the attention registry to the attention suites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ovi_bench.engines.base import (
    ATTENTION_BACKENDS,
    FEATURES,
    POLICIES,
    AttentionKernel,
    Capabilities,
    EngineConfig,
    StageListener,
    attention_dtype,
)
from ovi_bench.variant_facts import VARIANTS


class ReferenceEngine:
    def __init__(self) -> None:
        self.pipeline: Any = None
        self.listeners: list[StageListener] = []

    def capabilities(self, device: str, dtype: str) -> Capabilities:
        from ovi_engine.placement import POLICIES as ENGINE_POLICIES
        from ovi_engine.variants import VARIANTS as ENGINE_VARIANTS

        return Capabilities(
            variants={v: None if v in ENGINE_VARIANTS else "not in ovi_engine.variants" for v in VARIANTS},
            policies={p: None if p in ENGINE_POLICIES else "not in ovi_engine.placement" for p in POLICIES},
            attention=_ProbedAttention(device, _attention_dtype(dtype, device)),
            features=dict.fromkeys(FEATURES),
        )

    def check_inputs(self, config: EngineConfig) -> None:
        """The checkpoint directory's layout and the variant of its files, read before any case runs."""
        if config.checkpoint_dir is None:
            return
        from ovi_engine.checkpoints import CheckpointLayoutError, find_checkpoints
        from ovi_engine.variants import detect_variant

        try:
            files = find_checkpoints(config.checkpoint_dir, config.variant)
        except CheckpointLayoutError as exc:
            raise ValueError(f"--checkpoint-dir: {exc}") from None
        try:
            found = detect_variant(files.fusion).variant.name
        except ValueError:  # a file the metadata and names cannot tell: the case's variant stands
            return
        if found != config.variant:
            raise ValueError(f"--checkpoint-dir: {files.fusion.name} is a {found} checkpoint, the case asks "
                             f"for {config.variant} (pass --variant {found}, or point at its own file)")

    def attention_kernel(self, backend: str, device: str, dtype: str) -> AttentionKernel:
        from ovi_engine.attention import attend, backend_status, resolve

        # raises AttentionUnavailable with the reason
        resolved = resolve(backend, device, _attention_dtype(dtype, device))
        first_call_s = backend_status(resolved, device, _attention_dtype(dtype, device)).first_call_s
        return AttentionKernel(backend, resolved, lambda q, k, v: attend(q, k, v, backend=resolved),
                               first_call_s, computes_in="float32" if resolved == "reference" else None)

    def add_stage_listener(self, listener: StageListener) -> None:
        self.listeners.append(listener)

    def _forward(self, event: Any) -> None:
        for listener in self.listeners:
            listener(event.stage, event.phase, dict(event.info))

    def load(self, config: EngineConfig) -> None:
        from ovi_engine.pipeline import OviPipeline, PipelineConfig

        self.pipeline = OviPipeline(PipelineConfig(
            variant=config.variant, preset=None if config.checkpoint_dir else config.preset,
            checkpoint_dir=config.checkpoint_dir,
            policy=config.policy, attention=config.attention, device=config.device,
            dtype=None if config.dtype == "auto" else getattr(torch, config.dtype), seed=config.seed,
            area=config.area, sequence_parallel=config.sequence_parallel,
        ))
        self.pipeline.add_listener(self._forward)
        self.pipeline.load()

    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> Any:
        return self.pipeline.encode_text(prompt, negative_prompt)

    def denoise(self, text: Any, *, steps: int, seed: int, solver: str = "unipc", image: Path | None = None,
                height: int | None = None, width: int | None = None,
                on_step: Callable[[int, int], None] | None = None,
                on_step_latents: Callable[[int, Any, Any], None] | None = None,
                slg_layer: int | None = None) -> Any:
        return self.pipeline.denoise(text, steps=steps, seed=seed, solver=solver, image=image, height=height,
                                     width=width, on_step=on_step, on_latents=on_step_latents,
                                     slg_layer=slg_layer)

    def release(self) -> None:
        self.pipeline.release()

    def decode_latents(self, latents: Any) -> Any:
        return self.pipeline.decode_latents(latents)

    def describe(self) -> dict:
        return self.pipeline.describe()

    def detect_variant(self, path: Path) -> str:
        """Optional: which variant a checkpoint file is (metadata, file name,
        fingerprint); raises otherwise."""
        from ovi_engine.variants import detect_variant

        return detect_variant(path).variant.name


class _ProbedAttention(Mapping[str, str | None]):
    """Each backend's availability (None, or why not), probed by the engine's registry when first read:
    a worker reads only its case's backend, and probing all of them costs it seconds on a GPU."""

    def __init__(self, device: str, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.read: dict[str, str | None] = {}

    def __getitem__(self, backend: str) -> str | None:
        from ovi_engine.attention import BACKENDS, backend_status

        if backend not in ATTENTION_BACKENDS:
            raise KeyError(backend)
        if backend not in self.read:
            if backend != "auto" and backend not in BACKENDS:
                self.read[backend] = "not registered in ovi_engine.attention"
            else:
                status = backend_status(backend, self.device, self.dtype)
                self.read[backend] = None if status.available else status.reason
        return self.read[backend]

    def __contains__(self, backend: object) -> bool:  # never probes: a probe's own KeyError must surface
        return backend in ATTENTION_BACKENDS

    def __iter__(self) -> Iterator[str]:
        return iter(ATTENTION_BACKENDS)

    def __len__(self) -> int:
        return len(ATTENTION_BACKENDS)


def _attention_dtype(dtype: str, device: str) -> torch.dtype:
    return getattr(torch, attention_dtype(dtype, device))


def make_engine() -> ReferenceEngine:
    return ReferenceEngine()
