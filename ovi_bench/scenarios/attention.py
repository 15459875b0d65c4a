"""One attention backend at Ovi's attention shapes for one variant (no model, no engine calls).

Shapes per variant (`ovi_bench.variant_facts`, at `area`, default the variant's own): video self
(15,004 / 27,900 / 54,900 tokens), video->audio, audio->video, video->text (`text_tokens`), audio self;
`heads` x `head_dim`, in the run's dtype. Per shape: the median time (`time.attention.<shape>_s`),
TFLOP/s, its share of this device's measured matmul rate, and the relative error against the fp32
`reference` backend on fresh random inputs. `attention.resolved` is the backend that actually ran: asking
for one kernel and getting another (`attention.fallback`) fails the suite. A backend that cannot run on this
device ends the case as `skipped`, with the reason.
"""

from __future__ import annotations

from typing import Any

import torch

from ovi_bench.records import Samples
from ovi_bench.scenarios import CaseSkipped, Scenario, ScenarioContext
from ovi_bench.variant_facts import variant_facts


def shapes(variant: str, area: int | None, text_tokens: int) -> dict[str, tuple[int, int]]:
    facts = variant_facts(variant)
    video, audio = facts.video_tokens(area=area), facts.audio_latent_length
    return {"video_self": (video, video), "video_to_audio": (video, audio), "audio_to_video": (audio, video),
            "video_to_text": (video, text_tokens), "audio_self": (audio, audio)}


def run(ctx: ScenarioContext) -> dict[str, Any]:
    from ovi_engine.attention import AttentionUnavailable, available_backends
    from ovi_engine.attention.bench import AttentionInputs, matmul_tflops, measure

    params, config = ctx.params, ctx.config
    # Ovi attends in bf16; "auto" (the engine's choice of weight dtype) means that here.
    device = torch.device(config.device)
    dtype = torch.bfloat16 if config.dtype == "auto" else getattr(torch, config.dtype)
    requested = config.attention
    status = available_backends(device, dtype).get(requested)
    if status is None or not status.available:
        raise CaseSkipped(f"attention backend {requested!r} unavailable on {device} ({dtype}): "
                          f"{status.reason if status else 'not registered'}")
    ceiling = matmul_tflops(params["matmul_n"], dtype, device, reps=params["reps"])
    metrics: dict[str, Any] = {"attention.requested": requested, "attention.matmul_tflops": ceiling}
    resolved = set()
    for number, (kind, (lq, lk)) in enumerate(shapes(config.variant, config.area, params["text_tokens"]).items()):
        inputs = AttentionInputs.random(lq, lk, params["heads"], params["head_dim"], dtype, device,
                                        seed=config.seed + number)
        with ctx.meter.stage(f"attention_{kind}"):
            try:
                result = measure(requested, inputs, reps=params["reps"], warmup=params["warmup"])
            except AttentionUnavailable as exc:  # refused at this shape after passing the probe
                raise CaseSkipped(f"{requested} refused {kind} {lq}x{lk}: {exc}") from None
        resolved.add(result.resolved)
        metrics.update({
            f"time.attention.{kind}_s": Samples([t / 1e3 for t in result.times_ms]),
            f"attention.{kind}.tflops": result.tflops,
            f"attention.{kind}.share_of_matmul": result.tflops / ceiling,
            f"attention.{kind}.rel_err": result.rel_err,
            f"attention.{kind}.tokens": [lq, lk],
        })
        del inputs
    metrics["attention.resolved"] = ",".join(sorted(resolved))
    metrics["attention.fallback"] = requested != "auto" and resolved != {requested}
    return metrics


SCENARIO = Scenario(
    name="attention",
    description="one attention backend at the variant's attention shapes: time, TFLOP/s, share, error",
    axes=("variant", "attention"),
    axis_defaults={"variant": "720x720_5s", "attention": "auto"},
    params={"heads": 24, "head_dim": 128, "text_tokens": 512, "reps": 5, "warmup": 2, "matmul_n": 8192,
            "area": None},
    run=run,
)
