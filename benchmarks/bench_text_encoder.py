"""Time the umT5-XXL encoder on the work one Ovi generation asks of it: 3 prompts x 512 tokens.

Synthetic weights cost exactly what real ones cost. Reports the median encode time after warm-up and the
allocator's peak above the resident weights, comparable with the upstream anchor
(shared/anchors/codecs_h100_2026-11-23.json, ``t5_encode_3x512``).

    python benchmarks/bench_text_encoder.py --out reports/bench_text_encoder.json
    python benchmarks/bench_text_encoder.py --preset tiny --device cpu --reps 2 --out /tmp/t5.json  # smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ovi_bench.records import SCHEMA_VERSION, Environment, Samples, canonical_json, write_atomic
from ovi_engine.text_encoder import TEXT_ENCODER_PRESETS, ByteTokenizer, TextEncoder, build_text_encoder

# What Ovi encodes per generation: the prompt, the video negative prompt, the audio negative prompt.
PROMPTS = [
    (
        "A woman in a sunlit kitchen looks at the camera and says <S>Dinner is almost ready.<E> "
        "<AUDCAP>Clear female voice, soft clatter of pans, quiet room tone.<ENDAUDCAP>"
    ),
    "jitter, bad hands, blur, distortion",
    "robotic, muffled, echo, distorted",
]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = 2**30


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(preset: str, device: torch.device, dtype: torch.dtype, warmup: int, reps: int, seed: int) -> dict:
    config = TEXT_ENCODER_PRESETS[preset]
    model = build_text_encoder(preset, device=device, dtype=dtype, seed=seed)
    encoder = TextEncoder(model, ByteTokenizer(config.vocab_size), text_len=config.text_len)
    on_cuda = device.type == "cuda"
    resident = torch.cuda.memory_allocated(device) if on_cuda else None

    # one untimed call also checks that the synthetic scales keep the activations finite at this depth
    finite = bool(torch.isfinite(encoder.encode(PROMPTS)[0]).all())
    for _ in range(warmup):
        encoder.encode(PROMPTS)
    synchronize(device)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)

    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        embeddings, lengths = encoder.encode(PROMPTS)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        del embeddings

    result = {
        "component": "umt5_xxl_encoder",
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "weights": f"synthetic seed {seed}",
        "params": sum(p.numel() for p in model.parameters()),
        "work": f"{len(PROMPTS)} prompts x {config.text_len} tokens",
        "prompt_lengths": lengths.tolist(),
        "output_finite": finite,
        "seconds": Samples(seconds).to_dict(),
    }
    if on_cuda:
        assert resident is not None
        result["resident_gib"] = resident / GIB
        result["peak_over_resident_gib"] = (torch.cuda.max_memory_allocated(device) - resident) / GIB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(TEXT_ENCODER_PRESETS), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            "--device cuda but no CUDA device is visible (use --preset tiny --device cpu to smoke-test)"
        )
    if args.warmup < 0 or args.reps < 1:
        parser.error("--warmup must be >= 0 and --reps >= 1")

    result = run(args.preset, device, DTYPES[args.dtype], args.warmup, args.reps, args.seed)
    report = {"schema_version": SCHEMA_VERSION, "environment": Environment.capture().to_dict(), **result}
    write_atomic(args.out, canonical_json(report))
    peak = result.get("peak_over_resident_gib")
    print(
        f"{result['work']}: median {result['seconds']['median'] * 1e3:.1f} ms"
        + (f", peak above resident {peak:.2f} GiB" if peak is not None else "")
        + f" -> {args.out}"
    )


if __name__ == "__main__":
    main()
