"""Output fidelity: what the engine under test produces, against the reference engine, step by step.

Both engines get the same weights (the case's synthetic preset and seed, or the same checkpoint dir), the same
prompt (its audio description in the form the variant was not trained on, so each must convert it), the same
first frame in i2v (a PPM gradient), the same seed (initial noise by the upstream rule, docs/engines.md) and
the same skip-layer guidance block (`params.slg_layer`, passed through denoise's `slg_layer`: Ovi's default 11
is past the tiny model's last block). Compared: the latents after every step and the final latents, video
and audio towers apart (relative L2 error); the decoded frames (PSNR, and SSIM from scikit-image); the audio
(SNR); the prompt each engine fed its text encoder.

Tolerance from measured noise: the reference engine runs twice, in the run's dtype and in the other one
(float32 <-> bfloat16); their difference is the floor, per step and tower. A difference of the engine under
test fails when it exceeds `floor_multiple[dtype]` times the floor; the first step and tower where it does is
named. With a stored reference (`ovi_bench.references`, from `ovi-bench baseline update`) the reference engine
does not run: the engine's output is summarized like the stored one and compared with it and its stored floor.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ovi_bench.engines import engine_factory
from ovi_bench.engines.base import Engine, EngineConfig
from ovi_bench.finite import check_latents, check_media, require_finite
from ovi_bench.metrics import Metric
from ovi_bench.references import (
    PAYLOAD_METRIC,
    TOWERS,
    Output,
    StoredReference,
    digests,
    load_reference,
    summarize,
)
from ovi_bench.scenarios import ENGINE_METRICS, CaseSkipped, Scenario, ScenarioContext
from ovi_bench.scenarios.spec import other_format_prompt, write_image
from ovi_bench.variant_facts import variant_facts

MODES = ("t2v", "i2v")
SOLVERS = ("unipc", "dpm++", "euler")


@dataclass
class Differences:
    """How far one output is from another: relative L2 error of latents per step and of the final ones,
    mean squared error and mean SSIM of the frames, noise-to-signal power of the audio."""

    steps: dict[str, list[float]]
    final: dict[str, float]
    frames_mse: float
    frames_ssim: float
    sound_noise: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Differences:
        return cls(**data)


def relative_error(got: torch.Tensor, want: torch.Tensor, what: str) -> float:
    if got.shape != want.shape:
        raise ValueError(f"{what}: the engine's shape {list(got.shape)} != the reference's "
                         f"{list(want.shape)}")
    scale = float(want.double().norm())
    error = float((got.double() - want.double()).norm())
    return error / scale if scale > 0 else (0.0 if error == 0 else math.inf)


# scikit-image's SSIM takes ~0.3 s per 960x960 frame on one core: 241 frames would add over a minute per
# comparison at full scale, so frames beyond this many pixels in all are sampled evenly (all at tiny).
SSIM_PIXEL_BUDGET = 32 * 960 * 960


def mean_ssim(got: torch.Tensor, want: torch.Tensor) -> float:
    """SSIM (scikit-image, Wang et al. 2004) per frame over the colour channels, averaged over the frames
    (evenly spaced ones past SSIM_PIXEL_BUDGET)."""
    from skimage.metrics import structural_similarity

    frames, height, width = want.shape[:3]
    count = max(1, min(frames, SSIM_PIXEL_BUDGET // (height * width)))
    chosen = torch.linspace(0, frames - 1, count).round().long().unique().tolist()
    side = min(height, width)
    window = min(7, side if side % 2 else side - 1)
    return float(sum(structural_similarity(got[i].numpy(), want[i].numpy(), channel_axis=-1, data_range=255,
                                           win_size=window)
                     for i in chosen) / len(chosen))


def compare(got: Output, want: Output) -> Differences:
    steps: dict[str, list[float]] = {}
    for tower in TOWERS:
        if len(got.steps[tower]) != len(want.steps[tower]):
            raise ValueError(f"the engine reported {len(got.steps[tower])} {tower} steps, the reference "
                             f"{len(want.steps[tower])}")
        steps[tower] = [relative_error(g, w, f"{tower} latents after step {i}")
                        for i, (g, w) in enumerate(zip(got.steps[tower], want.steps[tower]))]
    if got.frames.shape != want.frames.shape:
        raise ValueError(f"frames: the engine's {list(got.frames.shape)} != the reference's "
                         f"{list(want.frames.shape)}")
    frames_mse = float((got.frames.double() - want.frames.double()).pow(2).mean())
    noise = relative_error(got.sound, want.sound, "audio") ** 2
    return Differences(steps,
                       {t: relative_error(got.final[t], want.final[t], f"final {t} latents") for t in TOWERS},
                       frames_mse, mean_ssim(got.frames, want.frames), noise)


def _psnr_db(mse: float) -> float:
    return 10 * math.log10(255**2 / mse) if mse > 0 else math.inf


def _snr_db(noise: float) -> float:
    return -10 * math.log10(noise) if noise > 0 else math.inf


def _exceeds(error: float, floor: float, multiple: float) -> bool:
    return error > multiple * floor


def first_divergence(diff: Differences, floor: Differences, multiple: float, dtypes: str) -> str | None:
    """The first step (then tower) where the engine is further from the reference than allowed."""
    total = len(diff.steps["video"])
    for step in range(total):
        for tower in TOWERS:
            error, noise = diff.steps[tower][step], floor.steps[tower][step]
            if _exceeds(error, noise, multiple):
                return (f"first divergence at step {step} of {total} (0-based), {tower} "
                        f"tower: relative error {error:.3g} > {multiple:g} x floor {noise:.3g} ({dtypes})")
    return None


def final_divergence(diff: Differences, floor: Differences, multiple: float, dtypes: str) -> str | None:
    bad = [f"{t} latents relative error {diff.final[t]:.3g} > {multiple:g} x floor {floor.final[t]:.3g}"
           for t in TOWERS if _exceeds(diff.final[t], floor.final[t], multiple)]
    return f"final {'; '.join(bad)} ({dtypes})" if bad else None


def media_divergence(diff: Differences, floor: Differences, multiple: float, dtypes: str) -> str | None:
    bad = []
    # a multiple of the error power is this many dB off the floor's figure
    margin = -10 * math.log10(multiple)
    if _exceeds(diff.frames_mse, floor.frames_mse, multiple):
        bad.append(f"frames PSNR {_psnr_db(diff.frames_mse):.2f} dB < "
                   f"{_psnr_db(floor.frames_mse) + margin:.2f} dB (the floor's "
                   f"{_psnr_db(floor.frames_mse):.2f} dB {margin:+.2f} dB for {multiple:g} x its MSE)")
    if _exceeds(1 - diff.frames_ssim, 1 - floor.frames_ssim, multiple):
        bad.append(f"frames 1 - SSIM {1 - diff.frames_ssim:.3g} > {multiple:g} x floor "
                   f"{1 - floor.frames_ssim:.3g}")
    if _exceeds(diff.sound_noise, floor.sound_noise, multiple):
        bad.append(f"audio SNR {_snr_db(diff.sound_noise):.2f} dB < "
                   f"{_snr_db(floor.sound_noise) + margin:.2f} dB (the floor's "
                   f"{_snr_db(floor.sound_noise):.2f} dB {margin:+.2f} dB for {multiple:g} x its noise)")
    return f"{'; '.join(bad)} ({dtypes})" if bad else None


def media_frames(media: Any) -> torch.Tensor:
    """The decoded frames as uint8 [T, H, W, 3]: the reference engine's form, or upstream decoder's float
    [3, T, H, W] in [-1, 1] (the checkout engine's)."""
    video = getattr(media, "video", None)
    if not isinstance(video, torch.Tensor):
        raise TypeError("the engine's media carries no `video` tensor: output_fidelity "
                        "compares decoded frames")
    video = video.detach().cpu()
    if video.dtype == torch.uint8 and video.shape[-1] == 3:
        return video
    if video.is_floating_point() and video.shape[0] == 3:
        return video.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0)
    raise ValueError(f"media.video of shape {list(video.shape)} and {video.dtype}: expected uint8 "
                     "[T, H, W, 3] or float [3, T, H, W] in [-1, 1]")


