"""Memory policies: where each large module lives during each stage, and when it is released.

The seed's OOM came from the fusion model (23 GB) and the text encoder (11 GB) staying on the device through
the VAE decode. ``all_gpu`` releases them at the right moments; ``keep_resident`` is the behaviour before the
fix, kept as the negative control; ``cpu_offload`` keeps modules on the host and streams the fusion blocks;
``sequential`` never holds the text encoder and the fusion model at once (960x960_10s on a 32 GB card).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ovi_engine.host_memory import HostArena
from ovi_engine.weights import host_storage, module_bytes

MODULES = ("text_encoder", "fusion", "video_vae", "audio_codec")
# Which modules each stage needs on the device.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "encode_text": ("text_encoder",),
    "encode_image": ("video_vae",),
    "denoise": ("fusion",),
    "decode_video": ("video_vae",),
    "decode_audio": ("audio_codec",),
}


@dataclass(frozen=True)
class PlacementPolicy:
    name: str
    description: str
    offload_between_stages: bool = False  # modules live on the host and visit the device for their stage
    load_at_start: tuple[str, ...] = MODULES  # built in the load stage; any other when a stage first needs it
    release_after: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> modules to free
    release_before_decode: tuple[str, ...] = ()  # freed in the release stage, before any decode

    @property
    def reloads_per_generation(self) -> tuple[str, ...]:
        """Modules freed during a generation, which the next one (or the next prompt) builds again."""
        freed = [*(m for names in self.release_after.values() for m in names), *self.release_before_decode]
        return tuple(dict.fromkeys(freed))


POLICIES: dict[str, PlacementPolicy] = {
    p.name: p
    for p in (
        PlacementPolicy(
            "all_gpu",
            "everything on the device; text encoder freed after encoding, fusion model freed before decode",
            release_after={"encode_text": ("text_encoder",)},
            release_before_decode=("fusion", "text_encoder"),
        ),
        PlacementPolicy(
            "cpu_offload",
            "modules on the host, each on the device only during its stage; fusion blocks streamed",
            offload_between_stages=True,
        ),
        PlacementPolicy(
            "keep_resident",
            "nothing released (the behaviour before the OOM fix; the negative control)",
        ),
        PlacementPolicy(
            "sequential",
            "the text encoder alone on the device for encode_text, then freed (rebuilt for each prompt); the "
            "fusion model built at the start of denoise, so its load time and weights count in the denoise "
            "stage, and freed before decode; the VAEs built when first needed, then kept",
            load_at_start=("text_encoder",),
            release_after={"encode_text": ("text_encoder",)},
            release_before_decode=("fusion", "text_encoder"),
        ),
    )
}


class UnknownPolicyError(ValueError):
    pass


def get_policy(name: str) -> PlacementPolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise UnknownPolicyError(f"unknown placement policy {name!r}; choose one of: "
                                 f"{', '.join(POLICIES)}") from None


@dataclass(frozen=True)
class ModulePlacement:
    module: str
    device: str  # "cuda:0", "cpu", "released" (freed after use) or "not loaded" (never built yet)
    bytes: int


ALLOC_CONF_VARS = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF")


def configure_allocator(device: torch.device) -> str:
    """Turn on the CUDA caching allocator's expandable segments, unless the user configured the allocator;
    returns the setting in effect (for describe()).

    Without them a tensor that outlives its stage (the latents, a module's arena) keeps the whole segment it
    was cut from reserved, and empty_cache cannot return it: under a 22 GiB budget a 1472x1472 5 s clip with
    cpu_offload ran out of memory in decode_video with 16.6 GiB allocated and 20.7 GiB reserved. Expandable
    segments map and unmap pages, so after empty_cache what stays reserved is what is allocated. Any allocator
    variable the user set is left alone: setting the allocator resets the options the string does not name.
    Not set on ROCm, where it is untested here (a user can set it in PYTORCH_HIP_ALLOC_CONF).
    """
    if device.type != "cuda":
        return "host"
    for var in ALLOC_CONF_VARS:
        if os.environ.get(var):
            return f"{var}={os.environ[var]} (the user's)"
    if torch.version.hip is not None:
        return "default (ROCm: expandable segments not set by the engine)"
    set_settings = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if set_settings is None:  # torch before the accelerator API
        set_settings = torch.cuda.memory._set_allocator_settings
    set_settings("expandable_segments:True")
    return "expandable_segments (set by the engine)"


def empty_device_cache(device: torch.device) -> None:
    """Return freed blocks to the driver so the next stage (and other processes) can use them."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


class BlockStreamer:
    """Streams a sequence of blocks from their host arenas to the device, one block ahead of use.

    Before a block runs, its arena is copied to the device in one transfer on a side stream (prefetching the
    next block's), and after it runs its tensors point back at the host arena, so at most two blocks occupy
    device memory at a time.
    """

    def __init__(self, blocks: Iterable[nn.Module], arenas: Iterable[HostArena],
                 device: torch.device) -> None:
        self.blocks = list(blocks)
        self.arenas = list(arenas)
        self.device = device
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.ready: dict[int, torch.cuda.Event | None] = {}
        self.handles = [b.register_forward_pre_hook(self._before(i)) for i, b in enumerate(self.blocks)]
        self.handles += [b.register_forward_hook(self._after(i)) for i, b in enumerate(self.blocks)]

    def _fetch(self, i: int) -> None:
        if i >= len(self.blocks) or i in self.ready:
            return
        stream = self.copy_stream
        with torch.cuda.stream(stream) if stream is not None else _null():
            self.arenas[i].to(self.device, non_blocking=True)
        self.ready[i] = torch.cuda.Event() if stream is not None else None
        if stream is not None:
            self.ready[i].record(stream)  # type: ignore[union-attr]

    def _before(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: object) -> None:
            for skipped in [j for j in self.ready if j < i]:  # prefetched for a block the pass left out (SLG)
                self._return(skipped)
            self._fetch(i)
            event = self.ready[i]
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            self._fetch(i + 1)

        return hook

    def _after(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            self._return(i)

        return hook

    def _return(self, i: int) -> None:
        """Point block i back at its host arena, freeing its device copy."""
        arena = self.arenas[i]
        if self.device.type == "cuda" and arena.device_buffer is not None:
            # allocated on the copy stream, read on the compute stream: free it only after that reads
            arena.device_buffer.record_stream(torch.cuda.current_stream(self.device))
        arena.to_host()
        self.ready.pop(i, None)

    def settle(self) -> None:
        """Return every block still on the device when the stage ends. A block prefetched for a skipped one
        goes back when the next block starts (seen on the H200: SLG's pair 11 stayed on, +0.73 GB at
        720x720_5s, from the last step into the next generation); this catches a skipped last block."""
        for i in list(self.ready):
            self._return(i)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _held(arenas: Iterable[HostArena]) -> set[int]:
    return {i for arena in arenas for i in arena.holds()}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class ModuleSlot:
    """One large module: how to build it, where it is, and how long its (re)loads took."""

    name: str
    build: Callable[[torch.device], nn.Module]
    module: nn.Module | None = None
    load_s: list[float] = field(default_factory=list)
    arenas: list[HostArena] = field(default_factory=list)  # host storage that visits the device (offload)

    def placement(self) -> ModulePlacement:
        if self.module is None:
            return ModulePlacement(self.name, "released" if self.load_s else "not loaded", 0)
        first = next(iter(self.module.state_dict().values()), None)
        where = str(first.device) if first is not None else "cpu"
        return ModulePlacement(self.name, where, module_bytes(self.module))


class Placement:
    """Applies a policy to a set of module slots as the pipeline moves from stage to stage."""

    def __init__(self, policy: PlacementPolicy, slots: dict[str, ModuleSlot], device: torch.device,
                 stream_blocks: Callable[[nn.Module], list[nn.Module]] | None = None) -> None:
        self.policy = policy
        self.slots = slots
        self.device = device
        self.stream_blocks = stream_blocks
        self.streamers: dict[str, BlockStreamer] = {}

    def load(self) -> None:
        for name in self.policy.load_at_start:
            self._build(self.slots[name])

    def _build(self, slot: ModuleSlot) -> None:
        if slot.module is not None:
            return
        start = time.perf_counter()
        if self.policy.offload_between_stages:
            self._build_on_host(slot)
        else:
            slot.module = slot.build(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        slot.load_s.append(time.perf_counter() - start)

    def _build_on_host(self, slot: ModuleSlot) -> None:
        """Build the module into host arenas (pinned with an accelerator), filled in place as it is read or
        synthesized. The fusion model gets one arena per block pair, which are streamed, and one for the
        small rest, which stays on the device."""
        pin = self.device.type == "cuda"
        blocks: list[nn.Module] = []
        streamed: list[HostArena] = []

        def give(module: nn.Module) -> None:  # weights.py calls this on the meta module before filling it
            if slot.name == "fusion" and self.stream_blocks is not None:
                blocks.extend(self.stream_blocks(module))
                streamed.extend(HostArena([b], pin=pin) for b in blocks)
            slot.arenas.append(HostArena([module], pin=pin, skip=_held(streamed)))

        with host_storage(give):
            slot.module = slot.build(torch.device("cpu"))
        # What the builder made without asking for storage (the audio codec, buffers a module recomputed)
        rest = HostArena([slot.module], pin=pin, skip=_held([*streamed, *slot.arenas]))
        if rest.tensors:
            slot.arenas.append(rest)
        if blocks:
            self.streamers[slot.name] = BlockStreamer(blocks, streamed, self.device)
            for arena in slot.arenas:
                arena.to(self.device)

    def enter(self, stage: str) -> None:
        """Make the stage's modules available on the device (building them if released or never built)."""
        for name in STAGE_MODULES.get(stage, ()):
            slot = self.slots[name]
            self._build(slot)
            if self.policy.offload_between_stages and name not in self.streamers:
                for arena in slot.arenas:  # the whole module in one copy per arena
                    arena.to(self.device)

    def leave(self, stage: str) -> None:
        if self.policy.offload_between_stages:
            for name in STAGE_MODULES.get(stage, ()):
                if name in self.streamers:
                    self.streamers[name].settle()
                else:
                    for arena in self.slots[name].arenas:
                        arena.to_host()
            empty_device_cache(self.device)
        for name in self.policy.release_after.get(stage, ()):
            self.free(name)

    def release(self) -> None:
        """The release stage, between denoise and decode."""
        for name in self.policy.release_before_decode:
            self.free(name)
        empty_device_cache(self.device)

    def free(self, name: str) -> None:
        slot = self.slots[name]
        if slot.module is None:
            return
        if name in self.streamers:
            self.streamers.pop(name).close()
        slot.module = None
        slot.arenas = []
        empty_device_cache(self.device)

    def report(self) -> list[ModulePlacement]:
        return [slot.placement() for slot in self.slots.values()]
