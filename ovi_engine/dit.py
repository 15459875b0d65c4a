"""One Wan-style DiT tower of Ovi (video or audio): embeddings, transformer blocks, head and RoPE.

Ovi runs two towers side by side; `fusion.py` orders the work of each block pair. The module names follow
upstream's checkpoint keys exactly (`blocks.N.self_attn.q`, `ffn.0`, `modulation.modulation`, ...).

Where this differs from upstream's code (same math, leaner on time and memory):
- The six-way timestep modulation is computed once per time group (a latent frame for video, the whole
  clip for audio) and broadcast over that group's tokens, instead of materialized per token.
- RoPE angles become fp32 cos/sin tables once per forward, applied in place in token chunks, or as one
  fused kernel with `compile_helpers()` (upstream: float64 complex copies of q and k in every attention).
- The FFN runs in token chunks, so its 4.7x wide intermediate never exists for all tokens at once.
- Residual updates are fused multiply-adds in place on the hidden state; everything stays in the weights'
  dtype (bf16), with F.layer_norm / F.rms_norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovi_engine import triton_kernels
from ovi_engine.attention import attend

if TYPE_CHECKING:
    from ovi_engine.parallel import SequenceShard

ROPE_THETA = 10000.0
ROPE_CHUNK_TOKENS = 8192  # bounds an eager RoPE's fp32 temporaries (8 bytes per element of the chunk)
FFN_CHUNK_TOKENS = 8192  # bounds the FFN intermediate: 8192 x 14336 bf16 = 235 MB at full size


@dataclass(frozen=True)
class TowerConfig:
    modality: str  # "video" (Conv3d patches, 3-D RoPE) or "audio" (conv-MLP embedding, scaled 1-D RoPE)
    in_dim: int  # latent channels: 48 video, 20 audio; the output has as many
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    patch_size: tuple[int, ...]  # (1, 2, 2) for video; (1,) for audio (no patching)
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    eps: float = 1e-6
    rope_scale: float = 1.0  # audio: 0.19676, so audio positions line up with video frames
    embed_kernel: int = 7  # audio patch embedding: kernel of its 1-D convolutions

    def __post_init__(self) -> None:
        if self.modality not in ("video", "audio"):
            raise ValueError(f"modality must be 'video' or 'audio', got {self.modality!r}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even size")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def embed_hidden(self) -> int:
        """Hidden width of the audio embedding's conv SwiGLU: 2/3 of 4*dim, rounded up
        to 256 (8192 at 3072)."""
        return 256 * math.ceil(int(2 * 4 * self.dim / 3) / 256)


# ---- elementwise helpers (the only things `compile_helpers` compiles) ---------------------------------
def modulate(x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
    """LayerNorm without affine, then Wan's adaptive shift/scale. x [B,G,S,C]; shift, scale [B,G,1,C]."""
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=eps), 1 + scale)


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the (even, odd) channel pairs of x [B,l,H,D] by per-token angles (cos, sin [l,1,D/2], fp32).

    Real arithmetic, so that torch.compile makes it one kernel (inductor does not generate complex code).
    """
    even, odd = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).type_as(x)


def rotate_pairs_complex(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """`rotate_pairs` as one complex multiply: the fewest passes over x in eager mode. Returns fp32."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)


def rms_norm_rope(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor, heads: int) -> Tensor:
    """Query/key RMSNorm over the full width, split into heads, then RoPE: one kernel when compiled."""
    y = F.rms_norm(x, x.shape[-1:], weight, eps).unflatten(-1, (heads, -1))
    return rotate_pairs(y, cos, sin)


def rms_norm_with_rope(
    x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor, heads: int
) -> tuple[Tensor, Tensor]:
    """The cross-attention query both ways, from one read of x: normed (for the text) and normed + RoPE
    (for the other tower)."""
    y = F.rms_norm(x, x.shape[-1:], weight, eps).unflatten(-1, (heads, -1))
    return y, rotate_pairs(y, cos, sin)


