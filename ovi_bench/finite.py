"""The harness's own look at what an engine returns: NaN or Inf in latents or media fails the case.

An engine may check its own loop (the reference engine raises on a non-finite prediction), but the harness
does not rely on it: every scenario passes what `denoise` and `decode_latents` returned through
`require_finite`, inside the stage that produced it, so the case ends `error` in that stage with one line
naming the stage and the tower (video, audio).
"""

from __future__ import annotations

from typing import Any


class NonFiniteOutput(RuntimeError):
    """An engine returned NaN or Inf; the message names the stage and the tower."""


def _counts(value: Any) -> tuple[int, int, int] | None:
    """(NaN count, Inf count, element count) of a floating tensor or array; None for anything else."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return None
        value = value.detach()
        if bool(torch.isfinite(value).all()):  # one pass (and one sync) in the common case
            return 0, 0, value.numel()
        return int(torch.isnan(value).sum()), int(torch.isinf(value).sum()), value.numel()
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        if bool(np.isfinite(value).all()):
            return 0, 0, int(value.size)
        return int(np.isnan(value).sum()), int(np.isinf(value).sum()), int(value.size)
    return None


def non_finite(stage: str, towers: dict[str, Any]) -> str | None:
    """One line naming the first tower whose tensor holds NaN or Inf, or None when all are finite."""
    for tower, value in towers.items():
        counts = _counts(value)
        if counts is not None and (counts[0] or counts[1]):
            nan, inf, total = counts
            return (f"non-finite output after {stage}: the {tower} tower holds {nan} NaN and {inf} Inf "
                    f"of {total} values")
    return None


def require_finite(stage: str, towers: dict[str, Any]) -> None:
    message = non_finite(stage, towers)
    if message is not None:
        raise NonFiniteOutput(message)


def check_latents(latents: Any, stage: str = "denoise") -> None:
    """The video and audio latents an engine's denoise returned."""
    require_finite(stage, {"video": latents.video, "audio": latents.audio})


def check_media(media: Any, stage: str = "decode") -> None:
    """The decoded video and audio, where the engine's media carries them (`video`, `audio` tensors)."""
    require_finite(stage, {t: getattr(media, t) for t in ("video", "audio") if hasattr(media, t)})
