"""First-run costs apart from steady ones: the pipeline scenario records the first denoise step and the
first decode separately, a second decode of the same latents when `steady_decode` asks, and the suites gate
only the steady figures. Run in this process on the fake engine (shapes only): no worker, no model."""

from __future__ import annotations

from ovi_bench.engines.base import EngineConfig
from ovi_bench.engines.fake import make_engine
from ovi_bench.job import Job, RunOptions
from ovi_bench.scenarios import get_scenario
from ovi_bench.suites import load_suite
from tests.harness.in_process import run_in_process


def pipeline_job(**params) -> Job:
    scenario = get_scenario("pipeline")
    return Job("c", "s", "pipeline", "fake", EngineConfig(variant="720x720_5s", area=1024), {},
               {**scenario.params, "steps": 3, **params})




def test_the_first_step_is_recorded_apart_from_the_steady_ones():
    metrics, _ = run_in_process(pipeline_job(warmup_steps=1), make_engine)
    assert metrics["time.denoise.step_s"].n == 2  # 3 steps, the first left out
    every, _ = run_in_process(pipeline_job(warmup_steps=0), make_engine)
    assert every["time.denoise.step_s"].n == 3
    assert every["time.denoise.first_step_s"] == every["time.denoise.step_s"].values[0]


def test_steady_decode_decodes_the_same_latents_again():
    metrics, meter = run_in_process(pipeline_job(steady_decode=True), make_engine)
    decodes = [s for s in meter.records if s.name == "decode"]
    assert len(decodes) == 2
    assert metrics["time.decode.first_s"] == decodes[0].wall_s
    assert metrics["time.decode.steady_s"].values == [decodes[1].wall_s]
    assert metrics["decode.reloads"] == 0


def test_without_steady_decode_there_is_one_decode_and_no_steady_figure():
    metrics, meter = run_in_process(pipeline_job(), make_engine)
    assert [s.name for s in meter.records].count("decode") == 1
    assert "time.decode.steady_s" not in metrics and "time.decode.first_s" in metrics


def test_peak_memory_gates_only_the_steady_times_at_full_scale():
    suite = load_suite("peak_memory_10s")
    timed = {c.metric for c in suite.checks_at("full") if c.rule == "time"}
    assert timed == {"time.denoise.step_s", "time.decode.steady_s"}
    assert not [c for c in suite.checks if "first" in c.metric]
    assert not [c for c in suite.checks_at("tiny") if c.rule == "time"]  # CPU times at tiny are noise
    (tiny,) = suite.expand(RunOptions(preset="tiny"))
    (full,) = suite.expand(RunOptions(preset="full"))
    assert tiny.params["steady_decode"] is False and full.params["steady_decode"] is True
