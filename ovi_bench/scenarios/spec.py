"""Does the engine implement the variant it claims? Everything is compared with the harness's own
derivation (`ovi_bench.variant_facts`), never with the engine's tables.

Per case (one variant): the engine's variant description; the latent shapes and video token counts it
produces for each t2v size in `sizes` and for an i2v first frame of `image_size`; the decoded frame and
sample counts (so the clip lasts the variant's duration); the prompt after conversion to the variant's
format; and, when the engine offers `detect_variant(path)`, detection from metadata and from each known
file name, and refusal of an unknown file. Mismatches are collected into lists the suite expects empty, so a
failing verdict names every wrong value. Runs without a GPU (`area` keeps CPU frames small; lengths stay).

A case handed an `area` whose variant is in `own_area_variants` also has the engine choose the frame size
itself: a second engine, loaded without the area, denoises one t2v request of `own_area_size`, and its
shapes are compared with the derivation at the variant's own area (no decode: too slow on a CPU).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ovi_bench.finite import check_latents, check_media
from ovi_bench.metrics import Metric
from ovi_bench.scenarios import MEDIA_METRICS, Scenario, ScenarioContext
from ovi_bench.variant_facts import FILE_NAMES, METADATA_KEY, PATCH_HW, VariantFacts, variant_facts

DESCRIPTION = "A cat plays the piano."
DURATION_SLACK_S = 0.2  # a clip may run past its duration by less than one latent frame (4 frames, 1/6 s)
AUDIO = "Piano music."


def _mismatches(label: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [f"{label} {key}: engine {got.get(key)!r}, derived {value!r}" for key, value in want.items()
            if got.get(key) != value]


def _observed(latents: Any) -> dict[str, Any]:
    video = latents.video.shape
    return {"video": list(video), "audio": list(latents.audio.shape),
            "tokens": video[1] * (video[2] // PATCH_HW) * (video[3] // PATCH_HW)}


def _expected(facts: VariantFacts, height: int, width: int, area: int | None) -> dict[str, Any]:
    return {"video": facts.video_latent_shape(height, width, area), "audio": facts.audio_latent_shape(),
            "tokens": facts.video_tokens(height, width, area)}


def _own_area(ctx: ScenarioContext, facts: VariantFacts) -> tuple[dict[str, int], list[str]]:
    """The engine's own frame size for a t2v request of `own_area_size`: (its metrics, mismatches)."""
    height, width = ctx.params["own_area_size"]
    label = f"t2v {height}x{width} at the engine's own area"
    engine = ctx.new_engine()
    with ctx.meter.stage("own_area"):
        engine.load(replace(ctx.config, area=None))
        text = engine.encode_text(other_format_prompt(facts), None)
        latents = engine.denoise(text, steps=ctx.params["steps"], seed=ctx.config.seed, height=height,
                                 width=width)
        check_latents(latents, f"denoise ({label})")
        engine.release()
    got, want = _observed(latents), _expected(facts, height, width, None)
    return ({"own_area.video_tokens": got["tokens"], "spec.own_area_video_tokens": want["tokens"]},
            _mismatches(label, got, want))


