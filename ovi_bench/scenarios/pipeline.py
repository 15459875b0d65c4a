"""The whole generation, stage by stage: load, encode_text, denoise (x repeat), release, decode.

Per-step times come from `on_step`; the first `warmup_steps` steps of the first denoise are warm-up and
left out of `time.denoise.step_s`. Each step's memory peak is read at its `on_step` too. First-run costs
(compilation, autotuning, cold caches) are recorded apart from the steady figures the suites gate:
`time.denoise.first_step_s` is the first step, `time.decode.first_s` the first decode, and with
`steady_decode` the same latents are decoded a second time (another `decode` stage) for
`time.decode.steady_s`. With `attention_probe: {heads, head_dim}` the attention kernel that runs at the
variant's video_self shape is proven after the generation, as in the attention scenario (`attention.kernel`,
`attention.kernel_problems`). The expected shapes (`spec.*`) come from the harness's own derivation
(`ovi_bench.variant_facts`), not from the engine.

Release accounting (the seed's OOM): `release.held_bytes` is what stays allocated after `release()` (the
allocator's figure on a GPU; on the host, where torch keeps no such count, the bytes of the modules the
engine's placement report still lists), and `spec.release_allowed_bytes` is what decoding needs: the
modules named in `decode_modules`, the latents and the declared `release_slack`. `decode.reloaded_modules`
lists modules released before decode that decode brought back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovi_bench.engines.base import attention_dtype, attention_kernel_hook, stage_listener_hook
from ovi_bench.estimate import STAGES, error_metrics, request_for
from ovi_bench.finite import check_latents, check_media
from ovi_bench.metrics import Metric, stage_metrics
from ovi_bench.records import Samples
from ovi_bench.scenarios import ENGINE_METRICS, MEDIA_METRICS, Scenario, ScenarioContext
from ovi_bench.scenarios.attention import KERNEL_METRICS, kernel_metrics
from ovi_bench.scenarios.spec import DURATION_SLACK_S
from ovi_bench.units import parse_size
from ovi_bench.variant_facts import variant_facts

RELEASED = "released"
NOT_LOADED = "not loaded"


def resident(placement: list[dict[str, Any]]) -> dict[str, int]:
    """Bytes per module of a placement report, of the modules still built."""
    return {p["module"]: int(p["bytes"]) for p in placement if p["device"] not in (RELEASED, NOT_LOADED)}


def _tensor_bytes(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())


def _kernel_at_video_self(ctx: ScenarioContext, probe: dict[str, int], tokens: int) -> dict[str, Any]:
    """Which attention kernel runs at the variant's video_self shape: one call of the engine's own kernel
    under the profiler, after the generation, so no stage's time or memory includes it."""
    import torch

    config = ctx.config
    device = torch.device(config.device)
    shape = f"video_self {tokens}x{tokens}"
    make_kernel = attention_kernel_hook(ctx.engine)
    dtype_name = attention_dtype(config.dtype, config.device)
    if make_kernel is None:
        return kernel_metrics(None, config.attention, device, shape, dtype_name)
    kernel = make_kernel(config.attention, config.device, dtype_name)
    q, k, v = (torch.randn(1, tokens, probe["heads"], probe["head_dim"], device=device,
                           dtype=getattr(torch, dtype_name)) for _ in range(3))
    return kernel_metrics(lambda: kernel.fn(q, k, v), config.attention, device, shape,
                          kernel.attends_in(dtype_name))


