"""Seconds per denoising step of the fusion transformer, and the memory a step needs above the weights.

One step = the conditional forward + the unconditional forward with skip-layer guidance (as Ovi samples),
bf16, synthetic weights (they cost exactly what real ones cost). Per variant: 1 warm-up step, then
--steps-timed steps, each bracketed by device synchronization.

    python benchmarks/bench_fusion.py --out reports/bench_fusion.json                  # full size, GPU
    python benchmarks/bench_fusion.py --preset tiny --device cpu --out /tmp/bench.json  # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from bench_common import GIB, ClockSampler, start_peak, synchronize

from ovi_bench.records import Environment
from ovi_bench.schema import BENCHMARK
from ovi_engine.attention import resolve
from ovi_engine.fusion import FUSION_PRESETS, FusionModel, Pass, build_fusion_model
from ovi_engine.variants import VARIANTS
from ovi_engine.weights import module_bytes

DEFAULT_VARIANTS = ("720x720_5s", "960x960_5s", "960x960_10s")
SLG_LAYER = 11  # Ovi's default; clamped to the last pair at presets with fewer blocks
TINY_LATENTS = ((48, 3, 4, 6), (10, 20))  # --preset tiny runs these small latents for every variant


@dataclass
class VariantResult:
    variant: str
    video_latent: list[int]
    audio_latent: list[int]
    video_tokens: int
    audio_tokens: int
    samples_s: list[float]
    median_s: float
    peak_allocated_gib: float | None  # device allocator peak during the timed steps (CUDA only)
    peak_above_resident_gib: float | None  # that peak minus what was allocated before (weights)
    clocks: dict[str, float]  # SM clock and power during the timed steps (CUDA only)


def latent_shapes(variant: str, preset: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if preset == "tiny":
        return TINY_LATENTS
    spec = VARIANTS[variant]
    return spec.video_latent_shape(), spec.audio_latent_shape()


def make_step(
    model: FusionModel, video_shape: tuple[int, ...], audio_shape: tuple[int, ...], device: torch.device,
    attention: str,
) -> Callable[[], None]:
    """One denoising step on random latents and prompts: the cond and the uncond (SLG)
    pass, as Ovi samples."""
    dtype = model.video_model.head.head.weight.dtype
    gen = torch.Generator(device).manual_seed(0)
    video = torch.randn(1, *video_shape, generator=gen, device=device).to(dtype)
    audio = torch.randn(1, *audio_shape, generator=gen, device=device).to(dtype)
    text = (1, model.config.video.text_len, model.config.text_dim)
    pos, neg = (torch.randn(text, generator=gen, device=device).to(dtype) for _ in range(2))
    t = torch.full((1,), 500.0, device=device)
    slg = min(SLG_LAYER, model.config.num_layers - 1)

    @torch.inference_mode()
    def step() -> None:
        model.forward_passes(video, audio, t, [Pass(pos, pos), Pass(neg, neg, slg)], attention=attention)

    return step


def bench_variant(
    model: FusionModel, variant: str, preset: str, device: torch.device, attention: str, steps_timed: int
) -> VariantResult:
    video_shape, audio_shape = latent_shapes(variant, preset)
    step = make_step(model, video_shape, audio_shape, device, attention)
    step()  # warm-up: kernel selection, attention probes, compilation
    resident = start_peak(device)
    samples = []
    with ClockSampler(device) as clocks:
        for _ in range(steps_timed):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            samples.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if resident is not None else None
    pf, ph, pw = model.config.video.patch_size
    return VariantResult(
        variant=variant,
        video_latent=list(video_shape),
        audio_latent=list(audio_shape),
        video_tokens=video_shape[1] // pf * (video_shape[2] // ph) * (video_shape[3] // pw),
        audio_tokens=audio_shape[0],
        samples_s=samples,
        median_s=statistics.median(samples),
        peak_allocated_gib=None if peak is None else peak / GIB,
        peak_above_resident_gib=None if peak is None or resident is None else (peak - resident) / GIB,
        clocks=clocks.summary(),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    add_step_arguments(parser, default_variants=",".join(DEFAULT_VARIANTS))
    return check_args(parser, parser.parse_args(argv))


def add_step_arguments(parser: argparse.ArgumentParser, default_variants: str) -> None:
    """The options of every benchmark that times fusion steps (this one and the sequence-parallel one)."""
    parser.add_argument("--variants", default=default_variants, help="comma-separated variant names")
    parser.add_argument("--attention", default="auto", help="attention backend (auto resolves per device)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the elementwise helpers")
    parser.add_argument("--steps-timed", type=int, default=3)
    parser.add_argument("--preset", default="full", choices=sorted(FUSION_PRESETS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """--variants as a list of known names and --steps-timed >= 1; a bad value fails in one line."""
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.steps_timed < 1:
        parser.error("--steps-timed must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    dtype = torch.bfloat16
    attention = resolve(args.attention, device, dtype)  # fails here, before the build, if unavailable

    start = time.perf_counter()
    model = build_fusion_model(args.preset, device=device, dtype=dtype, seed=args.seed, compile=args.compile)
    synchronize(device)
    build_s = time.perf_counter() - start

    results = []
    for variant in args.variants:
        result = bench_variant(model, variant, args.preset, device, attention, args.steps_timed)
        results.append(result)
        peak = ("" if result.peak_above_resident_gib is None
                else f", peak +{result.peak_above_resident_gib:.2f} GiB")
        clock = "" if not result.clocks else (f", SM {result.clocks['sm_clock_mhz_median']:.0f} MHz at "
                                              f"{result.clocks['power_w_median']:.0f} W")
        print(f"{variant}: {result.video_tokens}+{result.audio_tokens} tokens, "
              f"{result.median_s:.3f} s/step (median of {len(result.samples_s)}){peak}{clock}", flush=True)

    report = {
        "schema_version": BENCHMARK.version,
        "kind": "bench_fusion",
        "environment": Environment.capture().to_dict(),
        "preset": args.preset,
        "dtype": str(dtype).removeprefix("torch."),
        "attention": args.attention,
        "attention_resolved": attention,
        "compile": args.compile,
        "step": "cond + uncond (skip_block) forward passes, sharing what does not read the text",
        "slg_layer": min(SLG_LAYER, model.config.num_layers - 1),
        "steps_timed": args.steps_timed,
        "weights_gib": module_bytes(model) / GIB,
        "build_s": build_s,
        "variants": {r.variant: asdict(r) for r in results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
