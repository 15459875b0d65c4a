"""cpu_offload's load stage: wall time and host peak RSS against the bytes of the modules it builds, and the
time of each encode_text (the text encoder's one-copy trip from its pinned arena to the device and back),
split into the trip there, the forward and the trip back.

Synthetic weights (same sizes and dtypes as the real ones), drawn on the device and written straight into
each module's host arena. Host peak RSS is the process's high-water mark (getrusage), read after the load.

    python benchmarks/bench_offload.py --variant 960x960_10s --out reports/bench_offload.json
    python benchmarks/bench_offload.py --preset tiny --device cpu --out /tmp/offload.json  # smoke
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from bench_common import GIB, synchronize, write_report

from ovi_engine import OviPipeline, PipelineConfig
from ovi_engine.host_memory import HostArena
from ovi_engine.weights import module_bytes

PROMPT = "A woman says <S>ten seconds of video<E>. <AUDCAP>a calm voice<ENDAUDCAP>"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def time_arenas() -> list[float]:
    """Seconds spent building each host arena (allocation, page-locking, packing), apart from the draws."""
    spent: list[float] = []
    build = HostArena.__init__

    def timed_build(self: HostArena, *args: object, **kwargs: object) -> None:
        start = time.perf_counter()
        build(self, *args, **kwargs)
        spent.append(time.perf_counter() - start)

    HostArena.__init__ = timed_build  # type: ignore[method-assign]
    return spent


def time_stage_moves(pipe: OviPipeline, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each placement.enter (the arenas' copies to the device) and placement.leave (the copies
    back, freeing and emptying the device cache) of the stages that follow, synchronized."""
    spent: dict[str, list[float]] = {"enter": [], "leave": []}
    for name, times in spent.items():
        move = getattr(pipe.placement, name)

        def timed(stage: str, move=move, times=times) -> None:
            start = time.perf_counter()
            move(stage)
            synchronize(device)
            times.append(time.perf_counter() - start)

        setattr(pipe.placement, name, timed)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="960x960_10s")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=3, help="encode_text calls timed after the load")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    pipe = OviPipeline(PipelineConfig(variant=args.variant, preset=args.preset, policy="cpu_offload",
                                      device=args.device))
    arena_s = time_arenas()
    rss_before = rss_bytes()
    start = time.perf_counter()
    pipe.load()
    synchronize(device)
    load_s = time.perf_counter() - start
    peak_after_load = peak_rss_bytes()
    slots = pipe.placement.slots
    modules = {name: module_bytes(slot.module) for name, slot in slots.items() if slot.module is not None}
    arenas = [*(a for s in slots.values() for a in s.arenas),
              *(a for streamer in pipe.placement.streamers.values() for a in streamer.arenas)]

    moves = time_stage_moves(pipe, device)
    encode_s, encode_peak = [], []
    for i in range(args.prompts):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        pipe.encode_text(f"{PROMPT} (take {i})")
        synchronize(device)
        encode_s.append(time.perf_counter() - began)
        if device.type == "cuda":
            encode_peak.append(torch.cuda.max_memory_allocated(device) / GIB)

    total = sum(modules.values())
    result = {
        "kind": "bench_offload",
        "variant": args.variant,
        "preset": args.preset,
        "device": str(device),
        "load_s": load_s,
        "load_s_per_module": {name: slot.load_s[0] for name, slot in slots.items() if slot.load_s},
        "load_s_building_arenas": sum(arena_s),
        "module_bytes": modules,
        "module_gib": total / GIB,
        "arena_bytes": sum(a.nbytes for a in arenas),
        "arenas_pinned": all(a.pinned for a in arenas if a.nbytes),
        "host_rss_before_load_gib": rss_before / GIB,
        "host_rss_after_load_gib": rss_bytes() / GIB,
        "host_rss_peak_after_load_gib": peak_after_load / GIB,
        # what the load added to the high-water mark, per byte of module it built (1.0 = no overhead)
        "host_rss_peak_over_module_bytes": (peak_after_load - rss_before) / total if total else None,
        "encode_text_s": encode_s,
        # each call's text encoder trip to the device, its trip back (and cache emptying), and the rest:
        # tokenizing and the forward
        "encode_text_to_device_s": moves["enter"],
        "encode_text_to_host_s": moves["leave"],
        "encode_text_forward_s": [t - a - b for t, a, b in zip(encode_s, moves["enter"], moves["leave"])],
        "encode_text_peak_allocated_gib": encode_peak,
    }
    write_report(result, args.out)
    print(f"load {load_s:.2f} s, modules {total / GIB:.2f} GiB, host peak RSS "
          f"{peak_after_load / GIB:.2f} GiB (x{result['host_rss_peak_over_module_bytes']:.2f} of the modules "
          f"over the start); encode_text {', '.join(f'{s:.2f}' for s in encode_s)} s (to the device "
          f"{', '.join(f'{s:.2f}' for s in moves['enter'])}; forward "
          f"{', '.join(f'{s:.2f}' for s in result['encode_text_forward_s'])}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
