"""Attention backend registry.

`attend(q, k, v, backend=..., k_lens=...)` runs one named backend on [B, L, H, D] tensors. Every backend
is probed once per (device, dtype) with a tiny call checked against fp32 math; a backend that fails the
probe is unavailable with a reason, and asking for it raises AttentionUnavailable — never a silent
fallback. `auto` resolves, on a GPU, to the fastest backend of the device's candidate list that passed the
probe, timed once per (device, dtype) at representative shapes; on the CPU to sdpa.
Adding a backend: one file defining a `Backend`, plus `register(...)` below (or from a plugin).
"""

from __future__ import annotations

import functools
import statistics
import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import AttentionUnavailable, Backend, BackendStatus
from .flash_attn import FLASH_ATTN_BACKENDS
from .flash_attn_4 import FLASH_ATTN_4
from .flex import FLEX
from .reference import REFERENCE, reference_attention
from .sage import SAGE
from .sdpa import SDPA_BACKENDS
from .xformers import XFORMERS

__all__ = [
    "BACKENDS",
    "AttentionUnavailable",
    "Backend",
    "BackendStatus",
    "attend",
    "attention_flops",
    "auto_order",
    "available_backends",
    "backend_status",
    "register",
    "resolve",
]

BACKENDS: dict[str, Backend] = {}

PROBE_TOLERANCE = 0.05  # relative L2 vs fp32; bf16 kernels reach ~3e-3, int8-QK sage ~1.5e-2
# `auto` times its candidates at Ovi's heads and head dim: a self-attention long enough to be compute
# bound, and a cross-attention to the 512 text tokens, where kernels differ more. On an H200, FA3 and FA4
# were within 1% of each other at 54,900² but FA3 was 1.1-1.5x faster at the cross shapes
# (benchmarks/results/h200-141gb_2026-12-04, attention.json); one call at one shape could not see that.
AUTO_SHAPES = ((8192, 8192), (8192, 512))  # (Lq, Lk) at batch 1
AUTO_HEADS, AUTO_HEAD_DIM = 24, 128
AUTO_REPS = 3  # timed calls per shape (the median counts), after one untimed warm-up that may compile
AUTO_TIMED_DEVICES = {"cuda"}  # elsewhere auto takes the first available candidate (the CPU has one)


def register(backend: Backend) -> Backend:
    if backend.name == "auto" or backend.name in BACKENDS:
        raise ValueError(f"attention backend name {backend.name!r} is already taken")
    BACKENDS[backend.name] = backend
    _probe.cache_clear()
    _plan.cache_clear()
    _auto.cache_clear()
    return backend


def attention_flops(lq: int, lk: int, heads: int, head_dim: int) -> int:
    """Multiply-adds of QK^T and PV, two FLOPs each, for one batch element."""
    return 4 * heads * lq * lk * head_dim


def auto_order(device: torch.device) -> list[str]:
    """Backends `auto` tries, best first. Lossy (sage) and compile-dependent (flex) ones are opt-in."""
    if device.type != "cuda":
        return ["sdpa"]
    if torch.version.hip is not None:  # AOTriton kernels, when this GPU (or the experimental flag) allows
        return ["sdpa_flash", "sdpa_efficient", "flash_attn_2", "sdpa"]
    major, _ = torch.cuda.get_device_capability(device)
    if major == 9:  # H100 at 54,900² tokens: FA3 703 TFLOP/s, cuDNN 558-583, flash 357 (benchmarks/results)
        return ["flash_attn_3", "flash_attn_4", "sdpa_cudnn", "sdpa_flash", "flash_attn_2", "sdpa_efficient",
                "sdpa"]
    if major >= 10:
        return ["flash_attn_4", "sdpa_cudnn", "sdpa_flash", "flash_attn_2", "sdpa_efficient", "sdpa"]
    return ["sdpa_flash", "flash_attn_2", "sdpa_cudnn", "sdpa_efficient", "sdpa"]


