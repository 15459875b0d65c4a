"""Sequence-parallel denoise: load, encode_text and a few denoise steps on every rank torchrun started.

The torchrun launcher starts a case with `nproc` > 1 under torchrun (one process per rank, gloo on the CPU,
NCCL on GPUs); each rank runs this scenario and rank 0's metrics are the case's. A step lasts until the
slowest rank finishes it, so `time.denoise.step_s` holds, per step, the maximum over ranks. Each rank's
denoise peak (the allocator's on a GPU, host RSS on the CPU) is gathered into `peak.denoise.rank_bytes`.

Correctness: after the measured run, rank 0 builds a second engine without sequence parallelism and denoises
the same text with the same seed; `sp.latents_rel_err` is the larger relative L2 error of the video and audio
latents against it (at nproc 1 this checks that the reference is reproducible). `sp.efficiency`, t1 / (N * tN)
on the step medians, is derived in the parent when the suite also ran nproc 1 with the same other axes.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import timedelta
from typing import Any

from ovi_bench.finite import check_latents
from ovi_bench.metrics import Metric
from ovi_bench.records import CaseResult, Samples, numeric
from ovi_bench.scenarios import ENGINE_METRICS, CaseSkipped, Scenario, ScenarioContext


def _relative_error(got: Any, want: Any) -> float:
    got, want = got.float(), want.float()
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def _join_ranks(device: str) -> Any:
    """The process group torchrun's environment describes: NCCL between GPUs, gloo on the CPU."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo",
                                timeout=timedelta(seconds=600))
    return dist.group.WORLD


def run(ctx: ScenarioContext) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    engine, params, meter = ctx.engine, ctx.params, ctx.meter
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.device(ctx.config.device).type == "cuda" and torch.cuda.device_count() < world:
        raise CaseSkipped(f"{world} ranks need {world} GPUs, this machine has {torch.cuda.device_count()}")
    # Join torchrun's group here (an engine reuses an initialised group), so the harness can gather per-rank
    # figures whatever the engine is.
    group = _join_ranks(ctx.config.device) if world > 1 else None
    text = ctx.load_and_encode()
    with meter.stage("denoise"):
        timer = meter.step_timer()
        latents = engine.denoise(text, steps=params["steps"], seed=ctx.config.seed, solver=params["solver"],
                                 on_step=timer.on_step)
        check_latents(latents)
    record = next(s for s in reversed(meter.records) if s.name == "denoise")
    peak = record.alloc_peak if record.alloc_peak is not None else record.host_rss_peak
    mine = (timer.durations[params["warmup_steps"]:], int(peak or 0))
    ranks: list[Any] = [mine]
    if group is not None:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine, group=group)
    with meter.stage("release"):
        engine.release()

    metrics: dict[str, Any] = {
        "sp.world_size": world,
        "video_latent_shape": list(latents.video.shape),
        "audio_latent_shape": list(latents.audio.shape),
        "peak.denoise.rank_bytes": [p for _, p in ranks],
        "peak.denoise.max_rank_bytes": max(p for _, p in ranks),
        "engine.weights": engine.describe().get("weights"),
        "engine.attention": engine.describe().get("attention"),
    }
    slowest = [max(times) for times in zip(*(s for s, _ in ranks))]
    if slowest:
        metrics["time.denoise.step_s"] = Samples(slowest)

    if group is None or dist.get_rank() == 0:
        assert ctx.new_engine is not None, "the worker gives every scenario new_engine"
        with meter.stage("single_rank_reference"):
            single = ctx.new_engine()
            single.load(replace(ctx.config, sequence_parallel=False))
            want = single.denoise(single.encode_text(params["prompt"], params["negative_prompt"]),
                                  steps=params["steps"], seed=ctx.config.seed, solver=params["solver"])
            check_latents(want, "single_rank_reference")
            mismatches = [f"{name}: {list(got.shape)} != {list(ref.shape)}"
                          for name, got, ref in (("video", latents.video, want.video),
                                                 ("audio", latents.audio, want.audio))
                          if got.shape != ref.shape]
            metrics["sp.shape_mismatches"] = mismatches
            if not mismatches:
                metrics["sp.latents_rel_err"] = max(_relative_error(latents.video, want.video),
                                                    _relative_error(latents.audio, want.audio))
            del single, want
    if group is not None:
        dist.barrier(group=group)  # the other ranks wait for rank 0's reference before tearing down
        dist.destroy_process_group()
    return metrics


def add_scaling_efficiency(cases: list[CaseResult]) -> None:
    """sp.efficiency = t1 / (N * tN) on the step medians, for every ok case with nproc N > 1 whose suite also
    ran nproc 1 with the same other parameters."""
    def others(case: CaseResult) -> str:
        return json.dumps({k: v for k, v in case.params.items() if k != "nproc"}, sort_keys=True, default=str)

    step = "time.denoise.step_s"
    usable = [c for c in cases if c.status == "ok" and numeric(c.metrics.get(step))]
    singles = {others(c): c for c in usable if c.params.get("nproc") == 1}
    for case in usable:
        single = singles.get(others(case))
        nproc = int(case.params.get("nproc", 1))
        if nproc > 1 and single is not None:
            t1, tn = numeric(single.metrics[step]), numeric(case.metrics[step])
            assert t1 is not None and tn is not None
            case.metrics["sp.efficiency"] = t1 / (nproc * tn)


SCENARIO = Scenario(
    name="sequence_parallel",
    description="encode + a few denoise steps split over nproc ranks (torchrun), checked against one rank",
    axes=("variant", "nproc", "attention"),
    axis_defaults={"variant": "720x720_5s", "nproc": 1, "attention": "auto"},
    params={
        "steps": 2, "warmup_steps": 1, "prompt": "A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>",
        "negative_prompt": None, "solver": "unipc", "area": None, "latent_tolerance": 0.05,
    },
    run=run,
    metrics=(
        *ENGINE_METRICS,
        Metric("sp.world_size", "count", "info"), Metric("video_latent_shape", "list"),
        Metric("audio_latent_shape", "list"), Metric("peak.denoise.rank_bytes", "list"),
        Metric("peak.denoise.max_rank_bytes", "bytes"), Metric("time.denoise.step_s", "s"),
        Metric("sp.shape_mismatches", "list"), Metric("sp.latents_rel_err", "ratio"),
        Metric("sp.efficiency", "ratio"),
    ),
    features=lambda job: ("sequence_parallel",) if job.nproc > 1 else (),
    derive=add_scaling_efficiency,
)
