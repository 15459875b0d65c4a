"""Dao-AILab FlashAttention: version 2 (`flash_attn`) and the Hopper-only version 3 (`flash_attn_interface`).
Both take [B, L, H, D] as we do, so no transposes at all."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Backend, missing_package, needs_cuda, needs_half, package_version


def check_fa2(device: torch.device, dtype: torch.dtype) -> str | None:
    return (
        missing_package("flash_attn", "pip install flash-attn --no-build-isolation")
        or needs_cuda(device)
        or needs_half(dtype)
    )


def check_fa3(device: torch.device, dtype: torch.dtype) -> str | None:
    reason = (
        missing_package(
            "flash_attn_interface",
            "build it from flash-attention/hopper: cd hopper && python setup.py install",
        )
        or needs_cuda(device, nvidia_only=True)
        or needs_half(dtype)
    )
    if reason is None and torch.cuda.get_device_capability(device)[0] != 9:
        major, minor = torch.cuda.get_device_capability(device)
        reason = f"needs a Hopper GPU (sm90), this is sm{major}{minor}"
    return reason


def fa2(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v)


def fa3(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    from flash_attn_interface import flash_attn_func

    out = flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out  # older builds also return the log-sum-exp


FLASH_ATTN_BACKENDS = [
    Backend(
        name="flash_attn_2",
        kernel=f"{package_version('flash-attn', 'flash_attn')} flash_attn_func",
        fn=fa2,
        check=check_fa2,
    ),
    Backend(
        name="flash_attn_3",
        kernel=f"{package_version('flash-attn-3', 'flash_attn_3', module='flash_attn_interface')} "
               "flash_attn_func",
        fn=fa3,
        check=check_fa3,
    ),
]
