"""Repeated generation: several generations in one worker, as an interactive user (a
ComfyUI session) runs them.

The engine loads once; each generation is encode_text -> denoise -> release -> decode. Per generation: its
peak (the allocator's on a GPU, host RSS on the CPU), its stage times, the bytes the process read from disk
(psutil's read_bytes) and the modules it built again, with their times (the engine's stage events carry
`load_s` / `reload_s`, as the reference pipeline's do). After each generation, what stays allocated: the
allocator's figure on a GPU; on the CPU, where torch keeps no count, the bytes of every live tensor's storage
(exact, unlike RSS). Judged: generations 2.. peak no higher than generation 1 (within `peak_tolerance` /
`peak_floor`), what stays allocated returns to the level after generation 1 (within `leak_slack`), no module
the policy keeps resident is rebuilt (the policy declares what it rebuilds:
describe()["reloads_per_generation"]), and the declared reloads' time and bytes are recorded
for the baseline checks.
"""

from __future__ import annotations

import gc
import warnings
from typing import Any

import psutil
import torch

from ovi_bench.engines.base import stage_listener_hook
from ovi_bench.finite import check_latents, check_media
from ovi_bench.metrics import Metric
from ovi_bench.records import Samples, StageRecord
from ovi_bench.scenarios import ENGINE_METRICS, Scenario, ScenarioContext
from ovi_bench.scenarios.pipeline import resident
from ovi_bench.units import parse_fraction, parse_size


def live_bytes(device: str) -> int:
    """What stays allocated: the allocator's figure on a GPU; on the host the storage bytes of every live
    tensor the garbage collector can see, each storage counted once."""
    gc.collect()
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return int(torch.cuda.memory_allocated(dev))
    storages: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance on deprecated module-level objects warns
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for tensor in tensors:
        try:
            if tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, ReferenceError):  # no real storage (sparse, fake, wrapper subclasses)
            continue
    return sum(storages.values())


def _read_bytes() -> int:
    return int(psutil.Process().io_counters().read_bytes)


def _peak(records: list[StageRecord]) -> int:
    values = [r.alloc_peak if r.alloc_peak is not None else r.host_rss_peak for r in records]
    return max(int(v) for v in values if v is not None)


def _built(records: list[StageRecord]) -> dict[str, float]:
    """Modules the engine (re)built during these stages, with the seconds each took."""
    built: dict[str, float] = {}
    for record in records:
        engine = record.extra.get("engine", {})
        for key in ("load_s", "reload_s"):
            for module, seconds in engine.get(key, {}).items():
                built[module] = built.get(module, 0.0) + float(seconds)
    return built


def run(ctx: ScenarioContext) -> dict[str, Any]:
    engine, params, meter = ctx.engine, ctx.params, ctx.meter
    if params["generations"] < 2:
        raise ValueError("params.generations must be at least 2: the checks compare later "
                         "generations with the first")
    add_listener = stage_listener_hook(engine)
    if add_listener is not None:
        add_listener(meter.listener)
    with meter.stage("load"):
        engine.load(ctx.config)
    sizes = resident(engine.describe().get("placement", []))
    peaks, live, read, times = [], [], [], []
    rebuilt: list[dict[str, float]] = []
    for _ in range(params["generations"]):
        first_record, reads_before = len(meter.records), _read_bytes()
        with meter.stage("encode_text"):
            text = engine.encode_text(params["prompt"], params["negative_prompt"])
        with meter.stage("denoise"):
            latents = engine.denoise(text, steps=params["steps"], seed=ctx.config.seed,
                                     solver=params["solver"], height=params["height"], width=params["width"])
            check_latents(latents)
        sizes.update(resident(engine.describe().get("placement", [])))
        with meter.stage("release"):
            engine.release()
        with meter.stage("decode"):
            media = engine.decode_latents(latents)
            check_media(media)
        sizes.update(resident(engine.describe().get("placement", [])))
        del text, latents, media
        records = meter.records[first_record:]
        read.append(_read_bytes() - reads_before)
        peaks.append(_peak(records))
        times.append(sum(r.wall_s for r in records if r.name in ("encode_text", "denoise", "release",
                                                                 "decode")))
        rebuilt.append(_built(records))
        live.append(live_bytes(ctx.config.device))

    description = engine.describe()
    declared = set(description.get("reloads_per_generation", []))
    later = rebuilt[1:]
    unexpected = sorted({m for built in later for m in built if m not in declared})
    first_peak = peaks[0]
    metrics: dict[str, Any] = {
        "repeat.generations": len(peaks),
        "repeat.peak_bytes": peaks,
        "repeat.peak_growth_bytes": max(peaks[1:]) - first_peak,
        "spec.peak_allowed_growth_bytes": max(parse_fraction(params["peak_tolerance"]) * first_peak,
                                              parse_size(params["peak_floor"])),
        "repeat.live_bytes_after": live,
        "repeat.leaked_bytes": max(live[1:]) - live[0],
        "spec.leak_allowed_bytes": parse_size(params["leak_slack"]),
        "repeat.generation_s": times,
        "repeat.read_bytes": read,
        "repeat.rebuilt_modules": [sorted(built) for built in rebuilt],
        "repeat.declared_reloads": sorted(declared),
        "repeat.unexpected_reloads": unexpected,
        "engine.weights": description.get("weights"), "engine.attention": description.get("attention"),
    }
    reload_s = [sum(built.values()) for built in later if built]
    if reload_s:  # a policy that rebuilds: how long, and how many bytes (built, and read from disk)
        metrics["repeat.reload_s"] = Samples(reload_s)
        metrics["repeat.reload_module_bytes"] = max(sum(sizes.get(m, 0) for m in built) for built in later)
        metrics["repeat.reload_read_bytes"] = max(read[1:])
    return metrics


SCENARIO = Scenario(
    name="repeated",
    description="several generations in one worker: per-generation peaks, times, disk reads and reloads; "
                "no growth, no leak, no reload of what the policy keeps",
    axes=("variant", "policy", "attention"),
    axis_defaults={"variant": "720x720_5s", "policy": "all_gpu", "attention": "auto"},
    params={"generations": 3, "steps": 2, "solver": "unipc", "height": None, "width": None, "area": None,
            "prompt": "A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>", "negative_prompt": None,
            "peak_tolerance": "5%", "peak_floor": "0 B", "leak_slack": "0 B"},
    run=run,
    metrics=(
        *ENGINE_METRICS,
        Metric("repeat.generations", "count", "info"), Metric("repeat.peak_bytes", "list"),
        Metric("repeat.peak_growth_bytes", "bytes"),
        Metric("spec.peak_allowed_growth_bytes", "bytes", "expected"),
        Metric("repeat.live_bytes_after", "list"), Metric("repeat.leaked_bytes", "bytes"),
        Metric("spec.leak_allowed_bytes", "bytes", "expected"), Metric("repeat.generation_s", "list"),
        Metric("repeat.read_bytes", "list"), Metric("repeat.rebuilt_modules", "list"),
        Metric("repeat.declared_reloads", "list", "info"), Metric("repeat.unexpected_reloads", "list"),
        Metric("repeat.reload_s", "s"), Metric("repeat.reload_module_bytes", "bytes"),
        Metric("repeat.reload_read_bytes", "bytes"),
    ),
)
