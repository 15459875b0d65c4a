"""Hardware profiles: how much memory a run may use on a machine, and the limits suites refer to.

A suite check can say `limit: profile.total_peak`; `budget: profile` means the profile's usable memory.
On a unified-memory APU (gfx1151) the GPU and the host share one pool, so the usable share is declared
rather than read from the device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

GB = 10**9
GiB = 2**30



def device_architecture(props: Any) -> str:
    """gfx1151-style on ROCm (gcnArchName), sm_90-style on CUDA (whose builds fill gcnArchName with the name)."""
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
            # Host RSS includes the interpreter and torch (~0.4 GiB): sanity bounds, not the seed's figures.
            limits={"total_peak": 4 * GiB, "after_release": 2 * GiB, "decode": 3 * GiB},
        ),
        HardwareProfile(
            "h100-80gb", "NVIDIA H100 80GB HBM3", "cuda", 80 * GiB, 76 * GiB,
            limits={"total_peak": 76 * GiB, "after_release": 5 * GB, "decode": 30 * GB},  # the seed's targets
        ),
        HardwareProfile(
            "h200-141gb", "NVIDIA H200 141GB HBM3e", "cuda", 141 * GiB, 132 * GiB,
            limits={"total_peak": 132 * GiB, "after_release": 5 * GB, "decode": 30 * GB},
        ),
        # Strix Halo: 128 GB shared by CPU and GPU. Limits are the seed's: the whole 960x960_10s
        # generation peaks at <= 100 GB, <= 5 GB stays allocated after release, decode takes <= 30 GB.
        HardwareProfile(
            "gfx1151-128gb", "AMD Strix Halo gfx1151, 128 GB unified memory", "cuda", 128 * GB, 110 * GB,
            unified_memory=True,
            limits={"total_peak": 100 * GB, "after_release": 5 * GB, "decode": 30 * GB},
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
    usable = int(props.total_memory * 0.95)
    return HardwareProfile(
        f"cuda-{props.name.replace(' ', '-').lower()}", f"detected: {props.name} {arch}".strip(), "cuda",
        props.total_memory, usable, unified_memory=bool(getattr(props, "is_integrated", False)),
        limits={"total_peak": usable, "after_release": 5 * GB, "decode": 30 * GB},
    )
