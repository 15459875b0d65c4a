#!/usr/bin/env bash
# Full-scale engine benchmarks on one H100, with upstream Ovi measured in the same job (side by side).
# Results land in $OUT/results/ (JSON per benchmark + log). About 8 minutes of device time.
#   OUT=/tmp/gpu OVI_UPSTREAM_DIR=.upstream benchmarks/gpu_benchmarks.sh
# OVI_UPSTREAM_DIR: an export of upstream's ovi/ package with the stand-ins described in
# shared/tools/README.md (read and run there, never committed); skipped when absent.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu}
R="$OUT/results"
mkdir -p "$R"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" || echo "!! $name: exit $?"; }

step fusion 240 python3 benchmarks/bench_fusion.py --compile --out "$R/fusion.json"
if [ -d "${OVI_UPSTREAM_DIR:-}" ]; then
  step upstream_dit 150 bash -c 'cd "$1" && OVI_UPSTREAM_DIR=. python3 upstream_probe.py dit > "$2"' _ \
    "$OVI_UPSTREAM_DIR" "$(realpath "$R")/upstream_dit.json"
fi
step video_vae 150 python3 benchmarks/bench_video_vae.py --out "$R/video_vae.json"
step text_encoder 60 python3 benchmarks/bench_text_encoder.py --out "$R/text_encoder.json"
step audio_vae 60 python3 benchmarks/bench_audio_vae.py --out "$R/audio_vae.json"
step pipeline_10s_all_gpu 150 python3 benchmarks/bench_pipeline.py --variant 960x960_10s --policy all_gpu \
  --steps 2 --out "$R/pipeline_960x960_10s_all_gpu.json"
step pipeline_5s_cpu_offload 150 python3 benchmarks/bench_pipeline.py --variant 720x720_5s --policy cpu_offload \
  --steps 2 --out "$R/pipeline_720x720_5s_cpu_offload.json"
