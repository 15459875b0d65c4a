"""FlashAttention-4 forward tiles on Hopper, timed at every attention shape of one Ovi fusion step.

FA4 chooses 128x128 at head_dim 128 on sm90 (its heuristic, tuned on an H100 at shorter sequences). This
times that choice and the feasible alternatives (flash_attn/cute/sm90_config_search.py lists them) on each
distinct attention call of a fusion step of --variant, weights each by how often a step makes it, and ranks
the candidates by the step's total attention time. Each candidate's output is checked against fp32 math.

    python benchmarks/fa4_tiles.py --variant 960x960_10s --out reports/fa4_tiles.json [--write]

--write records the winner in ovi_engine/attention/fa4_tiles.json (which the flash_attn_4 backend reads)
when it beats FA4's own choice by more than --min-gain, and otherwise removes this GPU's entry.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from bench_attention import TEXT_TOKENS, VARIANT_TOKENS
from bench_common import ClockSampler, write_report

from ovi_engine.attention import attention_flops
from ovi_engine.attention.bench import AttentionInputs, time_ms
from ovi_engine.attention.flash_attn_4 import (
    TILES_FILE,
    TILES_SCHEMA_VERSION,
    Fa4Tile,
    attend_fa4,
    check,
    read_tiles,
    tile_entry,
)
from ovi_engine.fusion import FUSION_PRESETS
from ovi_engine.sampling import DEFAULT_SLG_LAYER

HEADS, HEAD_DIM = 24, 128
# sm90, head_dim 128: FA4's own 128x128 and the other tiles its config search finds within the register and
# shared-memory budgets (larger tile_n reads K/V from shared memory fewer times per FLOP).
SM90_CANDIDATES = (
    Fa4Tile(128, 128),
    Fa4Tile(128, 144),
    Fa4Tile(128, 160),
    Fa4Tile(128, 176),
    Fa4Tile(128, 192),
    Fa4Tile(128, 176, intra_wg_overlap=False),
    Fa4Tile(128, 192, intra_wg_overlap=False),
    Fa4Tile(128, 144, mma_pv_is_rs=False),
    Fa4Tile(192, 128, intra_wg_overlap=False),
    Fa4Tile(192, 112, intra_wg_overlap=False),
    # split-KV as FA4 decides per shape: short-query calls (audio attending video) fill few SMs unsplit
    Fa4Tile(128, 128, num_splits=0),
    Fa4Tile(128, 176, num_splits=0),
    Fa4Tile(128, 192, num_splits=0),
)
FA4_OWN = "fa4_own"  # flash_attn_func with no tile asked for


@dataclass(frozen=True)
class Call:
    kind: str
    lq: int
    lk: int
    per_step: int  # how many such calls one denoising step makes


def step_calls(video: int, audio: int, text: int, num_layers: int,
               skip_block: int | None = DEFAULT_SLG_LAYER) -> list[Call]:
    """The attention calls of one step (conditional + unconditional pass, as sampling.sample runs them) at
    these token counts.

    Each block pair attends six ways per pass; the unconditional pass skips one pair; pair 0's two
    self-attentions are shared by both passes (fusion.forward_passes)."""
    pairs = 2 * num_layers - int(skip_block is not None and 0 <= skip_block < num_layers)
    shared = int(skip_block != 0)
    shapes = {
        "video_self": (video, video, pairs - shared), "audio_self": (audio, audio, pairs - shared),
        "video_to_text": (video, text, pairs), "audio_to_text": (audio, text, pairs),
        "video_to_audio": (video, audio, pairs), "audio_to_video": (audio, video, pairs),
    }
    return [Call(kind, lq, lk, n) for kind, (lq, lk, n) in shapes.items()]


def measure_call(call: Call, candidates: dict[str, Fa4Tile | None], device: torch.device, reps: int,
                 rounds: int) -> dict[str, dict]:
    """Median ms, TFLOP/s and error vs fp32 of every candidate at one shape. The candidates are timed in
    `rounds` alternating passes (forward, backward) so a card drifting in clock under its power cap
    does not favour the ones timed first."""
    inputs = AttentionInputs.random(call.lq, call.lk, HEADS, HEAD_DIM, torch.bfloat16, device, seed=call.lq)
    q, k, v = inputs.q, inputs.k, inputs.v
    results: dict[str, dict] = {}
    for name, tile in candidates.items():  # first call compiles; the error is read from it
        try:
            out = attend_fa4(q, k, v, tile)
        except Exception as refusal:  # noqa: BLE001 - a tile this FA4 build rejects is a result, not a crash
            results[name] = {"refused": f"{type(refusal).__name__}: {str(refusal).splitlines()[0][:200]}"}
            continue
        ref = inputs.reference
        results[name] = {"rel_err": ((out.float() - ref).norm() / ref.norm()).item(), "times_ms": []}
        del out
    timed = [name for name in candidates if "refused" not in results[name]]
    clocks: dict[str, list[float]] = {name: [] for name in timed}
    for r in range(rounds):
        for name in timed if r % 2 == 0 else timed[::-1]:
            tile = candidates[name]
            with ClockSampler(device) as sampler:
                results[name]["times_ms"] += time_ms(lambda: attend_fa4(q, k, v, tile), device,  # noqa: B023
                                                     reps=reps, warmup=2)
            clocks[name] += [s[0] for s in sampler.samples]
    flops = attention_flops(call.lq, call.lk, HEADS, HEAD_DIM)
    for name in timed:
        row = results[name]
        row["median_ms"] = statistics.median(row["times_ms"])
        row["tflops"] = flops / (row["median_ms"] * 1e-3) / 1e12
        if clocks[name]:
            row["sm_clock_mhz_median"] = statistics.median(clocks[name])
    return results


def rank(calls: list[Call], by_call: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Seconds of attention per step for each candidate that ran at every shape, fastest first."""
    names = set.intersection(*({n for n, r in by_call[c.kind].items() if "median_ms" in r} for c in calls))
    totals = {n: sum(c.per_step * by_call[c.kind][n]["median_ms"] for c in calls) / 1e3 for n in names}
    return dict(sorted(totals.items(), key=lambda item: item[1]))


