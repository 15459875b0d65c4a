"""Which attention kernel really ran: profile a callable, then classify the ops and kernels it launched.

`ran_ops(fn, device)` runs `fn` under torch.profiler and returns the aten ops (and other dispatcher ops,
such as flash_attn_3's) and the device kernels in the order they started. `classify_sdpa(ran)` says
whether scaled-dot-product attention ran a fused kernel (flash, memory-efficient, cuDNN, AOTriton,
composable kernel, FlashAttention-2/3, the CPU's flash kernel) or the math fallback
(aten::_scaled_dot_product_attention_math, or bmm + softmax with no fused op), naming the op or kernel
that decided it and the dtype the attention op was handed (what it computed in: a kernel that casts
float32 to bf16 first computes in bf16). Kernel names are checked before op names: on ROCm the flash op
runs AOTriton's kernel, and the kernel is the more exact answer. `math_fallback_cause` gives the ROCm
reason where it is the known one: a gfx11/gfx12 device (gfx1151 included), whose AOTriton kernels torch
only enables with TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL=1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

AOTRITON_FLAG = "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"
ROCM_FALLBACK_MESSAGE = f"SDPA fell back to the math kernel; set {AOTRITON_FLAG}=1"
# Consumer RDNA architectures whose AOTriton attention torch gates behind the experimental flag.
AOTRITON_EXPERIMENTAL_ARCH = re.compile(r"^gfx1[12]\d\d")

# (pattern, family), first match wins; device kernels are tried before ops.
FUSED_KERNELS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.IGNORECASE), f) for p, f in (
    (r"aotriton|^attn_fwd", "aotriton"),
    (r"FlashAttnFwdSm\d+", "flash_attention_3"),
    (r"ck_tile|fmha_fwd", "composable_kernel"),
    (r"cudnn.*(sdpa|fmha|attention)|(sdpa|fmha).*cudnn", "cudnn"),
    (r"fmha_cutlass|efficient_attention|mem_efficient", "memory_efficient"),
    (r"flash_fwd", "flash"),
))
FUSED_OPS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), f) for p, f in (
    (r"^flash_attn_3::", "flash_attention_3"),
    (r"^flash_attn::", "flash_attention_2"),
    (r"^aten::_scaled_dot_product_flash_attention_for_cpu$", "cpu_flash"),
    (r"^aten::_scaled_dot_product_flash_attention$|^aten::_flash_attention_forward$", "flash"),
    (r"^aten::_scaled_dot_product_efficient_attention$|^aten::_efficient_attention_forward$",
     "memory_efficient"),
    (r"^aten::_scaled_dot_product_cudnn_attention$", "cudnn"),
))
MATH_OPS = re.compile(r"^aten::_scaled_dot_product_attention_math")
MATMUL_OPS = ("aten::bmm", "aten::baddbmm", "aten::matmul")
SOFTMAX_OPS = ("aten::softmax", "aten::_softmax", "aten::_safe_softmax")
SDPA_OP = "aten::scaled_dot_product_attention"
# The profiler's names of the C++ scalar types, as torch names them (c10::Float8_e4m3fn and the like
# are lowercased).
PROFILER_DTYPES = {"float": "float32", "double": "float64", "c10::Half": "float16",
                   "c10::BFloat16": "bfloat16", "signed char": "int8", "unsigned char": "uint8"}


@dataclass
class RanOps:
    """What a profiled call launched, each name once, in the order it first ran."""

    ops: list[str] = field(default_factory=list)  # dispatcher ops on the host (aten::..., flash_attn_3::...)
    kernels: list[str] = field(default_factory=list)  # device kernels (empty on the CPU)
    dtypes: dict[str, str] = field(default_factory=dict)  # op -> dtype of its first tensor input, first call


def torch_dtype_name(profiler_name: str) -> str:
    """'c10::BFloat16' -> 'bfloat16', 'float' -> 'float32'."""
    return PROFILER_DTYPES.get(profiler_name, profiler_name.removeprefix("c10::").lower())


def ran_ops(fn: Callable[[], Any], device: str = "cpu") -> RanOps:
    """Run `fn` once under torch.profiler (with the device's kernels on CUDA and ROCm) and list what ran, with
    each op's input dtypes (record_shapes)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        activities.append(ProfilerActivity.CUDA)  # ROCm's kernels come through the same activity
    with profile(activities=activities, record_shapes=True) as prof:
        fn()
        if on_gpu:
            torch.cuda.synchronize(device)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    ran = RanOps()
    for event in events:
        names = ran.kernels if event.device_type != torch.autograd.DeviceType.CPU else ran.ops
        if event.name not in names:
            names.append(event.name)
    # Input dtypes from the Kineto events: FunctionEvent.input_dtypes is newer than torch 2.11 (seen on the
    # H200's 2.11), KinetoEvent.dtypes() is in every torch the harness supports.
    for kineto in sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns()):
        tensors = [d for d in kineto.dtypes() if d and d != "Scalar"]
        if kineto.name() in ran.ops and tensors and kineto.name() not in ran.dtypes:
            ran.dtypes[kineto.name()] = torch_dtype_name(tensors[0])
    return ran


