"""Find Ovi's checkpoint files in a user's directory: upstream's ``ckpts/`` layout or a ComfyUI models folder.

Upstream: ``Ovi/model*.safetensors``, ``Wan2.2-TI2V-5B/{models_t5_umt5-xxl-enc-bf16.pth, Wan2.2_VAE.pth,
google/umt5-xxl/}``, ``MMAudio/ext_weights/{v1-16.pth, best_netG.pt}``. ComfyUI keeps the same files under
``diffusion_models/``, ``text_encoders/`` and ``vae/``; we search by file name so either layout works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ovi_engine.variants import VARIANTS, get_variant

TEXT_ENCODER_NAMES = ("models_t5_umt5-xxl-enc-bf16.pth", "umt5-xxl-enc-bf16.pth",
                      "umt5_xxl_enc_bf16.safetensors")
VIDEO_VAE_NAMES = ("Wan2.2_VAE.pth", "wan2.2_vae.pth", "wan2.2_vae.safetensors")
AUDIO_VAE_NAMES = ("v1-16.pth",)
VOCODER_NAMES = ("best_netG.pt",)
TOKENIZER_FILES = ("spiece.model", "tokenizer.json")


class CheckpointLayoutError(FileNotFoundError):
    """A checkpoint directory lacks files; the message lists each missing part and the names searched."""

    is_input_error = True  # the user's directory, whichever stage looks


@dataclass(frozen=True)
class CheckpointFiles:
    fusion: Path
    text_encoder: Path
    tokenizer: Path
    video_vae: Path
    audio_vae: Path
    vocoder: Path


def _find(root: Path, names: tuple[str, ...]) -> list[Path]:
    wanted = set(names)
    return sorted(p for p in root.rglob("*") if p.name in wanted and p.is_file())


def _tokenizer_dir(root: Path) -> Path | None:
    for marker in TOKENIZER_FILES:
        for path in sorted(root.rglob(marker)):
            if "umt5" in str(path.parent).lower():
                return path.parent
    return None


def find_checkpoints(root: Path, variant: str | None = None) -> CheckpointFiles:
    """Locate every file; with several fusion files, ``variant`` picks one (else it is an error)."""
    if not root.is_dir():
        raise CheckpointLayoutError(f"{root}: checkpoint directory does not exist")
    fusion_names = tuple(n for spec in VARIANTS.values() for n in spec.file_names)
    if variant is not None:
        fusion_names = get_variant(variant).file_names
    fusion = _find(root, fusion_names)
    found: dict[str, Path | None] = {
        "fusion": fusion[0] if len(fusion) == 1 else None,
        "text_encoder": next(iter(_find(root, TEXT_ENCODER_NAMES)), None),
        "tokenizer": _tokenizer_dir(root),
        "video_vae": next(iter(_find(root, VIDEO_VAE_NAMES)), None),
        "audio_vae": next(iter(_find(root, AUDIO_VAE_NAMES)), None),
        "vocoder": next(iter(_find(root, VOCODER_NAMES)), None),
    }
    if len(fusion) > 1:
        names = ", ".join(p.name for p in fusion)
        raise CheckpointLayoutError(f"{root}: several Ovi checkpoints ({names}); choose one with --variant")
    searched = {
        "fusion": fusion_names, "text_encoder": TEXT_ENCODER_NAMES,
        "tokenizer": tuple(f"umt5-xxl/{m}" for m in TOKENIZER_FILES), "video_vae": VIDEO_VAE_NAMES,
        "audio_vae": AUDIO_VAE_NAMES, "vocoder": VOCODER_NAMES,
    }
    missing = [f"{part} (one of {', '.join(searched[part])})" for part, path in found.items() if path is None]
    if missing:
        raise CheckpointLayoutError(f"{root}: missing " + "; ".join(missing))
    return CheckpointFiles(**found)  # type: ignore[arg-type]
