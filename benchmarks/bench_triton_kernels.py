"""ovi_engine/triton_kernels.py at a variant's video tokens against the torch paths they replace.

The q/k RMSNorm + RoPE: eager, torch.compile and the Triton kernel; the gated residual: eager addcmul_ and
the kernel; the modulated LayerNorm (eager, torch.compile, kernel) and the affine one (eager, kernel). Each
path's median time, its bandwidth (the bytes it must read and write: the [tokens, 3072] projection in and
out, a second write for the cross-attention query's un-rotated copy; x and y in, x out for the residual;
x in, the norm out for the LayerNorms) and its largest error against fp32 math.

    python benchmarks/bench_triton_kernels.py --variant 960x960_10s --out reports/triton_kernels.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_attention import VARIANT_TOKENS
from bench_common import write_report

from ovi_engine import dit, triton_kernels
from ovi_engine.attention.bench import time_ms

WIDTH, HEADS = 3072, 24
LATENT_FRAMES = {"720x720_5s": 31, "960x960_5s": 31, "960x960_10s": 61}  # the gates' time groups


def measure(fn: Callable[[], object], error: float, x: torch.Tensor, passes: int, device: torch.device,
            reps: int) -> dict:
    """Median ms of fn, and its bandwidth counting `passes` full reads or writes of x."""
    median = statistics.median(time_ms(fn, device, reps=reps, warmup=3))
    return {"median_ms": median, "tb_per_s": passes * x.numel() * x.element_size() / (median * 1e-3) / 1e12,
            "max_abs_err": error}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANT_TOKENS), default="960x960_10s")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available() or not triton_kernels.AVAILABLE:
        parser.error("needs a CUDA GPU and Triton")
    device, tokens = torch.device("cuda"), VARIANT_TOKENS[args.variant][0]
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, tokens, WIDTH, generator=gen, device=device).to(torch.bfloat16)
    weight = (torch.rand(WIDTH, generator=gen, device=device) + 0.5).to(torch.bfloat16)
    angles = torch.rand(tokens, 1, WIDTH // HEADS // 2, generator=gen, device=device) * 6
    cos, sin = angles.cos(), angles.sin()
    want = dit.rms_norm_rope(x.float(), weight.float(), 1e-6, cos, sin, HEADS)
    compiled = torch.compile(dit.rms_norm_rope)
    compiled_both = torch.compile(dit.rms_norm_with_rope)
    paths = {
        "eager": lambda: dit.rms_norm_rope(x, weight, 1e-6, cos, sin, HEADS),
        "torch_compile": lambda: compiled(x, weight, 1e-6, cos, sin, HEADS),
        "triton": lambda: triton_kernels.norm_rope(x, weight, 1e-6, cos, sin, HEADS)[0],
        "torch_compile_with_plain": lambda: compiled_both(x, weight, 1e-6, cos, sin, HEADS)[1],
        "triton_with_plain": lambda: triton_kernels.norm_rope(x, weight, 1e-6, cos, sin, HEADS,
                                                                with_plain=True)[0],
    }
    # the gated residual, on x as [1, latent frames, tokens per frame, C] with a gate per frame; timed in
    # place on one buffer (its values drift, its cost does not), its error taken on a fresh copy
    hidden = x.view(1, LATENT_FRAMES[args.variant], -1, WIDTH)
    y = torch.randn(hidden.shape, generator=gen, device=device).to(torch.bfloat16)
    gate = torch.randn(1, hidden.shape[1], 6, WIDTH, generator=gen, device=device).split(1, dim=2)[2]
    residual_want = hidden.float() + y.float() * gate
    residuals = {"gated_residual_eager": lambda out: out.addcmul_(y, gate),
                 "gated_residual_triton": lambda out: triton_kernels.gated_residual_(out, y, gate)}
    scratch = hidden.clone()
    # the LayerNorms, modulated by per-frame rows of the modulation table or by a LayerNorm's weight and bias
    shift, scale = torch.randn(1, hidden.shape[1], 2, WIDTH, generator=gen, device=device).to(
        torch.bfloat16).split(1, dim=2)
    bias = torch.randn(WIDTH, generator=gen, device=device).to(torch.bfloat16)
    compiled_modulate = torch.compile(dit.modulate)
    modulate_want = dit.modulate(hidden.float(), shift.float(), scale.float(), 1e-6)
    layer_norm_want = F.layer_norm(hidden.float(), (WIDTH,), weight.float(), bias.float(), 1e-6)
    norms = {  # name: (path, its fp32 reference)
        "modulate_eager": (lambda: dit.modulate(hidden, shift, scale, 1e-6), modulate_want),
        "modulate_torch_compile": (lambda: compiled_modulate(hidden, shift, scale, 1e-6), modulate_want),
        "modulate_triton": (lambda: triton_kernels.layer_norm(hidden, 1 + scale, shift, 1e-6,
                                                              round_normed=True), modulate_want),
        "layer_norm_eager": (lambda: F.layer_norm(x, (WIDTH,), weight, bias, 1e-6), layer_norm_want),
        "layer_norm_triton": (lambda: triton_kernels.layer_norm(hidden, weight, bias, 1e-6,
                                                                round_normed=False), layer_norm_want),
    }
    rows = {}
    for name, fn in paths.items():
        rows[name] = measure(fn, (fn().float() - want).abs().max().item(), x, 3 if "plain" in name else 2,
                             device, args.reps)
    for name, (fn, reference) in norms.items():
        error = (fn().float().view_as(hidden) - reference).abs().max().item()
        rows[name] = measure(fn, error, x, 2, device, args.reps)
    for name, step in residuals.items():
        fresh = hidden.clone()
        step(fresh)
        error = (fresh.float() - residual_want).abs().max().item()
        rows[name] = measure(lambda step=step: step(scratch), error, x, 3, device, args.reps)
    for name, row in rows.items():
        print(f"{name:26s} {row['median_ms']:.4f} ms  {row['tb_per_s']:.2f} TB/s  max |err| "
              f"{row['max_abs_err']:.3g}", file=sys.stderr)
    write_report({"variant": args.variant, "tokens": tokens, "width": WIDTH, "heads": HEADS, "paths": rows},
                 args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