@dataclass
class SdpaKernel:
    kind: str  # fused | math | none (no attention op or kernel ran)
    family: str  # aotriton, flash, memory_efficient, cudnn, ..., math, bmm+softmax, none
    evidence: str  # the op or kernel name that decided it
    dtype: str | None = None  # what the attention op was handed (torch's name); None: no host op says

    @property
    def fused(self) -> bool:
        return self.kind == "fused"


def _first_match(names: Iterable[str],
                 table: tuple[tuple[re.Pattern[str], str], ...]) -> tuple[str, str] | None:
    for name in names:
        for pattern, family in table:
            if pattern.search(name):
                return family, name
    return None


def classify_sdpa(ran: RanOps) -> SdpaKernel:
    """Fused or math. Any math op makes it math, even beside a fused one: one unfused call is enough to
    need the full attention-score matrix (about 145 GB at 960x960_10s)."""
    math = next((op for op in ran.ops if MATH_OPS.search(op)), None)
    if math is not None:
        return SdpaKernel("math", "math", math, attention_input_dtype(ran))
    found = _first_match(ran.kernels, FUSED_KERNELS) or _first_match(ran.ops, FUSED_OPS)
    if found is not None:
        return SdpaKernel("fused", *found, attention_input_dtype(ran))
    matmul = next((op for op in ran.ops if op in MATMUL_OPS), None)
    softmax = next((op for op in ran.ops if op in SOFTMAX_OPS), None)
    if matmul and softmax:
        return SdpaKernel("math", "bmm+softmax", f"{matmul} + {softmax}", ran.dtypes.get(matmul))
    return SdpaKernel("none", "none", "")


def attention_input_dtype(ran: RanOps) -> str | None:
    """The input dtype of the first attention op on the host (SDPA, a fused or math op); None when none ran
    or none recorded one (a compiled or Triton kernel launched without a dispatcher op)."""
    for op in ran.ops:
        attention = op == SDPA_OP or MATH_OPS.search(op) or _first_match([op], FUSED_OPS)
        if attention and op in ran.dtypes:
            return ran.dtypes[op]
    return None


def aotriton_flag_needed(*, hip: str | None, arch: str | None,
                         environ: Mapping[str, str] = os.environ) -> bool:
    """A ROCm torch on a gfx11/gfx12 device (gfx1151 among them) without the AOTriton flag set to 1."""
    return (hip is not None and bool(arch) and AOTRITON_EXPERIMENTAL_ARCH.match(arch or "") is not None
            and environ.get(AOTRITON_FLAG) != "1")


def math_fallback_cause(kernel: SdpaKernel, *, hip: str | None, arch: str | None,
                        environ: Mapping[str, str] = os.environ) -> str | None:
    """The message for a math fallback whose known cause is the unset AOTriton flag, else None."""
    if kernel.kind == "math" and aotriton_flag_needed(hip=hip, arch=arch, environ=environ):
        return ROCM_FALLBACK_MESSAGE
    return None
