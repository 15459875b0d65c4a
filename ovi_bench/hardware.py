"""Hardware profiles: how much memory a run may use on a machine, and the limits suites refer to.

A suite check can say `limit: profile.total_peak`; `budget: profile` means the profile's usable memory.
On a unified-memory APU (gfx1151) the GPU and the host share one pool, so the usable share is declared
rather than read from the device. Every limit, and the usable size, says where its number comes from
(`sources`). `baseline_mismatch` refuses a baseline recorded on another profile or device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

GB = 10**9
GiB = 2**30

SEED = "the seed's target for Ovi 960x960_10s"


def device_architecture(props: Any) -> str:
    """gfx1151-style on ROCm (gcnArchName), sm_90-style on CUDA (whose builds fill
    gcnArchName with the name)."""
    import torch

    if torch.version.hip is not None:
        return str(getattr(props, "gcnArchName", "") or "")
    return f"sm_{props.major}{props.minor}"

@dataclass
class HardwareProfile:
    name: str
    description: str
    device_type: str  # cpu | cuda (ROCm devices are "cuda" in torch)
    total_bytes: int
    usable_bytes: int  # what a case may use: the memory budget of `budget: profile`
    unified_memory: bool = False
    limits: dict[str, int] = field(default_factory=dict)  # named limits, e.g. total_peak
    sources: dict[str, str] = field(default_factory=dict)  # "usable" and each limit -> where it comes from

    def __post_init__(self) -> None:
        missing = [name for name in ("usable", *self.limits) if not self.sources.get(name)]
        if missing:
            raise ValueError(f"hardware profile {self.name!r}: no source for {', '.join(missing)}")

    def source(self, name: str) -> str:
        self.limit(name)  # the same error for an unknown name
        return self.sources[name]

    def limit(self, name: str) -> int:
        if name == "usable":
            return self.usable_bytes
        if name not in self.limits:
            known = ", ".join(["usable", *sorted(self.limits)])
            raise KeyError(f"hardware profile {self.name!r} has no limit {name!r} (known: {known})")
        return self.limits[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        HardwareProfile(
            "cpu-tiny", "any CPU, tiny preset (CI)", "cpu", 8 * GiB, 4 * GiB,
            limits={"total_peak": 4 * GiB, "after_release": 2 * GiB, "decode": 3 * GiB},
            sources={"usable": "half of an 8 GiB CI runner",
                     **dict.fromkeys(("total_peak", "after_release", "decode"),
                                     "sanity bound for the tiny preset: host RSS includes the "
                                     "interpreter and torch (~0.4 GiB); not the seed's figures")},
        ),
        HardwareProfile(
            "h100-80gb", "NVIDIA H100 80GB HBM3", "cuda", 80 * GiB, 76 * GiB,
            limits={"total_peak": 76 * GiB, "after_release": 5 * GB, "decode": 30 * GB},
            sources={"usable": "80 GiB less ~4 GiB for the CUDA context, cuBLAS/cuDNN workspaces and "
                               "fragmentation (95%)",
                     "total_peak": "the usable size: the seed's target is that the run fits the card",
                     "after_release": SEED, "decode": SEED},
        ),
        HardwareProfile(
            "h200-141gb", "NVIDIA H200 141GB HBM3e", "cuda", 141 * GiB, 132 * GiB,
            limits={"total_peak": 132 * GiB, "after_release": 5 * GB, "decode": 30 * GB},
            sources={"usable": "141 GiB less ~9 GiB for the CUDA context, workspaces and fragmentation (94%)",
                     "total_peak": "the usable size", "after_release": SEED, "decode": SEED},
        ),
        # 24 and 32 GB cards are where most Ovi users report running out of memory. They also drive a
        # display, so the desktop and the CUDA context take ~1.5-2 GiB before the run starts.
        HardwareProfile(
            "consumer-24gb", "24 GB consumer card (RTX 3090 / 4090 class)", "cuda", 24 * GiB, 22 * GiB,
            limits={"total_peak": 22 * GiB, "after_release": 5 * GB, "decode": 22 * GiB},
            sources={"usable": "24 GiB less ~2 GiB for the CUDA context and a desktop on the "
                               "same card (92%); an estimate, not measured on a card here",
                     "total_peak": "the usable size",
                     "after_release": SEED,
                     "decode": "the usable size: the seed's 30 GB decode target is above what the card has"},
        ),
        HardwareProfile(
            "consumer-32gb", "32 GB card (RTX 5090 class)", "cuda", 32 * GiB, 30 * GiB,
            limits={"total_peak": 30 * GiB, "after_release": 5 * GB, "decode": 30 * GiB},
            sources={"usable": "32 GiB less ~2 GiB for the CUDA context and a desktop on the "
                               "same card (94%); an estimate, not measured on a card here",
                     "total_peak": "the usable size",
                     "after_release": SEED,
                     "decode": "the usable size: the seed's 30 GB decode target is about the whole card"},
        ),
        # Strix Halo: 128 GB shared by CPU and GPU; limits are judged on the VRAM + GTT footprint.
        HardwareProfile(
            "gfx1151-128gb", "AMD Strix Halo gfx1151, 128 GB unified memory", "cuda", 128 * GB, 110 * GB,
            unified_memory=True,
            limits={"total_peak": 100 * GB, "after_release": 5 * GB, "decode": 30 * GB},
            sources={"usable": "128 GB less ~18 GB kept for the OS, the desktop and the Python process "
                               "itself (the host side of the shared pool); declared, not "
                               "read from the device",
                     "total_peak": SEED + ": the whole generation peaks at <= 100 GB",
                     "after_release": SEED + ": <= 5 GB stays allocated after release",
                     "decode": SEED + ": decode takes <= 30 GB"},
        ),
    )
}


def get_profile(name: str) -> HardwareProfile:
    if name not in PROFILES:
        raise KeyError(f"unknown hardware profile {name!r} (known: {', '.join(PROFILES)})")
    return PROFILES[name]


def detect_profile(device: str) -> HardwareProfile:
    """The profile of the device a run uses; an unknown GPU gets a profile made from what it reports."""
    import torch

    if not device.startswith("cuda"):
        return PROFILES["cpu-tiny"]
    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    arch = device_architecture(props)
    if arch.startswith("gfx1151"):
        return PROFILES["gfx1151-128gb"]
    if "H100" in props.name:
        return PROFILES["h100-80gb"]
    if "H200" in props.name:
        return PROFILES["h200-141gb"]
    integrated = bool(getattr(props, "is_integrated", False))
    for name in ("consumer-24gb", "consumer-32gb"):
        if not integrated and abs(props.total_memory - PROFILES[name].total_bytes) <= GiB:
            return PROFILES[name]
    usable = int(props.total_memory * 0.95)
    detected = f"detected: 95% of the {props.total_memory} bytes the device reports"
    return HardwareProfile(
        f"cuda-{props.name.replace(' ', '-').lower()}", f"detected: {props.name} {arch}".strip(), "cuda",
        props.total_memory, usable, unified_memory=integrated,
        limits={"total_peak": usable, "after_release": 5 * GB, "decode": 30 * GB},
        sources={"usable": detected, "total_peak": detected, "after_release": SEED, "decode": SEED},
    )


# Environment fields that identify the device a measurement was taken on (records.Environment's names).
DEVICE_FIELDS = ("device_name", "device_arch", "unified_memory")


def baseline_mismatch(baseline_hardware: str, baseline_environment: Mapping[str, Any] | None,
                      run_hardware: str, run_environment: Mapping[str, Any]) -> str | None:
    """Why a run must not be judged against a baseline, or None when it may.

    Another profile name refuses it; so does another device under the same name (a baseline stored with
    `--hardware` from a different machine). Fields a baseline lacks (older files) are not compared.
    """
    if baseline_hardware != run_hardware:
        return (f"the baseline was recorded on hardware profile {baseline_hardware!r}, this run is on "
                f"{run_hardware!r}: store a baseline for {run_hardware!r} (`ovi-bench baseline update`)")
    for name in DEVICE_FIELDS:
        stored = (baseline_environment or {}).get(name)
        now = run_environment.get(name)
        if stored is not None and now is not None and stored != now:
            return (f"the baseline of profile {run_hardware!r} was recorded on {name} "
                    f"{stored!r}, this run has {now!r}: not the same hardware")
    return None
