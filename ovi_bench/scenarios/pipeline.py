"""The whole generation, stage by stage: load, encode_text, denoise (x repeat), release, decode.

Per-step times come from `on_step`; the first `warmup_steps` steps of the first denoise are warm-up and
left out of `time.denoise.step_s`. The expected shapes (`spec.*`) are derived from the variant by
`ovi_engine.variants`, independently of what the engine reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovi_bench.engines.base import stage_listener_hook
from ovi_bench.records import Samples
from ovi_bench.scenarios import Scenario, ScenarioContext
from ovi_engine.variants import get_variant


def run(ctx: ScenarioContext) -> dict[str, Any]:
    engine, params, meter = ctx.engine, ctx.params, ctx.meter
    if params["mode"] not in ("t2v", "i2v"):
        raise ValueError(f"mode must be t2v or i2v, got {params['mode']!r}")
    image = Path(params["image"]) if params["mode"] == "i2v" else None
    if params["mode"] == "i2v" and not params["image"]:
        raise ValueError("mode i2v needs params.image (a path to the first frame)")
    add_listener = stage_listener_hook(engine)
    if add_listener is not None:
        add_listener(meter.listener)

    with meter.stage("load"):
        engine.load(ctx.config)
    with meter.stage("encode_text"):
        text = engine.encode_text(params["prompt"], params["negative_prompt"])
    step_s: list[float] = []
    for _ in range(ctx.repeat):
        with meter.stage("denoise"):
            timer = meter.step_timer()  # started inside the stage, so the trackers' own work is not a step
            latents = engine.denoise(
                text, steps=params["steps"], seed=ctx.config.seed, solver=params["solver"], image=image,
                height=params["height"], width=params["width"], on_step=timer.on_step,
            )
        step_s += timer.durations
    with meter.stage("release"):
        engine.release()
    with meter.stage("decode"):
        media = engine.decode_latents(latents)

    spec = get_variant(ctx.config.variant)
    description = engine.describe()
    metrics: dict[str, Any] = {
        "video_latent_shape": list(latents.video.shape),
        "audio_latent_length": int(latents.audio.shape[0]),
        "audio_latent_shape": list(latents.audio.shape),
        "video_frames": int(media.video_frames),
        "audio_samples": int(media.audio_samples),
        "fps": media.fps,
        "sample_rate": media.sample_rate,
        "spec.video_latent_shape": list(spec.video_latent_shape(params["height"], params["width"])),
        "spec.audio_latent_length": spec.audio_latent_length,
        "spec.audio_latent_shape": list(spec.audio_latent_shape()),
        "spec.video_frames": spec.video_frames,
        "spec.audio_samples": spec.audio_samples,
        "spec.fps": spec.fps,
        "spec.sample_rate": spec.sample_rate,
        "engine.weights": description.get("weights"),
        "engine.attention": description.get("attention"),
        "engine.placement": description.get("placement", []),
    }
    measured = step_s[params["warmup_steps"]:]
    if measured:
        metrics["time.denoise.step_s"] = Samples(measured)
    return metrics


SCENARIO = Scenario(
    name="pipeline",
    description="one generation through the Engine interface, every stage tracked",
    axes=("variant", "policy", "attention"),
    axis_defaults={"variant": "720x720_5s", "policy": "all_gpu", "attention": "auto"},
    params={
        "steps": 2, "mode": "t2v", "prompt": "A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>",
        "negative_prompt": None, "solver": "unipc", "image": None, "height": None, "width": None,
        "warmup_steps": 1,
    },
    run=run,
)
