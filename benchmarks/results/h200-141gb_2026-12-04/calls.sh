#!/usr/bin/env bash
# The device calls that produced this folder, as run (one H200, warm between the calls of a job):
#   bash calls.sh N
# Calls 1-4 (tree 29895d1, files in first/) measured FlashAttention-3 against FA4 and upstream; calls 5-9
# (tree 5a51ab1, files in final/) the fusion step of the final engine, ours and upstream, and cpu_offload;
# call 10 (tree e23e730, offload_probe/) the first encode_text; call 11 (tree 523d3f2, offload/) cpu_offload
# again with the warm-up that call 10 led to; call 12 (tree of the commit that added it, estimate/) the
# 720x720_5s_fp8 cpu_offload OOM case for the memory model. Five machines: calls 1-4, 5-9, 10, 11 and 12.
# Carried, never committed: .fa4a and .fa4b (FlashAttention-4's wheels, the 92 MB libs_cu13 one split in two;
# benchmarks/install_fa4.sh), .fa3 (FlashAttention-3 built as in docs/flash_attention_3.md) and .upstream
# (upstream Ovi 1.1's ovi/ with the stand-ins of shared/tools/README.md). The first call of a job carries
# .fa4a, the second .fa4b, the third .fa3 and .upstream; each copies what it carried to /tmp.
set -uo pipefail
cd "$(dirname "$0")/../../.."
n=$1 O=$OUT/r
mkdir -p "$O/results"
export HARDWARE=h200-141gb OVI_UPSTREAM_DIR=/tmp/upstream PYTHONUNBUFFERED=1
py() { PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} python3 "$@"; }
gpu() { nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv
        date -u; }