def as_device(device: str | torch.device | None) -> torch.device:
    """Normalize so that 'cuda', 'cuda:0' and a tensor's device share one cache entry."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass(frozen=True)
class _Probe:
    status: BackendStatus
    masks: bool  # the backend handled k_lens itself in the probe


def _probe_inputs(device: torch.device, dtype: torch.dtype, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1234)
    q, k, v = (torch.randn(batch, n, 2, 128, generator=gen) for n in (64, 80, 80))
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _try(backend: Backend, device: torch.device, dtype: torch.dtype,
         masked: bool) -> tuple[str | None, float]:
    """Run a tiny call; return why it failed or gave wrong numbers (None when it worked) and its seconds."""
    q, k, v = _probe_inputs(device, dtype, batch=2 if masked else 1)
    k_lens = torch.tensor([80, 37], device=device) if masked else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _synchronize(device)
            began = time.perf_counter()
            out = backend.fn(q, k, v, k_lens)
            _synchronize(device)
            seconds = time.perf_counter() - began
        except Exception as refusal:  # noqa: BLE001 - any refusal: missing kernel, arch, dtype, shape
            notes = [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, UserWarning)]
            hint = backend.refusal_hint(device)
            details = "; ".join([f"{type(refusal).__name__}: {str(refusal).splitlines()[0]}", *notes[:3]])
            return f"kernel refused {dtype} on {device}: {details}" + (f" ({hint})" if hint else ""), 0.0
    want = reference_attention(q, k, v, k_lens).float()
    error = ((out.float() - want).norm() / want.norm()).item()
    if out.shape != q.shape or out.dtype != dtype or not error < PROBE_TOLERANCE:
        shape = tuple(out.shape)
        return (f"wrong result on a probe call (shape {shape}, {out.dtype}, relative error {error:.3g})",
                seconds)
    return None, seconds


@functools.cache
def _probe(name: str, device: torch.device, dtype: torch.dtype) -> _Probe:
    backend = BACKENDS[name]
    reason, first_call_s = backend.check(device, dtype), None
    if reason is None:  # the first call of the process: includes a JIT backend's compile
        reason, first_call_s = _try(backend, device, dtype, masked=False)
    masks = reason is None and backend.masks and _try(backend, device, dtype, masked=True)[0] is None
    return _Probe(BackendStatus(name, reason is None, reason, backend.kernel, first_call_s), masks)


def _measure_ms(backend: Backend, device: torch.device, dtype: torch.dtype) -> float:
    """The sum over AUTO_SHAPES of the median call's milliseconds."""
    from .bench import time_ms

    gen = torch.Generator(device).manual_seed(0)
    total = 0.0
    for lq, lk in AUTO_SHAPES:
        q, k, v = (torch.randn(1, n, AUTO_HEADS, AUTO_HEAD_DIM, generator=gen, device=device, dtype=dtype)
                   for n in (lq, lk, lk))
        call = functools.partial(backend.fn, q, k, v, None)
        total += statistics.median(time_ms(call, device, reps=AUTO_REPS, warmup=1))
    return total


@dataclass(frozen=True)
class _AutoChoice:
    name: str
    why: str  # the auto status's kernel text


@functools.cache
def _auto(device: torch.device, dtype: torch.dtype) -> _AutoChoice:
    order = auto_order(device)
    candidates = [c for c in order if c in BACKENDS and _probe(c, device, dtype).status.available]
    if not candidates:
        raise AttentionUnavailable(f"no attention backend of {order} works on {device} ({dtype})")
    if device.type not in AUTO_TIMED_DEVICES or len(candidates) == 1:
        return _AutoChoice(candidates[0], f"{candidates[0]}: the first available of {', '.join(order)}")
    times: dict[str, float] = {}
    failed: list[str] = []
    for name in candidates:
        try:
            times[name] = _measure_ms(BACKENDS[name], device, dtype)
        except Exception as error:  # noqa: BLE001 - passed the tiny probe, refused the long shape
            failed.append(f"{name} failed ({type(error).__name__})")
    if not times:
        raise AttentionUnavailable(f"every attention backend of {candidates} failed at "
                                   f"Lq x Lk {_auto_shapes()} on {device}")
    ranked = sorted(times, key=times.__getitem__)
    best = ranked[0]
    others = [f"{n} {times[n]:.3g} ms, {times[n] / times[best]:.2f}x slower" for n in ranked[1:]]
    why = (f"{best}: fastest over Lq x Lk {_auto_shapes()} at {AUTO_HEADS} x {AUTO_HEAD_DIM} heads "
           f"({times[best]:.3g} ms; " + "; ".join([*others, *failed]) + ")")
    return _AutoChoice(best, why)


