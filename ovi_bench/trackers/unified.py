"""AMD and unified-memory readers: what the GPU really holds, from every source that claims to know.

On an APU such as Strix Halo (gfx1151) the sources disagree: HIP and torch see only the BIOS carve-out
(`mem_info_vram_total`), the GPU allocates mostly from GTT (system RAM mapped for it, capped by the
ttm/amdttm `pages_limit`), amd-smi may report VRAM alone, and `mem_get_info` may say more is free than
exists. This module reads each view separately and names it, so a report shows them side by side:

- sysfs: `/sys/class/drm/card*/device/mem_info_{vram,gtt}_{used,total}` of the card that is the torch
  device, matched by PCI address (`match_card` says how it matched);
- amdsmi (the `amd` extra), when installed: VRAM and GTT usage of the same PCI address;
- HIP's `mem_get_info` (total - free), dropped when free > total;
- the host: `MemTotal - MemAvailable` from /proc/meminfo.

The unified footprint is sysfs VRAM + GTT used, above the level read before the run started; on a
unified device the profile's limits are judged on it. `memory_configuration` records what decides what
fits (carve-out, GTT total, pages_limit, versions, flags). Every path, the amdsmi module and the
environment are parameters, so the tests run on fake trees.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONFIGURATION_SCHEMA_VERSION = 1

# Environment variables that change what fits or which kernels run on ROCm.
ROCM_FLAGS = ("HSA_OVERRIDE_GFX_VERSION", "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL", "PYTORCH_HIP_ALLOC_CONF",
              "MIOPEN_FIND_MODE")
TTM_MODULES = ("ttm", "amdttm")  # amdttm: the ROCm DKMS driver's copy of ttm
FOOTPRINT = "unified.footprint"  # the view a unified device's limits are judged on
CARD_NAME = re.compile(r"^card\d+$")


@dataclass(frozen=True)
class SystemPaths:
    """Where the readers look; tests point every one of them into a temporary tree."""

    sys_root: Path = Path("/sys")
    meminfo: Path = Path("/proc/meminfo")
    osrelease: Path = Path("/proc/sys/kernel/osrelease")
    rocm_root: Path = Path(os.environ.get("ROCM_PATH", "/opt/rocm"))

    @classmethod
    def under(cls, root: Path) -> SystemPaths:
        """The same layout below `root` (root/sys, root/proc/meminfo, root/opt/rocm)."""
        return cls(root / "sys", root / "proc/meminfo", root / "proc/sys/kernel/osrelease", root / "opt/rocm")


DEFAULT_PATHS = SystemPaths()


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def read_meminfo(path: Path) -> dict[str, int]:
    """/proc/meminfo in bytes: {'MemTotal': ..., 'MemAvailable': ...}."""
    values: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def pci_address(props: Any) -> str | None:
    """The torch device's PCI address, 'dddd:bb:dd.0', from its properties (pci_domain_id, pci_bus_id,
    pci_device_id; torch fills them on CUDA and ROCm builds). A GPU is function 0 of its device."""
    bus, device = getattr(props, "pci_bus_id", None), getattr(props, "pci_device_id", None)
    if bus is None or device is None:
        return None
    return f"{getattr(props, 'pci_domain_id', 0) or 0:04x}:{bus:02x}:{device:02x}.0"


@dataclass
class CardMatch:
    path: Path | None  # /sys/class/drm/cardN/device, None when no card matched
    how: str  # e.g. "PCI address 0000:c1:00.0", "the only amdgpu card", or why none matched


def _slot_name(device_dir: Path) -> str | None:
    for line in (_read_text(device_dir / "uevent") or "").splitlines():
        if line.startswith("PCI_SLOT_NAME="):
            return line.split("=", 1)[1].lower()
    return None


def match_card(sys_root: Path, address: str | None) -> CardMatch:
    """The amdgpu card (one that has mem_info_vram_total) at `address`, by its uevent's PCI_SLOT_NAME.

    Without an address, a single amdgpu card is taken as the device; several make the match ambiguous.
    """
    drm = sys_root / "class/drm"
    cards = sorted(d / "device" for d in drm.glob("card*")
                   if CARD_NAME.match(d.name) and (d / "device/mem_info_vram_total").exists())
    if not cards:
        return CardMatch(None, f"no amdgpu card under {drm}")
    if address is not None:
        for card in cards:
            if _slot_name(card) == address.lower():
                return CardMatch(card, f"PCI address {address}")
        return CardMatch(None, f"no amdgpu card at PCI address {address} under {drm}")
    if len(cards) == 1:
        return CardMatch(cards[0], "the only amdgpu card (torch gave no PCI address)")
    return CardMatch(None, f"{len(cards)} amdgpu cards and torch gave no PCI address: ambiguous")


@dataclass
class SysfsMemory:
    vram_used: int | None
    vram_total: int | None
    gtt_used: int | None
    gtt_total: int | None


def read_sysfs_memory(card: Path) -> SysfsMemory:
    return SysfsMemory(*(_read_int(card / f"mem_info_{name}")
                         for name in ("vram_used", "vram_total", "gtt_used", "gtt_total")))


def import_amdsmi() -> Any | None:
    """The amdsmi module, initialised, or None (not installed, or no driver access)."""
    try:
        import amdsmi

        amdsmi.amdsmi_init()
    except Exception:  # noqa: BLE001 - absent or unusable amdsmi is a missing view, not an error
        return None
    return amdsmi


class AmdsmiDevice:
    """amdsmi's memory figures for the processor at one PCI address (its BDF)."""

    def __init__(self, amdsmi: Any, handle: Any) -> None:
        self.amdsmi = amdsmi
        self.handle = handle

    @classmethod
    def find(cls, amdsmi: Any, address: str | None) -> AmdsmiDevice | None:
        try:
            handles = amdsmi.amdsmi_get_processor_handles()
            if address is None:
                return cls(amdsmi, handles[0]) if len(handles) == 1 else None
            for handle in handles:
                if str(amdsmi.amdsmi_get_gpu_device_bdf(handle)).lower() == address.lower():
                    return cls(amdsmi, handle)
        except Exception:  # noqa: BLE001, S110 - amdsmi raises its own errors for unsupported queries
            pass
        return None

    def _query(self, name: str, memory_type: str) -> int | None:
        try:
            kind = getattr(self.amdsmi.AmdSmiMemoryType, memory_type)
            return int(getattr(self.amdsmi, name)(self.handle, kind))
        except Exception:  # noqa: BLE001 - e.g. GTT not reported by this amd-smi: that view is absent
            return None

    def read(self) -> dict[str, int | None]:
        return {"amdsmi.vram_used": self._query("amdsmi_get_gpu_memory_usage", "VRAM"),
                "amdsmi.gtt_used": self._query("amdsmi_get_gpu_memory_usage", "GTT"),
                "amdsmi.vram_total": self._query("amdsmi_get_gpu_memory_total", "VRAM"),
                "amdsmi.gtt_total": self._query("amdsmi_get_gpu_memory_total", "GTT")}


