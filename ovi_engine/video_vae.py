"""Wan2.2 video VAE (z_dim 48): causal 3D encoder/decoder, streamed one latent frame at a time.

The module tree mirrors upstream's ``WanVAE_`` so ``state_dict()`` is exactly the layout of
``Wan2.2_VAE.pth`` (196 tensors) and the file loads strictly with no renaming.

Geometry: spatial x16 = the 2x2 (un)patchify plus three x2 resample levels; temporal x4 = two x2 levels.
A video of T = 1 + 4k frames maps to 1 + k latent frames: the first latent frame stands for one frame,
every later one for four.

Streaming: the decoder runs one latent frame per step, the encoder one chunk (frame 0, then 4 frames) per
step. Every causal convolution keeps the last frames of its previous input (``cache``) and prepends them to
the next chunk, so streaming gives exactly what one pass over the whole sequence with causal zero padding
would give. Two upstream quirks are part of the math and kept:
- the temporal x2 upsample ("upsample3d") skips its time convolution on the first chunk; from the second
  chunk on it sees zeros, not frame 0, as its past;
- the temporal x2 downsample ("downsample3d") passes frame 0 through and then convolves, stride 2,
  windows that start at the last frame of the previous chunk.

Memory (what upstream spends and this file does not): every causal conv writes its normalized input
straight into the padded window it convolves (no concatenation copy, no float32 norm output), the
parameter-free shortcuts (DupUp3D) are added in place without the repeat/permute copies, and decoded
chunks go straight into one preallocated output (no growing ``torch.cat``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovi_engine.weights import build_module, fan_in_normal, load_file, normal, resolve_preset

PATCH = 2  # (un)patchify factor; the encoder sees 3*2*2 = 12 channels
SPATIAL_STRIDE = 16
TEMPORAL_STRIDE = 4

# Per-channel latent statistics of Wan2.2's VAE (Wan2_2_VAE.__init__): latents are (mu - mean) / std.
LATENT_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
LATENT_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip


@dataclass(frozen=True)
class VideoVAEConfig:
    dim: int = 160  # encoder base width
    dec_dim: int = 256  # decoder base width
    z_dim: int = 48  # latent channels: the fusion model's video in_dim, so it stays 48 in every preset
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)  # the decoder uses it reversed


VIDEO_VAE_PRESETS: dict[str, VideoVAEConfig] = {
    "full": VideoVAEConfig(),
    "tiny": VideoVAEConfig(dim=8, dec_dim=8),
}


@dataclass(frozen=True)
class Tiling:
    """Spatial tiles for decoding, in output pixels; neighbours overlap and are blended linearly."""

    tile_px: int = 512
    overlap_px: int = 64

    def __post_init__(self) -> None:
        s = SPATIAL_STRIDE
        if self.tile_px <= 0 or self.tile_px % s:
            raise ValueError(f"Tiling.tile_px must be a positive multiple of {s}, got {self.tile_px}")
        if self.overlap_px < 0 or self.overlap_px % s:
            raise ValueError(
                f"Tiling.overlap_px must be a non-negative multiple of {s}, got {self.overlap_px}"
            )
        if self.overlap_px >= self.tile_px:
            raise ValueError(
                f"Tiling.overlap_px ({self.overlap_px}) must be smaller than tile_px ({self.tile_px})"
            )


# ---------------------------------------------------------------------------------------------- layers


class CausalConv3d(nn.Conv3d):
    """Conv3d that looks back only: ``2*pad_t`` past frames in front (zeros, then the cached tail of the
    previous chunk), none behind; height and width are zero-padded symmetrically by the convolution."""

    def __init__(
        self, in_dim: int, out_dim: int, kernel: int | tuple[int, int, int], padding: int | tuple = 0
    ):
        pad_t, pad_h, pad_w = padding if isinstance(padding, tuple) else (padding,) * 3
        super().__init__(in_dim, out_dim, kernel, padding=(0, pad_h, pad_w))
        self.context = 2 * pad_t  # frames carried from one chunk to the next
        self.cache: Tensor | None = None

    def window(self, x: Tensor) -> Tensor:
        """An empty ``[B, C, context + T, H, W]`` input whose first ``context`` frames hold the past; the
        caller writes the chunk (or a function of it) into ``window[:, :, context:]``."""
        b, c, t, h, w = x.shape
        buf = x.new_empty(b, c, self.context + t, h, w)
        past = buf[:, :, : self.context]
        if self.cache is None:
            past.zero_()
        else:
            past.copy_(self.cache)
        return buf

    def convolve(self, window: Tensor) -> Tensor:
        if self.context:
            self.cache = window[:, :, -self.context :].clone()  # a copy, so the chunk itself can be freed
        return F.conv3d(window, self.weight, self.bias, padding=self.padding)

    def forward(self, x: Tensor) -> Tensor:
        if not self.context:
            return super().forward(x)
        window = self.window(x)
        window[:, :, self.context :].copy_(x)
        return self.convolve(window)


class RMSNorm(nn.Module):
    """Upstream's RMS_norm: ``x / ||x||_channels * sqrt(C) * gamma`` (the F.normalize form, eps 1e-12).

    The norm is reduced in float32; the result is written in the input's dtype (into ``out`` when given),
    so no float32 copy of the activation is ever made on the GPU."""

    def __init__(self, dim: int, spatial_dims: int = 3):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * spatial_dims))

    def forward(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32).clamp_min_(1e-12)
        out = torch.div(x, norm, out=torch.empty_like(x) if out is None else out)
        return out.mul_(self.gamma.float().view(-1, *(1,) * (x.dim() - 2)) * self.scale)


def norm_silu_conv(norm: nn.Module, conv: nn.Module, x: Tensor) -> Tensor:
    """conv(silu(norm(x))) for an (RMSNorm, CausalConv3d) pair of a checkpoint-shaped Sequential, with the
    activation written straight into the conv's padded window."""
    causal = cast(CausalConv3d, conv)
    window = causal.window(x)
    F.silu(norm(x, out=window[:, :, causal.context :]), inplace=True)
    return causal.convolve(window)


