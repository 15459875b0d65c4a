"""Validate the memory model (ovi_bench.estimate) against measured stage peaks: predicted, measured, error %.

Inputs are run reports (report.json of `ovi-bench run`, e.g. oom_regression or peak_memory_10s at full
scale), baseline files of the older layout that kept every stage peak, and optionally a video VAE benchmark
(bench_video_vae.py's JSON) for the tiled/untiled decode working set, which the pipeline scenario cannot
choose. A case is compared stage by stage on `peak.<stage>.bytes` (the allocator's peak on a GPU); cases that
did not end ok (an OOM is cut short) and stages measured as 0 are listed with the reason, not compared.
The first file that holds a case id wins (a baseline and the report it came from hold the same numbers).

    python benchmarks/validate_estimate.py RUN/report.json ... [--video-vae V.json] \\
        --out DIR/estimate_validation
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ovi_bench.estimate import ESTIMATE_TOLERANCE, STAGES, EstimateRequest, estimate
from ovi_bench.schema import BENCHMARK

TARGET = ESTIMATE_TOLERANCE
GIB = 2**30


def _source(path: Path) -> str:
    """A run report by its run directory (every one is report.json), any other file by its name."""
    return f"{path.parent.name}/{path.name}" if path.name == "report.json" else path.name


@dataclass(frozen=True)
class Row:
    source: str
    case: str  # variant x policy (x decode)
    stage: str
    predicted: int
    measured: int | None
    error: float | None  # (predicted - measured) / measured
    note: str = ""


def _cases(data: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(case id, status, params, metrics) of a run report (a list of cases) or an older baseline (a dict)."""
    if isinstance(data.get("cases"), list):
        return [(c["case_id"], c["status"], c.get("params", {}), c["metrics"]) for c in data["cases"]]
    return [(cid, "ok", {}, metrics) for cid, metrics in data["cases"].items()]


def _axes(case_id: str, params: dict[str, Any]) -> dict[str, Any]:
    inside = case_id[case_id.index("[") + 1:-1]
    return {**dict(kv.split("=", 1) for kv in inside.split(",")), **params}


def _preset(metrics: dict[str, Any]) -> str:
    weights = str(metrics.get("engine.weights") or "synthetic:full")
    return weights.split(":", 1)[1] if weights.startswith("synthetic:") else "full"


def pipeline_rows(path: Path, seen: set[str]) -> list[Row]:
    rows = []
    for case_id, status, params, metrics in _cases(json.loads(path.read_text())):
        if case_id in seen:
            continue
        seen.add(case_id)
        axes = _axes(case_id, params)
        device = "cuda" if any(k.endswith(".alloc_bytes") for k in metrics) else "cpu"
        request = EstimateRequest(axes["variant"], axes["policy"], _preset(metrics), device,
                                  area=axes.get("area"), height=axes.get("height"), width=axes.get("width"))
        name = f"{axes['variant']} x {axes['policy']} (untiled)"
        for stage in estimate(request).stages:
            measured = metrics.get(f"peak.{stage.stage}.bytes")
            note = (f"case ended {status}: its peaks are cut short" if status != "ok"
                    else "not measured (0 or absent)" if not measured else "")
            error = (stage.bytes - measured) / measured if measured and not note else None
            rows.append(Row(_source(path), name, stage.stage, stage.bytes, measured or None, error, note))
    return rows


def video_vae_rows(path: Path) -> list[Row]:
    """The decode working set (the peak above the VAE and latents) of bench_video_vae.py's decodes."""
    rows = []
    for name, case in json.loads(path.read_text())["cases"].items():
        if not name.startswith("decode_"):
            continue
        variant = name.removeprefix("decode_").removesuffix("_tiled")
        tiled = case.get("tiling") is not None
        request = EstimateRequest(variant, "all_gpu", tiled=tiled,
                                  tile_px=case["tiling"]["tile_px"] if tiled else 512)
        terms = estimate(request).stage("decode_video").terms
        predicted = terms["vae_decode_tiled" if tiled else "vae_decode"]
        measured = int(case["peak_over_resident_gib"] * GIB)
        rows.append(Row(path.name, f"{variant} VAE decode ({'tiled' if tiled else 'untiled'})",
                        "decode_video (working set)", predicted, measured, (predicted - measured) / measured))
    return rows


def summary(rows: list[Row]) -> dict[str, float | None]:
    """The largest |error| per stage."""
    out: dict[str, float | None] = {}
    for row in rows:
        if row.error is not None:
            out[row.stage] = max(out.get(row.stage) or 0.0, abs(row.error))
    return out


def markdown(rows: list[Row], title: str, provenance: str) -> str:
    worst = summary(rows)
    table = [[r.case, r.stage, f"{r.predicted / GIB:.3f}", f"{r.measured / GIB:.3f}" if r.measured else "-",
              f"{100 * r.error:+.2f}" if r.error is not None else "-", r.note or r.source] for r in rows]
    stages = [s for s in (*STAGES, "decode_video (working set)") if s in worst]
    within = sum(1 for r in rows if r.error is not None and abs(r.error) <= TARGET)
    compared = sum(1 for r in rows if r.error is not None)
    return (f"<!-- estimate validation, benchmark result schema_version {BENCHMARK.version} "
            f"-->\n# {title}\n\n{provenance}\n\nTarget: |error| <= {100 * TARGET:.0f}% per "
            f"stage. {within} of {compared} compared stage peaks are within it.\n\n"
            + tabulate([[s, f"{100 * worst[s]:.2f}"] for s in stages], headers=["stage", "max |error| %"],
                       tablefmt="github")
            + "\n\n" + tabulate(table, headers=["case", "stage", "predicted GiB", "measured GiB", "error %",
                                                "note / source"], tablefmt="github") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="*", type=Path, help="report.json files or older baselines")
    parser.add_argument("--video-vae", type=Path, help="bench_video_vae.py's JSON (tiled/untiled decode)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--title", default="Memory model validation")
    parser.add_argument("--provenance", default="", help="where the measured files come from (for the .md)")
    args = parser.parse_args()
    seen: set[str] = set()
    rows = [row for path in args.reports for row in pipeline_rows(path, seen)]
    if args.video_vae:
        rows += video_vae_rows(args.video_vae)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema_version": BENCHMARK.version, "benchmark": "estimate_validation", "target": TARGET,
            "provenance": args.provenance, "max_abs_error": summary(rows), "rows": [asdict(r) for r in rows]}
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(rows, args.title, args.provenance)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
