#!/usr/bin/env bash
# The four suites at full scale on one GPU (H100 80GB), reports under $OUT (default reports/gpu). About
# 6 minutes of device time: few denoise steps, the variants that matter, --repeat only where times are gated.
# Then, to store the baselines: for d in "$OUT"/*/; do ovi-bench baseline update "$d" --hardware h100-80gb; done
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu}
mkdir -p "$OUT"
run() { ovi-bench run "$@" --device cuda --preset full --hardware "${HARDWARE:-h100-80gb}" \
          --baselines baselines --timeout "5 min" || echo "exit $? from: $*"; }
ovi-bench doctor --device cuda > "$OUT/doctor.txt" 2>&1
# attention: the kernels that matter on Hopper, at the 5 s and 10 s shapes (no model: ~1 min)
run attention_backends --variant 720x720_5s --variant 960x960_10s \
    --attention auto --attention sdpa_cudnn --attention sdpa_flash --attention sdpa_efficient \
    --attention flex --attention sage --attention flash_attn_3 --report-dir "$OUT/attention_backends"
# the seed's OOM gate under a 40 GiB budget: each policy, 5 s and 10 s (2 steps: ~2 min)
run oom_regression --variant 720x720_5s --variant 960x960_10s --report-dir "$OUT/oom_regression"
# per-stage peaks of the 10 s generation, 3 steps, 2 denoise runs for step timings (~1 min)
run peak_memory_10s --repeat 2 --report-dir "$OUT/peak_memory_10s"
# shapes and durations need no GPU; run them on the host of the GPU machine at tiny (~30 s)
ovi-bench run variant_latents --hardware cpu-tiny --baselines baselines --report-dir "$OUT/variant_latents" \
    || echo "exit $? from variant_latents"