both() { export PYTHONPATH=/tmp/fa3:/tmp/fa4:/tmp/fa4/nvidia_cutlass_dsl/dsl_packages; }
gpu > "$O/gpu_call$n.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$O/gpu_call$n.txt"
case $n in
  1|5) mkdir -p /tmp/fa4parts && cp .fa4a/* /tmp/fa4parts/ ;;
  2|6) eval "$(bash benchmarks/install_fa4.sh /tmp/fa4parts .fa4b)" && python3 -c "import flash_attn.cute" \
         > "$O/log$n.txt" 2>&1 ;;
  3) rm -rf /tmp/fa3 /tmp/upstream && cp -r .fa3 /tmp/fa3 && cp -r .upstream /tmp/upstream
     both
     # which backends this device has, and what auto picks among them (timed, probe-checked)
     py -m ovi_bench list backends --device cuda > "$O/log3_backends.txt" 2>&1
     py benchmarks/bench_attention.py --quick --backends sdpa_cudnn,flash_attn_3,flash_attn_4 \
       --out "$O/results/attention.json" > "$O/log3_attention.txt" 2>&1
     # the best kernel (FA3) and upstream 1.1's DiT (SDPA), every variant
     OUT=$O PARTS="fusion upstream" FUSION_ATTENTION=flash_attn_3 bash benchmarks/gpu_benchmarks.sh \
       > "$O/log3_bench.txt" 2>&1 ;;
  4) both  # where FA3's 10 s step goes
     py benchmarks/profile_fusion.py --variant 960x960_10s --attention flash_attn_3 --compile \
       --out "$O/results/profile_960x960_10s_fa3.json" > "$O/log4_profile.txt" 2>&1 ;;
  7) rm -rf /tmp/fa3 /tmp/upstream && cp -r .fa3 /tmp/fa3 && cp -r .upstream /tmp/upstream
     both
     # the Triton kernels on the GPU (their tests, then their speed against the torch paths they replace)
     PYTHONPATH=$PWD timeout 240 python3 -m pytest -q -p no:randomly tests/engine/test_triton_kernels.py \
       > "$O/log7_kernels.txt" 2>&1
     py benchmarks/bench_triton_kernels.py --variant 960x960_10s --out "$O/results/triton_kernels.json" \
       >> "$O/log7_kernels.txt" 2>&1
     # the best kernel (FA3) and upstream 1.1's DiT (SDPA), every variant
     OUT=$O PARTS="fusion upstream" FUSION_ATTENTION=flash_attn_3 bash benchmarks/gpu_benchmarks.sh \
       > "$O/log7_bench.txt" 2>&1 ;;
  8) both
     py -m ovi_bench list backends --device cuda > "$O/log8_backends.txt" 2>&1
     py benchmarks/bench_attention.py --quick --backends sdpa_cudnn,flash_attn_3,flash_attn_4 \
       --out "$O/results/attention.json" > "$O/log8_attention.txt" 2>&1
     # the pip-installable kernel (FA4) in the same job, then where FA3's 10 s step goes
     OUT=$O PARTS=fusion FUSION_ATTENTION=flash_attn_4 bash benchmarks/gpu_benchmarks.sh > "$O/log8_bench.txt" 2>&1
     py benchmarks/profile_fusion.py --variant 960x960_10s --attention flash_attn_3 --compile \
       --out "$O/results/profile_960x960_10s_fa3.json" >> "$O/log8_bench.txt" 2>&1
     # the engine of the first job (this tree less engine_since_29895d1.patch), FA3, 10 s, in this job
     rm -rf /tmp/before && mkdir /tmp/before && cp -r ovi_engine ovi_bench benchmarks /tmp/before/
     (cd /tmp/before && patch -R -p1 -s < "$OLDPWD/benchmarks/results/h200-141gb_2026-12-04/engine_since_29895d1.patch")
     (cd /tmp/before && OVI_BENCH_COMMIT=29895d1 PYTHONPATH=/tmp/before:$PYTHONPATH timeout 150 python3 benchmarks/bench_fusion.py --compile \
        --attention flash_attn_3 --variants 960x960_10s --out "$O/results/fusion_flash_attn_3_29895d1.json") \
       >> "$O/log8_bench.txt" 2>&1 ;;
  9) # cpu_offload at the final commit: the load bench and the 10 s OOM case
     OUT=$O PARTS=offload OFFLOAD_VARIANTS=720x720_5s bash benchmarks/gpu_benchmarks.sh > "$O/log9_bench.txt" 2>&1
     OUT=$O/suites PARTS=oom OOM_VARIANTS=960x960_10s OOM_POLICY=cpu_offload bash benchmarks/gpu_suites.sh \
       > "$O/log9_suites.txt" 2>&1 ;;
  10) # where the first cpu_offload encode_text's extra second goes: the bench as is; after running the text
      # encoder's GEMM and attention shapes once on the device; with CUDA's eager module loading
      py benchmarks/bench_offload.py --variant 720x720_5s --out "$O/results/offload_plain.json" > "$O/log10.txt" 2>&1
      py -c "
import runpy, sys, torch
F = torch.nn.functional
bf = dict(device='cuda', dtype=torch.bfloat16)
x, h, w = torch.randn(1024, 4096, **bf), torch.randn(1024, 10240, **bf), torch.randn(10240, 4096, **bf)
F.linear(x, w[:4096]); F.linear(x, w); F.linear(h, w.t()[:4096])
q = torch.randn(2, 64, 512, 64, **bf)
F.scaled_dot_product_attention(q, q, q, attn_mask=torch.randn(2, 64, 512, 512, **bf), scale=1.0)
torch.cuda.synchronize()
sys.argv = ['bench_offload.py', '--variant', '720x720_5s', '--out', '$O/results/offload_warmed.json']
sys.path.insert(0, 'benchmarks')
runpy.run_path('benchmarks/bench_offload.py', run_name='__main__')" >> "$O/log10.txt" 2>&1
      CUDA_MODULE_LOADING=EAGER py benchmarks/bench_offload.py --variant 720x720_5s \
        --out "$O/results/offload_eager_loading.json" >> "$O/log10.txt" 2>&1 ;;
  11) # the final tree: cpu_offload's load and encode_text with the warm-up, then without it (this tree less
      # engine_warm_up.patch), then the 10 s OOM case
      py benchmarks/bench_offload.py --variant 720x720_5s --out "$O/results/offload_720x720_5s.json" \
        > "$O/log11.txt" 2>&1
      rm -rf /tmp/before && mkdir /tmp/before && cp -r ovi_engine ovi_bench benchmarks /tmp/before/
      (cd /tmp/before && patch -R -p1 -s < "$OLDPWD/benchmarks/results/h200-141gb_2026-12-04/engine_warm_up.patch" \
        && PYTHONPATH=/tmp/before python3 benchmarks/bench_offload.py --variant 720x720_5s \
          --out "$O/results/offload_720x720_5s_no_warm_up.json") >> "$O/log11.txt" 2>&1
      OUT=$O/suites PARTS=oom OOM_VARIANTS=960x960_10s OOM_POLICY=cpu_offload bash benchmarks/gpu_suites.sh \
        > "$O/log11_suites.txt" 2>&1 ;;
  12) # the memory model's one peak outside 5% (2026-12-02d): 720x720_5s_fp8's cpu_offload load, again
      OUT=$O/suites PARTS=oom OOM_VARIANTS=720x720_5s_fp8 OOM_POLICY=cpu_offload bash benchmarks/gpu_suites.sh \
        > "$O/log12_suites.txt" 2>&1 ;;
esac
gpu >> "$O/gpu_call$n.txt"
tar czf "$OUT/call$n.tgz" -C "$O" .
