"""xformers' memory_efficient_attention, which dispatches to its own best kernel; takes [B, L, H, D]."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Backend, missing_package, needs_cuda, package_version


def check(device: torch.device, dtype: torch.dtype) -> str | None:
    return missing_package("xformers", "pip install xformers") or needs_cuda(device)


def xformers_attention(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    from xformers.ops import memory_efficient_attention

    return memory_efficient_attention(q, k, v)


XFORMERS = Backend(
    name="xformers",
    kernel=f"{package_version('xformers')} memory_efficient_attention",
    fn=xformers_attention,
    check=check,
)
