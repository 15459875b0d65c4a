#!/usr/bin/env bash
# The device calls that produced this folder, as run (one H200, warm between calls): bash calls.sh N
# Call 1 carries .whl .upstream .fa4a, call 2 carries .fa4b (benchmarks/install_fa4.sh), later calls nothing.
set -uo pipefail
cd "$(dirname "$0")/../../.."
n=$1 O=$OUT/r
mkdir -p "$O"
export HARDWARE=h200-141gb OVI_UPSTREAM_DIR=.upstream PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/site${FA4_PATH:+:$FA4_PATH}
gpu() { nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv
        date -u; }
gpu > "$O/gpu_call$n.txt"
case $n in
  1) python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
       .whl/*.whl
     mkdir -p /tmp/fa4parts && cp .fa4a/cu13.part.aa /tmp/fa4parts/
     python3 -m ovi_bench doctor --device cuda > "$O/doctor.txt" 2>&1
     PYTHONPATH=$PWD:$PYTHONPATH python3 benchmarks/allocator_probe.py > "$O/allocator_probe.txt" 2>&1
     PYTHONPATH=$PWD:$PYTHONPATH python3 -m ovi_bench frontier --hardware consumer-24gb --policy cpu_offload \
       --confirm --variant 720x720_5s --aspect 1:1 --out "$O/frontier/frontier_consumer-24gb_cpu_offload_untiled" \
       > "$O/log1_frontier.txt" 2>&1
     OUT=$O/suites PARTS=oom OOM_VARIANTS=960x960_10s OOM_POLICY=cpu_offload bash benchmarks/gpu_suites.sh \
       > "$O/log1_suites.txt" 2>&1
     OUT=$O PARTS=offload OFFLOAD_VARIANTS=720x720_5s bash benchmarks/gpu_benchmarks.sh > "$O/log1_bench.txt" 2>&1 ;;
  2) OUT=$O PARTS="fusion upstream" FUSION_ATTENTION="flash_attn_4 sdpa_cudnn" bash benchmarks/gpu_benchmarks.sh \
       > "$O/log2_bench.txt" 2>&1
     PYTHONPATH=$PWD:$PYTHONPATH python3 benchmarks/profile_fusion.py --variant 960x960_10s --attention flash_attn_4 \
       --compile --out "$O/results/profile_960x960_10s_fa4.json" >> "$O/log2_bench.txt" 2>&1 ;;
  3) OUT=$O/suites PARTS=oom OOM_VARIANTS="720x720_5s 720x720_5s_fp8 960x960_5s" bash benchmarks/gpu_suites.sh \
       > "$O/log3_suites.txt" 2>&1 ;;
  4) OUT=$O/suites PARTS="peak sequential" bash benchmarks/gpu_suites.sh > "$O/log4_suites.txt" 2>&1
     # a probe past the confirmation's outside frame (1536x1536 fitted): does the decode stop fitting by 1664?
     PYTHONPATH=$PWD:$PYTHONPATH python3 -m ovi_bench run "$(dirname "$0")/frontier_probe_1664.yaml" --device cuda \
       --preset full --hardware consumer-24gb --budget profile --allow-missing-baseline \
       --report-dir "$O/frontier_probe_1664" > "$O/log4_probe.txt" 2>&1 ;;
  5) # after bcb68d9 (the token embedding drawn alone): cpu_offload's load peak, two variants
     OUT=$O/suites PARTS=oom OOM_VARIANTS="720x720_5s 960x960_5s" OOM_POLICY=cpu_offload \
       DEADLINE=$(( $(date +%s) + 150 )) bash benchmarks/gpu_suites.sh > "$O/log5_suites.txt" 2>&1 ;;
esac
gpu >> "$O/gpu_call$n.txt"
tar czf "$OUT/call$n.tgz" -C "$O" .
