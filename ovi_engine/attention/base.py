"""Types shared by the attention backends: the backend record, its status and the unavailable error."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# q, k, v as [B, L, H, D]; k_lens int [B] or None -> [B, Lq, H, D] in q's dtype.
AttendFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]
# (device, dtype) -> why the backend cannot run there, or None when it may (a tiny call then decides).
CheckFn = Callable[[torch.device, torch.dtype], str | None]


class AttentionUnavailable(RuntimeError):
    """The requested attention backend cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    reason: str | None  # why not, when unavailable
    kernel: str | None  # what runs: a kernel description; for `auto` the backend it chose, and why
    # Seconds of the probe's first call: a JIT backend's compile time, reported apart from steady-state speed.
    first_call_s: float | None = None


def always(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


def no_hint(device: torch.device) -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    """One attention implementation. `fn` receives k_lens only when `masks` is true (and the probe
    confirmed it); otherwise the registry slices the padded keys away before calling it."""

    name: str
    kernel: str
    fn: AttendFn
    check: CheckFn = always
    masks: bool = False
    # Extra advice appended when the probe call is refused (e.g. an environment flag to set).
    refusal_hint: Callable[[torch.device], str | None] = no_hint


def key_mask(k_lens: Tensor, lk: int) -> Tensor:
    """Boolean mask [B, 1, 1, Lk], true for the keys that exist (broadcasts over heads and queries)."""
    keep = torch.arange(lk, device=k_lens.device) < k_lens[:, None]
    return keep[:, None, None, :]


def missing_package(module: str, install: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"module {module} is not installed ({install})"
    return None


def package_version(*dists: str, module: str | None = None) -> str:
    """The first installed distribution's name and version; a `module` importable without package metadata
    (a source build on PYTHONPATH, as FlashAttention-3 usually is) is named as such."""
    for dist in dists:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    if module is not None and importlib.util.find_spec(module) is not None:
        return f"{module} (source build, no package metadata)"
    return f"{dists[0]} (not installed)"


def needs_cuda(device: torch.device, *, nvidia_only: bool = False) -> str | None:
    if device.type != "cuda":
        return f"needs a CUDA GPU, got {device.type}"
    if nvidia_only and torch.version.hip is not None:
        return "needs an NVIDIA GPU, this is a ROCm build"
    return None


def needs_half(dtype: torch.dtype) -> str | None:
    if dtype not in (torch.float16, torch.bfloat16):
        return f"supports float16/bfloat16 only, got {dtype}"
    return None
