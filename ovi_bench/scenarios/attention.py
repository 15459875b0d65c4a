"""One attention backend of the engine under test at Ovi's attention shapes for one variant (no model).

The kernel is the engine's own (`Engine.attention_kernel`: the reference engine's registry, a checkout's
attention entry point), timed by the harness. Shapes per variant (`ovi_bench.variant_facts`, at `area`,
default the variant's own): video self (15,004 / 27,900 / 54,900 tokens), video->audio, audio->video,
video->text (`text_tokens`), audio self; `heads` x `head_dim`, in the run's dtype (`attention.dtype`; "auto"
is bf16 on a GPU, float32 on the CPU: `attention_dtype`). Per shape: the median
time (`time.attention.<shape>_s`), TFLOP/s, its share of this device's measured matmul rate, and the
relative error against fp32 math on fresh random inputs. The times are steady ones (after `warmup` calls);
the backend's first call in the process (a JIT compile), where the engine measured it, is
`attention.first_call_s`, recorded apart and not gated. `attention.resolved` is the backend that actually
ran: asking for one kernel and getting another (`attention.fallback`) fails the suite. A backend that cannot
run on this device ends the case as `skipped`, with the reason.

Which kernel really ran is proven, not assumed: one call at the video_self shape runs under the profiler
(`ovi_bench.kernels`), and `attention.kernel` is the family found (flash, cudnn, aotriton, ..., math),
`attention.kernel_kind` fused | math | none. On a GPU (CUDA or ROCm) a fused kernel is expected for every
backend but sdpa_math and reference; on the CPU nothing is expected (SDPA's math kernel is what runs there),
so the kernel is recorded only. A math kernel where a fused one was expected is a problem in
`attention.kernel_problems` (which the suites expect empty), with ROCm's known cause where it applies.
`attention.kernel_dtype` is the dtype the attention op was handed (a kernel that casts float32 to bf16
first computes in bf16); one other than the run's dtype, or than the engine declares
(`AttentionKernel.computes_in`), is a problem on every device: a silent cast. Errors are compared with the
baseline's only where it computed in the same dtype (the checks' `like`). The pipeline scenario records the
same at the variant's video_self shape (`kernel_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ovi_bench.engines.base import attention_dtype, attention_kernel_hook
from ovi_bench.finite import require_finite
from ovi_bench.hardware import device_architecture
from ovi_bench.kernels import classify_sdpa, math_fallback_cause, ran_ops
from ovi_bench.metrics import Metric
from ovi_bench.records import Samples
from ovi_bench.scenarios import CaseSkipped, Scenario, ScenarioContext
from ovi_bench.trackers.timing import matmul_kernel, matmul_tflops, time_calls
from ovi_bench.variant_facts import variant_facts

QUERY_CHUNK = 4096  # rows of fp32 scores the reference computes at once (54,900 keys: ~0.9 GB per head group)


def shapes(variant: str, area: int | None, text_tokens: int) -> dict[str, tuple[int, int]]:
    facts = variant_facts(variant)
    video, audio = facts.video_tokens(area=area), facts.audio_latent_length
    return {"video_self": (video, video), "video_to_audio": (video, audio), "audio_to_video": (audio, video),
            "video_to_text": (video, text_tokens), "audio_self": (audio, audio)}


# Backends that are the math path by definition: no fused kernel is expected of them.
MATH_BACKENDS = ("sdpa_math", "reference")
KERNEL_METRICS = (
    Metric("attention.kernel", "text"), Metric("attention.kernel_kind", "text"),
    Metric("attention.kernel_dtype", "text"),
    Metric("attention.kernel_evidence", "text", "info"), Metric("attention.kernel_expected", "text", "info"),
    Metric("attention.kernel_problems", "list"),
)


@dataclass(frozen=True)
class DeviceContext:
    """What decides the kernel expected and the cause of a math fallback: a GPU or
    not, ROCm's HIP and arch."""

    gpu: bool
    hip: str | None = None
    arch: str | None = None


def device_context(device: torch.device) -> DeviceContext:
    if device.type != "cuda":
        return DeviceContext(gpu=False)
    props = torch.cuda.get_device_properties(device.index or 0)
    return DeviceContext(gpu=True, hip=getattr(torch.version, "hip", None), arch=device_architecture(props))


