"""What `ovi-bench doctor` says about this machine: facts (versions, device, memory, flags) and warnings.

On an AMD device it adds the memory configuration that decides what fits (trackers/unified.py) and warns
on the known traps: GTT or ttm pages_limit smaller than the 960x960_10s peak needs (the gfx1151 profile's
total_peak), HIP seeing only the carve-out, mem_get_info reporting more free than total, amd-smi without
GTT, no sysfs card matched, and the AOTriton flag unset on gfx11/gfx12 so SDPA falls back to math.
Everything is computed from its inputs, so tests give a fake configuration.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ovi_bench.hardware import PROFILES, detect_profile, device_architecture
from ovi_bench.kernels import AOTRITON_FLAG, aotriton_flag_needed
from ovi_bench.trackers.unified import (
    DEFAULT_PATHS,
    ROCM_FLAGS,
    MemoryConfiguration,
    SystemPaths,
    import_amdsmi,
    memory_configuration,
)
from ovi_bench.units import format_size

ENV_FLAGS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL",
             "HSA_OVERRIDE_GFX_VERSION")
PEAK_PROFILE = "gfx1151-128gb"  # whose total_peak is what a 960x960_10s run needs on a unified device


@dataclass
class DoctorWarning:
    code: str  # gtt_too_small, pages_limit_too_small, carveout_only, mem_get_info, amdsmi_vram_only,
    #            no_sysfs_card, aotriton_flag
    message: str


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _size(value: int | None) -> str:
    return "-" if value is None else format_size(value)


def configuration_facts(config: MemoryConfiguration) -> list[list[str]]:
    pages = ", ".join(f"{module}={value} ({format_size(value * config.page_size)})"
                      for module, value in config.pages_limit.items())
    return [["sysfs card", f"{config.card or '-'} ({config.card_match})"],
            ["carve-out (VRAM total)", _size(config.carveout_bytes)],
            ["GTT total", _size(config.gtt_total_bytes)],
            ["ttm pages_limit", pages or "(not set)"],
            ["host MemTotal / MemAvailable",
             f"{_size(config.host_total_bytes)} / {_size(config.host_available_bytes)}"],
            ["kernel", config.kernel or "-"], ["ROCm", config.rocm or "-"], ["HIP", config.hip or "-"],
            *([name, value if value is not None else "(unset)"] for name, value in config.flags.items())]


def memory_warnings(config: MemoryConfiguration, *, need_bytes: int,
                    mem_get_info: tuple[int, int] | None = None) -> list[DoctorWarning]:
    """The memory traps in `config`; `need_bytes` is what the 10 s clip's peak may reach."""
    warnings = []
    need = f"the 960x960_10s peak needs up to {format_size(need_bytes)} ({PEAK_PROFILE} total_peak)"
    if config.card is None:
        warnings.append(DoctorWarning("no_sysfs_card", f"no sysfs memory view ({config.card_match}): the "
                                      "VRAM + GTT footprint cannot be measured, limits fall back "
                                      "to the allocator"))
    if config.gtt_total_bytes is not None and config.gtt_total_bytes < need_bytes:
        warnings.append(DoctorWarning("gtt_too_small",
                                      f"GTT is {format_size(config.gtt_total_bytes)}; {need}: "
                                      "raise ttm.pages_limit (docs/suites.md, Qualify a Strix Halo)"))
    limit = config.pages_limit_bytes
    if limit is not None and limit < need_bytes:
        warnings.append(DoctorWarning("pages_limit_too_small",
                                      f"ttm pages_limit allows {format_size(limit)}; "
                                      f"{need}"))
    if (config.carveout_bytes is not None and config.gtt_total_bytes is not None
            and config.carveout_bytes < config.gtt_total_bytes):
        warnings.append(DoctorWarning("carveout_only",
                                      f"HIP and torch see the {format_size(config.carveout_bytes)}"
                                      " carve-out; the GPU allocates beyond it from "
                                      f"{format_size(config.gtt_total_bytes)} of GTT: limits are judged on "
                                      "VRAM + GTT from sysfs, not on torch's total"))
    if mem_get_info is not None and mem_get_info[0] > mem_get_info[1]:
        free, total = mem_get_info
        warnings.append(DoctorWarning("mem_get_info", f"mem_get_info reports {format_size(free)} free of "
                                      f"{format_size(total)} total: its figure is not used"))
    if config.amdsmi_views and config.amdsmi_views.get("amdsmi.gtt_used") is None:
        warnings.append(DoctorWarning("amdsmi_vram_only", "amd-smi reports VRAM only (no GTT): its figure "
                                      "misses what the GPU maps from system RAM; sysfs is used instead"))
    return warnings


def attention_warnings(*, hip: str | None, arch: str | None,
                       environ: Mapping[str, str] = os.environ) -> list[DoctorWarning]:
    if aotriton_flag_needed(hip=hip, arch=arch, environ=environ):
        return [DoctorWarning("aotriton_flag", f"{AOTRITON_FLAG} is not 1 on {arch}: SDPA falls back to the "
                              "math kernel (~145 GB of attention scores at 960x960_10s); set "
                              f"{AOTRITON_FLAG}=1")]
    return []


def doctor_report(device: str | None = None, *, paths: SystemPaths = DEFAULT_PATHS,
                  load_amdsmi: Callable[[], Any | None] = import_amdsmi,
                  environ: Mapping[str, str] = os.environ) -> tuple[list[list[str]], list[DoctorWarning]]:
    """(facts as [name, value] rows, warnings) for `device` (default: cuda if available, else cpu)."""
    import torch

    device = device or default_device()
    hip = getattr(torch.version, "hip", None)
    facts = [["python", platform.python_version()], ["torch", torch.__version__],
             ["cuda", torch.version.cuda or "-"], ["hip", hip or "-"], ["device", device]]
    warnings: list[DoctorWarning] = []
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        arch = device_architecture(props)
        facts += [["device name", props.name], ["architecture", arch],
                  ["memory total", format_size(total)], ["memory free", format_size(free)],
                  ["unified memory", "yes" if getattr(props, "is_integrated", False) else "no"]]
        if hip is not None:
            config = memory_configuration(props, hip=hip, device_arch=arch, paths=paths,
                                          load_amdsmi=load_amdsmi, environ=environ)
            facts += configuration_facts(config)
            warnings += memory_warnings(config, need_bytes=PROFILES[PEAK_PROFILE].limit("total_peak"),
                                        mem_get_info=(free, total))
            warnings += attention_warnings(hip=hip, arch=arch, environ=environ)
    else:
        import psutil

        memory = psutil.virtual_memory()
        facts += [["memory total", format_size(memory.total)], ["memory free", format_size(memory.available)],
                  ["unified memory", "n/a (host only)"]]
    facts.append(["hardware profile", detect_profile(device).name])
    shown = {row[0] for row in facts}
    names = [*ENV_FLAGS, *ROCM_FLAGS, *sorted(k for k in environ if k.startswith("MIOPEN_"))]
    facts += [[name, environ.get(name, "(unset)")] for name in dict.fromkeys(names) if name not in shown]
    return facts, warnings
