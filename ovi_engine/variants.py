"""The Ovi variants, derived from first principles rather than typed in, and how a
checkpoint names its variant.

A 10 s clip that silently runs with 5 s latent lengths is the bug this file exists to make impossible: every
length below follows from the frame rate, the duration, the VAE strides and the audio hop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

FPS = 24
SAMPLE_RATE = 16_000
VIDEO_TIME_STRIDE = 4  # Wan2.2 VAE: one latent frame per 4 video frames, after the first
VIDEO_SPACE_STRIDE = 16  # Wan2.2 VAE: x16 per side (three x2 levels and the 2x2 patchify)
VIDEO_PATCH = (1, 2, 2)  # DiT patch embedding over (frames, h, w) of the latent
MEL_HOP = 256  # MMAudio 16 kHz mel hop = BigVGAN's total upsampling
AUDIO_LATENT_DOWNSAMPLE = 2  # MMAudio VAE halves the mel frame rate
AUDIO_SEGMENT_S = 5  # Ovi's audio is laid out in 5 s segments; the 10 s model uses two of them
VIDEO_LATENT_CHANNELS = 48
AUDIO_LATENT_CHANNELS = 20
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class VariantSpec:
    """Everything about a variant that changes shapes; the rest of the architecture is shared."""

    name: str
    duration_s: int
    side: int  # the variant's nominal square side: area = side²
    checkpoint_dtype: str  # "bfloat16" or "float8_e4m3fn"
    prompt_format: str  # "audcap" (<AUDCAP>…<ENDAUDCAP>) or "audio_line" (Audio: …)
    file_names: tuple[str, ...]  # upstream ckpts/Ovi name first, then ComfyUI names
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def area(self) -> int:
        return self.side * self.side

    @property
    def video_latent_frames(self) -> int:
        return 1 + self.duration_s * self.fps // VIDEO_TIME_STRIDE

    @property
    def video_frames(self) -> int:
        return 1 + VIDEO_TIME_STRIDE * (self.video_latent_frames - 1)

    @property
    def audio_latent_length(self) -> int:
        per_segment = math.ceil(AUDIO_SEGMENT_S * self.sample_rate / (MEL_HOP * AUDIO_LATENT_DOWNSAMPLE))
        return per_segment * (self.duration_s // AUDIO_SEGMENT_S)

    @property
    def audio_samples(self) -> int:
        return self.audio_latent_length * AUDIO_LATENT_DOWNSAMPLE * MEL_HOP

    def frame_size(self, height: int | None = None, width: int | None = None, area: int | None = None
                   ) -> tuple[int, int]:
        """Scale a requested size to the variant's area and snap each side to a multiple of 32 (as upstream).

        ``area`` overrides the variant's own (CPU smoke runs decode small frames; lengths are unchanged)."""
        height, width = height or self.side, width or self.side
        scale = math.sqrt((area or self.area) / (height * width))
        snap = lambda x: max(SIZE_MULTIPLE, SIZE_MULTIPLE * round(round(x * scale) / SIZE_MULTIPLE))
        return snap(height), snap(width)

    def video_latent_shape(self, height: int | None = None, width: int | None = None, area: int | None = None
                           ) -> tuple[int, ...]:
        h, w = self.frame_size(height, width, area)
        return (VIDEO_LATENT_CHANNELS, self.video_latent_frames, h // VIDEO_SPACE_STRIDE,
                w // VIDEO_SPACE_STRIDE)

    def audio_latent_shape(self) -> tuple[int, int]:
        return (self.audio_latent_length, AUDIO_LATENT_CHANNELS)

    def video_tokens(self, height: int | None = None, width: int | None = None,
                     area: int | None = None) -> int:
        _, f, h, w = self.video_latent_shape(height, width, area)
        pf, ph, pw = VIDEO_PATCH
        return (f // pf) * (h // ph) * (w // pw)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name, "fps": self.fps, "sample_rate": self.sample_rate, "area": self.area,
            "duration_s": self.duration_s, "video_latent_frames": self.video_latent_frames,
            "audio_latent_length": self.audio_latent_length, "video_frames": self.video_frames,
            "audio_samples": self.audio_samples, "checkpoint_dtype": self.checkpoint_dtype,
            "prompt_format": self.prompt_format,
        }


VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("720x720_5s", 5, 720, "bfloat16", "audcap",
                    ("model.safetensors", "Ovi-11B-bf16.safetensors")),
        VariantSpec("720x720_5s_fp8", 5, 720, "float8_e4m3fn", "audcap",
                    ("model_fp8_e4m3fn.safetensors", "Ovi-11B-fp8.safetensors")),
        VariantSpec("960x960_5s", 5, 960, "bfloat16", "audio_line",
                    ("model_960x960.safetensors", "Ovi-960x960-5s.safetensors")),
        VariantSpec("960x960_10s", 10, 960, "bfloat16", "audio_line",
                    ("model_960x960_10s.safetensors", "Ovi-960x960-10s.safetensors")),
    )
}

