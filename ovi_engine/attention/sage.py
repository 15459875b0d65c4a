"""SageAttention (PyPI `sageattention`): quantized QK^T (int8), so its error is larger than bf16 kernels'."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Backend, missing_package, needs_cuda, needs_half, package_version


def check(device: torch.device, dtype: torch.dtype) -> str | None:
    return (
        missing_package("sageattention", "pip install sageattention")
        or needs_cuda(device)
        or needs_half(dtype)
    )


def sage(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


SAGE = Backend(name="sage", kernel=f"{package_version('sageattention')} sageattn", fn=sage, check=check)
