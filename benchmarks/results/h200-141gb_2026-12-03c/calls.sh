#!/usr/bin/env bash
# The device calls that produced this folder, as run (one H200, warm between calls): bash calls.sh N
# FlashAttention-4's 92 MB libs_cu13 wheel travels in two parts (benchmarks/install_fa4.sh): call 1 carries
# .fa4a (part aa, flash_attn_4, apache_tvm_ffi) and .upstream (upstream Ovi 1.1's ovi/ with the stand-ins of
# shared/tools/README.md), call 2 carries .fa4b (part ab and the other wheels).
set -uo pipefail
cd "$(dirname "$0")/../../.."
n=$1 O=$OUT/r
mkdir -p "$O/results"
export HARDWARE=h200-141gb OVI_UPSTREAM_DIR=.upstream PYTHONUNBUFFERED=1
py() { PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} python3 "$@"; }
gpu() { nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv
        date -u; }
gpu > "$O/gpu_call$n.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$O/gpu_call$n.txt"
case $n in
  1) mkdir -p /tmp/fa4parts && cp .fa4a/* /tmp/fa4parts/
     # the kernels on the GPU: their tests, then their speed against the torch paths they replace
     PYTHONPATH=$PWD timeout 240 python3 -m pytest -q -p no:randomly tests/engine/test_triton_kernels.py \
       > "$O/log1_kernels.txt" 2>&1
     py benchmarks/bench_triton_kernels.py --variant 960x960_10s --out "$O/results/triton_kernels.json" \
       >> "$O/log1_kernels.txt" 2>&1
     OUT=$O PARTS=offload OFFLOAD_VARIANTS=720x720_5s bash benchmarks/gpu_benchmarks.sh > "$O/log1_bench.txt" 2>&1
     OUT=$O/suites PARTS=oom OOM_VARIANTS=960x960_10s OOM_POLICY=cpu_offload bash benchmarks/gpu_suites.sh \
       > "$O/log1_suites.txt" 2>&1 ;;
  2) eval "$(bash benchmarks/install_fa4.sh /tmp/fa4parts .fa4b)" && python3 -c "import flash_attn.cute" \
       > "$O/log2_bench.txt" 2>&1
     OUT=$O PARTS="fusion upstream" FUSION_ATTENTION=flash_attn_4 bash benchmarks/gpu_benchmarks.sh \
       >> "$O/log2_bench.txt" 2>&1
     PYTHONPATH=$PWD:$PYTHONPATH timeout 120 python3 benchmarks/profile_fusion.py --variant 960x960_10s \
       --attention flash_attn_4 --compile --out "$O/results/profile_960x960_10s_fa4.json" >> "$O/log2_bench.txt" 2>&1
     # the default backend without FA4 (cuDNN SDPA), for the README's pip-free figure
     PYTHONPATH=$PWD:$PYTHONPATH timeout 150 python3 benchmarks/bench_fusion.py --compile --attention sdpa_cudnn \
       --variants 960x960_10s --out "$O/results/fusion_sdpa_cudnn.json" >> "$O/log2_bench.txt" 2>&1 ;;
  3) # the machine was given back after call 2: a fresh one gets FA4's first part again (and .upstream)
     mkdir -p /tmp/fa4parts && cp .fa4a/* /tmp/fa4parts/ ;;
  4) # ours and upstream again, for the spread between two pairs, then the FA4 tile sweep (table not written)
     eval "$(bash benchmarks/install_fa4.sh /tmp/fa4parts .fa4b)" && python3 -c "import flash_attn.cute" \
       > "$O/log4_bench.txt" 2>&1
     OUT=$O PARTS="fusion upstream" FUSION_ATTENTION=flash_attn_4 bash benchmarks/gpu_benchmarks.sh \
       >> "$O/log4_bench.txt" 2>&1
     PYTHONPATH=$PWD:$PYTHONPATH timeout 330 python3 benchmarks/fa4_tiles.py --variant 960x960_10s \
       --out "$O/results/fa4_tiles.json" > "$O/log4_tiles.txt" 2>&1 ;;
  5) # the tree now carries call 4's winner (192x128 RS) in fa4_tiles.json: the step with it, then with FA4's own
     export PYTHONPATH=/tmp/fa4:/tmp/fa4/nvidia_cutlass_dsl/dsl_packages
     py benchmarks/bench_fusion.py --compile --attention flash_attn_4 --variants 960x960_10s \
       --out "$O/results/fusion_flash_attn_4_tuned_tile.json" > "$O/log5_bench.txt" 2>&1
     printf '{\n "schema_version": 1,\n "tiles": []\n}\n' > ovi_engine/attention/fa4_tiles.json
     py benchmarks/bench_fusion.py --compile --attention flash_attn_4 --variants 960x960_10s \
       --out "$O/results/fusion_flash_attn_4_own_tile.json" >> "$O/log5_bench.txt" 2>&1 ;;
  6) # the final tree (the tuned tile committed): every variant, ours and upstream, in the job of calls 3-5
     export PYTHONPATH=/tmp/fa4:/tmp/fa4/nvidia_cutlass_dsl/dsl_packages
     cat ovi_engine/attention/fa4_tiles.json > "$O/log6_bench.txt"
     OUT=$O/final PARTS="fusion upstream" FUSION_ATTENTION=flash_attn_4 bash benchmarks/gpu_benchmarks.sh \
       >> "$O/log6_bench.txt" 2>&1 ;;
esac
gpu >> "$O/gpu_call$n.txt"
tar czf "$OUT/call$n.tgz" -C "$O" .
