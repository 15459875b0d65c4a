"""torch.nn.functional.scaled_dot_product_attention: PyTorch's own choice, or one kernel pinned.

Pinning uses sdpa_kernel([one backend]) so a refused kernel raises instead of silently falling back.
SDPA takes [B, H, L, D]; the transposed views of our [B, L, H, D] tensors are passed as they are (the
fused kernels only need the head dim contiguous) and the output comes back in q's memory order.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import Backend, key_mask, needs_cuda

ROCM_FLAG = "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"


def sdpa(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    mask = None if k_lens is None else key_mask(k_lens, k.shape[1])
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def pinned(kernel: SDPBackend):
    def attend_pinned(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
        with sdpa_kernel([kernel]):
            return sdpa(q, k, v, k_lens)

    return attend_pinned


def aotriton_hint(device: torch.device) -> str | None:
    if torch.version.hip is not None and os.environ.get(ROCM_FLAG) != "1":
        return f"{ROCM_FLAG} is unset: export {ROCM_FLAG}=1 to enable AOTriton's kernels on this GPU"
    return None


def cuda_only(device: torch.device, dtype: torch.dtype) -> str | None:
    return needs_cuda(device)


def nvidia_only(device: torch.device, dtype: torch.dtype) -> str | None:
    return needs_cuda(device, nvidia_only=True)


SDPA_BACKENDS = [
    Backend(name="sdpa", kernel="F.scaled_dot_product_attention, PyTorch's choice", fn=sdpa, masks=True),
    # Flash refuses arbitrary masks on CUDA; the probe finds that out and k_lens then slices keys.
    Backend(
        name="sdpa_flash",
        kernel="SDPBackend.FLASH_ATTENTION",
        fn=pinned(SDPBackend.FLASH_ATTENTION),
        masks=True,
        refusal_hint=aotriton_hint,
    ),
    Backend(
        name="sdpa_cudnn",
        kernel="SDPBackend.CUDNN_ATTENTION",
        fn=pinned(SDPBackend.CUDNN_ATTENTION),
        check=nvidia_only,
        masks=True,
    ),
    Backend(
        name="sdpa_efficient",
        kernel="SDPBackend.EFFICIENT_ATTENTION",
        fn=pinned(SDPBackend.EFFICIENT_ATTENTION),
        check=cuda_only,
        masks=True,
        refusal_hint=aotriton_hint,
    ),
    Backend(name="sdpa_math", kernel="SDPBackend.MATH", fn=pinned(SDPBackend.MATH), masks=True),
]