def conv2d_per_frame(conv: nn.Conv2d, x: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """A checkpoint Conv2d applied to every frame of ``[B, C, T, H, W]`` as a (1, k, k) Conv3d: no copy."""
    return F.conv3d(
        x, conv.weight.unsqueeze(2), conv.bias, stride=(1, stride, stride), padding=(0, padding, padding)
    )


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # indices 1, 4, 5 (SiLU, SiLU, Dropout) hold no weights; the layout keeps the checkpoint's key names
        self.residual = nn.Sequential(
            RMSNorm(in_dim),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim),
            nn.SiLU(),
            nn.Identity(),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        y = norm_silu_conv(norm1, conv1, x)
        y = norm_silu_conv(norm2, conv2, y)
        return y.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c)
        q, k, v = F.linear(tokens, self.to_qkv.weight.view(3 * c, c), self.to_qkv.bias).chunk(3, dim=-1)
        y = F.linear(F.scaled_dot_product_attention(q, k, v), self.proj.weight.view(c, c), self.proj.bias)
        return x + y.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class Resample(nn.Module):
    """x2 up/down in space per frame, optionally x2 in time (see the module docstring for the first chunk)."""

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        # index 0 (nearest upsample / zero pad) holds no weights; the conv stays at index 1
        # as in the checkpoint
        self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, dim, 3, padding=1 if "up" in mode else 0))
        if mode == "upsample3d":
            self.time_conv: nn.Conv3d = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        self.cache: Tensor | None = None  # downsample3d: the last frame of the previous chunk

    def forward(self, x: Tensor, first_chunk: bool) -> Tensor:
        conv = cast(nn.Conv2d, self.resample[1])
        if self.mode == "upsample3d" and not first_chunk:
            b, c, t, h, w = x.shape
            pairs = self.time_conv(x).view(b, 2, c, t, h, w)  # channel half s is output frame 2t + s
            x = pairs.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        if self.mode.startswith("up"):
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact")
            return conv2d_per_frame(conv, x, padding=1)

        x = conv2d_per_frame(conv, F.pad(x, (0, 1, 0, 1)), stride=2)
        if self.mode == "downsample3d":
            past = self.cache
            self.cache = x[:, :, -1:].clone()
            if not first_chunk:
                assert past is not None, "downsample3d: chunk after the first without a cache"
                x = self.time_conv(torch.cat([past, x], dim=2))
        return x


