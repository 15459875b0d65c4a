"""How often the smoke gate's time checks give the right verdict on this machine: N runs of smoke's attention
cases with the unmodified reference engine (must pass every time) and N with a planted 3x attention slowdown
(tests/harness/planted_engines.py:slow_attention, must fail every time), judged against the committed
cpu-tiny baselines. Writes one JSON (the benchmark format) with every run's verdict and machine speed.

    python benchmarks/gate_flakiness.py --runs 10 --out benchmarks/results/cpu_gate_flakiness.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ovi_bench.records import Environment, canonical_json, write_atomic
from ovi_bench.schema import BENCHMARK

REPO = Path(__file__).resolve().parents[1]
ENGINES = {"reference": "reference", "slow_attention": "tests.harness.planted_engines:slow_attention"}


def one_run(engine: str, directory: Path) -> dict:
    # Only smoke's attention suite has time checks at tiny: run it alone, as smoke includes it.
    command = [sys.executable, "-m", "ovi_bench", "run", "smoke.attention_backends", "--engine", engine,
               "--hardware", "cpu-tiny", "--report-dir", str(directory)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if not (directory / "report.json").is_file():  # the harness itself failed: keep what it said
        return {"exit_status": proc.returncode, "time_verdicts": [], "machine_tflops": [], "regressions": 0,
                "stderr_tail": proc.stderr[-500:]}
    report = json.loads((directory / "report.json").read_text())
    attention = [c for c in report["cases"] if c["suite"] == "smoke.attention_backends"]
    verdicts = [v for v in report["verdicts"] if v["rule"] == "time"
                and any(v["case_id"] == c["case_id"] for c in attention)]
    return {"exit_status": proc.returncode,
            "time_verdicts": sorted({v["status"] for v in verdicts}),
            "machine_tflops": [c["metrics"].get("machine.matmul_tflops") for c in attention],
            "regressions": sum(v["status"] == "regression" for v in verdicts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    results: dict[str, list[dict]] = {name: [] for name in ENGINES}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.runs):
            for name, engine in ENGINES.items():
                run = one_run(engine, Path(tmp) / f"{name}-{number}")
                results[name].append(run)
                print(f"{name} run {number + 1}: exit {run['exit_status']}, time verdicts "
                      f"{run['time_verdicts']}",
                      flush=True)
    summary = {"reference_passed": sum(r["regressions"] == 0 and r["exit_status"] == 0
                                       for r in results["reference"]),
               "slow_attention_failed": sum(r["regressions"] > 0 for r in results["slow_attention"]),
               "runs": args.runs}
    write_atomic(args.out, canonical_json({"schema_version": BENCHMARK.version,
                                           "environment": Environment.capture().to_dict(),
                                           "summary": summary, "runs": results}))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