_modulate = modulate
_compiled_rotate: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
_compiled_norm_rope: Callable[..., Tensor] | None = None
_compiled_norm_with_rope: Callable[..., tuple[Tensor, Tensor]] | None = None


def compile_helpers() -> None:
    """torch.compile the elementwise helpers (one fused kernel each); process-wide, as in gpt-fast."""
    global _modulate, _compiled_rotate, _compiled_norm_rope, _compiled_norm_with_rope
    _modulate = torch.compile(modulate)
    _compiled_rotate = torch.compile(rotate_pairs)
    _compiled_norm_rope = torch.compile(rms_norm_rope)
    _compiled_norm_with_rope = torch.compile(rms_norm_with_rope)


def _hand_fused(x: Tensor) -> bool:
    """With compiled helpers on an NVIDIA GPU, the q/k norm + RoPE, the LayerNorms (modulated or affine) and
    the gated residuals run the kernels of triton_kernels, faster there than torch.compile's and eager
    torch's for the same math."""
    return x.is_cuda and torch.version.hip is None and triton_kernels.AVAILABLE


def _kernels_for(x: Tensor) -> bool:
    return _compiled_norm_rope is not None and _hand_fused(x)  # compiled helpers on, on an NVIDIA GPU


def modulated(x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
    """`modulate` (x [B,G,S,C]; shift, scale [B,G,1,C]): the kernel, or the compiled or eager helper."""
    if _kernels_for(x):
        return triton_kernels.layer_norm(x, 1 + scale, shift, eps, round_normed=True)
    return _modulate(x, shift, scale, eps)


def layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """norm(x) for x [B, L, C], through the kernel when the other helpers use theirs."""
    if not _kernels_for(x):
        return norm(x)
    assert norm.weight is not None and norm.bias is not None
    b, tokens, width = x.shape
    out = triton_kernels.layer_norm(x.unsqueeze(1), norm.weight, norm.bias, norm.eps,
                                    round_normed=False, out_dtype=x.dtype)
    return out.view(b, tokens, width)


def norm_rope(norm: nn.RMSNorm, x: Tensor, cos: Tensor, sin: Tensor, heads: int) -> Tensor:
    """`rms_norm_rope` fused when compiled; else the eager norm, then `apply_rope` in place."""
    assert norm.eps is not None
    if _compiled_norm_rope is not None:
        if _hand_fused(x):
            return triton_kernels.norm_rope(x, norm.weight, norm.eps, cos, sin, heads)[0]
        return _compiled_norm_rope(x, norm.weight, norm.eps, cos, sin, heads)
    return apply_rope(norm(x).unflatten(-1, (heads, -1)), cos, sin)


def norm_with_rope(norm: nn.RMSNorm, x: Tensor, cos: Tensor, sin: Tensor,
                   heads: int) -> tuple[Tensor, Tensor | None]:
    """The cross-attention query, normed and split into heads, and with RoPE too when that comes from the
    same read of x (compiled helpers); None leaves the rotation to the caller."""
    assert norm.eps is not None
    if _compiled_norm_with_rope is None:
        return norm(x).unflatten(-1, (heads, -1)), None
    if _hand_fused(x):
        roped, plain = triton_kernels.norm_rope(x, norm.weight, norm.eps, cos, sin, heads, with_plain=True)
        assert plain is not None
        return plain, roped
    return _compiled_norm_with_rope(x, norm.weight, norm.eps, cos, sin, heads)


def gated_residual_(x: Tensor, y: Tensor, gate: Tensor) -> None:
    """x += y * gate in place, the gate [B,G,1,C] broadcast over each time group of x [B,G,S,C]."""
    if _kernels_for(x):
        triton_kernels.gated_residual_(x, y, gate)
    else:
        x.addcmul_(y, gate)


def linear_gelu(layer: nn.Linear, x: Tensor) -> Tensor:
    """Linear + tanh GELU. On CUDA cuBLASLt applies the GELU in the matmul's epilogue (no extra pass over
    the 4.7x wide intermediate); elsewhere that op means exact GELU, so the two steps stay separate."""
    if x.is_cuda:
        flat = torch._addmm_activation(layer.bias, x.reshape(-1, x.shape[-1]), layer.weight.t(),
                                       use_gelu=True)
        return flat.view(*x.shape[:-1], -1)
    return F.gelu(layer(x), approximate="tanh")


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on x [B,L,H,D]: one fused kernel when compiled; else in place, in token chunks that bound the
    fp32 temporaries. Use the returned tensor."""
    if _compiled_rotate is not None:
        return _compiled_rotate(x, cos, sin)
    for start in range(0, x.shape[1], ROPE_CHUNK_TOKENS):
        part = slice(start, start + ROPE_CHUNK_TOKENS)
        x[:, part] = rotate_pairs_complex(x[:, part], cos[part], sin[part])
    return x


# ---- positions and timesteps ----------------------------------------------------------------------------
def axis_frequencies(dims: int, device: torch.device | str | None = None) -> Tensor:
    """Angular speeds of one RoPE axis spanning `dims` channels (dims/2 pairs): theta^(-2j/dims), float64."""
    return ROPE_THETA ** (-torch.arange(0, dims, 2, dtype=torch.float64, device=device) / dims)


def rope_angles(grid: tuple[int, ...], head_dim: int, scale: float, device: torch.device | str) -> Tensor:
    """Rotation angle of every (token, pair): [L, head_dim/2] float64.

    3-D grid (video patches): the pairs split into frame/row/column axes, head_dim - 4*(head_dim//6) channels
    for time and 2*(head_dim//6) each for rows and columns ([22, 21, 21] pairs at head_dim 128).
    1-D grid (audio): only the time axis's pairs rotate, with angles times `scale`; the rest pass through.
    """
    side = 2 * (head_dim // 6)
    axis_dims = (head_dim - 2 * side, side, side)[: len(grid)]
    per_axis = [
        torch.arange(n, dtype=torch.float64, device=device)[:, None] * axis_frequencies(dims, device)
        for n, dims in zip(grid, axis_dims)
    ]
    mesh = torch.meshgrid(*[torch.arange(n, device=device) for n in grid], indexing="ij")
    angles = torch.cat([table[index.reshape(-1)] for table, index in zip(per_axis, mesh)], dim=1) * scale
    return F.pad(angles, (0, head_dim // 2 - angles.shape[1]))


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Wan's timestep features: [...] -> [..., dim] float64, cosines then sines, periods up to 10000."""
    half = dim // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


# ---- per-forward state ----------------------------------------------------------------------------------
@dataclass
class TowerState:
    """What one tower carries through the blocks of one forward; `x` is updated in place."""

    x: Tensor  # hidden tokens [B, L, C]
    e: Tensor  # time embedding per group [B, G, C] (the head's modulation)
    e0: Tensor  # six-way modulation per group [B, G, 6, C]
    context: Tensor  # embedded text [B, text_len, C]
    cos: Tensor  # RoPE tables [L, 1, head_dim/2] fp32
    sin: Tensor
    grid: tuple[int, ...]  # patch grid (F, h, w) for video, (L,) for audio
    shard: SequenceShard | None = None  # set when the tokens are split over ranks (parallel.py)

    def grouped(self) -> Tensor:
        """x as [B, G, S, C]: G time groups of S tokens, to broadcast per-group modulation."""
        b, _, c = self.x.shape
        return self.x.view(b, self.e.shape[1], -1, c)


# ---- layers -------------------------------------------------------------------------------------------
class ConvSwiGLU(nn.Module):
    """SwiGLU whose three projections are 1-D convolutions over time (MMAudio's ConvMLP); channels first."""

    def __init__(self, dim: int, hidden: int, kernel: int):
        super().__init__()
        self.w1 = nn.Conv1d(dim, hidden, kernel, padding=kernel // 2, bias=False)
        self.w2 = nn.Conv1d(hidden, dim, kernel, padding=kernel // 2, bias=False)
        self.w3 = nn.Conv1d(dim, hidden, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class AttentionProjections(nn.Module):
    """The q/k/v/o projections and q/k RMSNorms every Wan attention layer has (upstream's key names)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)


class SelfAttention(AttentionProjections):
    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, backend: str,
                shard: SequenceShard | None) -> Tensor:
        q = norm_rope(self.norm_q, self.q(x), cos, sin, self.num_heads)
        k = norm_rope(self.norm_k, self.k(x), cos, sin, self.num_heads)
        v = self.v(x).unflatten(-1, (self.num_heads, -1))
        out = attend(q, k, v, backend=backend) if shard is None else shard.attend(q, k, v, shard, backend)
        del q, k, v  # free them before the output projection allocates
        return self.o(out.flatten(2))


class CrossAttention(AttentionProjections):
    """Text cross-attention plus Ovi's fusion attention to the other tower's tokens.

    One query serves both: without RoPE against the text, with this tower's RoPE against the other tower's
    keys (which carry the other tower's RoPE, so audio and video meet on the shared time axis). The two
    attention outputs are summed before the output projection.
    """

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__(dim, num_heads, eps)
        self.k_fusion = nn.Linear(dim, dim)
        self.v_fusion = nn.Linear(dim, dim)
        self.pre_attn_norm_fusion = nn.LayerNorm(dim, eps=eps)
        self.norm_k_fusion = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: Tensor, own: TowerState, other: TowerState, other_x: Tensor, backend: str) -> Tensor:
        b, h = x.shape[0], self.num_heads
        q, q_rope = norm_with_rope(self.norm_q, self.q(x), own.cos, own.sin, h)
        k = self.norm_k(self.k(own.context)).view(b, -1, h, q.shape[-1])
        v = self.v(own.context).view(b, -1, h, q.shape[-1])
        out = attend(q, k, v, backend=backend)

        target = layer_norm(self.pre_attn_norm_fusion, other_x)
        k = norm_rope(self.norm_k_fusion, self.k_fusion(target), other.cos, other.sin, h)
        v = self.v_fusion(target).view(b, -1, h, q.shape[-1])
        del target
        q = apply_rope(q, own.cos, own.sin) if q_rope is None else q_rope
        if own.shard is None or other.shard is None:
            out += attend(q, k, v, backend=backend)
        else:
            out += own.shard.attend(q, k, v, other.shard, backend)
        return self.o(out.flatten(2))


class Modulation(nn.Module):
    """The learned part of a block's six-way modulation (upstream key: `modulation.modulation`)."""

    def __init__(self, count: int, dim: int):
        super().__init__()
        self.modulation = nn.Parameter(torch.empty(1, count, dim))


class Block(nn.Module):
    """One Wan block. Its steps are separate methods because Ovi interleaves two towers' blocks."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.eps = cfg.eps
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, cfg.dim)
        )
        self.modulation = Modulation(6, cfg.dim)

    def modulation_table(self, e0: Tensor) -> tuple[Tensor, ...]:
        """Six [B,G,1,C] tensors: shift, scale, gate of the self-attention, then of the FFN."""
        return (self.modulation.modulation + e0).split(1, dim=2)

    def self_attention_(self, s: TowerState, mod: tuple[Tensor, ...], backend: str) -> None:
        shift, scale, gate = mod[:3]
        x = s.grouped()
        y = self.self_attn(modulated(x, shift, scale, self.eps).flatten(1, 2), s.cos, s.sin, backend, s.shard)
        gated_residual_(x, y.view_as(x), gate)

    def cross_attention_(self, s: TowerState, other: TowerState, other_x: Tensor, backend: str) -> None:
        """Text + fusion cross-attention; `other_x` is the other tower's hidden state to attend to."""
        s.x += self.cross_attn(layer_norm(self.norm3, s.x), s, other, other_x, backend)

    def ffn_(self, s: TowerState, mod: tuple[Tensor, ...]) -> None:
        shift, scale, gate = mod[3:]
        x = s.grouped()
        groups = max(1, FFN_CHUNK_TOKENS // x.shape[2])  # whole time groups per chunk
        up, down = cast(nn.Linear, self.ffn[0]), self.ffn[2]
        for g in range(0, x.shape[1], groups):
            part = slice(g, g + groups)
            chunk = x[:, part]
            hidden = linear_gelu(up, modulated(chunk, shift[:, part], scale[:, part], self.eps))
            gated_residual_(chunk, down(hidden), gate[:, part])


class Head(nn.Module):
    def __init__(self, dim: int, out_features: int, eps: float):
        super().__init__()
        self.eps = eps
        self.modulation = nn.Parameter(torch.empty(1, 2, dim))
        self.head = nn.Linear(dim, out_features)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        """x [B,G,S,C], e [B,G,C] -> [B,G,S,out]."""
        shift, scale = (self.modulation + e[:, :, None]).split(1, dim=2)
        return self.head(modulated(x, shift, scale, self.eps))


class DiTTower(nn.Module):
    """Embeddings, blocks and head of one modality. `prepare` -> blocks (driven by fusion.py) -> `finish`."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.config = cfg
        self.patch_embedding: nn.Conv3d | nn.Sequential
        if cfg.modality == "video":
            pf, ph, pw = cfg.patch_size
            self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, (pf, ph, pw), (pf, ph, pw))
        else:
            k = cfg.embed_kernel
            self.patch_embedding = nn.Sequential(
                nn.Conv1d(cfg.in_dim, cfg.dim, k, padding=k // 2), nn.SiLU(),
                ConvSwiGLU(cfg.dim, cfg.embed_hidden, k)
            )
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(),
                                            nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg.dim, cfg.in_dim * math.prod(cfg.patch_size), cfg.eps)

    def prepare(self, latent: Tensor, t: Tensor, context: Tensor) -> TowerState:
        """latent video [B,C,F,H,W] or audio [B,L,C]; t [B,G] timesteps per time group (video: per latent
        frame, audio: G=1); context [B,Ltext,text_dim] (zero-padded to text_len as upstream does)."""
        cfg = self.config
        dtype = self.head.head.weight.dtype
        x, grid = self._embed(latent.to(dtype))
        e = self.time_embedding(sinusoidal_embedding(t, cfg.freq_dim).to(dtype))
        e0 = self.time_projection(e).unflatten(-1, (6, cfg.dim))
        angles = rope_angles(grid, cfg.head_dim, cfg.rope_scale, x.device)[:, None]
        return TowerState(x, e, e0, self.embed_context(context), angles.cos().float(), angles.sin().float(),
                          grid)

    def embed_context(self, context: Tensor) -> Tensor:
        """Text features [B, Ltext, text_dim] -> [B, text_len, dim], zero-padded to text_len as upstream."""
        dtype = self.head.head.weight.dtype
        context = F.pad(context.to(dtype), (0, 0, 0, max(0, self.config.text_len - context.shape[1])))
        return self.text_embedding(context)

    def _embed(self, latent: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        conv = self.patch_embedding
        if isinstance(conv, nn.Sequential):  # audio: [B, L, C] in, channels-first convolutions
            return conv(latent.transpose(1, 2)).transpose(1, 2).contiguous(), (latent.shape[1],)
        # Conv3d with stride == kernel is a linear map of each patch; as a matmul the tokens come out
        # already in [B, L, C] order.
        b, c, f, h, w = latent.shape
        pf, ph, pw = conv.kernel_size
        grid = (f // pf, h // ph, w // pw)
        patches = latent.view(b, c, grid[0], pf, grid[1], ph, grid[2], pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        x = F.linear(patches.reshape(b, math.prod(grid), -1), conv.weight.flatten(1), conv.bias)
        return x, grid

    def finish(self, s: TowerState) -> Tensor:
        """Head and unpatchify: video [B,C,F,H,W], audio [B,L,C]."""
        out = self.head(s.grouped(), s.e).flatten(1, 2)
        if s.shard is not None:
            out = s.shard.gather(out)
        if self.config.modality == "audio":
            return out
        b, c = out.shape[0], self.config.in_dim
        f, h, w = s.grid
        pf, ph, pw = self.config.patch_size
        out = out.view(b, f, h, w, pf, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, c, f * pf, h * ph, w * pw)
