#!/usr/bin/env bash
# The device calls that produced this folder, as run (one H200, warm between calls): bash calls.sh N
# FlashAttention-4's 92 MB libs_cu13 wheel travels in two parts (benchmarks/install_fa4.sh): call 1 carries
# .fa4a (part aa) and .upstream (upstream Ovi 1.1's ovi/ with the stand-ins of shared/tools/README.md),
# call 2 carries .fa4b (part ab and the other wheels), call 3 nothing.
set -uo pipefail
cd "$(dirname "$0")/../../.."
n=$1 O=$OUT/r
mkdir -p "$O/results"
export HARDWARE=h200-141gb OVI_UPSTREAM_DIR=.upstream PYTHONUNBUFFERED=1
[ -d /tmp/fa4 ] && export PYTHONPATH=/tmp/fa4:/tmp/fa4/nvidia_cutlass_dsl/dsl_packages
py() { PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} python3 "$@"; }
gpu() { nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv
        date -u; }
gpu > "$O/gpu_call$n.txt"
case $n in
  1) mkdir -p /tmp/fa4parts && cp .fa4a/cu13.part.aa /tmp/fa4parts/
     OUT=$O PARTS=offload OFFLOAD_VARIANTS=720x720_5s bash benchmarks/gpu_benchmarks.sh > "$O/log1_bench.txt" 2>&1
     OUT=$O/suites PARTS=oom OOM_VARIANTS=960x960_10s OOM_POLICY=cpu_offload bash benchmarks/gpu_suites.sh \
       > "$O/log1_suites.txt" 2>&1 ;;
  2) eval "$(bash benchmarks/install_fa4.sh /tmp/fa4parts .fa4b)" && python3 -c "import flash_attn.cute" \
       > "$O/log2_tiles.txt" 2>&1
     # the tile sweep writes its winner into the tree's table, which the runs below then use
     py benchmarks/fa4_tiles.py --variant 960x960_10s --write --out "$O/results/fa4_tiles.json" \
       >> "$O/log2_tiles.txt" 2>&1
     cp ovi_engine/attention/fa4_tiles.json "$O/results/fa4_tiles_table.json"
     cp ovi_engine/attention/fa4_tiles.json /tmp/fa4_tiles_table.json
     OUT=$O PARTS="fusion upstream" FUSION_ATTENTION=flash_attn_4 bash benchmarks/gpu_benchmarks.sh \
       > "$O/log2_bench.txt" 2>&1 ;;
  3) # the tree arrives again with the committed (empty) table: FA4's own tile first, then call 2's table
     py benchmarks/bench_fusion.py --compile --attention flash_attn_4 --variants 960x960_10s \
       --out "$O/results/fusion_flash_attn_4_own_tile.json" > "$O/log3_bench.txt" 2>&1
     py benchmarks/bench_fusion.py --compile --attention sdpa_cudnn --variants 960x960_10s \
       --out "$O/results/fusion_sdpa_cudnn.json" >> "$O/log3_bench.txt" 2>&1
     cp /tmp/fa4_tiles_table.json ovi_engine/attention/fa4_tiles.json
     py benchmarks/profile_fusion.py --variant 960x960_10s --attention flash_attn_4 --compile \
       --out "$O/results/profile_960x960_10s_fa4.json" >> "$O/log3_bench.txt" 2>&1 ;;
esac
gpu >> "$O/gpu_call$n.txt"
tar czf "$OUT/call$n.tgz" -C "$O" .
