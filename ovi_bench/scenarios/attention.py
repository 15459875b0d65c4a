"""One attention backend of the engine under test at Ovi's attention shapes for one variant (no model).

The kernel is the engine's own (`Engine.attention_kernel`: the reference engine's registry, a checkout's
attention entry point), timed by the harness. Shapes per variant (`ovi_bench.variant_facts`, at `area`,
default the variant's own): video self (15,004 / 27,900 / 54,900 tokens), video->audio, audio->video,
video->text (`text_tokens`), audio self; `heads` x `head_dim`, in the run's dtype. Per shape: the median
time (`time.attention.<shape>_s`), TFLOP/s, its share of this device's measured matmul rate, and the
relative error against fp32 math on fresh random inputs. `attention.resolved` is the backend that actually
ran: asking for one kernel and getting another (`attention.fallback`) fails the suite. A backend that cannot
run on this device ends the case as `skipped`, with the reason.
"""

from __future__ import annotations

from typing import Any

import torch

from ovi_bench.engines.base import attention_kernel_hook
from ovi_bench.finite import require_finite
from ovi_bench.metrics import Metric
from ovi_bench.records import Samples
from ovi_bench.scenarios import CaseSkipped, Scenario, ScenarioContext
from ovi_bench.trackers.timing import matmul_tflops, time_calls
from ovi_bench.variant_facts import variant_facts

QUERY_CHUNK = 4096  # rows of fp32 scores the reference computes at once (54,900 keys: ~0.9 GB per head group)


def shapes(variant: str, area: int | None, text_tokens: int) -> dict[str, tuple[int, int]]:
    facts = variant_facts(variant)
    video, audio = facts.video_tokens(area=area), facts.audio_latent_length
    return {"video_self": (video, video), "video_to_audio": (video, audio), "audio_to_video": (audio, video),
            "video_to_text": (video, text_tokens), "audio_self": (audio, audio)}


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(D)) V in fp32 on [B, L, H, D] tensors, chunked over queries to bound memory."""
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    scale = q.shape[-1] ** -0.5
    out = [torch.softmax(chunk @ k.transpose(-1, -2) * scale, dim=-1) @ v for chunk in q.split(QUERY_CHUNK, dim=2)]
    return torch.cat(out, dim=2).transpose(1, 2)


def run(ctx: ScenarioContext) -> dict[str, Any]:
    params, config = ctx.params, ctx.config
    device = torch.device(config.device)
    # Ovi attends in bf16; "auto" (the engine's choice of weight dtype) means that here.
    dtype_name = "bfloat16" if config.dtype == "auto" else config.dtype
    dtype = getattr(torch, dtype_name)
    requested = config.attention
    make_kernel = attention_kernel_hook(ctx.engine)
    assert make_kernel is not None, "the worker checks the attention_kernel feature before the case starts"
    try:
        kernel = make_kernel(requested, config.device, dtype_name)
    except Exception as exc:  # noqa: BLE001 - the engine's refusal, with its reason
        raise CaseSkipped(f"attention backend {requested!r} unavailable on {device} ({dtype_name}): {exc}") from None
    ceiling = matmul_tflops(params["matmul_n"], dtype, device, reps=params["reps"])
    metrics: dict[str, Any] = {"attention.requested": requested, "attention.matmul_tflops": ceiling}
    heads, head_dim = params["heads"], params["head_dim"]
    generator = torch.Generator(device).manual_seed(config.seed)
    for kind, (lq, lk) in shapes(config.variant, config.area, params["text_tokens"]).items():
        q, k, v = (torch.randn(1, n, heads, head_dim, generator=generator, device=device, dtype=dtype)
                   for n in (lq, lk, lk))
        with ctx.meter.stage(f"attention_{kind}"):
            want = reference_attention(q, k, v)
            got = kernel.fn(q, k, v).float()
            require_finite(f"attention_{kind}", {"attention output": got})
            rel_err = float((got - want).norm() / want.norm())
            del got, want
            times = time_calls(lambda q=q, k=k, v=v: kernel.fn(q, k, v), device, params["reps"], params["warmup"])
        tflops = 4 * heads * lq * lk * head_dim / Samples(times).median / 1e12
        metrics.update({
            f"time.attention.{kind}_s": Samples(times),
            f"attention.{kind}.tflops": tflops,
            f"attention.{kind}.share_of_matmul": tflops / ceiling,
            f"attention.{kind}.rel_err": rel_err,
            f"attention.{kind}.tokens": [lq, lk],
        })
        del q, k, v
    metrics["attention.resolved"] = kernel.resolved
    metrics["attention.fallback"] = requested != "auto" and kernel.resolved != requested
    return metrics


SCENARIO = Scenario(
    name="attention",
    description="one attention backend at the variant's attention shapes: time, TFLOP/s, share, error",
    axes=("variant", "attention"),
    axis_defaults={"variant": "720x720_5s", "attention": "auto"},
    params={"heads": 24, "head_dim": 128, "text_tokens": 512, "reps": 5, "warmup": 2, "matmul_n": 8192,
            "area": None},
    run=run,
    metrics=(
        Metric("attention.requested", "text", "info"),
        Metric("attention.matmul_tflops", "tflops", "info"),
        Metric("time.attention.*_s", "s"),
        Metric("attention.*.tflops", "tflops"),
        Metric("attention.*.share_of_matmul", "ratio"),
        Metric("attention.*.rel_err", "ratio"),
        Metric("attention.*.tokens", "list", "info"),
        Metric("attention.resolved", "text"),
        Metric("attention.fallback", "flag"),
    ),
    features=lambda job: ("attention_kernel",),
)
