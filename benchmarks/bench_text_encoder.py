"""Time the umT5-XXL encoder on the work one Ovi generation asks of it: 3 prompts x 512 tokens.

Synthetic weights cost exactly what real ones cost. Reports the median encode time after warm-up and the
allocator's peak above the resident weights, comparable with the upstream anchor
(shared/anchors/codecs_h100_2026-11-23.json, ``t5_encode_3x512``).

    python benchmarks/bench_text_encoder.py --out reports/bench_text_encoder.json
    python benchmarks/bench_text_encoder.py --preset tiny --device cpu --reps 2 --out /tmp/t5.json  # smoke
"""

from __future__ import annotations

import time

import torch
from bench_common import DTYPES, GIB, codec_parser, parse_codec_args, start_peak, synchronize, write_report

from ovi_bench.records import Samples
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


def run(preset: str, device: torch.device, dtype: torch.dtype, warmup: int, reps: int, seed: int) -> dict:
    config = TEXT_ENCODER_PRESETS[preset]
    model = build_text_encoder(preset, device=device, dtype=dtype, seed=seed)
    encoder = TextEncoder(model, ByteTokenizer(config.vocab_size), text_len=config.text_len)
    on_cuda = device.type == "cuda"

    # one untimed call also checks that the synthetic scales keep the activations finite at this depth
    finite = bool(torch.isfinite(encoder.encode(PROMPTS)[0]).all())
    for _ in range(warmup):
        encoder.encode(PROMPTS)
    resident = start_peak(device)  # the warm-up's outputs are gone: this is the weights

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
    args, device = parse_codec_args(codec_parser(__doc__, TEXT_ENCODER_PRESETS, reps=10, warmup=3))
    result = run(args.preset, device, DTYPES[args.dtype], args.warmup, args.reps, args.seed)
    write_report(result, args.out)
    peak = result.get("peak_over_resident_gib")
    print(
        f"{result['work']}: median {result['seconds']['median'] * 1e3:.1f} ms"
        + (f", peak above resident {peak:.2f} GiB" if peak is not None else "")
        + f" -> {args.out}"
    )


if __name__ == "__main__":
    main()
