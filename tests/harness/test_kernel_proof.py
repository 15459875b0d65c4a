"""Fused attention proven: the attention scenario profiles one call of the engine's kernel at video_self and
records the kernel that ran; on a GPU a math kernel fails the suite (on ROCm gfx11/12 naming the AOTriton
flag), on the CPU it is only recorded; another fused kernel than the baseline's is `changed`, not a failure.
The dtype it attended in is proven too: a cast the engine does not declare fails on every device, and errors
and times are compared with the baseline's only at the same dtype.

The scenarios run in this process at tiny shapes. The planted engine (planted_engines.math_claiming_flash)
really runs SDPA's math kernel on the CPU; the GPU is faked only in the device context the scenario asks
(`attention.device_context`), so the classifier and the suite's checks see a GPU's situation.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ovi_bench.baselines import Baseline, judge, parse_check
from ovi_bench.engines.base import attention_dtype
from ovi_bench.engines.fake import make_engine as make_fake
from ovi_bench.engines.reference import ReferenceEngine
from ovi_bench.engines.reference import make_engine as make_reference
from ovi_bench.job import Job, RunOptions
from ovi_bench.kernels import AOTRITON_FLAG, ROCM_FALLBACK_MESSAGE
from ovi_bench.records import CaseResult, Samples
from ovi_bench.scenarios import attention
from ovi_bench.suites import load_suite
from tests.harness.in_process import run_in_process
from tests.harness.planted_engines import DeclaredHalfCast, math_claiming_flash, silent_half_cast

ROCM_GFX1151 = attention.DeviceContext(gpu=True, hip="6.4.1", arch="gfx1151")
CUDA_H200 = attention.DeviceContext(gpu=True, hip=None, arch="sm_90")


def suite_job(suite: str, backend: str, **params) -> Job:
    (job,) = load_suite(suite).expand(RunOptions(preset="tiny", variants=["720x720_5s"], attention=[backend]))
    return replace(job, params={**job.params, **params})




def judged(job: Job, metrics: dict, baseline: dict | None = None) -> dict[tuple[str, str], object]:
    suite = load_suite(job.suite)
    case = CaseResult(job.case_id, job.suite, job.case_params, "ok", metrics=metrics)
    stored = None if baseline is None else Baseline(job.suite, "h200-141gb", {}, {job.case_id: baseline})
    return {(v.metric, v.rule): v for v in judge([case], suite.checks_at("tiny"), stored)}


@pytest.fixture
def on(monkeypatch):
    """Fake the device context the scenario sees (the computation stays on the CPU)."""
    monkeypatch.delenv(AOTRITON_FLAG, raising=False)
    return lambda context: monkeypatch.setattr(attention, "device_context", lambda device: context)


ATTENTION = {"reps": 2, "warmup": 1}


def test_on_the_cpu_the_kernel_is_recorded_not_judged():
    job = suite_job("attention_backends", "sdpa_math", **ATTENTION)
    metrics = run_in_process(job, make_reference)[0]
    assert metrics["attention.kernel_kind"] == "math" and metrics["attention.kernel"] == "math"
    assert metrics["attention.kernel_expected"] == "any" and metrics["attention.kernel_problems"] == []
    assert metrics["attention.first_call_s"] > 0  # the reference engine's probe timed the first call
    assert judged(job, metrics)[("attention.kernel_problems", "exact")].status == "pass"


def test_auto_attends_in_float32_on_the_cpu_and_in_bf16_on_a_gpu():
    # Many CPUs have no native bf16 matmul: bf16 times there would compare CPU models, not kernels.
    seen: list[torch.dtype] = []

    class Recording(ReferenceEngine):
        def attention_kernel(self, backend, device, dtype):  # type: ignore[no-untyped-def]
            kernel = super().attention_kernel(backend, device, dtype)
            return replace(kernel, fn=lambda q, k, v: (seen.append(q.dtype), kernel.fn(q, k, v))[1])

    metrics = run_in_process(suite_job("attention_backends", "auto", **ATTENTION), Recording)[0]
    assert set(seen) == {torch.float32} and metrics["attention.dtype"] == "float32"
    assert attention_dtype("auto", "cuda:0") == "bfloat16" and attention_dtype("float16", "cpu") == "float16"


def test_a_planted_math_fallback_fails_with_the_aotriton_message_on_rocm(on):
    on(ROCM_GFX1151)
    job = suite_job("attention_backends", "sdpa_flash", **ATTENTION)
    metrics = run_in_process(job, math_claiming_flash)[0]
    # the name lies
    assert metrics["attention.resolved"] == "sdpa_flash" and metrics["attention.fallback"] is False
    assert metrics["attention.kernel_kind"] == "math" and metrics["attention.kernel_expected"] == "fused"
    verdict = judged(job, metrics)[("attention.kernel_problems", "exact")]
    assert verdict.status == "fail"
    assert (ROCM_FALLBACK_MESSAGE in verdict.message
            and "aten::_scaled_dot_product_attention_math" in verdict.message)


def test_on_cuda_the_math_kernel_fails_without_the_rocm_advice(on):
    on(CUDA_H200)
    job = suite_job("attention_backends", "sdpa", **ATTENTION)
    verdict = judged(job, run_in_process(job, math_claiming_flash)[0])[("attention.kernel_problems", "exact")]
    assert verdict.status == "fail" and "where a fused one was expected" in verdict.message
    assert AOTRITON_FLAG not in verdict.message


def test_sdpa_math_asked_for_on_a_gpu_is_not_a_failure(on):
    on(ROCM_GFX1151)
    job = suite_job("attention_backends", "sdpa_math", **ATTENTION)
    metrics = run_in_process(job, math_claiming_flash)[0]
    assert metrics["attention.kernel_expected"] == "any" and metrics["attention.kernel_problems"] == []


def test_another_fused_kernel_than_the_baselines_is_changed_and_times_are_judged():
    job = suite_job("attention_backends", "sdpa")
    times = {f"time.attention.{kind}_s": Samples([1.0, 1.0, 1.0]) for kind in attention.shapes(
        "720x720_5s", 1024, 32)} | {"machine.matmul_tflops": 1.0, "attention.kernel_dtype": "bfloat16"}
    now = {**times, "attention.kernel": "cudnn", "attention.kernel_problems": []}
    verdicts = judged(job, now, baseline={**times, "attention.kernel": "flash"})
    changed = verdicts[("attention.kernel", "same")]
    assert changed.status == "changed" and not changed.failed
    assert changed.message == "attention.kernel same: cudnn, the baseline had flash"
    assert verdicts[("time.attention.video_self_s", "time")].status == "pass"
    assert (judged(job, now, baseline={"attention.kernel": "cudnn"})[("attention.kernel", "same")].status
            == "pass")


def test_same_takes_no_thresholds():
    with pytest.raises(ValueError, match="unknown key"):
        parse_check({"metric": "attention.kernel", "rule": "same", "tolerance": "5%"})


def test_the_pipeline_proves_the_kernel_of_its_generation(on):
    job = suite_job("peak_memory_10s", "auto")
    assert job.params["attention_probe"] == {"heads": 2, "head_dim": 32}
    on(ROCM_GFX1151)
    metrics = run_in_process(job, make_fake)[0]  # the fake engine has no attention_kernel: nothing proven
    assert metrics["attention.kernel"] == "unknown"
    (problem,) = metrics["attention.kernel_problems"]
    assert "not proven fused" in problem
    assert judged(job, metrics)[("attention.kernel_problems", "exact")].status == "fail"


def test_a_cast_to_bf16_nobody_declared_fails_on_the_cpu():
    job = suite_job("attention_backends", "sdpa", **ATTENTION)
    metrics = run_in_process(job, silent_half_cast)[0]
    assert metrics["attention.dtype"] == "float32" and metrics["attention.kernel_dtype"] == "bfloat16"
    verdict = judged(job, metrics)[("attention.kernel_problems", "exact")]
    assert verdict.status == "fail"
    assert "attended in bfloat16 where it was to attend in float32" in verdict.message
    declared = run_in_process(job, DeclaredHalfCast)[0]
    assert declared["attention.kernel_dtype"] == "bfloat16" and declared["attention.kernel_problems"] == []


def test_errors_and_times_of_another_dtype_are_changed_not_compared():
    job = suite_job("attention_backends", "sdpa")
    kinds = attention.shapes("720x720_5s", 1024, 32)
    base = {f"time.attention.{kind}_s": Samples([1.0, 1.0, 1.0]) for kind in kinds} | {
        "machine.matmul_tflops": 1.0, "attention.kernel": "cpu_flash", "attention.kernel_dtype": "float32",
        "attention.video_self.rel_err": 2e-7, "attention.video_to_text.rel_err": 2e-7}
    # bf16's error (3e-3 grows beyond the 0.002 floor over float32's) and 3x the time
    now = {**base, **{f"time.attention.{kind}_s": Samples([3.0, 3.1, 3.2]) for kind in kinds},
           "attention.video_self.rel_err": 3.3e-3, "attention.kernel_problems": []}
    at_bf16 = judged(job, {**now, "attention.kernel_dtype": "bfloat16"}, baseline=base)
    for key in [("attention.video_self.rel_err", "relative"), ("time.attention.video_self_s", "time"),
                ("attention.kernel_dtype", "same")]:
        assert at_bf16[key].status == "changed" and not at_bf16[key].failed, at_bf16[key].message
    error = at_bf16[("attention.video_self.rel_err", "relative")]
    assert "with attention.kernel_dtype bfloat16" in error.message
    at_float32 = judged(job, now, baseline=base)  # the same growth at the baseline's dtype is a regression
    assert at_float32[("attention.video_self.rel_err", "relative")].status == "regression"
    assert at_float32[("time.attention.video_self_s", "time")].status == "regression"
    unknown = judged(job, now, baseline={k: v for k, v in base.items() if k != "attention.kernel_dtype"})
    assert unknown[("time.attention.video_self_s", "time")].status == "no_baseline"
