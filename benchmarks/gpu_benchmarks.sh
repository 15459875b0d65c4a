#!/usr/bin/env bash
# Full-scale engine benchmarks on one H100, with upstream Ovi measured in the same job (side by side).
# Results land in $OUT/results/ (JSON per benchmark). Parts ($PARTS, default all), device time each:
#   attention ~1 min  kernels at the anchor shapes       fusion    ~2 min per backend in $FUSION_ATTENTION
#   upstream  ~1 min per mode in $UPSTREAM_ATTENTION      codecs    ~3 min   pipeline ~4 min
#   offload   ~2 min  cpu_offload's load: host arenas, load time, peak RSS vs module bytes, encode_text
#   offload_before ~3 min  the same load on the tree in $OVI_BEFORE_DIR (a `git archive` of an older
#             commit), measured in the same job so that before and after compare
#   host_memory ~1 min  first touch, cudaHostRegister, pinned allocator and D2H copy speeds (8 GiB each)
#   OUT=/tmp/gpu OVI_UPSTREAM_DIR=.upstream benchmarks/gpu_benchmarks.sh
# OVI_UPSTREAM_DIR: an export of upstream's ovi/ package with the stand-ins described in
# shared/tools/README.md (read and run there, never committed); skipped when absent.
# FlashAttention-3 is used when `flash_attn_interface` imports (docs/flash_attention_3.md builds it);
# FlashAttention-4 (FUSION_ATTENTION=flash_attn_4) once benchmarks/install_fa4.sh has installed it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu}
R="$OUT/results"
PARTS=${PARTS:-attention fusion upstream codecs pipeline}
FUSION_ATTENTION=${FUSION_ATTENTION:-auto}   # e.g. "flash_attn_3 sdpa_cudnn"
UPSTREAM_ATTENTION=${UPSTREAM_ATTENTION:-sdpa}  # sdpa (the anchors' setting) and/or fa3
mkdir -p "$R"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" || echo "!! $name: exit $?"; }

for part in $PARTS; do
  case $part in
    attention) step attention 120 python3 benchmarks/bench_attention.py --quick --out "$R/attention.json" ;;
    fusion) for backend in $FUSION_ATTENTION; do
              step "fusion $backend" 240 python3 benchmarks/bench_fusion.py --compile --attention "$backend" \
                ${FUSION_VARIANTS:+--variants "$FUSION_VARIANTS"} --out "$R/fusion_$backend.json"
            done ;;
    upstream) [ -d "${OVI_UPSTREAM_DIR:-}" ] || { echo "!! upstream: OVI_UPSTREAM_DIR unset"; continue; }
              for mode in $UPSTREAM_ATTENTION; do
                step "upstream $mode" 150 bash -c 'cd "$1" && OVI_UPSTREAM_DIR=. OVI_UPSTREAM_ATTENTION=$3 \
                  python3 upstream_probe.py dit > "$2"' _ "$OVI_UPSTREAM_DIR" "$(realpath "$R")/upstream_dit_$mode.json" "$mode"
              done ;;
    codecs)
      step video_vae 150 python3 benchmarks/bench_video_vae.py --out "$R/video_vae.json"
      step text_encoder 60 python3 benchmarks/bench_text_encoder.py --out "$R/text_encoder.json"
      step audio_vae 60 python3 benchmarks/bench_audio_vae.py --out "$R/audio_vae.json" ;;
    pipeline)
      step pipeline_10s_all_gpu 150 python3 benchmarks/bench_pipeline.py --variant 960x960_10s --policy all_gpu \
        --steps 2 --out "$R/pipeline_960x960_10s_all_gpu.json"
      step pipeline_5s_cpu_offload 150 python3 benchmarks/bench_pipeline.py --variant 720x720_5s \
        --policy cpu_offload --steps 2 --out "$R/pipeline_720x720_5s_cpu_offload.json" ;;
    offload) for variant in ${OFFLOAD_VARIANTS:-720x720_5s 960x960_10s}; do
               step "offload $variant" 240 python3 benchmarks/bench_offload.py --variant "$variant" \
                 --out "$R/offload_$variant.json"
             done ;;
    offload_before) [ -d "${OVI_BEFORE_DIR:-}" ] || { echo "!! offload_before: OVI_BEFORE_DIR unset"; continue; }
             step "offload before" 300 env PYTHONPATH="$(realpath "$OVI_BEFORE_DIR")" python3 \
               "$OVI_BEFORE_DIR/benchmarks/bench_offload.py" --variant 720x720_5s \
               --out "$R/offload_before_720x720_5s.json" ;;
    host_memory) step host_memory 120 python3 benchmarks/bench_host_memory.py --gib 8 --out "$R/host_memory.json" ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
done