def avg_down(x: Tensor, out_dim: int, factor_t: int, factor_s: int) -> Tensor:
    """Upstream's AvgDown3D shortcut: fold (t, h, w) sub-positions into channels, average channel groups.
    Time is padded in front to a multiple of ``factor_t`` (so a lone first frame is averaged with zeros)."""
    x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % factor_t, 0))
    b, c, t, h, w = x.shape
    x = x.view(b, c, t // factor_t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, out_dim, -1, t // factor_t, h // factor_s, w // factor_s)
    return x.mean(dim=2)


def add_dup_up_(dst: Tensor, x: Tensor, factor_t: int, factor_s: int, first_chunk: bool) -> Tensor:
    """``dst += DupUp3D(x)`` in place, without materializing the upsampled shortcut.

    DupUp3D repeats each input channel ``r`` times and unfolds the channels as (out, t, h, w) sub-positions,
    so sub-position m = (i, j, k) of output channel o reads input channel (o * factor + m) // r. On the first
    chunk only the last temporal copy (i = factor_t - 1) is kept, as upstream drops the others."""
    out_dim, in_dim = dst.shape[1], x.shape[1]
    factor = factor_t * factor_s * factor_s
    repeats = out_dim * factor // in_dim
    group = factor // repeats  # input channels per output channel
    subs = itertools.product(range(factor_t), range(factor_s), range(factor_s))
    for m, (i, j, k) in enumerate(subs):
        if first_chunk and i != factor_t - 1:
            continue
        frames = slice(None) if first_chunk else slice(i, None, factor_t)
        dst[:, :, frames, j::factor_s, k::factor_s] += x[:, m // repeats :: group]
    return dst


class DownBlock(nn.Module):
    """Upstream's Down_ResidualBlock: residual blocks, an optional Resample, plus the AvgDown3D shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, temporal: bool, spatial: bool):
        super().__init__()
        self.out_dim = out_dim
        self.factor_t, self.factor_s = (2 if temporal else 1), (2 if spatial else 1)
        blocks: list[nn.Module] = [
            ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(num_blocks)
        ]
        if spatial:
            blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*blocks)

    def forward(self, x: Tensor, first_chunk: bool) -> Tensor:
        y = x
        for block in self.downsamples:
            y = block(y, first_chunk) if isinstance(block, Resample) else block(y)
        return y.add_(avg_down(x, self.out_dim, self.factor_t, self.factor_s))


class UpBlock(nn.Module):
    """Upstream's Up_ResidualBlock: residual blocks, an optional Resample, plus the DupUp3D shortcut
    (present only when the block upsamples)."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, temporal: bool, spatial: bool):
        super().__init__()
        self.spatial = spatial
        self.factor_t, self.factor_s = (2 if temporal else 1), (2 if spatial else 1)
        blocks: list[nn.Module] = [
            ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(num_blocks)
        ]
        if spatial:
            blocks.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d"))
        self.upsamples = nn.Sequential(*blocks)

    def forward(self, x: Tensor, first_chunk: bool) -> Tensor:
        y = x
        for block in self.upsamples:
            y = block(y, first_chunk) if isinstance(block, Resample) else block(y)
        if self.spatial:
            add_dup_up_(y, x, self.factor_t, self.factor_s, first_chunk)
        return y


def _middle(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(dim), nn.SiLU(), CausalConv3d(dim, out_dim, 3, padding=1))


def _run_head(head: nn.Sequential, x: Tensor) -> Tensor:
    norm, _, conv = head
    return norm_silu_conv(norm, conv, x)


class Encoder3d(nn.Module):
    def __init__(self, c: VideoVAEConfig):
        super().__init__()
        dims = [c.dim * m for m in (1, *c.dim_mult)]
        levels = len(c.dim_mult)
        self.conv1 = CausalConv3d(3 * PATCH * PATCH, dims[0], 3, padding=1)
        self.downsamples = nn.Sequential(*(
            DownBlock(dims[i], dims[i + 1], c.num_res_blocks,
                      temporal=i < len(c.temporal_downsample) and c.temporal_downsample[i],
                      spatial=i != levels - 1)
            for i in range(levels)
        ))  # fmt: skip
        self.middle = _middle(dims[-1])
        self.head = _head(dims[-1], 2 * c.z_dim)  # mean and log-variance

    def forward(self, x: Tensor, first_chunk: bool) -> Tensor:
        x = self.conv1(x)
        for level in self.downsamples:
            x = level(x, first_chunk)
        for layer in self.middle:
            x = layer(x)
        return _run_head(self.head, x)


class Decoder3d(nn.Module):
    def __init__(self, c: VideoVAEConfig):
        super().__init__()
        dims = [c.dec_dim * m for m in (c.dim_mult[-1], *reversed(c.dim_mult))]
        levels = len(c.dim_mult)
        temporal_upsample = tuple(reversed(c.temporal_downsample))
        self.conv1 = CausalConv3d(c.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0])
        self.upsamples = nn.Sequential(*(
            UpBlock(dims[i], dims[i + 1], c.num_res_blocks + 1,
                    temporal=i < len(temporal_upsample) and temporal_upsample[i],
                    spatial=i != levels - 1)
            for i in range(levels)
        ))  # fmt: skip
        self.head = _head(dims[-1], 3 * PATCH * PATCH)

    def forward(self, x: Tensor, first_chunk: bool) -> Tensor:
        x = self.conv1(x)
        for layer in self.middle:
            x = layer(x)
        for level in self.upsamples:
            x = level(x, first_chunk)
        return _run_head(self.head, x)


# ---------------------------------------------------------------------------------------------- the VAE


def patchify(video: Tensor) -> Tensor:
    """[B, C, T, 2h, 2w] -> [B, C*4, T, h, w]; channel c*4 + r*2 + q holds pixel (2y + q, 2x + r)."""
    b, c, t, hh, ww = video.shape
    x = video.view(b, c, t, hh // PATCH, PATCH, ww // PATCH, PATCH)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * PATCH * PATCH, t, hh // PATCH, ww // PATCH)


def _unpatchify_into(dst: Tensor, x: Tensor, weight: Tensor | None) -> None:
    """Write (``weight is None``) or blend-add the inverse of ``patchify(dst)`` = ``x``
    into ``dst``, a view."""
    h, w = x.shape[-2:]
    src = x.unflatten(1, (3, PATCH, PATCH)).permute(0, 1, 4, 5, 3, 6, 2)  # b c r q t h w -> b c t h q w r
    dst = dst.unflatten(3, (h, PATCH)).unflatten(5, (w, PATCH))
    if weight is None:
        dst.copy_(src)
    else:
        dst.addcmul_(src, weight.view(h, PATCH, w, PATCH))


def tile_spans(n: int, tiling: Tiling) -> list[tuple[int, int, Tensor]]:
    """Tiles along one latent axis of length ``n``: (start, stop, blend weight of each output pixel).

    Starts are spread evenly so that neighbours overlap by at least ``tiling.overlap_px``. A tile's raw weight
    ramps linearly from ~0 to 1 over ``overlap_px`` pixels from each inner edge (not at the frame's border);
    dividing by the sum over tiles makes the weights of every output pixel add up to one."""
    s = SPATIAL_STRIDE
    tile, overlap, ramp = tiling.tile_px // s, tiling.overlap_px // s, tiling.overlap_px
    if n <= tile:
        return [(0, n, torch.ones(n * s))]
    count = math.ceil((n - overlap) / (tile - overlap))
    starts = [round(i * (n - tile) / (count - 1)) for i in range(count)]
    px = torch.arange(n * s, dtype=torch.float64) + 0.5  # pixel centres
    raw = []
    for start in starts:
        lo, hi = start * s, (start + tile) * s
        weight = ((px > lo) & (px < hi)).double()
        if ramp and start > 0:
            weight *= ((px - lo) / ramp).clamp(max=1)
        if ramp and start + tile < n:
            weight *= ((hi - px) / ramp).clamp(max=1)
        raw.append(weight)
    total = torch.stack(raw).sum(dim=0)
    return [
        (start, start + tile, (w / total)[start * s : (start + tile) * s].float())
        for start, w in zip(starts, raw)
    ]


class WanVideoVAE(nn.Module):
    """The Wan2.2 VAE; ``encode``/``decode`` take and give latents normalized with LATENT_MEAN/LATENT_STD."""

    latent_mean: Tensor
    latent_inv_std: Tensor

    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        self.config = config
        z = config.z_dim
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)  # encoder output -> (mu, log_var); only mu is used
        self.conv2 = CausalConv3d(z, z, 1)  # latent -> decoder input
        self.decoder = Decoder3d(config)
        # computed, not checkpoint keys (materialized by weights.materialize_computed_buffers)
        self.register_buffer("latent_mean", torch.zeros(z), persistent=False)
        self.register_buffer("latent_inv_std", torch.ones(z), persistent=False)

    def reset_computed_buffers(self) -> None:
        z = self.config.z_dim
        mean = torch.tensor(LATENT_MEAN, dtype=torch.float32)
        std = torch.tensor(LATENT_STD, dtype=torch.float32)
        if z != len(LATENT_MEAN):  # a custom config: unit statistics
            mean, std = torch.zeros(z), torch.ones(z)
        self.latent_mean = mean.to(self.latent_mean.device)
        self.latent_inv_std = (1.0 / std).to(self.latent_mean.device)

    def _stats(self) -> tuple[Tensor, Tensor]:
        return self.latent_mean.view(1, -1, 1, 1, 1), self.latent_inv_std.view(1, -1, 1, 1, 1)

    def _reset_stream(self) -> None:
        for module in self.modules():
            if isinstance(module, (CausalConv3d, Resample)):
                module.cache = None

    def _as_weights(self, x: Tensor) -> Tensor:
        """``x`` on the weights' device, in their dtype."""
        return x.to(self.conv2.weight)

    @torch.inference_mode()
    def encode(self, video: Tensor) -> Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> normalized latents [B, z, 1 + (T-1)//4, H/16, W/16].

        As upstream, trailing frames beyond the last full group of four are not encoded."""
        if video.dim() != 5 or video.shape[1] != 3 or video.shape[2] < 1:
            raise ValueError(f"encode expects video [B, 3, T, H, W], got {list(video.shape)}")
        b, _, t, hh, ww = video.shape
        if hh % SPATIAL_STRIDE or ww % SPATIAL_STRIDE:
            raise ValueError(f"encode needs H and W divisible by {SPATIAL_STRIDE}, got {hh}x{ww}")
        x = patchify(self._as_weights(video))
        frames = 1 + (t - 1) // TEMPORAL_STRIDE
        z = self.config.z_dim
        mean, inv_std = self._stats()
        latents = x.new_empty(b, z, frames, hh // SPATIAL_STRIDE, ww // SPATIAL_STRIDE)
        self._reset_stream()
        try:
            for i in range(frames):
                lo = 0 if i == 0 else 1 + TEMPORAL_STRIDE * (i - 1)
                h = self.encoder(x[:, :, lo : 1 + TEMPORAL_STRIDE * i], first_chunk=i == 0)
                mu = F.conv3d(h, self.conv1.weight[:z], cast(Tensor, self.conv1.bias)[:z])
                latents[:, :, i : i + 1] = (mu.float() - mean) * inv_std
        finally:
            self._reset_stream()
        return latents

    @torch.inference_mode()
    def decode(self, latents: Tensor, *, tile: Tiling | None = None) -> Tensor:
        """Normalized latents [B, z, F, h, w] -> video [B, 3, 1 + 4(F-1), 16h, 16w] in [-1, 1], in the
        model's dtype. With ``tile``, the frame is decoded tile by tile (less memory) and blended."""
        z = self.config.z_dim
        if latents.dim() != 5 or latents.shape[1] != z or latents.shape[2] < 1:
            raise ValueError(f"decode expects latents [B, {z}, F, h, w], got {list(latents.shape)}")
        b, _, frames, h, w = latents.shape
        mean, inv_std = self._stats()
        latents = self._as_weights(latents.to(mean.device, torch.float32) / inv_std + mean)
        out = latents.new_empty(
            b, 3, 1 + TEMPORAL_STRIDE * (frames - 1), SPATIAL_STRIDE * h, SPATIAL_STRIDE * w
        )
        if tile is None:
            self._decode_into(out, latents, weight=None)
        else:
            out.zero_()
            s = SPATIAL_STRIDE
            rows, cols = tile_spans(h, tile), tile_spans(w, tile)
            for (y0, y1, wy), (x0, x1, wx) in itertools.product(rows, cols):
                weight = (wy[:, None] * wx[None, :]).to(out.device)
                self._decode_into(
                    out[..., y0 * s : y1 * s, x0 * s : x1 * s], latents[..., y0:y1, x0:x1], weight
                )
        return out.clamp_(-1, 1)

    def _decode_into(self, dst: Tensor, latents: Tensor, weight: Tensor | None) -> None:
        """Stream ``latents`` through the decoder one frame at a time, writing (or blending) into ``dst``."""
        self._reset_stream()
        try:
            for i, pixels in enumerate(self._decode_chunks(latents)):
                lo = 0 if i == 0 else 1 + TEMPORAL_STRIDE * (i - 1)
                _unpatchify_into(dst[:, :, lo : lo + pixels.shape[2]], pixels, weight)
        finally:
            self._reset_stream()

    def _decode_chunks(self, latents: Tensor) -> Iterator[Tensor]:
        for i in range(latents.shape[2]):
            x = self.conv2(latents[:, :, i : i + 1])
            yield self.decoder(x, first_chunk=i == 0)


# ---------------------------------------------------------------------------------------------- building



SYNTHETIC_RULES = (
    # norm scales near one (not exactly, so a misplaced gamma shows up in tests)
    (r"\.gamma$", lambda shape, gen: 1.0 + 0.1 * torch.randn(shape, generator=gen, device=gen.device)),
    # residual branches enter the stream at half scale, so 3+ blocks per level keep activations O(1)
    (r"\.residual\.6\.weight$", fan_in_normal(0.5)),
    (r"\.proj\.weight$", fan_in_normal(0.5)),
    # the decoder head maps unit-RMS features to pixels: keep most of them inside [-1, 1]
    (r"^decoder\.head\.2\.weight$", fan_in_normal(0.6)),
    (r"bias$", normal(0.01)),
)


def build_video_vae(
    preset: str | VideoVAEConfig = "full",
    *,
    device: str | torch.device = "meta",
    dtype: torch.dtype = torch.bfloat16,
    seed: int | None = 0,
) -> WanVideoVAE:
    """The VAE with synthetic weights from ``seed``; on ``meta`` (or with ``seed=None``) it stays empty,
    ready for ``load_video_vae``/``weights.load_into``."""
    config = resolve_preset(preset, VIDEO_VAE_PRESETS, "video VAE")
    return build_module(lambda: WanVideoVAE(config), device=device, dtype=dtype, seed=seed,
                        rules=SYNTHETIC_RULES)


def load_video_vae(
    path: str | Path,
    preset: str | VideoVAEConfig = "full",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> WanVideoVAE:
    """Load ``Wan2.2_VAE.pth`` (or any file of the same layout), strictly."""
    model = build_video_vae(preset, device="meta", dtype=dtype)
    return load_file(model, path, device=device, dtype=dtype)
