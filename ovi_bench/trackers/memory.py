"""Memory per stage, from three views: the torch allocator, the device, and the host.

Stages may nest (the engine announces decode_video inside the harness's decode). At every stage
boundary the tracker folds the peaks seen so far into each open stage, then resets the peaks (allocator
peak stats and the kernel's RSS high-water mark), so each stage's figure is its own.

On an AMD device (ROCm) a `UnifiedMemoryReader` adds its views (sysfs VRAM/GTT, amdsmi, HIP, host
MemAvailable; see trackers/unified.py); each stage's peaks of them go to `extra["memory"]["views"]`, and
`extra["memory"]["judged_on"]` names the figure a profile limit is judged on: the unified footprint
(VRAM + GTT above the level before the run) on a unified device, else the allocator's peak (host RSS
on the CPU). `judged_peak(record)` reads it back.
"""

from __future__ import annotations

import resource
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from ovi_bench.records import StageRecord
from ovi_bench.trackers.unified import FOOTPRINT, UnifiedMemoryReader, torch_reader

PEAK_FIELDS = ("alloc_peak", "reserved_peak", "device_used_peak", "host_rss_peak")
# The device's whole use, from the first view a reading has: VRAM + GTT from sysfs, else HIP's figure.
DEVICE_USED_VIEWS = ("sysfs.vram_gtt_used", "hip.used")


@dataclass
class MemoryConfig:
    device: str = "cpu"
    sample_interval_s: float = 0.005
    unified_memory: bool = False  # APU: device and host share one pool; both views are reported


def _read_vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_vm_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets the peak RSS ("VmHWM") of this process
        return True
    except OSError:
        return False


def device_used_reader(device: torch.device) -> Callable[[], int] | None:
    """Bytes in use on a whole NVIDIA device, as the driver sees them: NVML, else cudaMemGetInfo.
    (An AMD device's figure comes from its UnifiedMemoryReader: `device_used`.)"""
    if device.type != "cuda":
        return None
    index = device.index or 0
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # noqa: BLE001, S110 - no pynvml or no NVML driver: use the CUDA runtime
        pass

    def mem_get_info() -> int:
        free, total = torch.cuda.mem_get_info(index)
        return total - free

    return mem_get_info


def device_used(views: dict[str, int]) -> int | None:
    return next((views[name] for name in DEVICE_USED_VIEWS if name in views), None)


def judged_on(fields: dict[str, Any], views: dict[str, int], *, unified: bool) -> str:
    """The figure a profile limit is judged on: a view name or a StageRecord field name."""
    if unified and FOOTPRINT in views:
        return FOOTPRINT
    return "alloc_peak" if fields.get("alloc_peak") is not None else "host_rss_peak"


def judged_peak(record: StageRecord) -> tuple[str, int | None]:
    """(name, bytes) of the figure the stage's limits are judged on; records without extra["memory"]
    (older reports, NVIDIA and CPU runs) are judged on the allocator's peak, else host RSS."""
    memory = record.extra.get("memory")
    if memory is not None:
        return memory["judged_on"], memory["judged_bytes"]
    if record.alloc_peak is not None:
        return "alloc_peak", record.alloc_peak
    return "host_rss_peak", record.host_rss_peak


class MemoryTracker:
    def __init__(self, config: MemoryConfig, unified: UnifiedMemoryReader | None = None) -> None:
        """`unified`: the AMD views' reader (default: the torch device's, when it is an AMD GPU)."""
        self.config = config
        self.device = torch.device(config.device)
        self.cuda = self.device.type == "cuda"
        self.unified = unified if unified is not None else torch_reader(self.device)
        self._read_device_used = None if self.unified else device_used_reader(self.device)
        self._hwm_resettable = _reset_vm_hwm()
        self._process = psutil.Process()
        self._open: list[dict[str, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _device_values(self) -> dict[str, int | None]:
        """device_used_peak and, on an AMD device, every view (by its dotted name), from one reading."""
        if self.unified is not None:
            views = self.unified.read()
            return {"device_used_peak": device_used(views), **views}
        return {"device_used_peak": self._read_device_used() if self._read_device_used else None}

    def snapshot(self) -> dict[str, int | None]:
        """Memory in use right now (sent to the parent at each stage start, so a crash still has it)."""
        device = self._device_values()
        return {
            "alloc_bytes": torch.cuda.memory_allocated(self.device) if self.cuda else None,
            "device_used_bytes": device["device_used_peak"],
            "unified_footprint_bytes": device.get(FOOTPRINT),
            "host_rss_bytes": self._process.memory_info().rss,
        }

    def _fold(self, values: dict[str, int | None]) -> None:
        with self._lock:
            for stage in self._open:
                for key, value in values.items():
                    if value is not None:
                        stage[key] = max(stage.get(key, 0), value)

    def _boundary(self) -> dict[str, int | None]:
        values: dict[str, int | None] = {"host_rss_peak": self._process.memory_info().rss}
        if self._hwm_resettable:
            values["host_rss_peak"] = max(values["host_rss_peak"] or 0, _read_vm_hwm() or 0)
            _reset_vm_hwm()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            values["alloc_peak"] = torch.cuda.max_memory_allocated(self.device)
            values["reserved_peak"] = torch.cuda.max_memory_reserved(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        values.update(self._device_values())
        self._fold(values)
        return values

    def mark(self) -> dict[str, int | None]:
        """The peaks since the last boundary or mark, then reset (open stages keep them): per-step peaks."""
        return self._boundary()

    def _sample(self) -> None:
        while not self._stop.wait(self.config.sample_interval_s):
            values: dict[str, int | None] = {"host_rss_peak": self._process.memory_info().rss}
            values.update(self._device_values())
            self._fold(values)

    @contextmanager
    def track(self, stage: str, fields: dict[str, Any]) -> Iterator[None]:
        self._boundary()
        peaks: dict[str, int] = {}
        with self._lock:
            self._open.append(peaks)
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample, name="memory-sampler", daemon=True)
            self._sampler.start()
        try:
            yield
        finally:
            self._boundary()
            with self._lock:  # by identity: two nested stages may hold equal dicts
                self._open = [d for d in self._open if d is not peaks]
            fields.update({key: peaks.get(key) for key in PEAK_FIELDS})
            fields["alloc_end"] = torch.cuda.memory_allocated(self.device) if self.cuda else None
            if self.config.unified_memory:
                fields.setdefault("extra", {})["unified_memory"] = True
            if self.unified is not None:
                fields.setdefault("extra", {})["memory"] = self._stage_views(fields, peaks)

    def _stage_views(self, fields: dict[str, Any], peaks: dict[str, int]) -> dict[str, Any]:
        """Every view's peak in the stage, which one limits are judged on, and why views are missing."""
        assert self.unified is not None
        views = {key: value for key, value in peaks.items() if key not in PEAK_FIELDS}
        name = judged_on(fields, views, unified=self.config.unified_memory)
        return {"views": views, "judged_on": name,
                "judged_bytes": views[name] if name in views else fields.get(name),
                "footprint_base_bytes": self.unified.before.get("sysfs.vram_gtt_used"),
                "notes": list(self.unified.notes)}

    def process_peak_rss(self) -> int:
        """Lifetime peak RSS of this process (ru_maxrss is in KiB on Linux)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def close(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
