"""Measure one attention backend at one shape: median time, TFLOP/s and error against fp32 math.

Used by benchmarks/bench_attention.py and by the harness's attention suite.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from . import as_device, attend, attention_flops, resolve
from .reference import reference_attention


@dataclass
class AttentionInputs:
    q: Tensor  # [B, Lq, H, D]
    k: Tensor  # [B, Lk, H, D]
    v: Tensor

    @classmethod
    def random(
        cls,
        lq: int,
        lk: int,
        heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: str | torch.device,
        seed: int = 0,
        batch: int = 1,
    ) -> AttentionInputs:
        gen = torch.Generator(as_device(device)).manual_seed(seed)

        def draw(length: int) -> Tensor:
            return torch.randn(batch, length, heads, head_dim, generator=gen, device=gen.device, dtype=dtype)

        return cls(draw(lq), draw(lk), draw(lk))

    @functools.cached_property
    def reference(self) -> Tensor:
        """fp32 attention of the same (bf16-valued) inputs, chunked over queries to bound memory."""
        return reference_attention(self.q.float(), self.k.float(), self.v.float())


@dataclass
class AttentionMeasurement:
    backend: str  # as asked, e.g. "auto"
    resolved: str  # the concrete backend that ran
    batch: int
    lq: int
    lk: int
    heads: int
    head_dim: int
    dtype: str
    device: str
    times_ms: list[float]
    rel_err: float | None  # ||out - ref|| / ||ref|| against fp32 math
    output_contiguous: bool  # False means a caller's reshape to [B, L, H*D] will copy

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def tflops(self) -> float:
        flops = self.batch * attention_flops(self.lq, self.lk, self.heads, self.head_dim)
        return flops / (self.median_ms * 1e-3) / 1e12

    def to_json(self) -> dict:
        return {**asdict(self), "median_ms": self.median_ms, "tflops": self.tflops}


def time_ms(fn: Callable[[], object], device: torch.device, reps: int, warmup: int) -> list[float]:
    """Per-call times in ms after `warmup` untimed calls: CUDA events on GPU, a wall clock elsewhere."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
        return times
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)
    ]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return [start.elapsed_time(end) for start, end in events]


def measure(
    backend: str, inputs: AttentionInputs, *, reps: int = 10, warmup: int = 3, with_error: bool = True
) -> AttentionMeasurement:
    """Time `attend(..., backend=backend)` on `inputs`. Raises AttentionUnavailable if it cannot run here;
    torch.OutOfMemoryError propagates (e.g. sdpa_math materializing a 54,900^2 score matrix)."""
    q, k, v = inputs.q, inputs.k, inputs.v
    resolved = resolve(backend, q.device, q.dtype)
    out = attend(q, k, v, backend=backend)
    rel_err = None
    if with_error:
        ref = inputs.reference
        rel_err = ((out.float() - ref).norm() / ref.norm()).item()
    contiguous = out.is_contiguous()
    del out
    times = time_ms(lambda: attend(q, k, v, backend=backend), q.device, reps, warmup)
    batch, lq, heads, head_dim = q.shape
    return AttentionMeasurement(
        backend,
        resolved,
        batch,
        lq,
        k.shape[1],
        heads,
        head_dim,
        str(q.dtype).removeprefix("torch."),
        str(q.device),
        times,
        rel_err,
        contiguous,
    )


def matmul_tflops(n: int, dtype: torch.dtype, device: str | torch.device, reps: int = 10) -> float:
    """Median TFLOP/s of an n^3 matmul: the device's practical ceiling for the share-of-peak column."""
    device = as_device(device)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = time_ms(lambda: a @ b, device, reps, warmup=3)
    return 2 * n**3 / (statistics.median(times) * 1e-3) / 1e12