def run(ctx: ScenarioContext) -> dict[str, Any]:
    engine, params, meter = ctx.engine, ctx.params, ctx.meter
    if params["mode"] not in ("t2v", "i2v"):
        raise ValueError(f"mode must be t2v or i2v, got {params['mode']!r}")
    image = Path(params["image"]) if params["mode"] == "i2v" else None
    if params["mode"] == "i2v" and not params["image"]:
        raise ValueError("mode i2v needs params.image (a path to the first frame)")
    text = ctx.load_and_encode()
    step_s: list[float] = []
    steps_run: list[int] = []
    step_peaks: list[float] = []
    for _ in range(ctx.repeat):
        with meter.stage("denoise"):
            timer = meter.step_timer()  # started inside the stage, so the trackers' own work is not a step

            def on_step(step: int, total: int, timer: Any = timer) -> None:
                timer.on_step(step, total)
                peaks = meter.memory.mark()
                peak = (peaks.get("alloc_peak") if peaks.get("alloc_peak") is not None
                        else peaks["host_rss_peak"])
                step_peaks.append(float(peak or 0))

            latents = engine.denoise(
                text, steps=params["steps"], seed=ctx.config.seed, solver=params["solver"], image=image,
                height=params["height"], width=params["width"], on_step=on_step,
            )
            check_latents(latents)
        step_s += timer.durations
        steps_run.append(len(timer.durations))
    with meter.stage("release"):
        engine.release()
    after_release = engine.describe().get("placement", [])
    with meter.stage("decode"):
        media = engine.decode_latents(latents)
        check_media(media)
    description = engine.describe()
    after_decode = description.get("placement", [])
    # the same latents again: what a decode costs once its first-call work is paid
    if params["steady_decode"]:
        with meter.stage("decode"):
            engine.decode_latents(latents)

    facts = variant_facts(ctx.config.variant)
    area = ctx.config.area
    held = resident(after_release)
    release_end = next((s.alloc_end for s in reversed(meter.records) if s.name == "release"), None)
    sizes = {**held, **resident(after_decode)}
    decode_need = sum(b for m, b in sizes.items() if m in params["decode_modules"])
    latent_bytes = _tensor_bytes(latents.video) + _tensor_bytes(latents.audio)
    # a module freed by release() that decode brought back (a first load is not a reload)
    released = {p["module"] for p in after_release if p["device"] == RELEASED}
    unexpected = sorted(m for m in held if m not in params["decode_modules"])
    reloaded = sorted(released & set(resident(after_decode)))
    metrics: dict[str, Any] = {
        "video_latent_shape": list(latents.video.shape),
        "audio_latent_length": int(latents.audio.shape[0]),
        "audio_latent_shape": list(latents.audio.shape),
        "video_tokens": int(latents.video.shape[1] * (latents.video.shape[2] // 2)
                            * (latents.video.shape[3] // 2)),
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
        "spec.duration_s": facts.duration_s,
        "spec.duration_max_s": facts.duration_s + DURATION_SLACK_S,
        "spec.steps": params["steps"],
        "denoise.steps_run": min(steps_run),
        "release.held_bytes": release_end if release_end is not None else sum(held.values()),
        "release.held_modules": sorted(held),
        # by module bytes from the engine's placement report, exact at any scale (a few MB at tiny count)
        "release.unexpected_modules": unexpected,
        "release.unexpected_count": len(unexpected),
        "release.latent_bytes": latent_bytes,
        "spec.release_allowed_bytes": decode_need + latent_bytes + parse_size(params["release_slack"]),
        "decode.reloaded_modules": reloaded,
        "decode.reloads": len(reloaded),
        "engine.weights": description.get("weights"),
        "engine.attention": description.get("attention"),
        "engine.placement": after_release,
        "engine.allocator": description.get("allocator"),  # the reference engine's allocator setting
    }
    if stage_listener_hook(engine) is None:
        for inner in ("decode_video", "decode_audio"):
            metrics[f"unsupported.peak.{inner}"] = "the engine announces no inner stages (add_stage_listener)"
    if ctx.job.engine == "reference":  # the memory model (ovi_bench.estimate) is of the reference's placement
        peaks = stage_metrics(meter.records)
        metrics.update(error_metrics(request_for(ctx.config, params),
                                     {stage: peaks.get(f"peak.{stage}.bytes") for stage in STAGES}))
    else:
        metrics["unsupported.estimate_error"] = ("the memory model describes the reference "
                                                 f"engine's placement, not {ctx.job.engine}'s")
    measured = step_s[params["warmup_steps"]:]
    if measured:
        metrics["time.denoise.step_s"] = Samples(measured)
    if step_s:
        metrics["time.denoise.first_step_s"] = step_s[0]
    decodes = [s.wall_s for s in meter.records if s.name == "decode"]
    metrics["time.decode.first_s"] = decodes[0]
    if len(decodes) > 1:
        metrics["time.decode.steady_s"] = Samples(decodes[1:])
    if step_peaks:
        metrics["peak.denoise_step.bytes"] = Samples(step_peaks)
    if params["attention_probe"]:
        tokens = facts.video_tokens(params["height"], params["width"], area)
        metrics.update(_kernel_at_video_self(ctx, params["attention_probe"], tokens))
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
        "release_slack": "0 B", "steady_decode": False, "attention_probe": None,
    },
    run=run,
    metrics=(
        *MEDIA_METRICS, *ENGINE_METRICS,
        Metric("video_latent_shape", "list"), Metric("audio_latent_length", "count"),
        Metric("audio_latent_shape", "list"), Metric("video_tokens", "count"),
        Metric("spec.video_latent_shape", "list", "expected", expects=("video_latent_shape",)),
        Metric("spec.video_tokens", "count", "expected", expects=("video_tokens",)),
        Metric("spec.audio_latent_length", "count", "expected", expects=("audio_latent_length",)),
        Metric("spec.audio_latent_shape", "list", "expected", expects=("audio_latent_shape",)),
        Metric("spec.steps", "count", "expected", expects=("denoise.steps_run",)),
        Metric("denoise.steps_run", "count"), Metric("release.unexpected_modules", "list"),
        Metric("release.unexpected_count", "count"),
        Metric("release.held_bytes", "bytes"), Metric("release.held_modules", "list"),
        Metric("release.latent_bytes", "bytes", "info"),
        Metric("spec.release_allowed_bytes", "bytes", "expected"),
        Metric("decode.reloaded_modules", "list"), Metric("decode.reloads", "count"),
        Metric("engine.placement", "list", "info"), Metric("engine.allocator", "text", "info"),
        Metric("time.denoise.step_s", "s"), Metric("peak.denoise_step.bytes", "bytes"),
        Metric("time.denoise.first_step_s", "s"), Metric("time.decode.first_s", "s"),
        Metric("time.decode.steady_s", "s"), *KERNEL_METRICS,
        Metric("estimate.*.bytes", "bytes", "expected"), Metric("estimate_error.*", "ratio"),
    ),
    features=lambda job: ("i2v",) if job.params.get("mode") == "i2v" else (),
)
