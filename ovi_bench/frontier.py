"""The OOM frontier: the largest clip that fits a hardware profile under a policy, by the memory model first.

For each variant (its duration: 5 s, or 10 s for 960x960_10s) and aspect ratio, `find_frontier` bisects on
the frame area: the estimate's peak grows with the area (tokens, decoded pixels), so the largest area whose
every stage fits the profile's usable memory is found in a few dozen estimates. `confirm` then runs the
pipeline scenario through `ovi_bench.run.Run` under the profile's budget (`budget: profile`) on each side of
the boundary, a generated suite per side: inside by the model's tolerance (must pass) and outside by it (must
OOM). The table and its chart
are the result (`write_frontier`, a JSON file of its own schema version); a frontier claim is gated in a
suite by running the pipeline scenario at that clip under `budget: profile` (docs/suites.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ovi_bench.estimate import ESTIMATE_TOLERANCE, Estimate, EstimateRequest, estimate
from ovi_bench.hardware import HardwareProfile
from ovi_bench.schema import Format
from ovi_bench.variant_facts import SNAP, VARIANTS, variant_facts

FRONTIER = Format("oom frontier", 2, "find it again with `ovi-bench frontier`")
ASPECTS: dict[str, tuple[int, int]] = {"1:1": (1, 1), "16:9": (9, 16), "9:16": (16, 9)}  # (height, width)
# The bisection's upper end: a 1920^2 frame, 4x the largest variant's area. The working sets were calibrated
# on 704^2 and 960^2 frames (and 512^2 tiles); a frontier far above 960^2 is an extrapolation of them.
MAX_SIDE = 1920
ESTIMATED = "estimated, not yet confirmed by runs"
# The memory model promises each stage's peak within its tolerance, 5%. A run a few MB
# inside the estimated boundary would test the model far beyond that promise, so the confirmation brackets the
# boundary by it: the largest frame estimated 5% under the budget must run, the first estimated 5% over it
# must run out of memory.
CONFIRM_TOLERANCE = ESTIMATE_TOLERANCE
EXTRA_RUNS = 2  # runs past a side whose first run disagreed, each another tolerance further from the boundary
MAX_STEPS = 20  # tolerance steps tried on a side (steps that snap to a frame already run are skipped)


@dataclass(frozen=True)
class FrontierPoint:
    variant: str
    duration_s: int
    aspect: str
    area: int | None  # height x width of the largest frame that fits; None when none does
    frame: tuple[int, int] | None  # (height, width) at that area
    peak_stage: str
    peak_bytes: int  # at `area`, or at the smallest frame when none fits
    margin: int  # usable - peak
    outside_frame: tuple[int, int] | None  # the next frame up, which does not fit
    outside_peak_bytes: int | None
    status: str = ESTIMATED  # or "confirmed ...", "conservative ...", "contradicted ...", "not confirmed ..."
    runs: tuple[ConfirmationRun, ...] = ()  # the confirmation runs, when there were any


@dataclass(frozen=True)
class ConfirmationRun:
    side: str  # "inside" (must end ok) or "outside" (must end oom)
    frame: tuple[int, int]
    estimated_bytes: int  # the model's peak at that frame
    status: str  # the case's status: ok, oom (of the device, on a GPU), or another (error, timeout, host oom)


def _request(base: EstimateRequest, aspect: str, area: int) -> EstimateRequest:
    h, w = ASPECTS[aspect]
    return replace(base, area=area, height=h * 1000, width=w * 1000)


def _fits(est: Estimate, budget: int) -> bool:
    return est.peak.bytes <= budget


def largest_area(base: EstimateRequest, aspect: str, budget: int) -> tuple[Estimate | None, Estimate]:
    """(estimate at the largest fitting area or None, estimate at the first area that does not fit).

    Bisection on the area in [SNAP^2, MAX_SIDE^2]; frames snap to multiples of 32, so areas map to frames
    monotonically and the peak never shrinks as the area grows."""
    lo, hi = SNAP * SNAP, MAX_SIDE * MAX_SIDE
    smallest = estimate(_request(base, aspect, lo))
    if not _fits(smallest, budget):
        return None, smallest
    largest = estimate(_request(base, aspect, hi))
    if _fits(largest, budget):
        return largest, largest
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(estimate(_request(base, aspect, mid)), budget) else (lo, mid)
    return estimate(_request(base, aspect, lo)), estimate(_request(base, aspect, hi))


def find_frontier(profile: HardwareProfile, policy: str, *, preset: str = "full", tiled: bool = False,
                  variants: tuple[str, ...] = VARIANTS, aspects: tuple[str, ...] = tuple(ASPECTS),
                  budget: int | None = None) -> list[FrontierPoint]:
    """One point per variant x aspect, by the estimate alone; `budget` defaults to the profile's usable."""
    budget = profile.usable_bytes if budget is None else budget
    device = profile.device_type
    points = []
    for variant in variants:
        base = EstimateRequest(variant, policy, preset, device, tiled=tiled)
        for aspect in aspects:
            inside, outside = largest_area(base, aspect, budget)
            at = inside or outside
            boundary = outside if inside is not None and outside is not inside else None
            points.append(FrontierPoint(
                variant, variant_facts(variant).duration_s, aspect,
                inside.frame[0] * inside.frame[1] if inside else None, inside.frame if inside else None,
                at.peak.stage, at.peak.bytes, budget - at.peak.bytes,
                boundary.frame if boundary else None, boundary.peak.bytes if boundary else None))
    return points


