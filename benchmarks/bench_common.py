"""What the codec and fusion benchmark scripts share: the device sync and clocks, the common command line, the
report."""

from __future__ import annotations

import argparse
import statistics
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

from ovi_bench.records import Environment, canonical_json, write_atomic
from ovi_bench.schema import BENCHMARK
from ovi_bench.trackers.timing import synchronize

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = 2**30


def start_peak(device: torch.device) -> int | None:
    """Return cached blocks, reset the allocator's peak and return what is allocated now (the resident
    weights and inputs), so the peak read later counts only what the timed work adds. None off CUDA."""
    synchronize(device)
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


class ClockSampler:
    """SM clock (MHz) and board power (W) every 50 ms on a background thread, through torch's NVML calls:
    a card held at its power limit runs below its top clock, which moves s/step from run to run.
    Samples nothing off CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((torch.cuda.clock_rate(self.device),
                                 torch.cuda.power_draw(self.device) / 1000))

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        clocks, watts = zip(*self.samples)
        return {"sm_clock_mhz_median": statistics.median(clocks), "sm_clock_mhz_min": min(clocks),
                "power_w_median": statistics.median(watts), "power_w_max": max(watts)}


def codec_parser(doc: str | None, presets: dict[str, Any], *, reps: int,
                 warmup: int | None) -> argparse.ArgumentParser:
    """--preset --device --dtype [--warmup] --reps --seed --out, as every codec benchmark takes them."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    if warmup is not None:
        parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    return parser


def parse_codec_args(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, torch.device]:
    """Parse and validate before anything is built: a bad value fails in one line."""
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible (use --preset tiny --device "
                     "cpu to smoke-test)")
    if getattr(args, "warmup", 0) < 0 or args.reps < 1:
        parser.error("--warmup must be >= 0 and --reps >= 1")
    return args, device


def write_report(result: dict[str, Any], out: Path) -> None:
    """The result with the schema version and the run's environment, written atomically."""
    report = {"schema_version": BENCHMARK.version, "environment": Environment.capture().to_dict(), **result}
    write_atomic(out, canonical_json(report))
