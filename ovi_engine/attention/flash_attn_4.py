"""FlashAttention-4 (PyPI `flash-attn-4`, module `flash_attn.cute`): CuTe-DSL kernels for Hopper and
Blackwell, JIT-compiled on the first call of each configuration (the probe's call pays that, see
BackendStatus.first_call_s). Takes [B, L, H, D] as we do and returns (out, lse)."""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .base import Backend, needs_cuda, needs_half, package_version

INSTALL = "pip install 'ovi-bench[fa4]' (flash-attn-4==4.0.0b36)"


def missing_fa4() -> str | None:
    # `flash_attn` may be FlashAttention-2's package, which has no `cute` submodule.
    try:
        found = importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:  # no `flash_attn` package at all
        found = False
    return None if found else f"module flash_attn.cute is not installed ({INSTALL})"


def check(device: torch.device, dtype: torch.dtype) -> str | None:
    reason = missing_fa4() or needs_cuda(device, nvidia_only=True) or needs_half(dtype)
    if reason is None and torch.cuda.get_device_capability(device)[0] < 9:
        major, minor = torch.cuda.get_device_capability(device)
        reason = f"needs a Hopper or Blackwell GPU (sm90 or newer), this is sm{major}{minor}"
    return reason


def fa4(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    from flash_attn.cute import flash_attn_func

    out = flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out  # (out, lse), lse None unless asked for


FLASH_ATTN_4 = Backend(
    name="flash_attn_4",
    kernel=f"{package_version('flash-attn-4')} flash_attn.cute.flash_attn_func (CuTe-DSL, JIT)",
    fn=fa4,
    check=check,
)
