"""The whole generation, stage by stage: load, encode_text, denoise (x repeat), release, decode.

Per-step times come from `on_step`; the first `warmup_steps` steps of the first denoise are warm-up and
left out of `time.denoise.step_s`. Each step's memory peak is read at its `on_step` too. The expected
shapes (`spec.*`) come from the harness's own derivation (`ovi_bench.variant_facts`), not from the engine.

Release accounting (the seed's OOM): `release.held_bytes` is what stays allocated after `release()` (the
allocator's figure on a GPU; on the host, where torch keeps no such count, the bytes of the modules the
engine's placement report still lists), and `spec.release_allowed_bytes` is what decoding needs: the
modules named in `decode_modules`, the latents and the declared `release_slack`. `decode.reloaded_modules`
lists modules released before decode that decode brought back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovi_bench.finite import check_latents, check_media
from ovi_bench.metrics import Metric
from ovi_bench.records import Samples
from ovi_bench.scenarios import ENGINE_METRICS, MEDIA_METRICS, Scenario, ScenarioContext
from ovi_bench.units import parse_size
from ovi_bench.variant_facts import variant_facts

RELEASED = "released"
NOT_LOADED = "not loaded"


def _resident(placement: list[dict[str, Any]]) -> dict[str, int]:
    return {p["module"]: int(p["bytes"]) for p in placement if p["device"] not in (RELEASED, NOT_LOADED)}


def _tensor_bytes(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())


def run(ctx: ScenarioContext) -> dict[str, Any]:
    engine, params, meter = ctx.engine, ctx.params, ctx.meter
    if params["mode"] not in ("t2v", "i2v"):
        raise ValueError(f"mode must be t2v or i2v, got {params['mode']!r}")
    image = Path(params["image"]) if params["mode"] == "i2v" else None
    if params["mode"] == "i2v" and not params["image"]:
        raise ValueError("mode i2v needs params.image (a path to the first frame)")
    text = ctx.load_and_encode()
    step_s: list[float] = []
    step_peaks: list[float] = []
    for _ in range(ctx.repeat):
        with meter.stage("denoise"):
            timer = meter.step_timer()  # started inside the stage, so the trackers' own work is not a step

            def on_step(step: int, total: int, timer: Any = timer) -> None:
                timer.on_step(step, total)
                peaks = meter.memory.mark()
                peak = peaks.get("alloc_peak") if peaks.get("alloc_peak") is not None else peaks["host_rss_peak"]
                step_peaks.append(float(peak or 0))

            latents = engine.denoise(
                text, steps=params["steps"], seed=ctx.config.seed, solver=params["solver"], image=image,
                height=params["height"], width=params["width"], on_step=on_step,
            )
            check_latents(latents)
        step_s += timer.durations
    with meter.stage("release"):
        engine.release()
    after_release = engine.describe().get("placement", [])
    with meter.stage("decode"):
        media = engine.decode_latents(latents)
        check_media(media)
    description = engine.describe()
    after_decode = description.get("placement", [])

    facts = variant_facts(ctx.config.variant)
    area = ctx.config.area
    held = _resident(after_release)
    release_end = next((s.alloc_end for s in reversed(meter.records) if s.name == "release"), None)
    sizes = {**held, **_resident(after_decode)}
    decode_need = sum(b for m, b in sizes.items() if m in params["decode_modules"])
    latent_bytes = _tensor_bytes(latents.video) + _tensor_bytes(latents.audio)
    # a module freed by release() that decode brought back (a first load is not a reload)
    released = {p["module"] for p in after_release if p["device"] == RELEASED}
    reloaded = sorted(released & set(_resident(after_decode)))
    metrics: dict[str, Any] = {
        "video_latent_shape": list(latents.video.shape),
        "audio_latent_length": int(latents.audio.shape[0]),
        "audio_latent_shape": list(latents.audio.shape),
        "video_tokens": int(latents.video.shape[1] * (latents.video.shape[2] // 2) * (latents.video.shape[3] // 2)),
        "video_frames": int(media.video_frames),
        "audio_samples": int(media.audio_samples),
        "fps": media.fps,
        "sample_rate": media.sample_rate,
        "video_duration_s": media.video_frames / media.fps,
        "audio_duration_s": media.audio_samples / media.sample_rate,
        "spec.video_latent_shape": facts.video_latent_shape(params["height"], params["width"], area),
        "spec.video_tokens": facts.video_tokens(params["height"], params["width"], area),
        "spec.audio_latent_length": facts.audio_latent_length,
        "spec.audio_latent_shape": facts.audio_latent_shape(),
        "spec.video_frames": facts.video_frames,
        "spec.audio_samples": facts.audio_samples,
        "spec.fps": facts.fps,
        "spec.sample_rate": facts.sample_rate,
        "release.held_bytes": release_end if release_end is not None else sum(held.values()),
        "release.held_modules": sorted(held),
        "release.latent_bytes": latent_bytes,
        "spec.release_allowed_bytes": decode_need + latent_bytes + parse_size(params["release_slack"]),
        "decode.reloaded_modules": reloaded,
        "decode.reloads": len(reloaded),
        "engine.weights": description.get("weights"),
        "engine.attention": description.get("attention"),
        "engine.placement": after_release,
    }
    measured = step_s[params["warmup_steps"]:]
    if measured:
        metrics["time.denoise.step_s"] = Samples(measured)
    if step_peaks:
        metrics["peak.denoise_step.bytes"] = Samples(step_peaks)
    return metrics


SCENARIO = Scenario(
    name="pipeline",
    description="one generation through the Engine interface, every stage tracked",
    axes=("variant", "policy", "attention"),
    axis_defaults={"variant": "720x720_5s", "policy": "all_gpu", "attention": "auto"},
    params={
        "steps": 2, "mode": "t2v", "prompt": "A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>",
        "negative_prompt": None, "solver": "unipc", "image": None, "height": None, "width": None,
        "warmup_steps": 1, "area": None, "decode_modules": ["video_vae", "audio_codec"],
        "release_slack": "0 B",
    },
    run=run,
    metrics=(
        *MEDIA_METRICS, *ENGINE_METRICS,
        Metric("video_latent_shape", "list"), Metric("audio_latent_length", "count"),
        Metric("audio_latent_shape", "list"), Metric("video_tokens", "count"),
        Metric("spec.video_latent_shape", "list", "expected"), Metric("spec.video_tokens", "count", "expected"),
        Metric("spec.audio_latent_length", "count", "expected"),
        Metric("spec.audio_latent_shape", "list", "expected"),
        Metric("release.held_bytes", "bytes"), Metric("release.held_modules", "list"),
        Metric("release.latent_bytes", "bytes", "info"),
        Metric("spec.release_allowed_bytes", "bytes", "expected"),
        Metric("decode.reloaded_modules", "list"), Metric("decode.reloads", "count"),
        Metric("engine.placement", "list", "info"),
        Metric("time.denoise.step_s", "s"), Metric("peak.denoise_step.bytes", "bytes"),
    ),
    features=lambda job: ("i2v",) if job.params.get("mode") == "i2v" else (),
)
