"""umT5-XXL text encoder (encoder half of T5 v1.1 with per-layer relative position bias) and tokenizers.

The module tree mirrors Wan's ``T5Encoder``, so ``state_dict()`` is exactly the layout of
``models_t5_umt5-xxl-enc-bf16.pth`` and that file loads strictly with no renaming.

T5 specifics worth knowing when reading the math:
- RMSNorm: scale only, no mean subtraction, no bias, computed in float32.
- Attention logits are NOT divided by sqrt(head_dim); T5 folds that scale into the weights.
- Every block owns its relative position bias table (umT5: ``shared_pos=False``).
- The feed-forward is gated: ``fc2(fc1(x) * gelu_tanh(gate(x)))``.
- Padding tokens are masked as keys only; the rows of padding queries are discarded by ``TextEncoder``.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovi_engine.weights import Rule, build_module, load_file, normal, resolve_preset


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 256384
    dim: int = 4096  # output width: the fusion model's text embedding reads this
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    text_len: int = 512  # prompts are padded/truncated to this many tokens
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads


TEXT_ENCODER_PRESETS: dict[str, TextEncoderConfig] = {
    "full": TextEncoderConfig(),
    "tiny": TextEncoderConfig(vocab_size=384, dim=64, dim_attn=64, dim_ffn=160, num_heads=4, num_layers=2),
}


def relative_position_bucket(rel_pos: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Bidirectional T5 bucket of ``rel_pos = key_position - query_position``.

    Half the buckets hold keys before the query, half keys after it. Within a half, distances below
    ``max_exact`` get one bucket each; larger ones share log-spaced buckets, saturating at
    ``max_distance``. The log is taken in float32, as upstream does, so boundaries match the checkpoint.
    """
    half = num_buckets // 2
    buckets = (rel_pos > 0).long() * half
    distance = rel_pos.abs()
    max_exact = half // 2
    # clamp(min=1) only avoids log(0); those positions take the exact branch anyway
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x32.to(self.weight.dtype)


