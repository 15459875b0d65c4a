"""What expandable segments change in the CUDA caching allocator, on this GPU and torch (a JSON line a mode).

The pattern behind the frontier's decode OOM: a large working set is freed, a small tensor that outlives the
stage is cut from its cached segment, and empty_cache() cannot return that segment. For each mode, in a
process of its own (the setting is process-wide): reserved bytes after that pattern, and whether a
per-process memory fraction still caps the allocator (the harness enforces a profile's budget with it).
The expandable mode is turned on the way the engine does it (ovi_engine.placement.configure_allocator).

    python benchmarks/allocator_probe.py
"""

from __future__ import annotations

import json
import subprocess
import sys

WORKING_SET = 4 * 2**30
SURVIVOR = 64 * 2**20


def probe(mode: str) -> dict[str, object]:
    import torch

    from ovi_engine.placement import configure_allocator

    device = torch.device("cuda", 0)
    setting = configure_allocator(device) if mode == "expandable" else "default"
    work = torch.empty(WORKING_SET, dtype=torch.uint8, device=device)
    del work
    survivor = torch.empty(SURVIVOR, dtype=torch.uint8, device=device)  # cut from the cached segment
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    reserved = torch.cuda.memory_reserved(device)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(2 * WORKING_SET / total, device)
    try:
        over = torch.empty(3 * WORKING_SET, dtype=torch.uint8, device=device)
        capped = False
        del over
    except torch.OutOfMemoryError:
        capped = True
    del survivor
    return {"mode": mode, "setting": setting, "torch": torch.__version__,
            "allocated_after_bytes": SURVIVOR, "reserved_after_empty_cache_bytes": reserved,
            "fraction_caps_allocations": capped}


if __name__ == "__main__":
    if len(sys.argv) == 2:
        print(json.dumps(probe(sys.argv[1])))
    else:
        for mode in ("default", "expandable"):
            subprocess.run([sys.executable, __file__, mode], check=False)