# ---- confirmation by runs ---------------------------------------------------------------------------------
RunCase = Callable[[Path, dict[str, Any]], str]  # (suite file, its params) -> the case's status


def confirmation_suite(point: FrontierPoint, policy: str, frame: tuple[int, int], name: str) -> str:
    """A pipeline suite of one case at `frame`, under the profile's budget; what `confirm` reads is the case's
    status (ok or oom); its one check, the latent shape, is there because a suite must check something.
    One denoise step: every step has the same working set, and at a frontier frame a step takes tens of
    seconds on a GPU."""
    params = {"steps": 1, "warmup_steps": 0, "height": frame[0], "width": frame[1],
              "area": frame[0] * frame[1]}
    return json.dumps({"schema_version": 1, "name": name, "scenario": "pipeline", "budget": "profile",
                       "description": f"frontier confirmation of {point.variant} {point.aspect} at "
                                      f"{frame[0]}x{frame[1]} under {policy} (generated by "
                                      "ovi-bench frontier)",
                       "matrix": {"variant": [point.variant], "policy": [policy]}, "params": params,
                       "checks": [{"metric": "video_latent_shape", "rule": "exact",
                                   "expected": "spec.video_latent_shape"}]}, indent=2)


def _bracket(base: EstimateRequest, aspect: str, budget: int, side: str, k: int) -> Estimate | None:
    """The frame k tolerances inside the boundary (the largest estimated under budget x (1 - tol)^k) or
    outside it (the first estimated over budget x (1 + tol)^k); None past the smallest frame or the search
    range."""
    if side == "inside":
        return largest_area(base, aspect, int(budget * (1 - CONFIRM_TOLERANCE) ** k))[0]
    below, above = largest_area(base, aspect, int(budget * (1 + CONFIRM_TOLERANCE) ** k))
    return above if below is not above else None


def _verdict(runs: list[ConfirmationRun]) -> str:
    said = ", ".join(f"{r.side} {r.frame[0]}x{r.frame[1]} {r.status}" for r in runs)
    first = {side: next((r for r in runs if r.side == side), None) for side in ("inside", "outside")}
    if first["inside"] is None or first["outside"] is None:
        return f"not confirmed: only {said or 'no run'} within {CONFIRM_TOLERANCE:.0%} of the boundary"
    if any(r.status not in ("ok", "oom") for r in first.values() if r is not None):
        return f"not confirmed: {said}"  # an error, a timeout or a host OOM says nothing about device memory
    if first["inside"].status == "oom":  # whatever a later, smaller run did: the dangerous direction
        return f"contradicted by runs, the estimate is optimistic: {said}"
    if first["outside"].status == "oom":
        return f"confirmed by runs within {CONFIRM_TOLERANCE:.0%}: {said}"
    fitted = max((r for r in runs if r.status == "ok"), key=lambda r: r.frame[0] * r.frame[1])
    outside = [r for r in runs if r.side == "outside"]
    limit = next((r for r in outside if r.status == "oom"), None)
    beyond = (f"{limit.frame[0]}x{limit.frame[1]} ran out of memory" if limit
              else f"no OOM within {len(outside)} runs outside")
    return f"conservative by runs: fits up to {fitted.frame[0]}x{fitted.frame[1]}, {beyond} ({said})"


