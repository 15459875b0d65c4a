"""End-to-end generation at full scale: time and device memory of every stage, per placement policy.

Runs OviPipeline with synthetic weights (same sizes and dtypes as the real ones) and records, for each
stage, the wall time and the allocator's peak, the peak being reset at every stage start. A few denoise
steps suffice for memory; s/step comes from bench_fusion.py.

    python benchmarks/bench_pipeline.py --variant 960x960_10s --policy all_gpu --steps 2 --out p.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ovi_bench.records import Environment
from ovi_engine import OviPipeline, PipelineConfig
from ovi_engine.pipeline import StageEvent

GIB = 1024**3


class StageMeter:
    """Listens to the pipeline's stage events; the engine does not know it is measured."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.started: dict[str, float] = {}
        self.stages: list[dict[str, object]] = []

    def __call__(self, event: StageEvent) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        if event.phase == "start":
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            self.started[event.stage] = time.perf_counter()
            return
        record: dict[str, object] = {"stage": event.stage,
                                     "wall_s": time.perf_counter() - self.started[event.stage]}
        if cuda:
            record.update(
                peak_allocated_gb=torch.cuda.max_memory_allocated(self.device) / 1e9,
                peak_reserved_gb=torch.cuda.max_memory_reserved(self.device) / 1e9,
                allocated_at_end_gb=torch.cuda.memory_allocated(self.device) / 1e9,
            )
        record.update({k: v for k, v in event.info.items() if k in ("reload_s", "load_s", "tokens", "steps")})
        self.stages.append(record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="960x960_10s")
    parser.add_argument("--policy", default="all_gpu")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--area", type=int, default=None, help="frame area override (CPU smoke runs)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    device = torch.device(args.device)
    pipe = OviPipeline(PipelineConfig(variant=args.variant, preset=args.preset, policy=args.policy,
                                      attention=args.attention, device=args.device, area=args.area))
    meter = StageMeter(device)
    pipe.add_listener(meter)
    steps: list[float] = []
    start = time.perf_counter()
    pipe.load()
    text = pipe.encode_text("A woman says <S>ten seconds of video<E>. <AUDCAP>a calm voice<ENDAUDCAP>")
    last = [time.perf_counter()]

    def on_step(i: int, n: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        steps.append(now - last[0])
        last[0] = now

    latents = pipe.denoise(text, steps=args.steps, seed=0, on_step=on_step)
    pipe.release()
    media = pipe.decode_latents(latents)
    total_s = time.perf_counter() - start
    peaks = [s["peak_allocated_gb"] for s in meter.stages if "peak_allocated_gb" in s]
    result = {
        "schema_version": 1,
        "kind": "bench_pipeline",
        "environment": Environment.capture().to_dict(),
        "variant": args.variant,
        "policy": args.policy,
        "preset": args.preset,
        "steps": args.steps,
        "step_s": steps,
        "video_frames": media.video_frames,
        "audio_samples": media.audio_samples,
        "total_s": total_s,
        "total_peak_allocated_gb": max(peaks) if peaks else None,
        "stages": meter.stages,
        "placement_after_release": pipe.describe()["placement"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for s in meter.stages:
        peak = f"peak {s['peak_allocated_gb']:.2f} GB" if "peak_allocated_gb" in s else ""
        print(f"{s['stage']:>13}: {s['wall_s']:7.2f} s  {peak}")
    print(f"total peak {result['total_peak_allocated_gb']} GB -> {args.out}")


if __name__ == "__main__":
    main()
