"""Time the MMAudio 16k VAE decode + BigVGAN vocoder on Ovi's audio latents: 157 (5 s) and 314 (10 s).

Synthetic weights cost exactly what real ones cost. Per length: the median decode time after warm-up
(each call bracketed by device synchronization) and the allocator's peak above the resident weights,
comparable with the upstream anchor (shared/anchors/codecs_h100_2026-11-23.json, ``audio_decode_L157``).

    python benchmarks/bench_audio_vae.py --out reports/bench_audio_vae.json
    python benchmarks/bench_audio_vae.py --preset tiny --device cpu --reps 2 --out /tmp/audio.json  # smoke
"""

from __future__ import annotations

import time

import torch
from bench_common import DTYPES, GIB, codec_parser, parse_codec_args, start_peak, synchronize, write_report

from ovi_bench.records import Samples
from ovi_engine.audio_vae import AUDIO_CODEC_PRESETS, AudioCodec, build_audio_codec
from ovi_engine.weights import module_bytes

LATENT_LENGTHS = (157, 314)  # 5 s and 10 s variants (shared/reference/VARIANTS.md)


def bench_length(codec: AudioCodec, length: int, warmup: int, reps: int) -> dict:
    device = codec.device
    gen = torch.Generator(device).manual_seed(length)
    latents = torch.randn(1, length, codec.cfg.latent_dim, generator=gen, device=device).to(codec.dtype)
    wave = codec.decode(latents)  # untimed: also checks the synthetic scales keep the output finite
    finite = bool(torch.isfinite(wave).all())
    out_shape = list(wave.shape)
    del wave
    for _ in range(warmup):
        codec.decode(latents)
    resident = start_peak(device)
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        codec.decode(latents)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    result = {
        "latent_shape": list(latents.shape),
        "out_shape": out_shape,
        "audio_seconds": out_shape[-1] / codec.cfg.sample_rate,
        "output_finite": finite,
        "seconds": Samples(seconds).to_dict(),
    }
    if resident is not None:
        result["peak_over_resident_gib"] = (torch.cuda.max_memory_allocated(device) - resident) / GIB
    return result


def run(preset: str, device: torch.device, dtype: torch.dtype, warmup: int, reps: int, seed: int) -> dict:
    codec = build_audio_codec(preset, device=device, dtype=dtype, seed=seed)
    synchronize(device)
    return {
        "component": "mmaudio_vae_16k+bigvgan",
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "weights": f"synthetic seed {seed}",
        "params": sum(p.numel() for p in codec.parameters()),
        "resident_gib": module_bytes(codec) / GIB,
        "allocated_after_build_gib": torch.cuda.memory_allocated(device) / GIB
        if device.type == "cuda"
        else None,
        "decode": {f"L{n}": bench_length(codec, n, warmup, reps) for n in LATENT_LENGTHS},
    }


def main() -> None:
    args, device = parse_codec_args(codec_parser(__doc__, AUDIO_CODEC_PRESETS, reps=10, warmup=3))
    result = run(args.preset, device, DTYPES[args.dtype], args.warmup, args.reps, args.seed)
    write_report(result, args.out)
    for name, row in result["decode"].items():
        peak = row.get("peak_over_resident_gib")
        print(
            f"decode {name} -> {row['out_shape'][-1]} samples: median {row['seconds']['median'] * 1e3:.1f} ms"
            + (f", peak above resident {peak:.3f} GiB" if peak is not None else "")
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