def write_image(path: Path, height: int, width: int) -> Path:
    """A binary PPM (any decoder reads it) with a gradient, so the first frame is not constant."""
    rows = torch.arange(height, dtype=torch.int32)[:, None, None] * 255 // max(1, height - 1)
    cols = torch.arange(width, dtype=torch.int32)[None, :, None] * 255 // max(1, width - 1)
    pixels = torch.cat([rows.expand(height, width, 1), cols.expand(height, width, 1),
                        ((rows + cols) // 2).expand(height, width, 1)], dim=2).to(torch.uint8)
    path.write_bytes(f"P6 {width} {height} 255\n".encode() + pixels.numpy().tobytes())
    return path


def other_format_prompt(facts: VariantFacts) -> str:
    """The test prompt with its audio description in the form the variant was not trained on, so that an
    engine must convert it."""
    if facts.prompt_format == "audcap":
        return f"{DESCRIPTION}\nAudio: {AUDIO}"
    return f"{DESCRIPTION} <AUDCAP>{AUDIO}<ENDAUDCAP>"


def _prompt_in_format(prompt: str, facts: VariantFacts) -> bool:
    """The audio description appears once, in the variant's own form only: `<AUDCAP>…<ENDAUDCAP>`, or
    `Audio: …` running to the end of the prompt (upstream's cleaner drops everything from `Audio:` on, so
    it may stand on its own line or follow the video description)."""
    if facts.prompt_format == "audcap":
        return f"<AUDCAP>{AUDIO}<ENDAUDCAP>" in prompt and "Audio:" not in prompt
    return re.search(rf"Audio: {re.escape(AUDIO)}\s*$", prompt) is not None and "<AUDCAP>" not in prompt


def _detection(detect: Any, variant: str, directory: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    tensors = {"weight": torch.zeros(1)}
    tagged = directory / "renamed_by_user.safetensors"
    save_file(tensors, str(tagged), metadata={METADATA_KEY: variant})
    wrong = []
    for name in FILE_NAMES[variant]:
        save_file(tensors, str(directory / name))
        found = detect(directory / name)
        if found != variant:
            wrong.append(f"{name}: detected {found!r}")
    unknown = directory / "mystery.safetensors"
    save_file(tensors, str(unknown))
    try:
        refused = f"accepted as {detect(unknown)!r}"
    except ValueError:
        refused = "refused"
    return {"detection.by_metadata": detect(tagged), "detection.file_name_mismatches": wrong,
            "detection.unknown_file": refused}


def run(ctx: ScenarioContext) -> dict[str, Any]:
    engine, params, meter = ctx.engine, ctx.params, ctx.meter
    facts = variant_facts(ctx.config.variant)
    area = ctx.config.area
    with meter.stage("load"):
        engine.load(ctx.config)
    described = engine.describe().get("variant", {})
    # An engine without prompt conversion (Ovi 1.0) uses prompts as given: its description cannot name the
    # variant's format, and the conversion check says why it is not judged.
    no_conversion = ctx.engine_capabilities().why_not("features", "prompt_conversion")
    skipped = {"name", "prompt_format"} if no_conversion else {"name"}
    spec_errors = _mismatches("variant", described,
                              {k: v for k, v in facts.summary().items() if k not in skipped})

    with meter.stage("encode_text"):
        text = engine.encode_text(other_format_prompt(facts), None)
    metrics: dict[str, Any] = {}
    converted = getattr(text, "prompt", None)  # the reference engine keeps the prompt it encoded
    if no_conversion:
        metrics["unsupported.prompt"] = no_conversion
    elif converted is not None:
        metrics["prompt.in_variant_format"] = _prompt_in_format(converted, facts)
    else:
        metrics["unsupported.prompt"] = "the engine's encode_text result keeps no .prompt to check"

    latent_errors: list[str] = []
    first: Any = None
    with tempfile.TemporaryDirectory(prefix="ovi-spec-") as tmp:
        runs: list[tuple[str, int, int, Path | None]] = [(f"t2v {h}x{w}", h, w,
                                                          None) for h, w in params["sizes"]]
        ih, iw = params["image_size"]
        runs.append((f"i2v {ih}x{iw}", ih, iw, write_image(Path(tmp) / "first_frame.ppm", ih, iw)))
        for label, h, w, image in runs:
            with meter.stage("denoise"):
                latents = engine.denoise(text, steps=params["steps"], seed=ctx.config.seed, image=image,
                                         height=None if image else h, width=None if image else w)
                check_latents(latents, f"denoise ({label})")
            first = first or latents
            got = _observed(latents)
            latent_errors += _mismatches(label, got, _expected(facts, h, w, area))
            metrics[f"video_tokens.{label.replace(' ', '_')}"] = got["tokens"]
        detect = getattr(engine, "detect_variant", None)
        if detect is not None:
            metrics.update(_detection(detect, ctx.config.variant, Path(tmp)))
        else:
            metrics["unsupported.detection"] = "the engine offers no detect_variant(path)"

    with meter.stage("release"):
        engine.release()
    if params["decode"]:
        with meter.stage("decode"):
            media = engine.decode_latents(first)
            check_media(media)
        metrics.update({
            "video_frames": int(media.video_frames), "audio_samples": int(media.audio_samples),
            "video_duration_s": media.video_frames / media.fps,
            "audio_duration_s": media.audio_samples / media.sample_rate,
            "fps": media.fps, "sample_rate": media.sample_rate,
            "spec.video_frames": facts.video_frames, "spec.audio_samples": facts.audio_samples,
            "spec.fps": facts.fps, "spec.sample_rate": facts.sample_rate, "spec.duration_s": facts.duration_s,
            "spec.duration_max_s": facts.duration_s + DURATION_SLACK_S,
        })
    if area is not None and ctx.config.variant in params["own_area_variants"]:
        no_variant_area = ctx.engine_capabilities().why_not("features", "variant_area")
        if no_variant_area:  # Ovi 1.0: compared in docs/releases.md, not judged against the variant's area
            metrics["unsupported.own_area"] = no_variant_area
        else:
            own_metrics, own_errors = _own_area(ctx, facts)
            metrics.update(own_metrics)
            latent_errors += own_errors
    metrics.update({
        "variant.mismatches": spec_errors,
        "latents.mismatches": latent_errors,
    })
    return metrics


SCENARIO = Scenario(
    name="spec",
    description="the variant's derived facts against the engine's description, latents, decode and detection",
    axes=("variant",),
    axis_defaults={"variant": "720x720_5s"},
    params={"steps": 1, "sizes": [[704, 1280], [960, 960], [720, 720]], "image_size": [720, 1280],
            "decode": True, "area": None, "own_area_variants": [], "own_area_size": [704, 1280]},
    run=run,
    metrics=(
        *MEDIA_METRICS,
        Metric("prompt.in_variant_format", "flag"), Metric("video_tokens.*", "count"),
        Metric("own_area.video_tokens", "count"),
        Metric("spec.own_area_video_tokens", "count", "expected"),  # judged by the suite's check
        Metric("detection.by_metadata", "text"), Metric("detection.file_name_mismatches", "list"),
        Metric("detection.unknown_file", "text"), Metric("variant.mismatches", "list"),
        Metric("latents.mismatches", "list"),
    ),
    features=lambda job: ("i2v",),
)
