"""The shipped shape table (ovi_bench.model_shapes) is the checkpoint schemas, written symbolically.

`symbolize` rebuilds the table from tests/reference/*.schema.json (upstream's own state-dict shapes): each
tensor goes to its module's group by name, a block's tensors once per layer, and every dimension that is one
of the group's named widths (or, in the convolutional codecs, a power-of-two multiple or fraction of the base
width) is written by its name. The shipped table must be exactly that, and expanding it at the full dims
must give every schema's parameter count.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from ovi_bench import model_shapes
from ovi_bench.model_shapes import DIMS, SHAPES, module_elements

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
SCHEMAS = {"fusion": "ovi_fusion_11b", "text_encoder": "umt5_xxl_encoder", "video_vae": "wan22_vae",
           "audio_codec": "mmaudio_featuresutils_16k_runtime"}
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def _group(module: str, name: str) -> str:
    """The table's group of a tensor: per-layer groups end in `_block`."""
    head = name.split(".")[0]
    if module == "fusion":
        tower = head.removesuffix("_model")
        return f"{tower}_block" if _BLOCK.search(name) else f"{tower}_rest"
    if module == "text_encoder":
        return "block" if _BLOCK.search(name) else "rest"
    if module == "video_vae":
        return head if head in ("encoder", "decoder") else "latent_convs"
    if name.startswith("mel_converter."):
        return "mel_buffers"
    return "vocoder" if name.startswith("tod.vocoder.") else "vae"


# Widths written by name: exact values for the transformers, a base width for the convolutional codecs.
EXACT = {"fusion": {3072: "dim", 14336: "ffn_dim", 4096: "text_dim", 256: "freq_dim", 18432: "6*dim",
                    8192: "embed_hidden"},
         "text_encoder": {256384: "vocab_size", 4096: "dim", 10240: "dim_ffn", 64: "num_heads"}}
BASE = {"encoder": ("vae_dim", 160), "decoder": ("vae_dec_dim", 256), "vae": ("audio_vae_dim", 384),
        "vocoder": ("vocoder_channels", 1536)}


def _symbol(module: str, group: str, size: int) -> int | str:
    if module in EXACT:
        return EXACT[module].get(size, size)
    if group not in BASE:
        return size
    name, base = BASE[group]
    ratio = Fraction(size, base)
    if ratio >= 1 and ratio.denominator == 1 and ratio.numerator in (1, 2, 4, 8, 12):
        return name if ratio == 1 else f"{ratio.numerator}*{name}"
    if ratio < 1 and ratio.numerator == 1 and ratio.denominator in (2, 4, 8, 16, 32, 64):
        return f"{name}/{ratio.denominator}"
    return size


def symbolize(module: str) -> dict[str, list[tuple[tuple[int | str, ...], int]]]:
    schema = json.loads((REFERENCE / f"{SCHEMAS[module]}.schema.json").read_text())
    counts: dict[str, Counter[tuple[int | str, ...]]] = {}
    for name, shape, _ in schema["tensors"]:
        group = _group(module, name)
        block = _BLOCK.search(name) if module in EXACT else None
        if block and block.group(1) != "0":
            continue  # every layer has layer 0's shapes (checked below by the parameter count)
        counts.setdefault(group, Counter())[tuple(_symbol(module, group, s) for s in shape)] += 1
    return {group: sorted(c.items(), key=str) for group, c in sorted(counts.items())}


@pytest.mark.parametrize("module", sorted(SCHEMAS))
def test_the_table_is_the_schema_written_symbolically(module: str) -> None:
    assert {g: list(v) for g, v in SHAPES[module].items()} == symbolize(module)


@pytest.mark.parametrize("module", sorted(SCHEMAS))
def test_the_table_at_full_dims_counts_every_schema_element(module: str) -> None:
    schema = json.loads((REFERENCE / f"{SCHEMAS[module]}.schema.json").read_text())
    assert module_elements(module, DIMS["full"]) == sum(math.prod(s) for _, s, _ in schema["tensors"])


def test_tiny_dims_come_from_the_checkout_presets() -> None:
    from ovi_bench.engines.checkout import PRESETS

    tiny = PRESETS["tiny"]
    assert (DIMS["tiny"]["dim"] == tiny.fusion["dim"]
            and DIMS["tiny"]["num_layers"] == tiny.fusion["num_layers"])
    assert DIMS["tiny"]["vocoder_channels"] == tiny.vocoder_channels
    assert model_shapes.evaluate("4*vae_dim", DIMS["tiny"]) == 4 * tiny.video_vae["dim"]
