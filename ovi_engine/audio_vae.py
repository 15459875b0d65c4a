"""MMAudio 16 kHz audio codec: the mel VAE (latent 20 <-> mel 80) and the BigVGAN vocoder (mel -> waveform).

Decoding turns fusion-model latents ``[B, L, 20]`` into a 16 kHz waveform of ``512 * L`` samples: the VAE
decoder upsamples time once (x2, so ``2L`` mel frames) and the vocoder upsamples by its hop (x256).

Module trees mirror upstream, so ``VAE.state_dict()`` is exactly the layout of ``v1-16.pth`` and
``Vocoder.state_dict()`` (before weight-norm removal) the layout of ``best_netG.pt['generator']``.

Both checkpoints store weights *before* weight normalization, and both are folded once after loading:
- VAE: EDM2 magnitude-preserving convs (``MPConv1D``) keep key ``weight``; folding divides each output
  row by its norm (forced weight norm) and by sqrt(fan_in). Keys are unchanged.
- Vocoder: torch weight-norm parametrizations (``g * v / ||v||``, norm over every dim but 0) become one
  plain ``weight`` per conv.
The fold runs in float32 and only then are weights cast to the run dtype, as upstream does.

Math worth knowing: EDM2's ``normalize`` divides by ``eps + rms`` (not ``sqrt(mean + eps)``); residuals use
``mp_sum`` (a lerp rescaled to keep unit variance); the VAE attention is single-head with q/k/v each
normalized over channels; SnakeBeta is ``x + sin^2(exp(a) x) / exp(b)`` and always runs at twice the
sample rate between Kaiser-sinc low-pass filters (anti-aliasing).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from ovi_engine.weights import (
    Rule,
    build_on_meta,
    load_into,
    materialize_computed_buffers,
    no_init,
    read_state,
    resolve_preset,
    synthesize,
)


@dataclass(frozen=True)
class AudioCodecConfig:
    # mel spectrogram (MMAudio's 16k mel converter; window = n_fft, fmin = 0, Slaney mel scale)
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_size: int = 256
    num_mels: int = 80
    fmax: float = 8000.0
    # VAE. Only the middle block has attention: upstream's attn_layers=[3] names a level that 3 levels lack.
    latent_dim: int = 20
    vae_dim: int = 384
    vae_ch_mult: tuple[int, ...] = (1, 2, 4)
    vae_res_blocks: int = 2
    vae_down_layers: tuple[int, ...] = (0,)  # encoder levels that halve time (decoder mirrors them)
    clip_act: float = 256.0
    # BigVGAN vocoder ("resblock 1", SnakeBeta with log-scale parameters)
    vocoder_channels: int = 1536  # halved by every upsampling stage
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    antialias_kernel: int = 12  # taps of the x2 up/down filters around each SnakeBeta

    def __post_init__(self) -> None:
        if math.prod(self.upsample_rates) != self.hop_size:
            raise ValueError(
                f"vocoder upsampling {self.upsample_rates} must equal the mel hop {self.hop_size}"
            )
        if self.antialias_kernel % 2:
            raise ValueError("antialias_kernel must be even")

    @property
    def mel_frames_per_latent(self) -> int:
        return 2 ** len(self.vae_down_layers)

    @property
    def samples_per_latent(self) -> int:
        return self.hop_size * self.mel_frames_per_latent


AUDIO_CODEC_PRESETS: dict[str, AudioCodecConfig] = {
    "full": AudioCodecConfig(),
    # latent_dim and num_mels stay, so tiny latents are interchangeable with the fusion model's
    "tiny": AudioCodecConfig(vae_dim=16, vocoder_channels=64),
}

SAMPLE_RATE = AUDIO_CODEC_PRESETS["full"].sample_rate
SAMPLES_PER_LATENT = AUDIO_CODEC_PRESETS["full"].samples_per_latent


# ---------------------------------------------------------------------------------------------------------
# EDM2 magnitude-preserving pieces


def mp_normalize(x: Tensor, dim: int | tuple[int, ...], eps: float = 1e-4) -> Tensor:
    """``x / (eps + rms(x over dim))``, the rms taken in float32."""
    dims = (dim,) if isinstance(dim, int) else dim
    count = math.prod(x.shape[d] for d in dims)
    rms = torch.linalg.vector_norm(x, dim=dims, keepdim=True, dtype=torch.float32) / math.sqrt(count)
    return x / (eps + rms).to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    return F.silu(x) / 0.596  # 0.596 = rms of silu over N(0, 1)


def mp_sum(a: Tensor, b: Tensor, t: float) -> Tensor:
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


class MPConv1D(nn.Module):
    """Bias-free 'same' conv whose effective weight has unit-norm rows divided by sqrt(fan_in)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim, kernel_size))
        self.weight_folded = False

    def normalized_weight(self) -> Tensor:
        w = self.weight.float()
        return (mp_normalize(w, dim=(1, 2)) / math.sqrt(w[0].numel())).to(self.weight.dtype)

    def forward(self, x: Tensor, gain: Tensor | float = 1.0) -> Tensor:
        w = self.weight if self.weight_folded else self.normalized_weight()
        return F.conv1d(x, w * gain, padding=w.shape[-1] // 2)

    @torch.no_grad()
    def remove_weight_norm(self) -> None:
        if not self.weight.is_meta:  # a meta layout has no values to fold (and meta math is slow to set up)
            self.weight.copy_(self.normalized_weight())
        self.weight_folded = True


class ResnetBlock1D(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = MPConv1D(in_dim, out_dim, kernel_size)
        self.conv2 = MPConv1D(out_dim, out_dim, kernel_size)
        self.nin_shortcut = MPConv1D(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: Tensor) -> Tensor:
        x = mp_normalize(x, dim=1)  # pixel norm over channels
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return mp_sum(x, h, t=0.3)


class AttnBlock1D(nn.Module):
    """Single-head self-attention over time; the qkv conv interleaves channels as (channel, q/k/v)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = MPConv1D(dim, dim * 3, 1)
        self.proj_out = MPConv1D(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        qkv = mp_normalize(self.qkv(x).reshape(b, 1, c, 3, t), dim=2)
        q, k, v = (qkv[:, :, :, i].transpose(-1, -2) for i in range(3))  # [b, 1, t, c]
        h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, t)
        return mp_sum(x, self.proj_out(h), t=0.3)


class MidBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock1D(dim, dim)
        self.attn_1 = AttnBlock1D(dim)
        self.block_2 = ResnetBlock1D(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Downsample1D(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = MPConv1D(dim, dim, 1)
        self.conv2 = MPConv1D(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Upsample1D(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = MPConv1D(dim, dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class VAELevel(nn.Module):
    """Resnet blocks at one time resolution (clamped after each), then an optional x2 time resampling."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_blocks: int,
        clip_act: float,
        resample: Literal["down", "up"] | None,
    ) -> None:
        super().__init__()
        self.clip_act = clip_act
        self.block = nn.ModuleList(
            ResnetBlock1D(in_dim if i == 0 else out_dim, out_dim) for i in range(num_blocks)
        )
        self.downsample = Downsample1D(out_dim) if resample == "down" else None
        self.upsample = Upsample1D(out_dim) if resample == "up" else None

    def forward(self, h: Tensor) -> Tensor:
        for block in self.block:
            h = block(h).clamp(-self.clip_act, self.clip_act)
        if self.downsample is not None:
            h = self.downsample(h)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class Encoder1D(nn.Module):
    """mel [B, num_mels, T] -> moments [B, 2 * latent_dim, T / 2**len(down_layers)] (mean, logvar)."""

    def __init__(self, cfg: AudioCodecConfig) -> None:
        super().__init__()
        self.clip_act = cfg.clip_act
        dims = [cfg.vae_dim * m for m in (1, *cfg.vae_ch_mult)]
        self.conv_in = MPConv1D(cfg.num_mels, cfg.vae_dim, 3)
        self.down = nn.ModuleList(
            VAELevel(
                dims[i],
                dims[i + 1],
                cfg.vae_res_blocks,
                cfg.clip_act,
                resample="down" if i in cfg.vae_down_layers else None,
            )
            for i in range(len(cfg.vae_ch_mult))
        )
        self.mid = MidBlock(dims[-1])
        self.conv_out = MPConv1D(dims[-1], 2 * cfg.latent_dim, 3)
        self.learnable_gain = nn.Parameter(torch.empty(()))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h).clamp(-self.clip_act, self.clip_act)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder1D(nn.Module):
    """latent [B, latent_dim, L] -> normalized mel [B, num_mels, L * 2**len(down_layers)]."""

    def __init__(self, cfg: AudioCodecConfig) -> None:
        super().__init__()
        self.clip_act = cfg.clip_act
        dims = [cfg.vae_dim * m for m in cfg.vae_ch_mult]
        self.conv_in = MPConv1D(cfg.latent_dim, dims[-1], 3)
        self.mid = MidBlock(dims[-1])
        # up[i] mirrors encoder level i and runs deepest first; it upsamples where encoder level i-1 halved
        self.up = nn.ModuleList(
            VAELevel(
                dims[min(i + 1, len(dims) - 1)],
                dims[i],
                cfg.vae_res_blocks + 1,
                cfg.clip_act,
                resample="up" if i - 1 in cfg.vae_down_layers else None,
            )
            for i in range(len(dims))
        )
        self.conv_out = MPConv1D(dims[0], cfg.num_mels, 3)
        self.learnable_gain = nn.Parameter(torch.empty(()))

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z)).clamp(-self.clip_act, self.clip_act)
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class VAE(nn.Module):
    """MMAudio's mel VAE; mel statistics are checkpoint buffers used to (un)normalize the mel."""

    data_mean: Tensor
    data_std: Tensor

    def __init__(self, cfg: AudioCodecConfig) -> None:
        super().__init__()
        self.register_buffer("data_mean", torch.empty(1, cfg.num_mels, 1))
        self.register_buffer("data_std", torch.empty(1, cfg.num_mels, 1))
        self.encoder = Encoder1D(cfg)
        self.decoder = Decoder1D(cfg)

    def encode(self, mel: Tensor) -> Tensor:
        """log10-mel [B, num_mels, T] -> posterior mean [B, latent_dim, T / 2]."""
        moments = self.encoder((mel - self.data_mean) / self.data_std)
        return moments.chunk(2, dim=1)[0]

    def decode(self, z: Tensor) -> Tensor:
        """latent [B, latent_dim, L] -> log10-mel [B, num_mels, 2L]."""
        return self.decoder(z) * self.data_std + self.data_mean

    def remove_weight_norm(self) -> VAE:
        for m in self.modules():
            if isinstance(m, MPConv1D):
                m.remove_weight_norm()
        return self


