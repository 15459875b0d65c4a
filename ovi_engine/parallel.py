"""Ulysses-style sequence parallelism for the fusion transformer, on torch.distributed.

N ranks (started by `torchrun`; NCCL on GPUs, gloo on CPUs) run one generation together. Every rank
embeds the whole input, then keeps one contiguous shard of each tower's tokens (the sequence padded at
the end to a multiple of N: audio 157 -> 160 at N=4). Per-token work (projections, norms, modulation, FFN)
runs on the shard. Attention swaps the layout with an all-to-all: tokens sharded, all heads ->
all tokens, H/N heads; it attends over the whole sequence (padding keys cut off), then swaps back.
Text cross-attention needs no exchange: the text K/V are computed on every rank. The fusion
cross-attention exchanges the other tower's K/V the same way. The head output is all-gathered, so every
rank holds the full prediction and steps its solver identically (sampling.py runs unchanged).

Per-frame modulation: a shard need not start at a frame boundary. It is cut into pieces of P tokens,
P = gcd(shard length, frame length), so each piece lies in one frame and carries that frame's
modulation; TowerState.grouped() then views the shard as [B, pieces, P, C] as it views frames at N=1.

    torchrun --nproc-per-node 4 my_script.py   # in my_script.py:
    sp = init_sequence_parallel()              # process group from torchrun's environment
    model = build_fusion_model("full", device=sp.device)
    enable_sequence_parallel(model, sp)        # then sample(model, ...) as on one device
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

from ovi_engine.attention import attend
from ovi_engine.dit import TowerState

if TYPE_CHECKING:
    from ovi_engine.fusion import FusionModel

__all__ = ["SequenceParallel", "SequenceShard", "enable_sequence_parallel", "init_sequence_parallel",
           "shard_pieces"]


@dataclass(frozen=True)
class SequenceParallel:
    """The ranks that share one generation, and this rank's place among them."""

    group: dist.ProcessGroup
    rank: int
    world_size: int
    device: torch.device

    def scatter_heads(self, x: Tensor) -> Tensor:
        """[B, local, H, D] (all heads of this rank's tokens) -> [B, N*local, H/N, D] (all tokens of this
        rank's heads), in token order."""
        b, n, h, d = x.shape
        chunks = x.view(b, n, self.world_size, h // self.world_size, d).permute(2, 0, 1, 3, 4).contiguous()
        return self._all_to_all(chunks).transpose(0, 1).reshape(b, self.world_size * n, -1, d)

    def gather_heads(self, x: Tensor) -> Tensor:
        """Inverse of scatter_heads: [B, N*local, H/N, D] -> [B, local, H, D]."""
        b, _, h, d = x.shape
        chunks = x.reshape(b, self.world_size, -1, h, d).transpose(0, 1).contiguous()
        return self._all_to_all(chunks).permute(1, 2, 0, 3, 4).reshape(b, -1, self.world_size * h, d)

    def _all_to_all(self, x: Tensor) -> Tensor:
        """Send x[j] to rank j; rank i's x[i] arrives at out[i]."""
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.group)
        return out

    def shard(self, s: TowerState) -> TowerState:
        """This rank's shard of a tower's prepared state (a fresh copy; the full state can be freed)."""
        shard = SequenceShard(self, length=s.x.shape[1], local=math.ceil(s.x.shape[1] / self.world_size))
        groups = s.e.shape[1]
        index = shard_pieces(shard.length, groups, shard.start, shard.local, device=s.e.device)
        return replace(
            s,
            x=shard.take(s.x, dim=1),
            e=s.e.index_select(1, index),
            e0=s.e0.index_select(1, index),
            cos=shard.take(s.cos, dim=0),
            sin=shard.take(s.sin, dim=0),
            shard=shard,
        )


def shard_pieces(length: int, groups: int, start: int, local: int, *, device: torch.device | str = "cpu"
                 ) -> Tensor:
    """Cut the shard [start, start + local) of `length` tokens in `groups` equal time groups into equal
    pieces that each lie in one group; return the group index of each piece. Padding past `length` belongs
    to the last group (its values are never read)."""
    group_len = length // groups
    piece = local if groups == 1 else math.gcd(local, group_len)
    starts = start + torch.arange(0, local, piece, device=device)
    return (starts // group_len).clamp_(max=groups - 1)


@dataclass(frozen=True)
class SequenceShard:
    """One tower's token shard on this rank: tokens [start, start + local) of `length` (+ padding)."""

    sp: SequenceParallel
    length: int  # real tokens of the whole sequence
    local: int  # tokens per rank, padding included

    @property
    def start(self) -> int:
        return self.sp.rank * self.local

    def take(self, t: Tensor, dim: int) -> Tensor:
        """This rank's `local` entries of t along dim, zero-padded past the real length; a new tensor."""
        part = t.narrow(dim, self.start, max(0, min(self.local, self.length - self.start)))
        pad = self.local - part.shape[dim]
        if pad == 0:
            return part.clone(memory_format=torch.contiguous_format)
        zeros = part.new_zeros(*part.shape[:dim], pad, *part.shape[dim + 1:])
        return torch.cat([part, zeros], dim=dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, keys: SequenceShard, backend: str) -> Tensor:
        """Attention of this shard's queries [B, local, H, D] over the whole sequence whose shards of k, v
        [B, keys.local, H, D] the ranks hold. Returns [B, local, H, D]."""
        q, k, v = (self.sp.scatter_heads(x) for x in (q, k, v))
        out = attend(q, k[:, : keys.length], v[:, : keys.length], backend=backend)
        del q, k, v
        return self.sp.gather_heads(out)

    def gather(self, out: Tensor) -> Tensor:
        """All ranks' shards of a per-token output [B, local, ...] -> [B, length, ...] on every rank."""
        parts = [torch.empty_like(out) for _ in range(self.sp.world_size)]
        dist.all_gather(parts, out.contiguous(), group=self.sp.group)
        return torch.cat(parts, dim=1)[:, : self.length]




def init_sequence_parallel(device: str | torch.device | None = None,
                           timeout_s: float = 600.0) -> SequenceParallel:
    """Join the process group that torchrun's environment describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): NCCL on cuda:LOCAL_RANK, gloo on the CPU. Already joined: reuse it."""
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast stays off on the shared machines
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    group = dist.group.WORLD
    assert group is not None
    return SequenceParallel(group, dist.get_rank(), dist.get_world_size(), device)


def enable_sequence_parallel(model: FusionModel, sp: SequenceParallel | None) -> None:
    """Make a FusionModel's forward run sequence-parallel over sp's ranks (None, or one rank: plain)."""
    heads = model.config.video.num_heads
    if sp is not None and heads % sp.world_size:
        raise ValueError(f"{heads} attention heads do not split over {sp.world_size} ranks")
    model.sequence_parallel = sp if sp is not None and sp.world_size > 1 else None
