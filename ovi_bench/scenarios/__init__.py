"""Scenario registry: which worker routine runs a case. One module per scenario.

A scenario module defines `SCENARIO = Scenario(...)`; its `run(ctx)` executes inside the worker process
and returns the case's flat metrics (plain JSON-able data).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ovi_bench.engines.base import Engine, EngineConfig
from ovi_bench.trackers import StageMeter

SCENARIO_MODULES = {
    "pipeline": "ovi_bench.scenarios.pipeline",
    "spec": "ovi_bench.scenarios.spec",
    "attention": "ovi_bench.scenarios.attention",
}


class CaseSkipped(Exception):
    """Raised by a scenario for a case that cannot run here (e.g. an attention backend this device lacks);
    the message, the reason, becomes the case's error and its status is `skipped`."""


@dataclass
class ScenarioContext:
    """What a scenario gets inside the worker: a built (not yet loaded) engine and the meter."""

    engine: Engine
    config: EngineConfig
    params: dict[str, Any]
    meter: StageMeter
    repeat: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    axes: tuple[str, ...]  # matrix keys a suite may vary
    axis_defaults: dict[str, Any]  # value of an axis the matrix leaves out
    run: Callable[[ScenarioContext], dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)  # accepted params and their defaults


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIO_MODULES:
        raise KeyError(f"unknown scenario {name!r} (known: {', '.join(SCENARIO_MODULES)})")
    return importlib.import_module(SCENARIO_MODULES[name]).SCENARIO
