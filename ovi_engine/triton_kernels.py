"""Hand-written Triton kernels for the memory-bound steps of a fusion block that torch leaves slow on a GPU.

norm_rope: the query/key RMSNorm + RoPE of the attentions, one read of the projection and one write.
Why not torch.compile's kernel for dit.rms_norm_rope: on an H200 at 960x960_10s it took 118.5 ms of a
5.2 s step, 0.68 ms for each of the 175 calls a step makes on the 54,900 video tokens. That is about
1 TB/s for reading and writing 337 MB, a quarter of the card's copy speed
(benchmarks/results/h200-141gb_2026-12-02d/results/profile_960x960_10s_fa4.json). Here one program
normalizes one token's full width in fp32, rounds to the input's dtype as the eager F.rms_norm does, and
rotates each (even, odd) channel pair by the token's angle, as dit.rotate_pairs does.

gated_residual_: x += y * gate with the gate broadcast over each time group's tokens. Eager `addcmul_` with
a broadcast operand takes torch's unvectorized elementwise path: 81.7 ms of the same step for about 40 ms
of traffic at the card's copy speed.

layer_norm: LayerNorm, then a multiply-add by rows broadcast over each time group: Wan's modulation
(1 + scale, shift) or a LayerNorm's own weight and bias. With FA3 on the H200 at 960x960_10s,
torch.compile's modulate took 79.2 ms of a 5.06 s step, about 1.0 TB/s over the 79.5 GB it reads and
writes, and eager F.layer_norm with weight and bias about 2 TB/s
(benchmarks/results/h200-141gb_2026-12-04/first/results/profile_960x960_10s_fa3.json). One program holds one
token's full width in registers, so x is read once.

CUDA only (dit.py falls back elsewhere). `TRITON_INTERPRET=1` runs them on CPU tensors, which is how the
tests check them without a GPU when Triton is installed.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

AVAILABLE = importlib.util.find_spec("triton") is not None

if AVAILABLE:
    import triton
    import triton.language as tl

    @triton.jit
    def _norm_rope_kernel(x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr, plain_ptr, tokens, eps,
                          WIDTH: tl.constexpr, HALF_HEAD: tl.constexpr, PAIRS_BLOCK: tl.constexpr,
                          WITH_PLAIN: tl.constexpr):
        row = tl.program_id(0)  # one token of one batch element
        token = row % tokens
        pair = tl.arange(0, PAIRS_BLOCK)
        inside = pair < WIDTH // 2
        both = 2 * pair[:, None] + tl.arange(0, 2)[None, :]  # [pairs, 2]: the pair's two channels
        mask = inside[:, None]
        x = tl.load(x_ptr + row * WIDTH + both, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + both, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(tl.sum(x * x, axis=1), axis=0) / WIDTH + eps)
        normed = (x * rstd * w).to(out_ptr.dtype.element_ty)  # rounded before the rotation, as eager
        if WITH_PLAIN:
            tl.store(plain_ptr + row * WIDTH + both, normed, mask=mask)
        even, odd = tl.split(normed.to(tl.float32))
        angle = token * HALF_HEAD + pair % HALF_HEAD  # the angle tables are [tokens, 1, head_dim / 2]
        cos = tl.load(cos_ptr + angle, mask=inside, other=0.0)
        sin = tl.load(sin_ptr + angle, mask=inside, other=0.0)
        rotated = tl.join(even * cos - odd * sin, even * sin + odd * cos)
        tl.store(out_ptr + row * WIDTH + both, rotated.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gated_residual_kernel(x_ptr, y_ptr, gate_ptr, group_tokens, xb, xg, xs, yb, yg, ys, gb, gg,
                               WIDTH: tl.constexpr, BLOCK: tl.constexpr):
        token, batch = tl.program_id(0), tl.program_id(1)  # token counts over all groups of one batch row
        group, inside = token // group_tokens, token % group_tokens
        channel = tl.arange(0, BLOCK)
        mask = channel < WIDTH
        x_at = x_ptr + batch * xb + group * xg + inside * xs + channel
        x = tl.load(x_at, mask=mask).to(tl.float32)
        y = tl.load(y_ptr + batch * yb + group * yg + inside * ys + channel, mask=mask).to(tl.float32)
        gate = tl.load(gate_ptr + batch * gb + group * gg + channel, mask=mask).to(tl.float32)
        tl.store(x_at, (x + y * gate).to(x_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _layer_norm_kernel(x_ptr, mul_ptr, add_ptr, out_ptr, group_tokens, eps, xb, xg, xs, mb, mg, ab, ag,
                           WIDTH: tl.constexpr, BLOCK: tl.constexpr, ROUND_NORMED: tl.constexpr):
        token, batch = tl.program_id(0), tl.program_id(1)
        group, inside = token // group_tokens, token % group_tokens
        channel = tl.arange(0, BLOCK)
        mask = channel < WIDTH
        x = tl.load(x_ptr + batch * xb + group * xg + inside * xs + channel, mask=mask, other=0.0)
        x = x.to(tl.float32)
        centred = tl.where(mask, x - tl.sum(x, axis=0) / WIDTH, 0.0)
        normed = centred * tl.rsqrt(tl.sum(centred * centred, axis=0) / WIDTH + eps)
        if ROUND_NORMED:  # eager modulate multiplies F.layer_norm's output, already in x's dtype
            normed = normed.to(x_ptr.dtype.element_ty).to(tl.float32)
        mul = tl.load(mul_ptr + batch * mb + group * mg + channel, mask=mask).to(tl.float32)
        add = tl.load(add_ptr + batch * ab + group * ag + channel, mask=mask).to(tl.float32)
        out_at = out_ptr + (batch * tl.num_programs(0) + token) * WIDTH + channel
        tl.store(out_at, (normed * mul + add).to(out_ptr.dtype.element_ty), mask=mask)


def norm_rope(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor, heads: int,
              with_plain: bool = False) -> tuple[Tensor, Tensor | None]:
    """x [B, L, C] -> (normed + RoPE [B, L, heads, C/heads], normed [same] when with_plain, else None).
    cos, sin: [L, 1, C/heads/2] float32, one angle per token and channel pair (dit.TowerState)."""
    b, tokens, width = x.shape
    x = x.contiguous()
    out = torch.empty_like(x)
    plain = torch.empty_like(x) if with_plain else out  # an unused pointer when not asked for
    _norm_rope_kernel[(b * tokens,)](
        x, weight, cos.contiguous(), sin.contiguous(), out, plain, tokens, eps,
        WIDTH=width, HALF_HEAD=width // heads // 2, PAIRS_BLOCK=triton.next_power_of_2(width // 2),
        WITH_PLAIN=with_plain, num_warps=8 if width >= 2048 else 4,
    )
    shape = (b, tokens, heads, width // heads)
    return out.view(shape), plain.view(shape) if with_plain else None


def gated_residual_(x: Tensor, y: Tensor, gate: Tensor) -> None:
    """x += y * gate in place. x, y: [B, G, S, C], any strides but unit channel stride (x may be a slice of
    the hidden state); gate: [B, G, 1, C], one row per time group (a view into the modulation table)."""
    b, groups, tokens, width = x.shape
    assert y.shape == x.shape and gate.shape == (b, groups, 1, width)
    assert x.stride(3) == y.stride(3) == gate.stride(3) == 1
    _gated_residual_kernel[(groups * tokens, b)](
        x, y, gate, tokens, *x.stride()[:3], *y.stride()[:3], *gate.stride()[:2],
        WIDTH=width, BLOCK=triton.next_power_of_2(width), num_warps=4,
    )


def layer_norm(x: Tensor, mul: Tensor, add: Tensor, eps: float, round_normed: bool,
               out_dtype: torch.dtype | None = None) -> Tensor:
    """LayerNorm(x) * mul + add, new and contiguous. x: [B, G, S, C], any strides but a unit channel stride
    (the FFN's chunks are slices of groups); mul, add: [B, G, 1, C] or broadcastable to it (a LayerNorm's
    [C] weight). round_normed rounds the norm to x's dtype before the multiply-add, as eager modulate
    (F.layer_norm, then addcmul) does; otherwise one rounding at the end, as F.layer_norm's affine does.
    out_dtype: by default the promotion of x, mul and add, as modulate's addcmul gives; F.layer_norm keeps
    x's dtype whatever its weight's."""
    b, groups, tokens, width = x.shape
    assert x.stride(3) == 1
    mul, add = (t.expand(b, groups, 1, width) for t in (mul, add))
    assert mul.stride(3) == add.stride(3) == 1
    dtype = out_dtype or torch.promote_types(torch.promote_types(x.dtype, mul.dtype), add.dtype)
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    _layer_norm_kernel[(groups * tokens, b)](
        x, mul, add, out, tokens, eps, *x.stride()[:3], *mul.stride()[:2], *add.stride()[:2],
        WIDTH=width, BLOCK=triton.next_power_of_2(width), ROUND_NORMED=round_normed,
        num_warps=8 if width >= 2048 else 4,
    )
    return out
