"""The engine's own frame-size choice at the tiny preset: variant_latents hands its tiny cases an `area`, and
for the variants in `own_area_variants` the spec scenario loads a second engine without it, denoises one t2v
request and compares the shapes with the derivation at the variant's own area. Planted engines that snap
wrongly only when they choose the size themselves (tests/harness/planted_engines.py) must fail there.

The scenario runs in this process, without decode (the own-area run never decodes)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ovi_bench.baselines import judge
from ovi_bench.engines.fake import make_engine as make_fake
from ovi_bench.engines.reference import make_engine as make_reference
from ovi_bench.job import Job, RunOptions
from ovi_bench.records import CaseResult
from ovi_bench.suites import load_suite, load_suites
from ovi_bench.variant_facts import variant_facts
from tests.harness import planted_engines
from tests.harness.in_process import run_in_process


def tiny_job(variant: str = "720x720_5s") -> Job:
    (job,) = load_suite("variant_latents").expand(RunOptions(preset="tiny", variants=[variant]))
    return replace(job, params={**job.params, "sizes": [[704, 1280]], "decode": False})


def run_spec(job: Job, factory: Any) -> tuple[dict[str, Any], list[str]]:
    """The case's metrics and the names of the stages it measured."""
    metrics, meter = run_in_process(job, factory)
    return metrics, [record.name for record in meter.records]


def test_smoke_runs_it_for_the_5s_variant_only() -> None:
    (suite,) = [s for s in load_suites("smoke") if s.name == "smoke.variant_latents"]
    jobs = {job.config.variant: job for job in suite.expand(RunOptions(preset="tiny"))}
    assert set(jobs) == {"720x720_5s", "960x960_10s"}
    assert all(job.params["own_area_variants"] == ["720x720_5s"] and job.config.area for job in jobs.values())
    full = load_suite("variant_latents").expand(RunOptions(preset="full"))
    assert all(job.params["own_area_variants"] == [] and job.config.area is None for job in full)
    _, stages = run_spec(replace(tiny_job("960x960_10s"), engine="fake"), make_fake)
    assert "own_area" not in stages


@pytest.mark.slow
def test_the_reference_engine_chooses_the_variants_own_size() -> None:
    metrics, stages = run_spec(tiny_job(), make_reference)
    assert stages.count("own_area") == 1
    assert metrics["latents.mismatches"] == []
    facts = variant_facts("720x720_5s")
    assert metrics["own_area.video_tokens"] == facts.video_tokens(704, 1280) == 15810  # 544x960 frames
    assert metrics["video_tokens.t2v_704x1280"] == facts.video_tokens(704, 1280, 1024) == 31  # the area's


@pytest.mark.slow
@pytest.mark.parametrize(("factory", "size", "video", "tokens"), [
    # a request of the same aspect at half the sides: the variant's area gives 544x960 all the same, while
    # the engine that ignores it runs 352x640 as requested (a quarter of 704x1280's tokens, a fifth the time)
    (planted_engines.own_area_ignored, [352, 640], [48, 31, 22, 40], 6820),
    (planted_engines.own_area_snap_64, [704, 1280], [48, 31, 32, 60], 14880),  # 512x960
])
def test_wrong_own_area_snapping_fails_the_suite(factory: Any, size: list[int], video: list[int],
                                                  tokens: int) -> None:
    job = tiny_job()
    job = replace(job, params={**job.params, "own_area_size": size})
    metrics, _ = run_spec(job, factory)
    own = f"t2v {size[0]}x{size[1]} at the engine's own area"
    assert metrics["latents.mismatches"] == [
        f"{own} video: engine {video}, derived [48, 31, 34, 60]",
        f"{own} tokens: engine {tokens}, derived 15810",
    ]
    case = CaseResult(job.case_id, job.suite, job.case_params, "ok", metrics=metrics)
    (verdict,) = [v for v in judge([case], load_suite(job.suite).checks_at("tiny"), None)
                  if v.metric == "latents.mismatches"]
    assert verdict.status == "fail" and own in verdict.message
