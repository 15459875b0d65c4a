"""A minimal engine for ovi-bench: the smallest thing that satisfies the Engine interface.

It makes latents of the right shapes with no model at all. Copy it as the start of an adapter for a
fork or an upstream checkout, and run the suites against it:

    ovi-bench run smoke --engine docs.example_engine:make_engine
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ovi_bench.engines.base import Capabilities, EngineConfig
from ovi_bench.variant_facts import variant_facts


@dataclass
class ExampleLatents:
    video: torch.Tensor  # [48, F, h, w]
    audio: torch.Tensor  # [L, 20]


@dataclass
class ExampleMedia:
    video_frames: int
    audio_samples: int
    fps: float
    sample_rate: int


class ExampleEngine:
    def capabilities(self, device: str, dtype: str) -> Capabilities:
        # Every variant, policy and backend name is accepted (nothing here depends on them) but one feature.
        return Capabilities.everything(features={"sequence_parallel": "the example engine has "
                                                                      "no model to split",
                                                  "attention_kernel": "the example engine has no attention"})

    def load(self, config: EngineConfig) -> None:
        self.spec = variant_facts(config.variant)
        self.area = config.area
        self.device = torch.device(config.device)

    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> Any:
        return prompt

    def denoise(self, text: Any, *, steps: int, seed: int, solver: str = "unipc", image: Path | None = None,
                height: int | None = None, width: int | None = None,
                on_step: Callable[[int, int], None] | None = None) -> ExampleLatents:
        generator = torch.Generator().manual_seed(seed)
        video = torch.randn(self.spec.video_latent_shape(height, width, self.area), generator=generator)
        audio = torch.randn(self.spec.audio_latent_shape(), generator=generator)
        for step in range(steps):
            video = video * 0.9  # one "step" of work
            if on_step is not None:
                on_step(step, steps)
        return ExampleLatents(video.to(self.device), audio.to(self.device))

    def release(self) -> None:
        pass

    def decode_latents(self, latents: ExampleLatents) -> ExampleMedia:
        return ExampleMedia(self.spec.video_frames, self.spec.audio_samples, self.spec.fps,
                            self.spec.sample_rate)

    def describe(self) -> dict:
        return {"variant": self.spec.summary(), "placement": [], "attention": "none", "weights": "none"}


def make_engine() -> ExampleEngine:
    return ExampleEngine()
