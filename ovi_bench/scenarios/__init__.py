"""Scenario registry: which worker routine runs a case. One module per scenario.

A scenario module defines `SCENARIO = Scenario(...)`; its `run(ctx)` executes inside the worker process
and returns the case's flat metrics (plain JSON-able data), each declared in `metrics` with its unit and
kind (`ovi_bench.metrics`), so that a suite's checks are validated against them when the suite loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ovi_bench.engines.base import Capabilities, Engine, EngineConfig, stage_listener_hook
from ovi_bench.job import Job
from ovi_bench.metrics import Metric
from ovi_bench.records import CaseResult
from ovi_bench.trackers import StageMeter

SCENARIO_MODULES = {
    "pipeline": "ovi_bench.scenarios.pipeline",
    "spec": "ovi_bench.scenarios.spec",
    "attention": "ovi_bench.scenarios.attention",
    "sequence_parallel": "ovi_bench.scenarios.sequence_parallel",
    "fidelity": "ovi_bench.scenarios.fidelity",
    "repeated": "ovi_bench.scenarios.repeated",
}


# What a decoded generation reports, in the pipeline and spec scenarios alike.
MEDIA_METRICS = (
    Metric("video_frames", "count"), Metric("audio_samples", "count"), Metric("fps", "hz"),
    Metric("sample_rate", "hz"), Metric("video_duration_s", "s"), Metric("audio_duration_s", "s"),
    Metric("spec.video_frames", "count", "expected", expects=("video_frames",)),
    Metric("spec.audio_samples", "count", "expected", expects=("audio_samples",)),
    Metric("spec.fps", "hz", "expected", expects=("fps",)),
    Metric("spec.sample_rate", "hz", "expected", expects=("sample_rate",)),
    # the clip lasts the variant's duration: at least it, and at most it plus one latent's worth of frames
    Metric("spec.duration_s", "s", "expected", expects=("video_duration_s", "audio_duration_s"), rule="min"),
    Metric("spec.duration_max_s", "s", "expected", expects=("video_duration_s", "audio_duration_s"),
           rule="max"),
)
ENGINE_METRICS = (Metric("engine.weights", "text", "info"), Metric("engine.attention", "text", "info"))


class CaseSkipped(Exception):
    """Raised by a scenario for a case that cannot run here (e.g. an attention backend this device lacks);
    the message, the reason, becomes the case's error and its status is `skipped`."""


@dataclass
class ScenarioContext:
    """What a scenario gets inside the worker: its Job, a built (not yet loaded) engine and the meter;
    `new_engine` builds another engine of the same kind (a reference run beside the measured one)."""

    engine: Engine
    job: Job
    meter: StageMeter
    new_engine: Callable[[], Engine]
    capabilities: Capabilities | None = None  # what the worker already asked the engine; None: ask it here

    def engine_capabilities(self) -> Capabilities:
        """The engine's declaration for this device, asked once per case (the worker's, when it has it)."""
        if self.capabilities is None:
            self.capabilities = self.engine.capabilities(self.config.device, self.config.dtype)
        return self.capabilities

    @property
    def config(self) -> EngineConfig:
        return self.job.config

    @property
    def params(self) -> Mapping[str, Any]:
        return self.job.params

    @property
    def repeat(self) -> int:
        return self.job.repeat

    def load_and_encode(self) -> Any:
        """The stages every generation starts with, measured: load (with the engine's own stage events
        forwarded to the meter, where it offers them), then encode_text of the case's prompts."""
        add_listener = stage_listener_hook(self.engine)
        if add_listener is not None:
            add_listener(self.meter.listener)
        with self.meter.stage("load"):
            self.engine.load(self.config)
        with self.meter.stage("encode_text"):
            return self.engine.encode_text(self.params["prompt"], self.params["negative_prompt"])


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    axes: tuple[str, ...]  # matrix keys a suite may vary
    axis_defaults: dict[str, Any]  # value of an axis the matrix leaves out
    run: Callable[[ScenarioContext], dict[str, Any]]
    metrics: tuple[Metric, ...]  # every metric `run` (or `derive`) records
    params: dict[str, Any] = field(default_factory=dict)  # accepted params and their defaults
    # Engine features (ovi_bench.engines.base.FEATURES) a job of this scenario needs.
    features: Callable[[Job], tuple[str, ...]] = lambda job: ()
    # Metrics that need several cases of a suite (e.g. scaling vs the 1-rank case), added in the parent
    # process to the suite's finished cases before they are judged.
    derive: Callable[[list[CaseResult]], None] | None = None


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIO_MODULES:
        raise KeyError(f"unknown scenario {name!r} (known: {', '.join(SCENARIO_MODULES)})")
    return importlib.import_module(SCENARIO_MODULES[name]).SCENARIO