# ---------------------------------------------------------------------------------------------------------
# BigVGAN


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """Kaiser-windowed sinc low-pass with unit DC gain, ``[1, 1, kernel_size]`` (even size: taps at k+0.5)."""
    return torch.tensor(_kaiser_sinc_taps(cutoff, half_width, kernel_size)).view(1, 1, kernel_size)


@functools.lru_cache
def _kaiser_sinc_taps(cutoff: float, half_width: float, kernel_size: int) -> tuple[float, ...]:
    # computed once on the CPU: a vocoder has hundreds of these filters, often built on meta
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95  # Kaiser's design formula, dB
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    else:
        beta = 0.0
    with torch.device("cpu"):
        window = torch.kaiser_window(kernel_size, periodic=False, beta=beta, dtype=torch.float32)
        taps = 2 * cutoff * window * torch.sinc(2 * cutoff * (torch.arange(-half, half) + 0.5))
        return tuple((taps / taps.sum()).tolist())


class UpSample1d(nn.Module):
    """Zero-stuffing x``ratio`` followed by the low-pass (gain ``ratio``); edges replicate-padded."""

    filter: Tensor

    def __init__(self, ratio: int, kernel_size: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        kernel = self.filter.expand(x.shape[1], -1, -1)
        x = self.ratio * F.conv_transpose1d(x, kernel, stride=self.ratio, groups=x.shape[1])
        return x[..., self.crop_left : x.shape[-1] - self.crop_right]


class LowPassFilter1d(nn.Module):
    filter: Tensor

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_left, self.pad_right = kernel_size // 2 - 1, kernel_size // 2  # even kernel
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(x.shape[1], -1, -1), stride=self.stride, groups=x.shape[1])