def confirm(points: list[FrontierPoint], policy: str, run_case: RunCase, directory: Path, *, budget: int,
            preset: str = "full", device: str = "cuda") -> list[FrontierPoint]:
    """Run each point's clip inside its boundary by CONFIRM_TOLERANCE (must end ok) and outside by it (must
    end oom); a side that disagrees runs again up to EXTRA_RUNS times, each another tolerance further, to find
    where the runs' own boundary is. Untiled decode, as the pipeline scenario decodes."""
    directory.mkdir(parents=True, exist_ok=True)
    confirmed = []
    for i, point in enumerate(points):
        if point.frame is None or point.outside_frame is None:
            confirmed.append(point)  # no boundary to confirm: nothing fits, or everything up to MAX_SIDE
            continue
        base = EstimateRequest(point.variant, policy, preset, device)
        runs: list[ConfirmationRun] = []
        for side, disagreeing in (("inside", "oom"), ("outside", "ok")):
            frames: list[tuple[int, int]] = []
            for k in range(1, MAX_STEPS + 1):
                est = _bracket(base, point.aspect, budget, side, k)
                if est is None or len(frames) > EXTRA_RUNS:
                    break
                if est.frame in frames:  # the next tolerance step snapped to a frame already run
                    continue
                frames.append(est.frame)
                name = f"frontier_{i}_{side}" + (f"_{k}" if k > 1 else "")
                path = directory / f"{name}.yaml"  # JSON is YAML
                path.write_text(confirmation_suite(point, policy, est.frame, name), encoding="utf-8")
                run = ConfirmationRun(side, est.frame, est.peak.bytes, run_case(path, {"frame": est.frame}))
                runs.append(run)
                if run.status != disagreeing:  # as the estimate says, or an error: no further run
                    break
        confirmed.append(replace(point, status=_verdict(runs), runs=tuple(runs)))
    return confirmed


# ---- output -----------------------------------------------------------------------------------------------
def frontier_dict(points: list[FrontierPoint], profile: HardwareProfile, policy: str, *, preset: str,
                  tiled: bool, engine: str) -> dict[str, Any]:
    return {"schema_version": FRONTIER.version, "hardware": profile.name,
            "usable_bytes": profile.usable_bytes,
            "usable_source": profile.sources["usable"], "policy": policy, "preset": preset, "tiled": tiled,
            "engine": engine, "points": [asdict(p) for p in points]}


def frontier_rows(points: list[FrontierPoint]) -> list[list[Any]]:
    gib = 2**30
    return [[p.variant, p.aspect, f"{p.frame[0]}x{p.frame[1]}" if p.frame else "none fits",
             f"{p.area:,}" if p.area else "-", p.peak_stage, f"{p.peak_bytes / gib:.2f}",
             f"{p.margin / gib:+.2f}",
             f"{p.outside_frame[0]}x{p.outside_frame[1]}" if p.outside_frame else "-",
             p.status] for p in points]


FRONTIER_HEADERS = ["variant", "aspect", "largest frame", "area px", "peak stage", "peak GiB", "margin GiB",
                    "next frame (OOM)", "status"]


def frontier_chart(points: list[FrontierPoint], title: str) -> str:
    """SVG: the largest fitting area per variant and aspect (matplotlib, like ovi_bench.report.charts)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(p.variant for p in points))
    aspects = list(dict.fromkeys(p.aspect for p in points))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(aspects))
    for j, aspect in enumerate(aspects):
        areas = [next((p.area or 0 for p in points if p.variant == v and p.aspect == aspect), 0) / 1e6
                 for v in variants]
        ax.bar([i + j * width for i in range(len(variants))], areas, width, label=aspect)
    ax.set_xticks([i + width * (len(aspects) - 1) / 2 for i in range(len(variants))], variants)
    ax.set_ylabel("largest fitting area (Mpx)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg",
                metadata={"Description": f"{FRONTIER.name} schema_version {FRONTIER.version}"})
    plt.close(fig)
    return buffer.getvalue()


def write_frontier(data: dict[str, Any], points: list[FrontierPoint], out: Path) -> list[Path]:
    """<out>.json, <out>.md and <out>.svg."""
    from tabulate import tabulate

    out.parent.mkdir(parents=True, exist_ok=True)
    title = (f"OOM frontier: {data['hardware']} ({data['usable_bytes'] / 2**30:.0f} GiB usable), "
             f"{data['policy']}")
    paths = [out.with_suffix(".json"), out.with_suffix(".md"), out.with_suffix(".svg")]
    paths[0].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(f"<!-- {FRONTIER.name} schema_version {FRONTIER.version} -->\n# {title}\n\n"
                        f"Preset {data['preset']}, {'tiled' if data['tiled'] else 'untiled'} decode, engine "
                        f"{data['engine']}; usable memory: {data['usable_source']}. Frames "
                        f"are searched up to {MAX_SIDE}x{MAX_SIDE}; the memory model was "
                        "calibrated on 704x704 and 960x960 frames, so a frontier well above 960x960 is "
                        "an extrapolation. 720x720_5s_fp8 counts as bf16 in memory (measured the same as "
                        "720x720_5s with synthetic weights).\n\n"
                        + tabulate(frontier_rows(points), headers=FRONTIER_HEADERS, tablefmt="github") + "\n",
                        encoding="utf-8")
    paths[2].write_text(frontier_chart(points, title), encoding="utf-8")
    return paths
