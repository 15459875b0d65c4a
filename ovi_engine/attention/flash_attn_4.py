"""FlashAttention-4 (PyPI `flash-attn-4`, module `flash_attn.cute`): CuTe-DSL kernels for Hopper and
Blackwell, JIT-compiled on the first call of each configuration (the probe's call pays that, see
BackendStatus.first_call_s). Takes [B, L, H, D] as we do and returns (out, lse).

FA4 picks its forward tile from heuristics tuned on an H100 (128x128 at head_dim 128 on sm90). Where
`fa4_tiles.json` names a tile for this GPU's compute capability and head dim, measured faster over a whole
fusion step's attention calls by `benchmarks/fa4_tiles.py`, every call asks for that tile instead; the
probe's call then runs it too.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import Backend, needs_cuda, needs_half, package_version

FA4_VERSION = "4.0.0b40"
INSTALL = f"pip install 'ovi-bench[fa4]' (flash-attn-4=={FA4_VERSION})"
TILES_FILE = Path(__file__).with_name("fa4_tiles.json")
TILES_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Fa4Tile:
    """One forward launch choice of FA4 on sm90 (the fields its `_flash_attn_fwd` takes)."""

    tile_m: int
    tile_n: int
    mma_pv_is_rs: bool = True  # P@V with P from registers
    intra_wg_overlap: bool = True  # softmax of one tile overlaps the next tile's QK^T
    num_splits: int = 1  # split-KV: 1 none, 0 FA4 decides per shape

    def label(self) -> str:
        flags = [name for name, on in (("RS", self.mma_pv_is_rs), ("overlap", self.intra_wg_overlap)) if on]
        splits = {1: [], 0: ["auto splits"]}.get(self.num_splits, [f"{self.num_splits} splits"])
        return " ".join([f"{self.tile_m}x{self.tile_n}", *flags, *splits])

    def launch_kwargs(self) -> dict[str, Any]:
        return {"tile_mn": (self.tile_m, self.tile_n), "mma_pv_is_rs": self.mma_pv_is_rs,
                "intra_wg_overlap": self.intra_wg_overlap, "num_splits": self.num_splits}


TileKey = tuple[str, int]  # ("9.0", head_dim)


def read_tiles(path: Path = TILES_FILE) -> dict[TileKey, Fa4Tile]:
    """The tuned tiles by (compute capability, head dim); raises ValueError on a file of another schema."""
    data = json.loads(path.read_text())
    if data.get("schema_version") != TILES_SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {data.get('schema_version')!r}, this code reads "
                         f"{TILES_SCHEMA_VERSION}")
    fields = Fa4Tile.__dataclass_fields__
    return {(e["capability"], e["head_dim"]): Fa4Tile(**{k: v for k, v in e.items() if k in fields})
            for e in data["tiles"]}


def tile_entry(capability: str, head_dim: int, tile: Fa4Tile, **measured: Any) -> dict[str, Any]:
    """One entry of fa4_tiles.json: the key, the tile, and what was measured to choose it."""
    return {"capability": capability, "head_dim": head_dim, **asdict(tile), **measured}


@functools.cache
def _tiles() -> dict[TileKey, Fa4Tile]:
    return read_tiles()


def capability_of(t: Tensor) -> str | None:
    if not t.is_cuda:
        return None
    major, minor = torch.cuda.get_device_capability(t.device)
    return f"{major}.{minor}"


def tuned_tile(capability: str | None, head_dim: int) -> Fa4Tile | None:
    return None if capability is None else _tiles().get((capability, head_dim))


def missing_fa4() -> str | None:
    # `flash_attn` may be FlashAttention-2's package, which has no `cute` submodule.
    try:
        found = importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:  # no `flash_attn` package at all
        found = False
    return None if found else f"module flash_attn.cute is not installed ({INSTALL})"


def check(device: torch.device, dtype: torch.dtype) -> str | None:
    reason = missing_fa4() or needs_cuda(device, nvidia_only=True) or needs_half(dtype)
    if reason is None and torch.cuda.get_device_capability(device)[0] < 9:
        major, minor = torch.cuda.get_device_capability(device)
        reason = f"needs a Hopper or Blackwell GPU (sm90 or newer), this is sm{major}{minor}"
    return reason


def attend_fa4(q: Tensor, k: Tensor, v: Tensor, tile: Fa4Tile | None) -> Tensor:
    """FA4's forward with `tile`, or with FA4's own choice for None."""
    if tile is None:
        from flash_attn.cute import flash_attn_func

        out = flash_attn_func(q, k, v)
    else:
        # flash_attn_func takes a tile only inside a whole FwdConfig; the forward it wraps takes the fields.
        from flash_attn.cute.interface import _flash_attn_fwd

        out = _flash_attn_fwd(q, k, v, **tile.launch_kwargs())
    return out[0] if isinstance(out, tuple) else out  # (out, lse, ...), lse None unless asked for


def fa4(q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor | None) -> Tensor:
    return attend_fa4(q, k, v, tuned_tile(capability_of(q), q.shape[-1]))


FLASH_ATTN_4 = Backend(
    name="flash_attn_4",
    kernel=f"{package_version('flash-attn-4')} flash_attn.cute (CuTe-DSL, JIT; tile from fa4_tiles.json "
           "where it names this GPU)",
    fn=fa4,
    check=check,
)
