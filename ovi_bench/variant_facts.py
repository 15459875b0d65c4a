"""What each Ovi variant implies, derived here from first principles and the variant's name only.

The harness checks an engine against this derivation, so it deliberately does not import
`ovi_engine.variants`: a bug there (a 10 s model run with 5 s latent lengths) must not hide itself by
being the reference too. Facts (shared/reference/VARIANTS.md): 24 fps and 16 kHz; the Wan2.2 VAE keeps
the first frame and then one latent frame per 4 frames, x16 per side; the DiT patches (1, 2, 2); MMAudio's
mel hop is 256 and its VAE halves the mel frame rate; audio comes in 5 s segments; frame sizes are scaled
to the variant's area and snapped to multiples of 32.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

FPS = 24
SAMPLE_RATE = 16_000
FRAMES_PER_LATENT = 4
PIXELS_PER_LATENT = 16
PATCH_HW = 2
SAMPLES_PER_AUDIO_LATENT = 2 * 256  # two mel frames per latent, 256 samples per mel frame
AUDIO_SEGMENT_S = 5
SNAP = 32
VIDEO_CHANNELS, AUDIO_CHANNELS = 48, 20
TEXT_TOKENS = 512
VARIANTS = ("720x720_5s", "720x720_5s_fp8", "960x960_5s", "960x960_10s")  # the names suites may use
_NAME = re.compile(r"^(\d+)x(\d+)_(\d+)s(_fp8)?$")


@dataclass(frozen=True)
class VariantFacts:
    name: str
    side: int
    duration_s: int
    fp8: bool
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def area(self) -> int:
        return self.side * self.side

    @property
    def video_latent_frames(self) -> int:
        return 1 + self.duration_s * self.fps // FRAMES_PER_LATENT

    @property
    def video_frames(self) -> int:
        return 1 + FRAMES_PER_LATENT * (self.video_latent_frames - 1)

    @property
    def audio_latent_length(self) -> int:
        per_segment = math.ceil(AUDIO_SEGMENT_S * self.sample_rate / SAMPLES_PER_AUDIO_LATENT)
        return per_segment * self.duration_s // AUDIO_SEGMENT_S

    @property
    def audio_samples(self) -> int:
        return self.audio_latent_length * SAMPLES_PER_AUDIO_LATENT

    @property
    def prompt_format(self) -> str:
        """720x720 was trained on <AUDCAP>...<ENDAUDCAP>, the 960 models on an 'Audio: ...' line."""
        return "audcap" if self.side == 720 else "audio_line"

    def frame_size(self, height: int | None, width: int | None, area: int | None = None) -> tuple[int, int]:
        """Scale (height, width) to the area, round, then snap each side to the nearest multiple of 32
        (Python's round: halves go to even, so 22.5 -> 22)."""
        height, width = height or self.side, width or self.side
        scale = math.sqrt((area or self.area) / (height * width))
        return tuple(max(SNAP, SNAP * round(round(side * scale) / SNAP)) for side in (height, width))  # type: ignore[return-value]

    def video_latent_shape(self, height: int | None = None, width: int | None = None,
                           area: int | None = None) -> list[int]:
        h, w = self.frame_size(height, width, area)
        return [VIDEO_CHANNELS, self.video_latent_frames, h // PIXELS_PER_LATENT, w // PIXELS_PER_LATENT]

    def audio_latent_shape(self) -> list[int]:
        return [self.audio_latent_length, AUDIO_CHANNELS]

    def video_tokens(self, height: int | None = None, width: int | None = None,
                     area: int | None = None) -> int:
        _, frames, h, w = self.video_latent_shape(height, width, area)
        return frames * (h // PATCH_HW) * (w // PATCH_HW)

    def summary(self) -> dict[str, Any]:
        """The facts an engine's own variant description must agree with."""
        return {**{k: v for k, v in asdict(self).items() if k not in ("side", "fp8")}, "area": self.area,
                "video_latent_frames": self.video_latent_frames, "video_frames": self.video_frames,
                "audio_latent_length": self.audio_latent_length, "audio_samples": self.audio_samples,
                "prompt_format": self.prompt_format}


def variant_facts(name: str) -> VariantFacts:
    match = _NAME.match(name)
    if not match or match.group(1) != match.group(2):
        raise ValueError(f"cannot derive a variant from the name {name!r} (expected e.g. 960x960_10s)")
    return VariantFacts(name, int(match.group(1)), int(match.group(3)), bool(match.group(4)))


# The file names a checkpoint of each variant goes by: upstream's ckpts/Ovi name, then ComfyUI's (the seed).
FILE_NAMES = {
    "720x720_5s": ("model.safetensors", "Ovi-11B-bf16.safetensors"),
    "720x720_5s_fp8": ("model_fp8_e4m3fn.safetensors",),
    "960x960_5s": ("model_960x960.safetensors", "Ovi-960x960-5s.safetensors"),
    "960x960_10s": ("model_960x960_10s.safetensors", "Ovi-960x960-10s.safetensors"),
}
METADATA_KEY = "ovi_variant"
