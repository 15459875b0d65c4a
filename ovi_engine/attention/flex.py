"""torch.nn.attention.flex_attention: compiled with torch.compile on CUDA, eager (unfused) elsewhere."""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from .base import Backend


@functools.cache
def compiled_flex():
    # One graph per distinct shape: Ovi has six per variant plus the probe's two. Past dynamo's recompile
    # limit (default 8) flex would silently drop to its unfused eager path, so raise the limit.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


def flex(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    run = compiled_flex() if q.device.type == "cuda" else flex_attention
    block_mask = None
    if k_lens is not None:

        def keep(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return kv_idx < k_lens[b]

        block_mask = create_block_mask(keep, q.shape[0], None, q.shape[1], k.shape[1], device=q.device)
    out = run(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask)
    return out.transpose(1, 2)


FLEX = Backend(
    name="flex", kernel="flex_attention (torch.compile on CUDA, eager elsewhere)", fn=flex, masks=True
)
