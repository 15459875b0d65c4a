"""Attention kernels at Ovi's shapes: time, TFLOP/s, share of the measured matmul ceiling, error vs fp32.

GPU:  python benchmarks/bench_attention.py --out reports/attention.json [--quick]
CPU:  python benchmarks/bench_attention.py --device cpu --tiny --out /tmp/attention.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import torch
from tabulate import tabulate

from ovi_bench.records import Environment
from ovi_engine.attention import AttentionUnavailable, as_device, available_backends, resolve
from ovi_engine.attention.bench import AttentionInputs, matmul_tflops, measure

SCHEMA = "ovi-bench/attention/1"
TEXT_TOKENS = 512  # umT5 context length
# (video tokens, audio tokens) at each variant's default 960x960 / 720x720 t2v size
# (shared/reference/VARIANTS.md)
VARIANT_TOKENS = {"720x720_5s": (15004, 157), "960x960_5s": (27900, 157), "960x960_10s": (54900, 314)}
QUICK = {
    ("video_self", 15004, 15004),
    ("video_self", 54900, 54900),
    ("video_to_audio", 54900, 314),
    ("audio_to_video", 314, 54900),
    ("video_to_text", 54900, 512),
    ("audio_self", 314, 314),
}
TINY_TOKENS = {"tiny": (96, 12)}


@dataclass(frozen=True)
class Case:
    kind: str
    lq: int
    lk: int
    variants: tuple[str, ...]


def cases(tokens: dict[str, tuple[int, int]], text: int, quick: bool) -> list[Case]:
    """One case per distinct (kind, Lq, Lk), listing the variants that share it."""
    found: dict[tuple[str, int, int], list[str]] = {}
    for variant, (video, audio) in tokens.items():
        shapes = {
            "video_self": (video, video),
            "video_to_audio": (video, audio),
            "audio_to_video": (audio, video),
            "video_to_text": (video, text),
            "audio_self": (audio, audio),
            "audio_to_text": (audio, text),
        }
        for kind, (lq, lk) in shapes.items():
            found.setdefault((kind, lq, lk), []).append(variant)
    return [
        Case(kind, lq, lk, tuple(variants))
        for (kind, lq, lk), variants in found.items()
        if not quick or (kind, lq, lk) in QUICK
    ]


def provenance(device: torch.device) -> dict:
    """The shared run environment, plus what matters for attention kernels."""
    info = {"environment": Environment.capture().to_dict()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"capability": f"{props.major}.{props.minor}", "cudnn": torch.backends.cudnn.version()}
    return info


def run(args: argparse.Namespace) -> dict:
    """Measure every case; rewrite `args.out` after each one so a run cut short still leaves its rows."""
    device = as_device(args.device)
    dtype = getattr(torch, args.dtype)
    heads, head_dim = (2, 32) if args.tiny else (24, 128)
    tokens = TINY_TOKENS if args.tiny else {v: VARIANT_TOKENS[v] for v in args.variants.split(",")}
    statuses = available_backends(device, dtype)
    # Unavailable backends are listed once under "backends" with their reason, unless asked for by name.
    wanted = (
        args.backends.split(",")
        if args.backends
        else [name for name, status in statuses.items() if status.available and name != "reference"]
    )
    ceiling = matmul_tflops(512 if args.tiny else 8192, dtype, device, reps=args.reps)
    report = {
        "schema": SCHEMA,
        **provenance(device),
        "dtype": args.dtype,
        "heads": heads,
        "head_dim": head_dim,
        "matmul_tflops": ceiling,
        "auto": resolve("auto", device, dtype),
        "backends": {name: vars(status) for name, status in statuses.items()},
        "results": [],
    }
    for index, case in enumerate(cases(tokens, 16 if args.tiny else TEXT_TOKENS, args.quick)):
        inputs = AttentionInputs.random(case.lq, case.lk, heads, head_dim, dtype, device, seed=1000 + index)
        for name in wanted:
            row = {
                "case": case.kind,
                "variants": list(case.variants),
                "backend": name,
                "lq": case.lq,
                "lk": case.lk,
            }
            try:
                result = measure(name, inputs, reps=args.reps, warmup=args.warmup).to_json()
                row |= result | {"share_of_matmul": result["tflops"] / ceiling}
            except (AttentionUnavailable, torch.OutOfMemoryError) as error:
                row["skipped"] = str(error).splitlines()[0]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            report["results"].append(row)
            outcome = row.get("skipped") or f"{row['median_ms']:.4g} ms, rel err {row['rel_err']:.2g}"
            print(f"{case.kind} {case.lq}x{case.lk} {name}: {outcome}", file=sys.stderr, flush=True)
        del inputs
        write_json(report, args.out)
    return report


def write_json(report: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tiny", action="store_true", help="2 heads x 32, short sequences (CPU tests)")
    parser.add_argument("--quick", action="store_true", help="only the shapes in shared/anchors")
    parser.add_argument("--variants", default=",".join(VARIANT_TOKENS), help="comma list of Ovi variants")
    parser.add_argument("--backends", default=None, help="comma list; default: every available one")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps must be >= 1 and --warmup >= 0")
    unknown = set(args.variants.split(",")) - set(VARIANT_TOKENS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANT_TOKENS)}")
    report = run(args)
    rows = [
        (
            r["case"],
            f"{r['lq']}x{r['lk']}",
            r["backend"],
            r.get("resolved"),
            r.get("median_ms"),
            r.get("tflops"),
            r.get("share_of_matmul"),
            r.get("rel_err"),
            r.get("skipped", "")[:60],
        )
        for r in report["results"]
    ]
    print(f"{report['environment']['device_name']}: matmul {report['matmul_tflops']:.4g} TFLOP/s, auto -> "
          f"{report['auto']}")
    print(
        tabulate(
            rows,
            headers=["case", "shape", "backend", "ran", "ms", "TFLOP/s", "of matmul", "rel err", "skipped"],
            floatfmt=".4g",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