def media_sound(media: Any) -> torch.Tensor:
    audio = getattr(media, "audio", None)
    if not isinstance(audio, torch.Tensor):
        raise TypeError("the engine's media carries no `audio` tensor: output_fidelity "
                        "compares decoded audio")
    return audio.detach().float().cpu().reshape(-1)


def run_dtype(config: EngineConfig) -> str:
    """The dtype `auto` stands for (the harness's rule, docs/engines.md): float32 on the CPU, else bf16."""
    if config.dtype != "auto":
        return config.dtype
    return "float32" if torch.device(config.device).type == "cpu" else "bfloat16"


def device_name(device: str) -> str:
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def generate(engine: Engine, config: EngineConfig, params: Any, image: Path | None,
             stage: Callable[[str], AbstractContextManager[Any]]) -> Output:
    """One generation, with every step's latents kept and everything the engine returns checked finite."""
    steps: dict[str, list[torch.Tensor]] = {t: [] for t in TOWERS}

    def keep(step: int, video: Any, audio: Any) -> None:
        require_finite(f"denoise step {step}", {"video": video, "audio": audio})
        steps["video"].append(video.detach().to("cpu", torch.float32, copy=True))
        steps["audio"].append(audio.detach().to("cpu", torch.float32, copy=True))

    with stage("load"):
        engine.load(config)
    with stage("encode_text"):
        text = engine.encode_text(other_format_prompt(variant_facts(config.variant)), None)
    extra = {} if params["slg_layer"] is None else {"slg_layer": params["slg_layer"]}
    with stage("denoise"):
        latents = engine.denoise(text, steps=params["steps"], seed=config.seed, solver=params["solver"],
                                 image=image, on_step_latents=keep, **extra)
        check_latents(latents)
    with stage("release"):
        engine.release()
    with stage("decode"):
        media = engine.decode_latents(latents)
        check_media(media)
    final = {t: getattr(latents, t).detach().to("cpu", torch.float32, copy=True) for t in TOWERS}
    return Output(steps, final, media_frames(media), media_sound(media), getattr(text, "prompt", None))


