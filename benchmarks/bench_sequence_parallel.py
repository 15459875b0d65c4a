"""Seconds per denoising step and per-rank peak memory of the sequence-parallel fusion transformer.

Launched by torchrun, one process per GPU (NCCL; gloo on CPUs). Every rank runs bench_fusion's step (the
conditional + the SLG unconditional forward, bf16, synthetic weights) with the tokens split over the ranks.
A step lasts until the slowest rank finishes it, so s/step is the median over steps of the per-step maximum
over ranks. With --reference (this benchmark's JSON from a 1-rank run) it adds the scaling efficiency
t1 / (N * tN). With --check it also compares one forward against the same model run unsplit on each rank.

    NCCL_NVLS_ENABLE=0 torchrun --nproc-per-node 4 benchmarks/bench_sequence_parallel.py \\
        --variants 720x720_5s --check --reference reports/sp_1.json --out reports/sp_4.json
    torchrun --nproc-per-node 2 benchmarks/bench_sequence_parallel.py --preset tiny \\
        --device cpu --out /tmp/sp.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from bench_common import GIB, synchronize
from bench_fusion import add_step_arguments, bench_variant, check_args, latent_shapes

from ovi_bench.records import Environment
from ovi_bench.schema import BENCHMARK
from ovi_engine.attention import resolve
from ovi_engine.fusion import FusionModel, build_fusion_model
from ovi_engine.parallel import SequenceParallel, enable_sequence_parallel, init_sequence_parallel
from ovi_engine.weights import module_bytes

CHECK_TOLERANCE = 0.02  # relative L2 of a bf16 forward split over ranks vs the same forward on one


@torch.inference_mode()
def check_against_single(model: FusionModel, sp: SequenceParallel, variant: str, preset: str, attention: str
                         ) -> dict[str, float]:
    """Relative L2 error of one split forward against the unsplit forward of the same inputs."""
    video_shape, audio_shape = latent_shapes(variant, preset)
    dtype, device = model.video_model.head.head.weight.dtype, sp.device
    gen = torch.Generator(device).manual_seed(1)
    video = torch.randn(1, *video_shape, generator=gen, device=device).to(dtype)
    audio = torch.randn(1, *audio_shape, generator=gen, device=device).to(dtype)
    text = torch.randn(1, model.config.video.text_len, model.config.text_dim, generator=gen,
                       device=device).to(dtype)
    t = torch.full((1,), 700.0, device=device)
    split = model(video, audio, t, text, text, attention=attention)
    enable_sequence_parallel(model, None)
    single = model(video, audio, t, text, text, attention=attention)
    enable_sequence_parallel(model, sp)
    return {name: ((a.float() - b.float()).norm() / b.float().norm()).item()
            for name, a, b in zip(("video", "audio"), split, single)}


def summarize(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's records from every rank -> s/step over ranks, per-rank peaks."""
    steps = zip(*(r["samples_s"] for r in per_rank))
    slowest = [max(times) for times in steps]
    peaks = [r["peak_allocated_gib"] for r in per_rank]  # None off CUDA
    return {
        "video_tokens": per_rank[0]["video_tokens"],
        "audio_tokens": per_rank[0]["audio_tokens"],
        "step_samples_s": slowest,
        "median_s": statistics.median(slowest),
        "per_rank": per_rank,
        "peak_allocated_gib_max": None if None in peaks else max(peaks),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (rank 0)")
    add_step_arguments(parser, default_variants="720x720_5s")
    parser.add_argument("--check", action="store_true", help="compare one split forward with the unsplit one")
    parser.add_argument("--reference", type=Path,
                        help="this benchmark's JSON from a 1-rank run: adds efficiency")
    args = check_args(parser, parser.parse_args(argv))
    if args.reference is not None and not args.reference.is_file():
        parser.error(f"--reference {args.reference} is not a file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sp = init_sequence_parallel(args.device)
    dtype = torch.bfloat16
    attention = resolve(args.attention, sp.device, dtype)
    start = time.perf_counter()
    model = build_fusion_model(args.preset, device=sp.device, dtype=dtype, seed=args.seed,
                               compile=args.compile)
    synchronize(sp.device)
    build_s = time.perf_counter() - start
    enable_sequence_parallel(model, sp)

    variants: dict[str, Any] = {}
    for variant in args.variants:
        record: dict[str, Any] = asdict(bench_variant(model, variant, args.preset, sp.device, attention,
                                                      args.steps_timed))
        if args.check:
            record["check_rel_error"] = check_against_single(model, sp, variant, args.preset, attention)
        gathered: list[Any] = [None] * sp.world_size
        dist.all_gather_object(gathered, record, group=sp.group)
        variants[variant] = summarize(gathered)
        if args.check:
            variants[variant]["check_rel_error"] = gathered[0]["check_rel_error"]
            variants[variant]["check_tolerance"] = CHECK_TOLERANCE
    devices: list[Any] = [None] * sp.world_size
    name = torch.cuda.get_device_name(sp.device) if sp.device.type == "cuda" else "cpu"
    dist.all_gather_object(devices, name, group=sp.group)

    if sp.rank == 0:
        reference = json.loads(args.reference.read_text())["variants"] if args.reference else {}
        for variant, result in variants.items():
            if variant in reference:
                result["efficiency"] = reference[variant]["median_s"] / (sp.world_size * result["median_s"])
            peak = result["peak_allocated_gib_max"]
            print(f"{variant} on {sp.world_size} ranks: "
                  f"{result['video_tokens']}+{result['audio_tokens']} tokens, {result['median_s']:.3f} s/step"
                  + (f", peak {peak:.2f} GiB/rank" if peak is not None else "")
                  + (f", efficiency {result['efficiency']:.2f}" if "efficiency" in result else "")
                  + (f", check {result['check_rel_error']}" if args.check else ""), flush=True)
        report = {
            "schema_version": BENCHMARK.version,
            "kind": "bench_sequence_parallel",
            "environment": Environment.capture().to_dict(),
            "world_size": sp.world_size,
            "backend": dist.get_backend(sp.group),
            "devices": devices,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if sp.device.type == "cuda" else None,
            "preset": args.preset,
            "dtype": str(dtype).removeprefix("torch."),
            "attention": args.attention,
            "attention_resolved": attention,
            "compile": args.compile,
            "step": "cond + uncond (skip_block) forward passes; s/step = slowest rank",
            "steps_timed": args.steps_timed,
            "weights_gib_per_rank": module_bytes(model) / GIB,
            "build_s": build_s,
            "reference": str(args.reference) if args.reference else None,
            "variants": variants,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
