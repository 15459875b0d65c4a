"""One scenario run in this process, with the trackers a worker would give it but no worker: for tests that
look at the scenario's metrics and stages directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ovi_bench.job import Job
from ovi_bench.scenarios import ScenarioContext, get_scenario
from ovi_bench.trackers import MemoryConfig, MemoryTracker, StageMeter, TimingConfig, TimingTracker


def run_in_process(job: Job, factory: Callable[[], Any]) -> tuple[dict[str, Any], StageMeter]:
    """The job's metrics and its stage meter, the case run by an engine from `factory`."""
    memory = MemoryTracker(MemoryConfig())
    meter = StageMeter(memory, TimingTracker(TimingConfig()))
    try:
        return get_scenario(job.scenario).run(ScenarioContext(factory(), job, meter, factory)), meter
    finally:
        memory.close()