def run(ctx: ScenarioContext) -> dict[str, Any]:
    params = {**ctx.params, "solver": ctx.job.axes["solver"]}
    mode = ctx.job.axes["mode"]
    if mode not in MODES or params["solver"] not in SOLVERS:
        raise ValueError(f"mode must be one of {MODES} and solver one of {SOLVERS}, got {mode!r}, "
                         f"{params['solver']!r}")
    solver_variants = params["solver_variants"]
    if (params["solver"] != "unipc" and solver_variants is not None
        and ctx.config.variant not in solver_variants):
        raise CaseSkipped(f"solver {params['solver']} is compared on {', '.join(solver_variants)} only "
                          "(params.solver_variants); unipc on every variant")
    config, dtype = ctx.config, run_dtype(ctx.config)
    other = "bfloat16" if dtype == "float32" else "float32"
    multiple = float(params["floor_multiple"][dtype])
    dtypes = f"floor: the reference engine in {dtype} vs {other}"
    stored: StoredReference | None = None
    if params["reference"] not in ("auto", "engine", "stored"):
        raise ValueError(f"params.reference must be auto, engine or stored, got {params['reference']!r}")
    if params["reference"] != "engine" and params["stored_reference"]:
        stored = load_reference(Path(params["stored_reference"]), ctx.job.case_id)
        refusal = stored.refusal(dtype, device_name(config.device))
        if refusal is not None:
            raise ValueError(refusal)
    elif params["reference"] == "stored":
        raise ValueError("params.reference is stored, but none is stored for this case on this hardware "
                         "(`ovi-bench baseline update` of a run with the reference engine stores one)")

    with tempfile.TemporaryDirectory(prefix="ovi-fidelity-") as tmp:
        image = write_image(Path(tmp) / "first_frame.ppm", *params["image_size"]) if mode == "i2v" else None
        tested = generate(ctx.engine, config, params, image, ctx.meter.stage)
        metrics: dict[str, Any] = {}
        if stored is None:
            reference_engine = engine_factory("reference")
            with ctx.meter.stage("reference"):
                want = generate(reference_engine(), replace(config, dtype=dtype), params, image,
                                lambda name: nullcontext())
            with ctx.meter.stage("floor_reference"):
                noisy = generate(reference_engine(), replace(config, dtype=other), params, image,
                                 lambda name: nullcontext())
            diff, floor = compare(tested, want), compare(noisy, want)
            want_summary = summarize(want)
            metrics[PAYLOAD_METRIC] = StoredReference(
                want_summary, compare(summarize(noisy), want_summary).to_dict(), dtype, other,
                device_name(config.device), digests(want)).to_dict()
            reference_prompt, source = want.prompt, "the reference engine, run in this worker"
            del want, noisy
        else:
            diff = compare(summarize(tested), stored.output)
            floor = Differences.from_dict(stored.floor)
            reference_prompt, source = stored.output.prompt, f"stored: {params['stored_reference']}"
            metrics["fidelity.digests_match"] = digests(tested) == stored.digests
            dtypes = (f"floor: the reference engine in {stored.dtype} vs {stored.floor_dtype}, stored "
                      f"on {stored.device}")

    ratios = [d / f if f > 0 else (0.0 if d == 0 else math.inf)
              for t in TOWERS for d, f in zip(diff.steps[t], floor.steps[t])]
    mismatch = None if tested.prompt is None or tested.prompt == reference_prompt else (
        f"the engine fed its text encoder {tested.prompt!r}, the reference {reference_prompt!r}")
    description = ctx.engine.describe()
    metrics.update({
        **{f"fidelity.{t}.step_rel_err": diff.steps[t] for t in TOWERS},
        **{f"fidelity.{t}.step_floor": floor.steps[t] for t in TOWERS},
        **{f"fidelity.final.{t}_rel_err": diff.final[t] for t in TOWERS},
        **{f"fidelity.final.{t}_floor": floor.final[t] for t in TOWERS},
        "fidelity.steps.worst_floor_ratio": max(ratios),
        "fidelity.first_divergence": first_divergence(diff, floor, multiple, dtypes),
        "fidelity.final.divergence": final_divergence(diff, floor, multiple, dtypes),
        "fidelity.media.divergence": media_divergence(diff, floor, multiple, dtypes),
        "fidelity.frames.psnr_db": _psnr_db(diff.frames_mse),
        "fidelity.frames.psnr_floor_db": _psnr_db(floor.frames_mse),
        "fidelity.frames.ssim": diff.frames_ssim, "fidelity.frames.ssim_floor": floor.frames_ssim,
        "fidelity.audio.snr_db": _snr_db(diff.sound_noise),
        "fidelity.audio.snr_floor_db": _snr_db(floor.sound_noise),
        "fidelity.prompt.engine": tested.prompt, "fidelity.prompt.reference": reference_prompt,
        "fidelity.prompt.mismatch": mismatch,
        "fidelity.floor_multiple": multiple, "fidelity.dtype": dtype, "fidelity.reference": source,
        "fidelity.compared_on": ("full tensors" if stored is None
                                 else "summaries (ovi_bench.references.summarize)"),
        "engine.weights": description.get("weights"), "engine.attention": description.get("attention"),
    })
    return metrics


