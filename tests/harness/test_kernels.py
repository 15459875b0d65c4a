"""kernels.py on the CPU: a real SDPA call with the math backend forced is math, fake traces of the fused
kernels are fused, and the ROCm message appears only for a ROCm gfx11/12 device without the flag."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ovi_bench.kernels import (
    ROCM_FALLBACK_MESSAGE,
    RanOps,
    SdpaKernel,
    aotriton_flag_needed,
    classify_sdpa,
    math_fallback_cause,
    ran_ops,
)


def sdpa_under(backend: SDPBackend) -> RanOps:
    q = torch.randn(1, 2, 16, 8)

    def call() -> None:
        with sdpa_kernel(backend):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)

    return ran_ops(call)


def test_forced_math_backend_is_classified_math():
    ran = sdpa_under(SDPBackend.MATH)
    assert "aten::scaled_dot_product_attention" in ran.ops and ran.kernels == []
    assert classify_sdpa(ran) == SdpaKernel("math", "math", "aten::_scaled_dot_product_attention_math",
                                            "float32")


def test_cpu_flash_backend_is_classified_fused():
    kernel = classify_sdpa(sdpa_under(SDPBackend.FLASH_ATTENTION))
    assert kernel.fused and kernel.family == "cpu_flash"


def test_hand_written_attention_is_math():
    q = torch.randn(2, 16, 8)
    ran = ran_ops(lambda: torch.softmax(torch.bmm(q, q.transpose(1, 2)), dim=-1).bmm(q))
    assert classify_sdpa(ran) == SdpaKernel("math", "bmm+softmax", "aten::bmm + aten::softmax", "float32")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_the_dtype_is_what_the_attention_op_was_handed(dtype: torch.dtype) -> None:
    q = torch.randn(1, 2, 16, 8)
    # The cast happens inside the call, as in a kernel that takes float32 and attends in half precision.
    ran = ran_ops(lambda: torch.nn.functional.scaled_dot_product_attention(q.to(dtype), q.to(dtype),
                                                                           q.to(dtype)))
    assert classify_sdpa(ran).dtype == str(dtype).removeprefix("torch.")


def test_a_kernel_decided_on_the_device_takes_the_dtype_of_its_host_op() -> None:
    ran = RanOps(ops=["aten::to", SDPA, "aten::_scaled_dot_product_cudnn_attention"],
                 kernels=["cudnn_generated_fort_native_sdpa_sm90_knob_7"],
                 dtypes={"aten::to": "float32", SDPA: "bfloat16",
                         "aten::_scaled_dot_product_cudnn_attention": "bfloat16"})
    assert classify_sdpa(ran).dtype == "bfloat16"
    assert classify_sdpa(RanOps(ops=[SDPA], kernels=["attn_fwd"])).dtype is None  # no dtype recorded


SDPA = "aten::scaled_dot_product_attention"


@pytest.mark.parametrize(("ops", "kernels", "family"), [
    ([SDPA, "aten::_scaled_dot_product_flash_attention", "aten::_flash_attention_forward"],
     ["void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>(Params)"],
     "flash"),
    ([SDPA, "aten::_scaled_dot_product_efficient_attention", "aten::_efficient_attention_forward"],
     ["fmha_cutlassF_bf16_aligned_64x128_rf_sm80(AttentionKernel<...>::Params)"], "memory_efficient"),
    ([SDPA, "aten::_scaled_dot_product_cudnn_attention"],
     ["cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x128_4x1x1_kernel0_0"],
     "cudnn"),
    ([SDPA, "aten::_scaled_dot_product_flash_attention", "aten::_flash_attention_forward"],
     ["attn_fwd"], "aotriton"),  # ROCm: the flash op runs AOTriton's triton kernel
    (["flash_attn_3::fwd"], ["void cutlass::device_kernel<flash::FlashAttnFwdSm90<...>>(Params)"],
     "flash_attention_3"),
    (["flash_attn::_flash_attn_forward"], [], "flash_attention_2"),
    ([SDPA, "aten::_scaled_dot_product_efficient_attention"], [], "memory_efficient"),
])
def test_fake_fused_traces_are_fused(ops, kernels, family):
    kernel = classify_sdpa(RanOps(ops=ops + ["aten::empty", "aten::transpose"], kernels=kernels))
    assert (kernel.kind, kernel.family) == ("fused", family)


def test_math_beside_a_fused_call_is_math():
    ran = RanOps(ops=[SDPA, "aten::_scaled_dot_product_flash_attention", SDPA,
                      "aten::_scaled_dot_product_attention_math"], kernels=["attn_fwd"])
    assert classify_sdpa(ran).kind == "math"


def test_nothing_ran():
    assert classify_sdpa(RanOps(ops=["aten::add"])) == SdpaKernel("none", "none", "")


MATH = SdpaKernel("math", "math", "aten::_scaled_dot_product_attention_math")


@pytest.mark.parametrize(("hip", "arch", "environ", "expected"), [
    ("6.4.43482", "gfx1151", {}, ROCM_FALLBACK_MESSAGE),
    ("6.4.43482", "gfx1151:xnack-", {"TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL": "0"}, ROCM_FALLBACK_MESSAGE),
    ("6.4.43482", "gfx1100", {}, ROCM_FALLBACK_MESSAGE),
    # flag set: another cause
    ("6.4.43482", "gfx1151", {"TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL": "1"}, None),
    ("6.4.43482", "gfx942", {}, None),  # MI300: AOTriton is not experimental there
    (None, "sm_90", {}, None),  # CUDA
    (None, "", {}, None),  # CPU
])
def test_rocm_message_only_under_its_conditions(hip, arch, environ, expected):
    assert math_fallback_cause(MATH, hip=hip, arch=arch, environ=environ) == expected


def test_no_rocm_message_for_a_fused_kernel():
    fused = SdpaKernel("fused", "aotriton", "attn_fwd")
    assert math_fallback_cause(fused, hip="6.4", arch="gfx1151", environ={}) is None
    assert aotriton_flag_needed(hip="6.4", arch="gfx1151", environ={})