class DownSample1d(nn.Module):
    def __init__(self, ratio: int, kernel_size: int) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """``x + sin^2(alpha x) / beta`` per channel, with alpha and beta stored as logs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(channels))
        self.beta = nn.Parameter(torch.empty(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha.exp()[:, None]
        beta = self.beta.exp()[:, None]
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    """SnakeBeta at twice the sample rate, so its harmonics are filtered out before returning."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample1d(2, kernel_size)
        self.downsample = DownSample1d(2, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock1(nn.Module):
    """Three (act, dilated conv, act, conv) residual units; activations alternate between the two convs."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], antialias_kernel: int):
        super().__init__()

        def conv(dilation: int) -> nn.Module:
            padding = dilation * (kernel_size - 1) // 2
            return weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding))

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.activations = nn.ModuleList(
            Activation1d(channels, antialias_kernel) for _ in range(2 * len(dilations))
        )

    def forward(self, x: Tensor) -> Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
        return x


class Vocoder(nn.Module):
    """BigVGAN: log10-mel [B, num_mels, T] -> waveform [B, 1, T * hop_size] in [-1, 1].

    Built with weight-norm parametrizations (the checkpoint's layout); ``remove_weight_norm`` folds them.
    """

    def __init__(self, cfg: AudioCodecConfig) -> None:
        super().__init__()
        ch = cfg.vocoder_channels
        self.conv_pre = weight_norm(nn.Conv1d(cfg.num_mels, ch, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
            up = nn.ConvTranspose1d(ch, ch // 2, kernel, rate, padding=(kernel - rate) // 2)
            self.ups.append(nn.ModuleList([weight_norm(up)]))
            ch //= 2
            for k, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations):
                self.resblocks.append(AMPBlock1(ch, k, dilations, cfg.antialias_kernel))
        self.activation_post = Activation1d(ch, cfg.antialias_kernel)
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, padding=3))

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv_pre(mel)
        per_stage = len(self.resblocks) // len(self.ups)
        for i, stage in enumerate(self.ups):
            for layer in cast(nn.ModuleList, stage):
                x = layer(x)
            blocks = self.resblocks[i * per_stage : (i + 1) * per_stage]
            y = blocks[0](x)
            for block in blocks[1:]:
                y += block(x)
            x = y / per_stage
        return torch.tanh(self.conv_post(self.activation_post(x)))

    def remove_weight_norm(self) -> Vocoder:
        for m in self.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight")
        return self


def vocoder_checkpoint_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Accept the legacy weight-norm naming (``weight_g``/``weight_v``) beside the parametrized one."""
    legacy = {
        ".weight_g": ".parametrizations.weight.original0",
        ".weight_v": ".parametrizations.weight.original1",
    }
    renamed = {}
    for key, value in state.items():
        suffix = next((s for s in legacy if key.endswith(s)), None)
        renamed[key[: -len(suffix)] + legacy[suffix] if suffix else key] = value
    return renamed


# ---------------------------------------------------------------------------------------------------------
# mel converter (waveform -> log10-mel, the VAE's input; needed only to encode)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> Tensor:
    """Triangular mel filters ``[num_mels, n_fft // 2 + 1]``, Slaney mel scale and area normalization."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27  # linear below 1 kHz, log above
    min_log_mel = min_log_hz / f_sp

    def hz_to_mel(hz: Tensor) -> Tensor:
        log_part = min_log_mel + torch.log(hz.clamp(min=min_log_hz) / min_log_hz) / logstep
        return torch.where(hz >= min_log_hz, log_part, hz / f_sp)

    def mel_to_hz(mel: Tensor) -> Tensor:
        return torch.where(
            mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel
        )

    f64 = torch.float64
    edges = hz_to_mel(torch.tensor([fmin, fmax], dtype=f64))
    mel_hz = mel_to_hz(torch.linspace(float(edges[0]), float(edges[1]), num_mels + 2, dtype=f64))
    fft_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=f64)
    lower, center, upper = mel_hz[:-2, None], mel_hz[1:-1, None], mel_hz[2:, None]
    rising = (fft_hz - lower) / (center - lower)
    falling = (upper - fft_hz) / (upper - center)
    weights = torch.minimum(rising, falling).clamp(min=0) * (2.0 / (upper - lower))
    return weights.float()


class MelConverter(nn.Module):
    """16 kHz waveform [B, S] -> log10 magnitude mel [B, num_mels, S / hop]; its filters are computed."""

    mel_basis: Tensor
    hann_window: Tensor

    def __init__(self, cfg: AudioCodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mel_basis", torch.empty(cfg.num_mels, cfg.n_fft // 2 + 1))
        self.register_buffer("hann_window", torch.empty(cfg.n_fft))

    @torch.no_grad()
    def reset_computed_buffers(self) -> None:
        cfg = self.cfg
        self.mel_basis.copy_(slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.num_mels, 0.0, cfg.fmax))
        self.hann_window.copy_(torch.hann_window(cfg.n_fft))

    def forward(self, wave: Tensor) -> Tensor:
        pad = (self.cfg.n_fft - self.cfg.hop_size) // 2
        wave = F.pad(wave.clamp(-1, 1).float()[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(
            wave,
            self.cfg.n_fft,
            hop_length=self.cfg.hop_size,
            window=self.hann_window,
            center=False,
            return_complex=True,
        )
        magnitude = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
        return torch.log10((self.mel_basis @ magnitude).clamp(min=1e-5))


# ---------------------------------------------------------------------------------------------------------
# the codec


def _filled(shape: torch.Size, gen: torch.Generator, value: float) -> Tensor:
    return torch.full(shape, value, device=gen.device)


VAE_SYNTHETIC_RULES: tuple[Rule, ...] = (
    (r"learnable_gain$", lambda shape, gen: _filled(shape, gen, 0.0)),  # gain = 1 + learnable_gain
    (r"data_mean$", lambda shape, gen: _filled(shape, gen, 0.0)),
    (r"data_std$", lambda shape, gen: _filled(shape, gen, 1.0)),
)


def vocoder_synthetic_rules(cfg: AudioCodecConfig) -> tuple[Rule, ...]:
    antialias = kaiser_sinc_filter(0.25, 0.3, cfg.antialias_kernel)  # both x2 filters are this one
    return (
        (r"filter$", lambda shape, gen: antialias.to(gen.device)),
        (r"\.(alpha|beta)$", lambda shape, gen: _filled(shape, gen, 0.0)),  # log scale: exp(0) = 1
        # weight-norm g = norm of each output row. Half gain on residual branches and the output conv keeps
        # the signal from growing stage after stage, so the waveform stays mostly inside tanh's linear range.
        (r"^(resblocks|conv_post)\..*original0$", lambda shape, gen: _filled(shape, gen, 0.5)),
        (r"original0$", lambda shape, gen: _filled(shape, gen, 1.0)),
    )


CodecPart = TypeVar("CodecPart", VAE, Vocoder)


class AudioCodec(nn.Module):
    """Latents -> 16 kHz waveform (and back). Weights are folded (runtime form) once materialized.

    ``device``/``dtype`` are where ``load_vae``/``load_vocoder``/synthesis put the weights.
    """

    def __init__(self, cfg: AudioCodecConfig, *, device: str | torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype
        self.mel_converter = build_on_meta(lambda: MelConverter(cfg))
        if self.device.type != "meta":
            materialize_computed_buffers(self.mel_converter, self.device)
        # On a real device the parts exist once loaded or synthesized; on meta they are the layout.
        self.vae: VAE | None = None
        self.vocoder: Vocoder | None = None
        if self.device.type == "meta":
            self.vae = build_on_meta(lambda: VAE(cfg)).remove_weight_norm()
            self.vocoder = build_on_meta(lambda: Vocoder(cfg)).remove_weight_norm()

    def _materialize(
        self, factory: Callable[[], CodecPart], fill: Callable[[nn.Module], object]
    ) -> CodecPart:
        # Built where it will live, not on meta: weight norm's set-up math on meta tensors would import
        # torch's decompositions (~1.5 s in every fresh process); the values are overwritten by `fill`.
        with torch.device(self.device), no_init():
            module = factory()
        fill(module)  # float32 on self.device; fold the weight norm at that precision, then cast
        return module.remove_weight_norm().to(self.dtype)

    def synthesize(self, seed: int) -> AudioCodec:
        def fill(rules: tuple[Rule, ...]) -> Callable[[nn.Module], object]:
            return lambda m: synthesize(m, seed=seed, device=self.device, dtype=torch.float32, rules=rules)

        self.vae = self._materialize(lambda: VAE(self.cfg), fill(VAE_SYNTHETIC_RULES))
        self.vocoder = self._materialize(lambda: Vocoder(self.cfg), fill(vocoder_synthetic_rules(self.cfg)))
        return self

    def _load(self, state: Mapping[str, Tensor], path: str | Path) -> Callable[[nn.Module], object]:
        return lambda m: load_into(m, state, device=self.device, dtype=torch.float32, source=str(path))

    def load_vae(self, path: str | Path) -> AudioCodec:
        """Strictly load ``v1-16.pth`` (or a safetensors file of the same layout)."""
        self.vae = self._materialize(lambda: VAE(self.cfg), self._load(read_state(path), path))
        return self

    def load_vocoder(self, path: str | Path) -> AudioCodec:
        """Strictly load ``best_netG.pt`` (parametrized or legacy ``weight_g``/``weight_v`` naming)."""
        state = vocoder_checkpoint_state(read_state(path, nested_key="generator"))
        self.vocoder = self._materialize(lambda: Vocoder(self.cfg), self._load(state, path))
        return self

    def runtime_state_dict(self) -> dict[str, Tensor]:
        """Upstream ``FeaturesUtils`` layout: ``mel_converter.*``, ``tod.vae.*``,
        ``tod.vocoder.vocoder.*``."""
        parts = (
            ("mel_converter.", self.mel_converter),
            ("tod.vae.", self._require(self.vae, "load_vae")),
            ("tod.vocoder.vocoder.", self._require(self.vocoder, "load_vocoder")),
        )
        return {prefix + k: v for prefix, module in parts for k, v in module.state_dict().items()}

    @staticmethod
    def _require(module: CodecPart | None, loader: str) -> CodecPart:
        if module is None:
            raise RuntimeError(f"audio codec weights not loaded: call {loader}(path) or build with a seed")
        return module

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        """``[B, L, latent_dim]`` -> float32 waveform ``[B, samples_per_latent * L]`` in [-1, 1]."""
        vae = self._require(self.vae, "load_vae")
        vocoder = self._require(self.vocoder, "load_vocoder")
        # where the weights are now (a placement policy may have moved the codec since it was built)
        weights = next(vae.parameters())
        mel = vae.decode(latents.to(weights.device, weights.dtype).transpose(1, 2))
        return vocoder(mel).squeeze(1).float()

    @torch.inference_mode()
    def encode(self, wave: Tensor) -> Tensor:
        """Waveform ``[B, S]`` (S a multiple of samples_per_latent) -> latent means
        ``[B, S / 512, latent_dim]``."""
        vae = self._require(self.vae, "load_vae")
        mel = self.mel_converter(wave.to(next(vae.parameters()).device))
        return vae.encode(mel.to(self.dtype)).transpose(1, 2)


def build_audio_codec(
    preset: str = "full",
    *,
    device: str | torch.device = "meta",
    dtype: torch.dtype = torch.bfloat16,
    seed: int | None = 0,
) -> AudioCodec:
    """The codec of ``preset``: synthetic weights from ``seed``, or empty (``seed=None``) until loaded.

    On ``meta`` nothing is allocated (layouts and output shapes only).
    """
    codec = AudioCodec(resolve_preset(preset, AUDIO_CODEC_PRESETS, "audio codec"), device=device, dtype=dtype)
    if seed is not None and codec.device.type != "meta":
        codec.synthesize(seed)
    return codec