METADATA_KEY = "ovi_variant"  # safetensors metadata key our files (and well-behaved forks) carry
FINGERPRINTS_ENV = "OVI_BENCH_FINGERPRINTS"  # path of a user's JSON {fingerprint: variant}


class UnknownVariantError(ValueError):
    """The variant of a checkpoint cannot be established; the message lists the ways to name it."""


def get_variant(name: str) -> VariantSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UnknownVariantError(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}") from None


def fingerprint(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """A content fingerprint of a checkpoint: its header plus the first MiB of tensor data (fast on 23 GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(8 + sample_bytes))
    return h.hexdigest()[:32]


@dataclass
class FingerprintRegistry:
    """Known checkpoint fingerprints; users extend it with a JSON file (``OVI_BENCH_FINGERPRINTS``)."""

    known: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> FingerprintRegistry:
        path = os.environ.get(FINGERPRINTS_ENV)
        return cls(dict(json.loads(Path(path).read_text()))) if path and Path(path).is_file() else cls()

    def add(self, path: str | Path, variant: str) -> str:
        get_variant(variant)
        fp = fingerprint(path)
        self.known[fp] = variant
        return fp

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.known, indent=1, sort_keys=True))


@dataclass(frozen=True)
class Detection:
    variant: VariantSpec
    how: str  # "explicit" | "metadata" | "file name" | "fingerprint"


def detect_variant(
    path: str | Path | None = None, *, explicit: str | None = None,
    registry: FingerprintRegistry | None = None
) -> Detection:
    """Name the variant of a checkpoint: explicit name, else file metadata, else file name, else fingerprint.

    The three bf16 variants share one tensor schema, so their shapes cannot tell them apart; an unknown file
    is an error, never a silent default.
    """
    if explicit:
        return Detection(get_variant(explicit), "explicit")
    if path is None:
        raise UnknownVariantError("no variant given and no checkpoint to detect it from; pass --variant")
    path = Path(path)
    from ovi_engine.weights import read_metadata

    meta = read_metadata(path) if path.is_file() else {}
    if METADATA_KEY in meta:
        return Detection(get_variant(meta[METADATA_KEY]), "metadata")
    for spec in VARIANTS.values():
        if path.name in spec.file_names:
            return Detection(spec, "file name")
    registry = registry or FingerprintRegistry.from_env()
    if path.is_file() and (fp := fingerprint(path)) in registry.known:
        return Detection(get_variant(registry.known[fp]), "fingerprint")
    names = ", ".join(n for s in VARIANTS.values() for n in s.file_names)
    raise UnknownVariantError(
        f"{path.name}: cannot tell which Ovi variant this is. Name it with --variant "
        f"({', '.join(VARIANTS)}), add '{METADATA_KEY}' to the file's metadata, use a known file name "
        f"({names}), or register its fingerprint in the JSON file named by {FINGERPRINTS_ENV}"
    )