def update_table(path: Path, capability: str, entry: dict | None) -> None:
    """Put `entry` in the table for (capability, head_dim), or remove that key's entry when None."""
    data = json.loads(path.read_text())
    read_tiles(path)  # refuses a table of another schema
    data["tiles"] = [e for e in data["tiles"] if (e["capability"], e["head_dim"]) != (capability, HEAD_DIM)]
    if entry is not None:
        data["tiles"].append(entry)
    path.write_text(json.dumps(data, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANT_TOKENS), default="960x960_10s")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per candidate per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-gain", type=float, default=0.01, help="fraction of FA4's own step time")
    parser.add_argument("--write", action="store_true", help=f"record the winner in {TILES_FILE.name}")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device("cuda")
    reason = check(device, torch.bfloat16) if torch.cuda.is_available() else "no CUDA device is visible"
    if reason:
        parser.error(f"flash_attn_4 cannot run here: {reason}")
    major, minor = torch.cuda.get_device_capability(device)
    if major != 9:
        parser.error(f"the candidate tiles are sm90's; this GPU is sm{major}{minor}")
    capability = f"{major}.{minor}"

    calls = step_calls(*VARIANT_TOKENS[args.variant], TEXT_TOKENS, FUSION_PRESETS["full"].num_layers)
    candidates: dict[str, Fa4Tile | None] = {FA4_OWN: None} | {t.label(): t for t in SM90_CANDIDATES}
    by_call: dict[str, dict[str, dict]] = {}
    for call in calls:
        by_call[call.kind] = measure_call(call, candidates, device, args.reps, args.rounds)
        torch.cuda.empty_cache()
        best = min((r["median_ms"], n) for n, r in by_call[call.kind].items() if "median_ms" in r)
        print(f"{call.kind} {call.lq}x{call.lk} x{call.per_step}: fastest {best[1]} {best[0]:.4g} ms",
              file=sys.stderr, flush=True)
    totals = rank(calls, by_call)
    tiled = {n: t for n, t in candidates.items() if t is not None and n in totals}
    if FA4_OWN not in totals or not tiled:
        print(f"nothing to compare: ran at every shape {sorted(totals)}", file=sys.stderr)
        return 1
    winner_name = min(tiled, key=totals.__getitem__)
    gain = 1 - totals[winner_name] / totals[FA4_OWN]
    for name, seconds in totals.items():
        print(f"{name:32s} {seconds:.4f} s of attention per step ({seconds / totals[FA4_OWN]:.3f}x "
              "FA4's own)", file=sys.stderr)

    result = {"variant": args.variant, "capability": capability, "heads": HEADS, "head_dim": HEAD_DIM,
              "calls": [asdict(c) for c in calls], "step_attention_s": totals, "winner": winner_name,
              "gain": gain, "min_gain": args.min_gain, "by_call": by_call}
    write_report(result, args.out)
    if args.write:
        keep = gain > args.min_gain
        entry = tile_entry(capability, HEAD_DIM, tiled[winner_name],
                           device=torch.cuda.get_device_name(device), variant=args.variant,
                           step_attention_s={"fa4_own": totals[FA4_OWN], "this": totals[winner_name]},
                           measured_by="benchmarks/fa4_tiles.py") if keep else None
        update_table(TILES_FILE, capability, entry)
        print(f"{TILES_FILE}: {'set ' + winner_name if keep else 'no entry (FA4 own choice)'} for "
              f"sm{capability} head_dim {HEAD_DIM}; schema {TILES_SCHEMA_VERSION}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