MemGetInfo = Callable[[], tuple[int, int]]  # (free, total), as torch.cuda.mem_get_info


class UnifiedMemoryReader:
    """Reads every memory view at once: {view name: bytes} (absent views are left out).

    Names: sysfs.vram_used, sysfs.gtt_used, sysfs.vram_gtt_used, amdsmi.vram_used, amdsmi.gtt_used,
    hip.used (mem_get_info total - free), host.used (MemTotal - MemAvailable), and unified.footprint
    (sysfs VRAM + GTT used above `before`, the reading taken when the reader was made).
    """

    def __init__(self, card: CardMatch, amdsmi: AmdsmiDevice | None, meminfo: Path,
                 mem_get_info: MemGetInfo | None) -> None:
        self.card = card
        self.amdsmi = amdsmi
        self.meminfo = meminfo
        self.mem_get_info = mem_get_info
        self.notes: list[str] = []  # why a view is absent or distrusted, once each
        self.before = self._views()

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def read(self) -> dict[str, int]:
        views = self._views()
        if "sysfs.vram_gtt_used" in views and "sysfs.vram_gtt_used" in self.before:
            views[FOOTPRINT] = max(views["sysfs.vram_gtt_used"] - self.before["sysfs.vram_gtt_used"], 0)
        return views

    def _views(self) -> dict[str, int]:
        views: dict[str, int | None] = {}
        if self.card.path is not None:
            sysfs = read_sysfs_memory(self.card.path)
            views["sysfs.vram_used"], views["sysfs.gtt_used"] = sysfs.vram_used, sysfs.gtt_used
            if sysfs.vram_used is not None and sysfs.gtt_used is not None:
                views["sysfs.vram_gtt_used"] = sysfs.vram_used + sysfs.gtt_used
        else:
            self._note(f"sysfs: {self.card.how}")
        if self.amdsmi is not None:
            amd = self.amdsmi.read()
            views["amdsmi.vram_used"], views["amdsmi.gtt_used"] = (amd["amdsmi.vram_used"],
                                                                   amd["amdsmi.gtt_used"])
            if amd["amdsmi.gtt_used"] is None:
                self._note("amdsmi reports VRAM only (no GTT figure): its view misses what the "
                           "GPU maps from RAM")
        if self.mem_get_info is not None:
            free, total = self.mem_get_info()
            if free > total:
                self._note(f"mem_get_info reports free {free} > total {total}: hip.used is not recorded")
            else:
                views["hip.used"] = total - free
        meminfo = read_meminfo(self.meminfo)
        if "MemTotal" in meminfo and "MemAvailable" in meminfo:
            views["host.used"] = meminfo["MemTotal"] - meminfo["MemAvailable"]
        return {name: value for name, value in views.items() if value is not None}


