"""Where cpu_offload's load time goes on the host: first touch of fresh pages (one thread and all of them),
page-locking with cudaHostRegister (of untouched and of touched memory), torch's pinned caching allocator,
and device-to-host copies into pinned memory. Each figure is GB/s over `--gib` of fresh memory.

    python benchmarks/bench_host_memory.py --gib 8 --out reports/bench_host_memory.json
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_common import write_report


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def register(buffer: torch.Tensor) -> None:
    error = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0)
    if int(error) != 0:
        raise RuntimeError(f"cudaHostRegister failed (cudaError {int(error)})")


def unregister(buffer: torch.Tensor) -> None:
    torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=8.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    n = int(args.gib * 2**30)
    threads = torch.get_num_threads()
    source = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    seconds: dict[str, float] = {}

    def fresh() -> torch.Tensor:
        gc.collect()
        return torch.empty(n, dtype=torch.uint8)

    def first_touch(using: int) -> None:
        torch.set_num_threads(using)
        buffer = fresh()
        seconds[f"first_touch_{using}_threads"] = timed(lambda: buffer.fill_(0))
        torch.set_num_threads(threads)

    def register_then_copy(touched: bool) -> None:
        buffer = fresh()
        name = "touched" if touched else "untouched"
        if touched:
            buffer.fill_(0)
        seconds[f"register_{name}"] = timed(lambda: register(buffer))
        seconds[f"d2h_copy_into_registered_{name}"] = timed(lambda: buffer.copy_(source))
        seconds[f"d2h_copy_again_{name}"] = timed(lambda: buffer.copy_(source))
        unregister(buffer)

    def caching_allocator() -> None:
        gc.collect()
        held: list[torch.Tensor] = []
        seconds["pinned_caching_allocator"] = timed(
            lambda: held.append(torch.empty(n, dtype=torch.uint8, pin_memory=True)))
        seconds["d2h_copy_into_caching_pinned"] = timed(lambda: held[0].copy_(source))

    first_touch(1)
    first_touch(threads)
    register_then_copy(touched=True)
    register_then_copy(touched=False)
    caching_allocator()

    result = {
        "kind": "bench_host_memory",
        "bytes": n,
        "threads": threads,
        "seconds": seconds,
        "gb_per_s": {k: n / s / 1e9 for k, s in seconds.items()},
    }
    write_report(result, args.out)
    for k, s in seconds.items():
        print(f"{k:36s} {s:7.3f} s  {n / s / 1e9:7.2f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