def kernel_metrics(call: Callable[[], Any] | None, requested: str, device: torch.device,
                   shape: str, computes_in: str) -> dict[str, Any]:
    """The attention.kernel* metrics of one profiled `call` of the engine's kernel at `shape`, which should
    attend in `computes_in` (None: the engine offers no attention_kernel, so nothing is proven)."""
    context = device_context(device)
    expected = "fused" if context.gpu and requested not in MATH_BACKENDS else "any"
    not_fused = []  # problems only where a fused kernel is expected
    dtype: str | None = None
    if call is None:
        family, kind, evidence = "unknown", "none", "the engine offers no attention_kernel"
        not_fused.append(f"{requested} at {shape}: not proven fused ({evidence})")
    else:
        try:
            kernel = classify_sdpa(ran_ops(call, str(device)))
            family, kind, evidence, dtype = kernel.family, kernel.kind, kernel.evidence, kernel.dtype
        except torch.OutOfMemoryError as exc:
            family, kind, evidence = "unknown", "none", str(exc).splitlines()[0]
            not_fused.append(f"{requested} at {shape}: one attention call ran out of memory (a math kernel "
                             "needs the whole score matrix)")
        if kind == "math":
            cause = math_fallback_cause(kernel, hip=context.hip, arch=context.arch)
            not_fused.append(f"{requested} at {shape} ran the math kernel ({evidence}) where a fused one was "
                             "expected" + (f": {cause}" if cause else ""))
    problems = not_fused if expected == "fused" else []
    if dtype is not None and dtype != computes_in:
        problems.append(f"{requested} at {shape} attended in {dtype} where it was to attend in {computes_in} "
                        f"({evidence}): a cast the engine does not declare")
    return {"attention.kernel": family, "attention.kernel_kind": kind, "attention.kernel_evidence": evidence,
            "attention.kernel_dtype": dtype or "unknown", "attention.kernel_expected": expected,
            "attention.kernel_problems": problems}


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(D)) V in fp32 on [B, L, H, D] tensors, chunked over queries to bound memory."""
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    scale = q.shape[-1] ** -0.5
    out = [torch.softmax(chunk @ k.transpose(-1, -2) * scale, dim=-1) @ v
           for chunk in q.split(QUERY_CHUNK, dim=2)]
    return torch.cat(out, dim=2).transpose(1, 2)


def run(ctx: ScenarioContext) -> dict[str, Any]:
    params, config = ctx.params, ctx.config
    device = torch.device(config.device)
    dtype_name = attention_dtype(config.dtype, config.device)
    dtype = getattr(torch, dtype_name)
    requested = config.attention
    make_kernel = attention_kernel_hook(ctx.engine)
    assert make_kernel is not None, "the worker checks the attention_kernel feature before the case starts"
    try:
        kernel = make_kernel(requested, config.device, dtype_name)
    except Exception as exc:  # noqa: BLE001 - the engine's refusal, with its reason
        raise CaseSkipped(f"attention backend {requested!r} unavailable on {device} "
                          f"({dtype_name}): {exc}") from None
    if device.type == "cpu":
        # One thread: with two on a busy 2-core machine, a descheduled thread stalls the pool's barrier and a
        # call takes 100x longer at random; on one thread times stay within ~2x, which the speed normalises.
        torch.set_num_threads(1)
    ceiling = matmul_tflops(params["matmul_n"], dtype, device, reps=params["reps"])
    metrics: dict[str, Any] = {"attention.requested": requested, "attention.dtype": dtype_name,
                               "attention.matmul_tflops": ceiling}
    heads, head_dim = params["heads"], params["head_dim"]
    generator = torch.Generator(device).manual_seed(config.seed)
    # The machine's speed, timed between the attention calls so that both see the same load (time checks
    # scale by it: a 2-core CI machine's speed moves several-fold from minute to minute).
    reference_kernel, reference_flops = matmul_kernel(params["reference_n"], dtype, device)
    reference_times: list[float] = []
    for kind, (lq, lk) in shapes(config.variant, config.area, params["text_tokens"]).items():
        q, k, v = (torch.randn(1, n, heads, head_dim, generator=generator, device=device, dtype=dtype)
                   for n in (lq, lk, lk))
        with ctx.meter.stage(f"attention_{kind}"):
            want = reference_attention(q, k, v)
            got = kernel.fn(q, k, v).float()
            require_finite(f"attention_{kind}", {"attention output": got})
            rel_err = float((got - want).norm() / want.norm())
            del got, want
            times, beside = time_calls(lambda q=q, k=k, v=v: kernel.fn(q, k, v), device, params["reps"],
                                       params["warmup"], beside=reference_kernel)
        reference_times += beside
        if kind == "video_self":
            metrics.update(kernel_metrics(lambda q=q, k=k, v=v: kernel.fn(q, k, v), requested, device,
                                          f"video_self {lq}x{lk}", kernel.attends_in(dtype_name)))
        tflops = 4 * heads * lq * lk * head_dim / Samples(times).median / 1e12
        metrics.update({
            f"time.attention.{kind}_s": Samples(times),
            f"attention.{kind}.tflops": tflops,
            f"attention.{kind}.share_of_matmul": tflops / ceiling,
            f"attention.{kind}.rel_err": rel_err,
            f"attention.{kind}.tokens": [lq, lk],
        })
        del q, k, v
    metrics["machine.matmul_tflops"] = reference_flops / Samples(reference_times).median / 1e12
    if kernel.first_call_s is not None:
        metrics["attention.first_call_s"] = kernel.first_call_s
    metrics["attention.resolved"] = kernel.resolved
    metrics["attention.fallback"] = requested != "auto" and kernel.resolved != requested
    return metrics


SCENARIO = Scenario(
    name="attention",
    description="one attention backend at the variant's attention shapes: time, TFLOP/s, share, error",
    axes=("variant", "attention"),
    axis_defaults={"variant": "720x720_5s", "attention": "auto"},
    params={"heads": 24, "head_dim": 128, "text_tokens": 512, "reps": 5, "warmup": 2, "matmul_n": 8192,
            "reference_n": 4096, "slowdown_factor": 1.5, "math_slowdown_factor": 1.5,  # read by time checks
            "time_floor": "0 s", "area": None},
    run=run,
    metrics=(
        Metric("attention.requested", "text", "info"),
        Metric("attention.dtype", "text", "info"),
        Metric("attention.matmul_tflops", "tflops", "info"),
        Metric("time.attention.*_s", "s"),
        Metric("attention.*.tflops", "tflops"),
        Metric("attention.*.share_of_matmul", "ratio"),
        Metric("attention.*.rel_err", "ratio"),
        Metric("attention.*.tokens", "list", "info"),
        Metric("attention.first_call_s", "s"),
        Metric("attention.resolved", "text"),
        Metric("attention.fallback", "flag"),
        *KERNEL_METRICS,
    ),
    features=lambda job: ("attention_kernel",),
)