class RelativePositionBias(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_distance
        self.embedding = nn.Embedding(config.num_buckets, config.num_heads)

    def forward(self, length: int) -> Tensor:
        """[1, heads, length, length] additive attention bias."""
        pos = torch.arange(length, device=self.embedding.weight.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


class Attention(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.q = nn.Linear(config.dim, config.dim_attn, bias=False)
        self.k = nn.Linear(config.dim, config.dim_attn, bias=False)
        self.v = nn.Linear(config.dim, config.dim_attn, bias=False)
        self.o = nn.Linear(config.dim_attn, config.dim, bias=False)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, length, _ = x.shape
        q, k, v = (
            proj(x).view(b, length, self.num_heads, -1).transpose(1, 2) for proj in (self.q, self.k, self.v)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)  # T5: no 1/sqrt(d)
        return self.o(out.transpose(1, 2).reshape(b, length, -1))


class FeedForward(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        # a Sequential so the checkpoint key is ``gate.0.weight``
        self.gate = nn.Sequential(
            nn.Linear(config.dim, config.dim_ffn, bias=False), nn.GELU(approximate="tanh")
        )
        self.fc1 = nn.Linear(config.dim, config.dim_ffn, bias=False)
        self.fc2 = nn.Linear(config.dim_ffn, config.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class Block(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.norm1 = RMSNorm(config.dim, config.eps)
        self.attn = Attention(config)
        self.norm2 = RMSNorm(config.dim, config.eps)
        self.ffn = FeedForward(config)
        self.pos_embedding = RelativePositionBias(config)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """``key_mask``: [B, L] bool, True for real tokens."""
        bias = self.pos_embedding(x.shape[1]).to(x.dtype)
        # masked_fill (not +) so the bias never overflows to -inf; every row keeps >= 1 real key (EOS)
        bias = bias.masked_fill(~key_mask[:, None, None, :], torch.finfo(x.dtype).min)
        x = x + self.attn(self.norm1(x), bias)
        return x + self.ffn(self.norm2(x))


class UMT5Encoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.dim, config.eps)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids, mask: [B, L] -> [B, L, dim]. Rows at padding positions are meaningless."""
        key_mask = mask.bool()
        x = self.token_embedding(ids)
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)


def _synthetic_rules(c: TextEncoderConfig) -> tuple[Rule, ...]:
    """Upstream's init scales: q absorbs T5's missing 1/sqrt(d); small o keeps 24 residual adds in range."""
    return (
        (r"^token_embedding\.weight$", normal(1.0)),
        (r"\.attn\.q\.weight$", normal((c.dim * c.dim_attn) ** -0.5)),
        (r"\.attn\.o\.weight$", normal((c.num_heads * c.dim_attn) ** -0.5)),
        (r"\.pos_embedding\.embedding\.weight$", normal((2 * c.num_buckets * c.num_heads) ** -0.5)),
    )  # k, v, gate, fc1, fc2: the default normal(0, 1/sqrt(fan_in)); norms: 1


def warm_up_kernels(config: TextEncoderConfig, device: torch.device, dtype: torch.dtype,
                    batch: int = 2) -> None:
    """Run the encoder's matmul and attention shapes once on scratch tensors (batch 2: a prompt and its
    negative), so that the libraries' one-time setup lands here and not in the first encode. On an H200 that
    setup was 1.3 s of the first cpu_offload encode_text's forward; later forwards take 0.03 s
    (benchmarks/results/h200-141gb_2026-12-04, call 10). Needs ~105 MB at full size, back to the
    allocator's cache on return."""
    tokens = batch * config.text_len
    like = {"device": device, "dtype": dtype}
    projections = ((config.dim, config.dim_attn), (config.dim_attn, config.dim),  # q, k, v; o
                   (config.dim, config.dim_ffn), (config.dim_ffn, config.dim))  # gate, fc1; fc2
    for in_dim, out_dim in projections:
        F.linear(torch.zeros(tokens, in_dim, **like), torch.zeros(out_dim, in_dim, **like))
    q = torch.zeros(batch, config.num_heads, config.text_len, config.head_dim, **like)
    bias = torch.zeros(batch, config.num_heads, config.text_len, config.text_len, **like)
    F.scaled_dot_product_attention(q, q, q, attn_mask=bias, scale=1.0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_text_encoder(
    preset: str | TextEncoderConfig = "full",
    *,
    device: str | torch.device = "meta",
    dtype: torch.dtype = torch.bfloat16,
    seed: int | None = 0,
) -> UMT5Encoder:
    """The encoder with synthetic weights from ``seed``; on ``meta`` (or with ``seed=None``) it stays empty,
    ready for ``load_text_encoder``/``weights.load_into``."""
    config = resolve_preset(preset, TEXT_ENCODER_PRESETS, "text encoder")
    return build_module(lambda: UMT5Encoder(config), device=device, dtype=dtype, seed=seed,
                        rules=_synthetic_rules(config))


def load_text_encoder(
    path: str | Path,
    preset: str | TextEncoderConfig = "full",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> UMT5Encoder:
    """Load Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (or any file of the same layout), strictly."""
    model = build_text_encoder(preset, device="meta", dtype=dtype)
    return load_file(model, path, device=device, dtype=dtype)


class TokenizerError(ValueError):
    """A tokenizer directory that cannot be used."""

    is_input_error = True  # the user's files, whichever stage reads them


class Tokenizer(Protocol):
    vocab_size: int

    def tokenize(self, prompts: list[str], text_len: int) -> tuple[Tensor, Tensor]:
        """-> (ids [B, text_len] long, mask [B, text_len] long): right-padded, truncated, ending in EOS."""
        ...


class ByteTokenizer:
    """Deterministic, file-free stand-in for the umT5 tokenizer: UTF-8 bytes shifted past the special ids.

    Uses T5's special ids (pad 0, eos 1, unk 2); bytes wrap into the vocabulary when it is smaller than 259.
    """

    pad_id, eos_id, first_byte_id = 0, 1, 3

    def __init__(self, vocab_size: int):
        if vocab_size <= self.first_byte_id:
            raise ValueError(f"ByteTokenizer needs vocab_size > {self.first_byte_id}, got {vocab_size}")
        self.vocab_size = vocab_size

    def tokenize(self, prompts: list[str], text_len: int) -> tuple[Tensor, Tensor]:
        ids = torch.full((len(prompts), text_len), self.pad_id, dtype=torch.long)
        span = self.vocab_size - self.first_byte_id
        for row, prompt in enumerate(prompts):
            tokens = [self.first_byte_id + b % span for b in prompt.encode()][: text_len - 1] + [self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, (ids != self.pad_id).long()


class HFTokenizer:
    """The real ``google/umt5-xxl`` SentencePiece tokenizer, called as Wan calls it."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)

    def tokenize(self, prompts: list[str], text_len: int) -> tuple[Tensor, Tensor]:
        out = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=text_len,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return out["input_ids"], out["attention_mask"]


def load_tokenizer(path: str | Path) -> HFTokenizer:
    """Load a local copy of the ``google/umt5-xxl`` tokenizer files (never downloads)."""
    path = Path(path)
    if not path.is_dir():
        raise TokenizerError(
            f"{path}: no such tokenizer directory (expected the google/umt5-xxl tokenizer files)"
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokenizerError(f"{path}: cannot load tokenizer ({first_line})") from exc
    return HFTokenizer(tokenizer)


def clean_prompt(text: str) -> str:
    """Wan's 'whitespace' cleaning: unescape HTML entities, collapse whitespace (ftfy's repair is skipped)."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class TextEncoder:
    """Prompts -> embeddings as Ovi feeds them to the DiT: [B, text_len, dim], zero past each length."""

    def __init__(self, model: UMT5Encoder, tokenizer: Tokenizer, text_len: int = 512):
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} ids but the encoder embeds {model.config.vocab_size}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """-> (embeddings [B, text_len, dim], lengths [B]) on the model's device and dtype."""
        ids, mask = self.tokenizer.tokenize([clean_prompt(p) for p in prompts], self.text_len)
        device = self.model.token_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        out = self.model(ids, mask)
        return out.masked_fill(~mask.bool().unsqueeze(-1), 0.0), mask.sum(dim=1)
