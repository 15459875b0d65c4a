"""Where one denoising step of the fusion transformer spends its GPU time, by kernel family.

Profiles one step (cond + uncond forward with SLG, after a warm-up step) with torch.profiler and sums the
device time of its kernels into attention, GEMM and the rest (elementwise, norms, copies), next to the
step's wall time: the difference is time the GPU sat idle. The SM clock and power are sampled through NVML
during the timed steps, to tell a throttled card from a slow kernel.

    python benchmarks/profile_fusion.py --variant 960x960_10s --attention flash_attn_3 \\
        --compile --out prof.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from bench_common import ClockSampler
from bench_fusion import latent_shapes, make_step

from ovi_bench.records import Environment
from ovi_bench.schema import BENCHMARK
from ovi_engine.attention import resolve
from ovi_engine.fusion import build_fusion_model
from ovi_engine.variants import VARIANTS

# Substrings of kernel names, checked in this order; the first match names the family.
FAMILIES = (
    ("attention", ("flash", "fmha", "attention", "attn", "sdpa", "cudnn_generated")),
    ("gemm", ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas")),
)


def family(kernel: str) -> str:
    name = kernel.lower()
    return next((fam for fam, keys in FAMILIES if any(k in name for k in keys)), "other")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="960x960_10s", choices=sorted(VARIANTS))
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the elementwise helpers")
    parser.add_argument("--steps-timed", type=int, default=2, help="steps timed with the clock sampler")
    parser.add_argument("--top", type=int, default=25, help="kernels listed by device time")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.steps_timed < 1 or args.top < 1:
        parser.error("--steps-timed and --top must be >= 1")
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (the profile reads device kernel times)")
    device = torch.device("cuda", torch.cuda.current_device())
    model = build_fusion_model("full", device=device, dtype=torch.bfloat16, seed=0, compile=args.compile)
    step = make_step(model, *latent_shapes(args.variant, "full"), device, args.attention)
    step()
    torch.cuda.synchronize(device)
    walls = []
    with ClockSampler(device) as clocks:
        for _ in range(args.steps_timed):
            start = time.perf_counter()
            step()
            torch.cuda.synchronize(device)
            walls.append(time.perf_counter() - start)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_family: dict[str, float] = defaultdict(float)
    for e in kernels:
        by_family[family(e.key)] += e.device_time_total / 1e6
    top = sorted(kernels, key=lambda e: e.device_time_total, reverse=True)[: args.top]
    busy = sum(by_family.values())
    result = {
        "schema_version": BENCHMARK.version,
        "environment": Environment.capture(device.index or 0).to_dict(),
        "variant": args.variant,
        "attention": resolve(args.attention, device, torch.bfloat16),
        "compiled_helpers": args.compile,
        "step_wall_s": walls,
        "device_busy_s": busy,
        "idle_s": statistics.median(walls) - busy,
        "by_family_s": dict(sorted(by_family.items())),
        "clocks": clocks.summary(),
        "top_kernels": [{"name": e.key[:160], "calls": e.count, "total_s": e.device_time_total / 1e6}
                        for e in top],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("step_wall_s", "device_busy_s", "by_family_s", "clocks")}))
    for row in result["top_kernels"]:
        print(f"{row['total_s'] * 1e3:9.1f} ms {row['calls']:5d}x  {row['name'][:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
