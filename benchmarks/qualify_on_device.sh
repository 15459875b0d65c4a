#!/usr/bin/env bash
# `ovi-bench qualify` on a lent GPU machine, one call at a time: `OUT=... bash benchmarks/qualify_on_device.sh N`,
# repeated until $OUT/r/check_bundle.txt appears. Each qualify stops with SIGINT before the call's limit
# (CALL_BUDGET_S, default 550 s) and the next call resumes it (--resume). State lives in $STATE (/tmp/q on the
# warm machine); each call also tars it to $OUT/state<N>.tgz, and a cold machine starts from .qstate/q when
# that is carried in (unpack the last state tarball into .qstate/ here and name it in `carry`).
# FIRST_TIME=1: a first qualification of the profile, in two bundles:
#   1. `first`: the suites whose checks need a baseline or a stored reference (attention_backends,
#      peak_memory_10s, output_fidelity), --allow-missing-baseline; then `baseline update` of its runs into
#      $STATE/baselines (a copy of baselines/), to be reviewed and committed;
#   2. `second`: the whole qualification against those baselines.
# Otherwise one bundle, `second`, against the project's baselines/. Then `check-bundle` of `second`.
# HARDWARE, DEVICE and PRESET default to the H200 (cpu-tiny, cpu, tiny tries the flow on a laptop).
set -uo pipefail
cd "$(dirname "$0")/.."
n=$1 O=$OUT/r STATE=${STATE:-/tmp/q}
HARDWARE=${HARDWARE:-h200-141gb} DEVICE=${DEVICE:-cuda} PRESET=${PRESET:-full}
deadline=$(( $(date +%s) + ${CALL_BUDGET_S:-550} ))
mkdir -p "$O"
export PYTHONUNBUFFERED=1
[ -d "$STATE" ] || { [ -d .qstate/q ] && mkdir -p "$(dirname "$STATE")" && cp -a .qstate/q "$STATE"; }
mkdir -p "$STATE"
gpu() { nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv \
          2>/dev/null; date -u; }
gpu > "$O/gpu_call$n.txt"
[ "$n" = 1 ] && python3 -m ovi_bench doctor --device "$DEVICE" > "$O/doctor.txt" 2>&1
qualify() {  # qualify BUNDLE [options]: resumed when its staging directory exists
  local bundle=$1 left=$(( deadline - $(date +%s) )); shift
  [ "$left" -gt 60 ] || { echo "!! $left s left: $bundle waits for the next call"; return 1; }
  [ -d "$bundle.runs" ] && set -- "$@" --resume
  timeout -s INT -k 30 "$left" python3 -m ovi_bench qualify "$HARDWARE" --device "$DEVICE" --preset "$PRESET" \
    --bundle-dir "$bundle" "$@" || echo "exit $? from qualify $bundle"
}
baselines=baselines
if [ "${FIRST_TIME:-0}" = 1 ]; then
  baselines=$STATE/baselines
  if [ ! -f "$STATE/first/manifest.json" ]; then
    qualify "$STATE/first" --suites attention_backends,peak_memory_10s,output_fidelity --allow-missing-baseline \
      >> "$O/log_first.txt" 2>&1
  fi
  if [ -f "$STATE/first/manifest.json" ] && [ ! -d "$baselines" ]; then
    rm -rf "$baselines.new" && cp -a baselines "$baselines.new"
    for run in "$STATE"/first/runs/*/; do
      python3 -m ovi_bench baseline update "$run" --hardware "$HARDWARE" --baselines "$baselines.new" || exit 1
    done > "$O/log_baseline_update.txt" 2>&1 && mv "$baselines.new" "$baselines"
  fi
fi
if [ -d "$baselines" ] && [ ! -f "$STATE/second/manifest.json" ]; then
  qualify "$STATE/second" --baselines "$baselines" >> "$O/log_second.txt" 2>&1
fi
if [ -f "$STATE/second/manifest.json" ]; then
  python3 -m ovi_bench check-bundle "$STATE/second" > "$O/check_bundle.txt" 2>&1; echo "exit $?" >> "$O/check_bundle.txt"
fi
gpu >> "$O/gpu_call$n.txt"
tar czf "$OUT/call$n.tgz" -C "$O" . && tar czf "$OUT/state$n.tgz" -C "$(dirname "$STATE")" "$(basename "$STATE")"
