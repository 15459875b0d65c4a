"""Host memory for modules kept off the device: one exactly-sized buffer (an arena) per module.

Every parameter and buffer of the module becomes a view into the arena, so moving the module to the device
is one allocation and one copy, and moving it back is re-pointing the views at the host (weights are read
only). Pinned arenas are page-locked with cudaHostRegister on an ordinary allocation: pinning tensor by
tensor (``pin_memory()``) goes through PyTorch's caching host allocator, which rounds every block up to a
power of two, so a 23 GB fusion model could hold ~1.5x that in page-locked memory.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Iterable

import torch
from torch import Tensor, nn

ALIGNMENT = 256  # bytes: where each tensor starts, as the CUDA caching allocator aligns its blocks


Owner = tuple[nn.Module, str]  # a submodule and the name it registers a parameter or buffer under


def module_tensors(modules: Iterable[nn.Module],
                   skip: Collection[int] = ()) -> dict[int, tuple[Tensor, list[Owner]]]:
    """Every parameter and buffer of ``modules`` once (ids in ``skip`` left out), with
    where it is registered."""
    found: dict[int, tuple[Tensor, list[Owner]]] = {}
    for module in modules:
        for sub in module.modules():
            for key, t in (*sub._parameters.items(), *sub._buffers.items()):
                if t is not None and id(t) not in skip:
                    found.setdefault(id(t), (t, []))[1].append((sub, key))
    return found


def _round_up(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _unregister(buffer: Tensor) -> None:
    torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())


class HostArena:
    """The tensors of some modules packed into one host buffer, each at an ``alignment``-byte offset.

    Tensors on ``meta`` get uninitialized room (to be filled in place, e.g. by ``weights.synthesize``);
    others are copied in. ``pin`` page-locks the buffer (needs CUDA), so device copies are asynchronous and
    at full bandwidth.
    """

    def __init__(self, modules: Iterable[nn.Module], *, pin: bool, alignment: int = ALIGNMENT,
                 skip: Collection[int] = ()) -> None:
        found = list(module_tensors(modules, skip).values())
        self.offsets: list[int] = []
        total = 0
        for t, _ in found:
            self.offsets.append(total)
            total += _round_up(t.numel() * t.element_size(), alignment)
        self.nbytes = total
        self.alignment = alignment
        self.host = torch.empty(total, dtype=torch.uint8)
        self.pinned = pin and total > 0
        if self.pinned:
            # cudaHostRegister faults every page in on one thread (2.8 GB/s on the H200 VM); zero_ faults
            # them on all of torch's threads (22 GB/s with 16), so registering only locks them (18 GB/s).
            self.host.zero_()
            error = torch.cuda.cudart().cudaHostRegister(self.host.data_ptr(), total, 0)
            if int(error) != 0:
                raise RuntimeError(f"cudaHostRegister of a {total}-byte host arena failed "
                                   f"(cudaError {int(error)})")
            weakref.finalize(self, _unregister, self.host)
        self.device_buffer: Tensor | None = None  # the device copy while the tensors live there
        # New tensor objects (a meta tensor's data cannot be swapped for a CPU one); later moves swap .data.
        self.tensors: list[Tensor] = []
        for (t, owners), offset in zip(found, self.offsets):
            view = self._view(self.host, t, offset)
            if not t.is_meta:
                view.copy_(t)
            packed = (nn.Parameter(view, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter)
                      else view)
            for sub, key in owners:
                (sub._parameters if key in sub._parameters else sub._buffers)[key] = packed
            self.tensors.append(packed)

    @staticmethod
    def _view(buffer: Tensor, like: Tensor, offset: int) -> Tensor:
        return buffer[offset : offset + like.numel() * like.element_size()].view(like.dtype).view(like.shape)

    def _views(self, buffer: Tensor) -> list[Tensor]:
        return [self._view(buffer, t, offset) for t, offset in zip(self.tensors, self.offsets)]

    def holds(self) -> set[int]:
        return {id(t) for t in self.tensors}

    def to(self, device: torch.device, *, non_blocking: bool = False) -> None:
        """Point every tensor at a device copy of the arena, made in one transfer (on the current stream)."""
        buffer = torch.empty(self.nbytes, dtype=torch.uint8, device=device)
        buffer.copy_(self.host, non_blocking=non_blocking and self.pinned)
        for t, view in zip(self.tensors, self._views(buffer)):
            t.data = view
        self.device_buffer = buffer

    def to_host(self) -> None:
        """Point every tensor back at the host arena; the device copy is freed once nothing uses it."""
        for t, view in zip(self.tensors, self._views(self.host)):
            t.data = view
        self.device_buffer = None