def reader_for(props: Any | None, *, paths: SystemPaths = DEFAULT_PATHS,
               load_amdsmi: Callable[[], Any | None] = import_amdsmi,
               mem_get_info: MemGetInfo | None = None) -> UnifiedMemoryReader:
    """A reader for the device with torch properties `props` (None: take the only amdgpu card)."""
    address = pci_address(props) if props is not None else None
    amdsmi = load_amdsmi()
    device = AmdsmiDevice.find(amdsmi, address) if amdsmi is not None else None
    return UnifiedMemoryReader(match_card(paths.sys_root, address), device, paths.meminfo, mem_get_info)


def torch_reader(device: Any) -> UnifiedMemoryReader | None:
    """The reader for a torch device when it is an AMD GPU (ROCm torch calls it `cuda`), else None."""
    import torch

    if device.type != "cuda" or torch.version.hip is None:
        return None
    index = device.index or 0
    return reader_for(torch.cuda.get_device_properties(index),
                      mem_get_info=lambda: torch.cuda.mem_get_info(index))


@dataclass
class MemoryConfiguration:
    """What decides how much a run can use on an AMD device; doctor prints it and the bundle keeps it."""

    card: str | None
    card_match: str
    carveout_bytes: int | None  # mem_info_vram_total: on an APU, the BIOS carve-out
    gtt_total_bytes: int | None
    pages_limit: dict[str, int]  # ttm / amdttm module -> pages_limit (in pages)
    page_size: int
    host_total_bytes: int | None
    host_available_bytes: int | None
    kernel: str | None
    rocm: str | None
    hip: str | None
    device_arch: str | None
    flags: dict[str, str | None]  # ROCM_FLAGS, None when unset
    amdsmi_views: dict[str, int | None] = field(default_factory=dict)  # amdsmi's figures, when installed
    schema_version: int = CONFIGURATION_SCHEMA_VERSION

    @property
    def pages_limit_bytes(self) -> int | None:
        """The smallest pages_limit in bytes (the one that binds), or None when no module sets one."""
        return min(self.pages_limit.values()) * self.page_size if self.pages_limit else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def memory_configuration(props: Any | None, *, hip: str | None, device_arch: str | None,
                         paths: SystemPaths = DEFAULT_PATHS,
                         load_amdsmi: Callable[[], Any | None] = import_amdsmi,
                         environ: Mapping[str, str] = os.environ) -> MemoryConfiguration:
    address = pci_address(props) if props is not None else None
    card = match_card(paths.sys_root, address)
    sysfs = read_sysfs_memory(card.path) if card.path is not None else SysfsMemory(None, None, None, None)
    pages = {module: value for module in TTM_MODULES
             if (value := _read_int(paths.sys_root / f"module/{module}/parameters/pages_limit")) is not None}
    meminfo = read_meminfo(paths.meminfo)
    amdsmi = load_amdsmi()
    device = AmdsmiDevice.find(amdsmi, address) if amdsmi is not None else None
    rocm = _read_text(paths.rocm_root / ".info/version")
    return MemoryConfiguration(
        card=str(card.path) if card.path else None, card_match=card.how, carveout_bytes=sysfs.vram_total,
        gtt_total_bytes=sysfs.gtt_total, pages_limit=pages, page_size=os.sysconf("SC_PAGE_SIZE"),
        host_total_bytes=meminfo.get("MemTotal"), host_available_bytes=meminfo.get("MemAvailable"),
        kernel=_read_text(paths.osrelease), rocm=rocm, hip=hip, device_arch=device_arch,
        flags={name: environ.get(name) for name in ROCM_FLAGS},
        amdsmi_views=device.read() if device is not None else {},
    )