def _auto_shapes() -> str:
    return " + ".join(f"{lq}x{lk}" for lq, lk in AUTO_SHAPES)


def available_backends(
    device: str | torch.device | None = None, dtype: torch.dtype = torch.bfloat16
) -> dict[str, BackendStatus]:
    """Status of every registered backend (and `auto`) on this device and dtype, probed once."""
    return {name: backend_status(name, device, dtype) for name in ("auto", *BACKENDS)}


def backend_status(name: str, device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.bfloat16) -> BackendStatus:
    """Status of one backend (or `auto`), probing only it (for `auto`, only its candidates): a process
    that runs one backend need not pay for the others' probes (flex compiles, on a GPU for seconds)."""
    device = as_device(device)
    if name == "auto":
        try:
            chosen = _auto(device, dtype)
        except AttentionUnavailable as error:
            return BackendStatus("auto", False, str(error), None)
        first_call_s = _probe(chosen.name, device, dtype).status.first_call_s
        return BackendStatus("auto", True, None, chosen.why, first_call_s)
    if name not in BACKENDS:
        raise AttentionUnavailable(f"unknown attention backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    return _probe(name, device, dtype).status


def resolve(name: str, device: str | torch.device | None, dtype: torch.dtype) -> str:
    """The concrete backend `name` stands for here; raises AttentionUnavailable if it cannot run."""
    device = as_device(device)
    if name == "auto":
        return _auto(device, dtype).name
    if name not in BACKENDS:
        raise AttentionUnavailable(f"unknown attention backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    status = _probe(name, device, dtype).status
    if not status.available:
        usable = [n for n in BACKENDS if _probe(n, device, dtype).status.available]
        raise AttentionUnavailable(
            f"attention backend {name!r} is unavailable on {device} ({dtype}): {status.reason}; "
            f"use --attention with one of: auto, {', '.join(usable)}"
        )
    return name


@functools.cache
def _plan(name: str, device: torch.device, dtype: torch.dtype) -> _Probe:
    return _probe(resolve(name, device, dtype), device, dtype)


def _per_sample(backend: Backend, q: Tensor, k: Tensor, v: Tensor, k_lens: Tensor) -> Tensor:
    """Key masking for kernels without masks: attend each batch element to its own unpadded keys."""
    lens = k_lens.tolist()
    outs = [backend.fn(q[b : b + 1], k[b : b + 1, :n], v[b : b + 1, :n], None) for b, n in enumerate(lens)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def attend(q: Tensor, k: Tensor, v: Tensor, *, backend: str = "auto", k_lens: Tensor | None = None) -> Tensor:
    """Softmax(QK^T / sqrt(D)) V. q [B, Lq, H, D], k and v [B, Lk, H, D], k_lens int [B] (keys at and past
    k_lens[b] are padding, k_lens[b] >= 1) -> [B, Lq, H, D] in q's dtype."""
    plan = _plan(backend, q.device, q.dtype)
    impl = BACKENDS[plan.status.name]
    if k_lens is None or plan.masks:
        return impl.fn(q, k, v, None if k_lens is None else k_lens.to(q.device))
    return _per_sample(impl, q, k, v, k_lens)


for _backend in [*SDPA_BACKENDS, FLEX, SAGE, *FLASH_ATTN_BACKENDS, FLASH_ATTN_4, XFORMERS, REFERENCE]:
    register(_backend)
