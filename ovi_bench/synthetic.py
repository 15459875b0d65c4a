"""The harness's synthetic-weight rule, so that any engine can hold the reference engine's tensors.

The rule (the reference engine's, restated here because the harness does not import it): every tensor of
a component is drawn from its own generator, seeded from the SHA-256 of ``"{seed}:{name}"`` (``name`` its
key in the component's ``state_dict``), so the draw does not depend on the order of parameters. The draw
is the first matching rule of the component (a regex searched in the name), else the default: zeros for a
bias, ones for a tensor of one dimension or none, else normal(0, 1 / sqrt(fan_in)). Numbers are drawn in
float32 and then cast to the run dtype (non-floating tensors keep theirs). Two engines whose components
share state_dict names therefore hold identical tensors for the same seed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

# A draw: (shape, generator) -> tensor, or None to keep the module's own value (a computed constant).
Draw = Callable[[torch.Size, torch.Generator], "torch.Tensor | None"]
Rule = tuple[str, Draw]


def normal(std: float | Callable[[torch.Size], float]) -> Draw:
    """normal(0, std); std a number or a function of the tensor's shape."""
    return lambda shape, gen: torch.randn(shape, generator=gen, device=gen.device) * (
        std(shape) if callable(std) else std)


def fan_in_normal(gain: float) -> Draw:
    """normal(0, gain / sqrt(fan_in)): the default draw scaled by ``gain``."""
    return normal(lambda shape: gain / math.sqrt(math.prod(shape[1:])))


def filled(value: float) -> Draw:
    return lambda shape, gen: torch.full(shape, value, device=gen.device)


def keep(shape: torch.Size, gen: torch.Generator) -> None:
    """The module's own value stays (e.g. an anti-aliasing filter its constructor computes)."""
    del shape, gen  # nothing drawn


# Each component's rules, as the reference engine states them for the same checkpoint names.
FUSION_RULES: tuple[Rule, ...] = (
    (r"modulation(\.modulation)?$", normal(lambda shape: 1 / math.sqrt(shape[-1]))),
    (r"(attn\.o|ffn\.2)\.weight$", normal(lambda shape: 0.25 / math.sqrt(shape[1]))),
)
VIDEO_VAE_RULES: tuple[Rule, ...] = (
    (r"\.gamma$", lambda shape, gen: 1.0 + 0.1 * torch.randn(shape, generator=gen, device=gen.device)),
    (r"\.residual\.6\.weight$", fan_in_normal(0.5)),
    (r"\.proj\.weight$", fan_in_normal(0.5)),
    (r"^decoder\.head\.2\.weight$", fan_in_normal(0.6)),
    (r"bias$", normal(0.01)),
)
AUDIO_VAE_RULES: tuple[Rule, ...] = (
    (r"learnable_gain$", filled(0.0)),
    (r"data_mean$", filled(0.0)),
    (r"data_std$", filled(1.0)),
)
VOCODER_RULES: tuple[Rule, ...] = (  # drawn before weight-norm removal (the checkpoint's layout)
    (r"filter$", keep),
    (r"\.(alpha|beta)$", filled(0.0)),
    (r"^(resblocks|conv_post)\..*original0$", filled(0.5)),
    (r"original0$", filled(1.0)),
)


def text_encoder_rules(dim: int, dim_attn: int, num_heads: int, num_buckets: int) -> tuple[Rule, ...]:
    return (
        (r"^token_embedding\.weight$", normal(1.0)),
        (r"\.attn\.q\.weight$", normal((dim * dim_attn) ** -0.5)),
        (r"\.attn\.o\.weight$", normal((num_heads * dim_attn) ** -0.5)),
        (r"\.pos_embedding\.embedding\.weight$", normal((2 * num_buckets * num_heads) ** -0.5)),
    )


def generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return gen


def default_draw(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("bias"):
        return torch.zeros(shape, device=gen.device)
    if len(shape) <= 1:
        return torch.ones(shape, device=gen.device)
    return torch.randn(shape, generator=gen, device=gen.device) / math.sqrt(math.prod(shape[1:]))


@torch.no_grad()
def fill(module: nn.Module, *, seed: int, device: str | torch.device, dtype: torch.dtype,
         rules: Sequence[Rule] = (), draw_on: str | torch.device | None = None) -> nn.Module:
    """Give ``module`` (on ``meta`` or materialized) its synthetic tensors on ``device``, in ``dtype``.

    ``draw_on`` (default ``device``): where the numbers are drawn; the same device type gives the same
    numbers, so parity holds between engines that draw on the same kind of device."""
    device = torch.device(device)
    gen_device = torch.device(draw_on) if draw_on is not None else device
    compiled = [(re.compile(pattern), draw) for pattern, draw in rules]
    values: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        gen = generator(seed, name, gen_device)
        draw = next((d for rx, d in compiled if rx.search(name)), None)
        value = draw(tensor.shape, gen) if draw is not None else default_draw(name, tensor.shape, gen)
        if value is None:
            value = tensor
        # cast where it was drawn, then move: a copy that also casts across devices stages through fresh
        # pageable host memory and runs several times slower (benchmarks/results/h200-141gb_2026-12-02)
        value = value.to(dtype=dtype if tensor.is_floating_point() else tensor.dtype)
        values[name] = value.to(device=device)
    module.load_state_dict(values, strict=True, assign=True)
    return module.eval().requires_grad_(False)
