"""fp32 math attention, chunked over queries so the score matrix never exceeds a fixed budget."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Backend, key_mask

SCORE_BUDGET_BYTES = 1 << 30


def reference_attention(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None = None) -> Tensor:
    batch, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    qf = q.float().transpose(1, 2) * head_dim**-0.5
    kt = k.float().permute(0, 2, 3, 1)  # [B, H, D, Lk]
    vf = v.float().transpose(1, 2)
    mask = None if k_lens is None else key_mask(k_lens, lk)
    rows = max(1, SCORE_BUDGET_BYTES // (batch * heads * lk * 4))
    out = torch.empty(batch, heads, lq, head_dim, device=q.device, dtype=torch.float32)
    for start in range(0, lq, rows):
        scores = qf[:, :, start : start + rows] @ kt
        if mask is not None:
            scores.masked_fill_(~mask, float("-inf"))
        out[:, :, start : start + rows] = scores.softmax(dim=-1) @ vf
    return out.transpose(1, 2).to(q.dtype)


REFERENCE = Backend(
    name="reference", kernel="fp32 matmul + softmax, chunked over queries", fn=reference_attention, masks=True
)
