"""Time and memory of the Wan2.2 video VAE on the decodes an Ovi generation asks of it, untiled and tiled.

Synthetic bf16 weights cost exactly what real ones cost. For each latent shape: the median decode time
after a short warm-up (a 2-frame decode of the same size and tiling) and the allocator's peak above what
was resident before the call (weights + latents), comparable with the upstream anchor
(shared/anchors/upstream_h100_2026-11-23.json, ``vae``: 4.91 s / 9.57 GiB, 7.14 s / 17.74 GiB,
14.20 s / 18.38 GiB). Also the one-frame encode of an i2v first frame.

    python benchmarks/bench_video_vae.py --out reports/bench_video_vae.json
    python benchmarks/bench_video_vae.py --preset tiny --device cpu --reps 1 --out /tmp/vae.json  # smoke
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from bench_common import DTYPES, GIB, codec_parser, parse_codec_args, synchronize, write_report

from ovi_bench.records import Samples
from ovi_engine.video_vae import VIDEO_VAE_PRESETS, Tiling, WanVideoVAE, build_video_vae


@dataclass(frozen=True)
class Work:
    decodes: dict[str, tuple[int, int, int]]  # name -> latent (frames, height, width)
    tiling: Tiling
    encode_px: int  # side of the square first frame encoded for i2v


WORK = {
    "full": Work(
        decodes={"720x720_5s": (31, 44, 44), "960x960_5s": (31, 60, 60), "960x960_10s": (61, 60, 60)},
        tiling=Tiling(),
        encode_px=704,
    ),
    "tiny": Work(decodes={"tiny_3f": (3, 8, 8)}, tiling=Tiling(64, 32), encode_px=64),
}


def measure(call: Callable[[], torch.Tensor], device: torch.device, reps: int) -> dict:
    """Median seconds of ``reps`` calls, and the allocator's peak above what was resident before each."""
    seconds, peaks = [], []
    for _ in range(reps):
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = call()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        if device.type == "cuda":
            peaks.append((torch.cuda.max_memory_allocated(device) - before) / GIB)
        shape, finite = list(out.shape), bool(torch.isfinite(out).all())
        del out
    result = {"out_shape": shape, "output_finite": finite, "seconds": Samples(seconds).to_dict()}
    if peaks:
        result["peak_over_resident_gib"] = max(peaks)
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
    return result


def run(preset: str, device: torch.device, dtype: torch.dtype, reps: int, seed: int) -> dict:
    work = WORK[preset]
    model: WanVideoVAE = build_video_vae(preset, device=device, dtype=dtype, seed=seed)
    on_cuda = device.type == "cuda"
    gen = torch.Generator(device).manual_seed(seed)
    cases: dict[str, dict] = {}
    for name, (frames, h, w) in work.decodes.items():
        z = torch.randn(1, model.config.z_dim, frames, h, w, generator=gen, device=device)
        for tile in (None, work.tiling):
            model.decode(z[:, :, :2], tile=tile)  # warm-up: every kernel of both chunk kinds
            key = f"decode_{name}" + ("_tiled" if tile else "")
            cases[key] = {"latents": list(z.shape), "tiling": tile and vars(tile)}
            cases[key] |= measure(partial(model.decode, z, tile=tile), device, reps)
            print(key, cases[key], flush=True)
        del z
    px = work.encode_px
    image = torch.rand(1, 3, 1, px, px, generator=gen, device=device) * 2 - 1
    model.encode(image)
    cases[f"encode_{px}x{px}_image"] = {"video": list(image.shape)} | measure(
        partial(model.encode, image), device, reps
    )
    result = {
        "component": "wan22_video_vae",
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "weights": f"synthetic seed {seed}",
        "params": sum(p.numel() for p in model.parameters()),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cases": cases,
    }
    if on_cuda:
        result["resident_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / GIB
    return result


def main() -> None:
    parser = codec_parser(__doc__, VIDEO_VAE_PRESETS, reps=2, warmup=None)
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune conv algorithms")
    args, device = parse_codec_args(parser)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    result = run(args.preset, device, DTYPES[args.dtype], args.reps, args.seed)
    write_report(result, args.out)
    for key, case in result["cases"].items():
        peak = case.get("peak_over_resident_gib")
        print(
            f"{key}: median {case['seconds']['median']:.2f} s"
            + (f", peak above resident {peak:.2f} GiB" if peak is not None else "")
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