def _features(job: Any) -> tuple[str, ...]:
    wanted = ["step_latents"]
    if job.axes.get("mode") == "i2v":
        wanted.append("i2v")
    if job.params.get("slg_layer") is not None:
        wanted.append("slg_layer")
    return tuple(wanted)


SCENARIO = Scenario(
    name="fidelity",
    description="the engine's latents per step, final latents, frames, audio and prompt "
                "against the reference engine's, within a multiple of the fp32-vs-bf16 floor",
    axes=("variant", "mode", "solver"),
    axis_defaults={"variant": "720x720_5s", "mode": "t2v", "solver": "unipc"},
    params={"steps": 4, "slg_layer": None, "solver_variants": None, "image_size": [720, 720], "area": None,
            "floor_multiple": {"float32": 0.01, "bfloat16": 1.0, "float16": 1.0},
            "reference": "auto", "stored_reference": None},
    run=run,
    metrics=(
        *ENGINE_METRICS,
        Metric("fidelity.*.step_rel_err", "list"), Metric("fidelity.*.step_floor", "list", "info"),
        Metric("fidelity.final.*_rel_err", "ratio"), Metric("fidelity.final.*_floor", "ratio", "info"),
        Metric("fidelity.steps.worst_floor_ratio", "ratio"),
        Metric("fidelity.first_divergence", "text"), Metric("fidelity.final.divergence", "text"),
        Metric("fidelity.media.divergence", "text"),
        Metric("fidelity.frames.psnr_db", "ratio"), Metric("fidelity.frames.psnr_floor_db", "ratio", "info"),
        Metric("fidelity.frames.ssim", "ratio"), Metric("fidelity.frames.ssim_floor", "ratio", "info"),
        Metric("fidelity.audio.snr_db", "ratio"), Metric("fidelity.audio.snr_floor_db", "ratio", "info"),
        Metric("fidelity.prompt.engine", "text", "info"), Metric("fidelity.prompt.reference", "text", "info"),
        Metric("fidelity.prompt.mismatch", "text"),
        Metric("fidelity.floor_multiple", "ratio", "info"), Metric("fidelity.dtype", "text", "info"),
        Metric("fidelity.reference", "text", "info"), Metric("fidelity.compared_on", "text", "info"),
        Metric("fidelity.digests_match", "flag", "info"), Metric(PAYLOAD_METRIC, "text", "info"),
    ),
    features=_features,
)
