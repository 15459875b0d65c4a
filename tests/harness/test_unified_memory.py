"""The AMD/unified-memory readers against fake sysfs trees and fake amdsmi modules made here, with the
values of the reported traps: a 15.5 GiB carve-out beside 96 GiB of GTT, mem_get_info free > total,
amd-smi reporting VRAM only. Nothing here has run on a real gfx1151."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from ovi_bench.records import StageRecord
from ovi_bench.trackers import MemoryConfig, MemoryTracker, StageMeter, TimingConfig, TimingTracker
from ovi_bench.trackers.memory import judged_peak
from ovi_bench.trackers.unified import (
    FOOTPRINT,
    SystemPaths,
    match_card,
    memory_configuration,
    pci_address,
    read_meminfo,
    reader_for,
)

GiB = 2**30
ADDRESS = "0000:c1:00.0"
CARVEOUT, GTT = int(15.5 * GiB), 96 * GiB


class FakeSysfs:
    """A /sys, /proc and /opt/rocm tree; `set(gtt_used=...)` changes what the next reading sees."""

    def __init__(self, root: Path, *, vram_total: int = CARVEOUT, gtt_total: int = GTT,
                 pages_limit: dict[str, int] | None = None) -> None:
        self.root = root
        self.paths = SystemPaths.under(root)
        self.card = self.add_card(0, ADDRESS, vram_total=vram_total, gtt_total=gtt_total)
        (self.paths.sys_root / "class/drm/card0-DP-1").mkdir(parents=True)  # a connector, not a card
        for module, pages in (pages_limit or {"ttm": GTT // 4096}).items():
            self.write(self.paths.sys_root / f"module/{module}/parameters/pages_limit", pages)
        self.write(self.paths.osrelease, "6.14.0-29-generic")
        self.write(self.paths.rocm_root / ".info/version", "6.4.3-128")
        self.meminfo(total=128 * GiB - CARVEOUT, available=100 * GiB)

    @staticmethod
    def write(path: Path, value: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")

    def add_card(self, index: int, address: str, *, vram_total: int, gtt_total: int) -> Path:
        device = self.paths.sys_root / f"class/drm/card{index}/device"
        self.write(device / "uevent", f"DRIVER=amdgpu\nPCI_CLASS=38000\nPCI_SLOT_NAME={address}")
        for name, value in (("vram_total", vram_total), ("gtt_total", gtt_total), ("vram_used", 0),
                            ("gtt_used", 0)):
            self.write(device / f"mem_info_{name}", value)
        return device

    def set(self, **used: int) -> None:
        for name, value in used.items():
            self.write(self.card / f"mem_info_{name}", value)

    def meminfo(self, *, total: int, available: int) -> None:
        self.write(self.paths.meminfo, f"MemTotal: {total // 1024} kB\nMemFree: 1 kB\n"
                                       f"MemAvailable: {available // 1024} kB\nHugePages_Total: 0")


class FakeAmdsmi(types.SimpleNamespace):
    """An amdsmi module: one processor at ADDRESS; `gtt=False` reproduces an amd-smi reporting VRAM only."""

    AmdSmiMemoryType = types.SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2)

    def __init__(self, sysfs: FakeSysfs, *, gtt: bool = True) -> None:
        super().__init__(sysfs=sysfs, gtt=gtt)

    def amdsmi_get_processor_handles(self) -> list[str]:
        return ["handle0"]

    def amdsmi_get_gpu_device_bdf(self, handle: str) -> str:
        return ADDRESS

    def _value(self, kind: int, field: str) -> int:
        if kind == 2 and not self.gtt:
            raise RuntimeError("AMDSMI_STATUS_NOT_SUPPORTED")
        return int((self.sysfs.card / f"mem_info_{'gtt' if kind == 2 else 'vram'}_{field}").read_text())

    def amdsmi_get_gpu_memory_usage(self, handle: str, kind: int) -> int:
        return self._value(kind, "used")

    def amdsmi_get_gpu_memory_total(self, handle: str, kind: int) -> int:
        return self._value(kind, "total")


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path)


PROPS = types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0xC1, pci_device_id=0, total_memory=CARVEOUT)


def test_pci_address_and_card_match(sysfs):
    assert pci_address(PROPS) == ADDRESS
    assert pci_address(types.SimpleNamespace()) is None  # a torch without PCI fields
    match = match_card(sysfs.paths.sys_root, ADDRESS)
    assert match.path == sysfs.card and match.how == f"PCI address {ADDRESS}"
    assert match_card(sysfs.paths.sys_root, None).path == sysfs.card  # the only amdgpu card
    sysfs.add_card(1, "0000:03:00.0", vram_total=24 * GiB, gtt_total=32 * GiB)  # a discrete card beside it
    assert match_card(sysfs.paths.sys_root, "0000:03:00.0").path.parent.name == "card1"
    assert match_card(sysfs.paths.sys_root, ADDRESS).path == sysfs.card
    ambiguous = match_card(sysfs.paths.sys_root, None)
    assert ambiguous.path is None and "ambiguous" in ambiguous.how
    assert match_card(sysfs.paths.sys_root, "0000:99:00.0").path is None


def test_meminfo_in_bytes(sysfs):
    info = read_meminfo(sysfs.paths.meminfo)
    assert info["MemAvailable"] == 100 * GiB and info["HugePages_Total"] == 0


def tracker_for(sysfs: FakeSysfs, *, amdsmi=None, mem_get_info=None, unified: bool = True) -> MemoryTracker:
    reader = reader_for(PROPS, paths=sysfs.paths, load_amdsmi=lambda: amdsmi, mem_get_info=mem_get_info)
    return MemoryTracker(MemoryConfig(device="cpu", unified_memory=unified), unified=reader)


def run_stage(tracker: MemoryTracker, name: str, *, peak: dict[str, int], after: dict[str, int],
              sysfs: FakeSysfs) -> StageRecord:
    meter = StageMeter(tracker, TimingTracker(TimingConfig(device="cpu")))
    with meter.stage(name):
        sysfs.set(**peak)
        tracker.mark()  # the sampler would see it too; mark makes the reading deterministic
        sysfs.set(**after)
    return meter.records[-1]


def test_carveout_with_large_gtt_is_judged_on_the_footprint(sysfs):
    """torch sees 15.5 GiB; the GPU holds 40 GiB more in GTT. The limit is judged on VRAM + GTT used above
    the level before the run, and every view is in the record."""
    sysfs.set(vram_used=int(0.5 * GiB), gtt_used=1 * GiB)  # the desktop, before the run
    tracker = tracker_for(sysfs, mem_get_info=lambda: (CARVEOUT - 14 * GiB, CARVEOUT))
    try:
        record = run_stage(tracker, "denoise", peak={"vram_used": 14 * GiB, "gtt_used": 41 * GiB},
                           after={"vram_used": 2 * GiB, "gtt_used": 3 * GiB}, sysfs=sysfs)
    finally:
        tracker.close()
    memory = record.extra["memory"]
    assert memory["judged_on"] == FOOTPRINT
    assert memory["judged_bytes"] == int(53.5 * GiB)  # (14 + 41) - (0.5 + 1)
    assert judged_peak(record) == (FOOTPRINT, int(53.5 * GiB))
    views = memory["views"]
    assert views["sysfs.vram_used"] == 14 * GiB and views["sysfs.gtt_used"] == 41 * GiB
    assert views["hip.used"] == 14 * GiB  # HIP's view: the carve-out only
    assert views["host.used"] == 128 * GiB - CARVEOUT - 100 * GiB  # MemTotal - MemAvailable
    assert memory["footprint_base_bytes"] == int(1.5 * GiB)
    assert record.device_used_peak == 55 * GiB  # the whole device: VRAM + GTT
    assert record.extra["unified_memory"] is True


def test_a_discrete_amd_card_is_judged_on_the_allocator_with_the_views_beside(sysfs):
    tracker = tracker_for(sysfs, unified=False)
    try:
        record = run_stage(tracker, "load", peak={"gtt_used": 2 * GiB}, after={}, sysfs=sysfs)
    finally:
        tracker.close()
    assert record.extra["memory"]["judged_on"] == "host_rss_peak"  # the CPU stand-in has no allocator
    assert judged_peak(record) == ("host_rss_peak", record.host_rss_peak)
    assert record.extra["memory"]["views"][FOOTPRINT] == 2 * GiB


def test_mem_get_info_free_above_total_is_not_recorded(sysfs):
    reader = reader_for(PROPS, paths=sysfs.paths, load_amdsmi=lambda: None,
                        mem_get_info=lambda: (CARVEOUT + 30 * GiB, CARVEOUT))
    views = reader.read()
    assert "hip.used" not in views and "sysfs.vram_gtt_used" in views
    assert any("free" in note and "> total" in note for note in reader.notes)


def test_amdsmi_reporting_only_vram(sysfs):
    sysfs.set(vram_used=1 * GiB, gtt_used=30 * GiB)
    reader = reader_for(PROPS, paths=sysfs.paths, load_amdsmi=lambda: FakeAmdsmi(sysfs, gtt=False))
    views = reader.read()
    assert views["amdsmi.vram_used"] == 1 * GiB and "amdsmi.gtt_used" not in views
    assert views["sysfs.vram_gtt_used"] == 31 * GiB  # the truth stays beside it
    assert any("VRAM only" in note for note in reader.notes)
    full = reader_for(PROPS, paths=sysfs.paths, load_amdsmi=lambda: FakeAmdsmi(sysfs)).read()
    assert full["amdsmi.gtt_used"] == 30 * GiB


def test_no_card_means_no_footprint_and_the_allocator_is_judged(tmp_path):
    empty = SystemPaths.under(tmp_path)
    reader = reader_for(PROPS, paths=empty, load_amdsmi=lambda: None)
    tracker = MemoryTracker(MemoryConfig(device="cpu", unified_memory=True), unified=reader)
    meter = StageMeter(tracker, TimingTracker(TimingConfig(device="cpu")))
    try:
        with meter.stage("load"):
            pass
    finally:
        tracker.close()
    memory = meter.records[0].extra["memory"]
    assert memory["judged_on"] == "host_rss_peak" and FOOTPRINT not in memory["views"]
    assert any("no amdgpu card" in note for note in memory["notes"])


def test_records_without_views_keep_the_old_reading():
    assert judged_peak(StageRecord("load", 1.0, alloc_peak=10, host_rss_peak=99)) == ("alloc_peak", 10)
    assert judged_peak(StageRecord("load", 1.0, host_rss_peak=99)) == ("host_rss_peak", 99)


def test_memory_configuration_records_what_decides_what_fits(tmp_path):
    sysfs = FakeSysfs(tmp_path, pages_limit={"ttm": 25165824, "amdttm": 16777216})
    config = memory_configuration(PROPS, hip="6.4.43482", device_arch="gfx1151", paths=sysfs.paths,
                                  load_amdsmi=lambda: FakeAmdsmi(sysfs, gtt=False),
                                  environ={"HSA_OVERRIDE_GFX_VERSION": "11.5.1", "PATH": "/bin"})
    assert config.carveout_bytes == CARVEOUT and config.gtt_total_bytes == GTT
    assert config.pages_limit == {"ttm": 25165824, "amdttm": 16777216}
    assert config.pages_limit_bytes == 16777216 * config.page_size  # the smaller one binds
    assert (config.kernel, config.rocm, config.hip) == ("6.14.0-29-generic", "6.4.3-128", "6.4.43482")
    assert config.flags == {"HSA_OVERRIDE_GFX_VERSION": "11.5.1",
                            "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL": None,
                            "PYTORCH_HIP_ALLOC_CONF": None, "MIOPEN_FIND_MODE": None}
    assert (config.amdsmi_views["amdsmi.vram_total"] == CARVEOUT
            and config.amdsmi_views["amdsmi.gtt_used"] is None)
    assert config.card_match == f"PCI address {ADDRESS}"
    assert config.to_dict()["schema_version"] == 1


# ---- doctor ------------------------------------------------------------------------------------------

def fake_rocm_torch(monkeypatch, *, free: int, total: int = CARVEOUT) -> None:
    import torch

    props = types.SimpleNamespace(**vars(PROPS), name="AMD Radeon 8060S", gcnArchName="gfx1151",
                                  is_integrated=True)
    monkeypatch.setattr(torch.version, "hip", "6.4.43482")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (free, total))


def test_doctor_on_a_faked_strix_halo_shows_the_configuration_and_every_trap(monkeypatch, sysfs):
    from ovi_bench.doctor import doctor_report

    fake_rocm_torch(monkeypatch, free=CARVEOUT + 40 * GiB)  # free > total
    facts, warnings = doctor_report("cuda", paths=sysfs.paths,
                                    load_amdsmi=lambda: FakeAmdsmi(sysfs, gtt=False),
                                    environ={"MIOPEN_FIND_MODE": "FAST"})
    table = dict(facts)
    assert table["architecture"] == "gfx1151" and table["hardware profile"] == "gfx1151-128gb"
    assert table["carve-out (VRAM total)"] == "15.50 GiB" and table["GTT total"] == "96.00 GiB"
    assert table["ttm pages_limit"].startswith(f"ttm={GTT // 4096}")
    assert (table["kernel"], table["ROCm"]) == ("6.14.0-29-generic", "6.4.3-128")
    assert (table["MIOPEN_FIND_MODE"] == "FAST"
            and table["TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"] == "(unset)")
    codes = [w.code for w in warnings]
    assert codes == ["carveout_only", "mem_get_info", "amdsmi_vram_only", "aotriton_flag"]  # 96 GiB GTT fits
    aotriton = warnings[-1].message
    assert "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL=1" in aotriton and "math" in aotriton


def test_doctor_warns_when_gtt_is_below_the_10s_peak(monkeypatch, tmp_path):
    from ovi_bench.doctor import doctor_report

    small = FakeSysfs(tmp_path, gtt_total=62 * GiB, pages_limit={"amdttm": 62 * GiB // 4096})
    fake_rocm_torch(monkeypatch, free=CARVEOUT - GiB)
    _, warnings = doctor_report("cuda", paths=small.paths, load_amdsmi=lambda: FakeAmdsmi(small),
                                environ={"TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL": "1"})
    by_code = {w.code: w.message for w in warnings}
    assert set(by_code) == {"gtt_too_small", "pages_limit_too_small", "carveout_only"}
    assert ("GTT is 62.00 GiB" in by_code["gtt_too_small"]
            and "gfx1151-128gb total_peak" in by_code["gtt_too_small"])


def test_doctor_on_the_cpu_has_no_amd_section():
    from ovi_bench.doctor import doctor_report

    facts, warnings = doctor_report("cpu", environ={"HSA_OVERRIDE_GFX_VERSION": "11.5.1"})
    table = dict(facts)
    assert "GTT total" not in table and warnings == [] and table["HSA_OVERRIDE_GFX_VERSION"] == "11.5.1"
