"""A fake engine for testing the harness: right shapes, no model, and faults on demand.

Faults come from the environment (inherited by the worker processes):
`OVI_FAKE_FAULTS="960x960_5s:denoise:sigkill,720x720_5s_fp8:decode_video:oom"`, each entry
`variant:stage:kind[@rank]` with kind one of sigkill, oom (torch.OutOfMemoryError), memory (MemoryError),
hang, error (ValueError), error=NAME (the builtin exception NAME, e.g. KeyError: an engine's bug), or
alloc=SIZE (allocate SIZE bytes of host memory and keep it); `@rank` limits the fault to that torchrun rank
(RANK) of a multi-rank case.
"""

from __future__ import annotations

import builtins
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ovi_bench.engines.base import Capabilities, EngineConfig, StageListener
from ovi_bench.units import parse_size
from ovi_bench.variant_facts import variant_facts

FAULTS_ENV = "OVI_FAKE_FAULTS"


@dataclass
class FakeLatents:
    video: torch.Tensor
    audio: torch.Tensor


@dataclass
class FakeMedia:
    video_frames: int
    audio_samples: int
    fps: float
    sample_rate: int


class FakeEngine:
    def __init__(self) -> None:
        self.config: EngineConfig | None = None
        self.listeners: list[StageListener] = []
        self.held: list[torch.Tensor] = []
        self.faults: dict[str, str] = {}

    def capabilities(self, device: str, dtype: str) -> Capabilities:
        # Sequence parallel cases run: every rank computes the same latents (the harness's
        # plumbing is tested).
        return Capabilities.everything(features={"attention_kernel": "the fake engine has no "
                                                                     "attention of its own"})

    def add_stage_listener(self, listener: StageListener) -> None:
        self.listeners.append(listener)

    def _stage(self, name: str, phase: str) -> None:
        for listener in self.listeners:
            listener(name, phase, {})

    def _maybe_fail(self, stage: str) -> None:
        kind = self.faults.get(stage)
        if kind is None:
            return
        if kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "oom":
            raise torch.OutOfMemoryError(f"fake engine: out of memory in {stage}")
        elif kind == "memory":
            raise MemoryError(f"fake engine: host memory exhausted in {stage}")
        elif kind == "hang":
            time.sleep(3600)
        elif kind == "error":
            raise ValueError(f"fake engine: injected error in {stage}")
        elif kind.startswith("error="):
            error = getattr(builtins, kind.removeprefix("error="), None)
            if not (isinstance(error, type) and issubclass(error, Exception)):
                raise ValueError(f"{FAULTS_ENV}: {kind!r} names no builtin exception")
            raise error(f"fake engine: injected error in {stage}")
        elif kind.startswith("alloc="):
            self.held.append(torch.ones(parse_size(kind[len("alloc="):]), dtype=torch.uint8))
        else:
            raise ValueError(f"{FAULTS_ENV}: unknown fault kind {kind!r}")

    def load(self, config: EngineConfig) -> None:
        self.config = config
        for entry in filter(None, os.environ.get(FAULTS_ENV, "").split(",")):
            variant, stage, kind = entry.split(":", 2)
            kind, _, rank = kind.partition("@")
            if variant == config.variant and rank in ("", os.environ.get("RANK", "0")):
                self.faults[stage] = kind
        self._maybe_fail("load")

    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> Any:
        self._maybe_fail("encode_text")
        return torch.zeros(len(prompt.split()), 8)

    def denoise(self, text: Any, *, steps: int, seed: int, solver: str = "unipc", image: Path | None = None,
                height: int | None = None, width: int | None = None,
                on_step: Callable[[int, int], None] | None = None,
                on_step_latents: Callable[[int, Any, Any], None] | None = None,
                slg_layer: int | None = None) -> FakeLatents:
        assert self.config is not None, "load() first"
        spec = variant_facts(self.config.variant)
        generator = torch.Generator().manual_seed(seed)
        video = torch.randn(spec.video_latent_shape(height, width, self.config.area), generator=generator,
                            dtype=torch.bfloat16)
        audio = torch.randn(spec.audio_latent_shape(), generator=generator, dtype=torch.bfloat16)
        for step in range(steps):
            self._maybe_fail("denoise")
            video.mul_(0.5)
            if on_step_latents is not None:
                on_step_latents(step, video, audio)
            if on_step is not None:
                on_step(step, steps)
        return FakeLatents(video, audio)

    def release(self) -> None:
        self._maybe_fail("release")

    def decode_latents(self, latents: FakeLatents) -> FakeMedia:
        assert self.config is not None, "load() first"
        spec = variant_facts(self.config.variant)
        self._stage("decode_video", "start")
        self._maybe_fail("decode_video")
        frames = 1 + 4 * (latents.video.shape[1] - 1)
        self._stage("decode_video", "end")
        self._stage("decode_audio", "start")
        self._maybe_fail("decode_audio")
        samples = 512 * latents.audio.shape[0]
        self._stage("decode_audio", "end")
        return FakeMedia(frames, samples, spec.fps, spec.sample_rate)

    def describe(self) -> dict:
        assert self.config is not None, "load() first"
        return {"variant": variant_facts(self.config.variant).summary(),
                "placement": [{"module": "fake", "device": self.config.device, "bytes": 0}],
                "attention": self.config.attention, "weights": "synthetic:fake"}


def make_engine() -> FakeEngine:
    return FakeEngine()
