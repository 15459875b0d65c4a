#!/usr/bin/env bash
# The four suites at full scale on one GPU (H100 80GB), reports under $OUT (default reports/gpu).
# Works without installing the package (python3 -m ovi_bench from the checkout). Pick parts with $PARTS
# (default: all), each about the device time shown:
#   attention  ~1 min   the kernels that matter on Hopper, 5 s and 10 s shapes (no model)
#   oom        ~3 min a variant   the seed's OOM gate under 37 GiB, each policy (cpu_offload's host build and
#                       pinning is ~2 min of that); pick variants with OOM_VARIANTS="720x720_5s 960x960_10s"
#                       and one policy with OOM_POLICY=cpu_offload (both also apply to upstream_oom; one policy
#                       leaves out keep_resident, the negative control that proves the budget means something)
#   peak       ~1 min   per-stage peaks of the 10 s generation, 2 denoise runs for step timings
#   latents    ~3 min   variant_latents at full scale: real latent shapes, decoded frames and samples
#                       (needs PyAV, the video extra, to read its i2v image)
#   upstream   peak_memory_10s and oom_regression ($OOM_VARIANTS, $OOM_POLICY) through the checkout engine on
#              upstream Ovi at $OVI_UPSTREAM_DIR (its ovi/ package), beside the reference's parts;
#              upstream_peak and upstream_oom run one of the two
#   sequential peak_memory_10s under the sequential policy (text encoder gone before the fusion model loads)
#   fidelity   ~5 min   output_fidelity at 960x960_10s, 2 steps, bf16 floor measured (benchmarks/suites/)
#   repeated   ~3 min   repeated_generation at 720x720_5s under all_gpu and cpu_offload (benchmarks/suites/)
#   qualify    `ovi-bench qualify $HARDWARE` into $QUALIFY_BUNDLE (default $OUT/qualify), resumed when its
#              staging directory (<bundle>.runs) exists: bring it back under $OUT and carry it into the next
#              call to go on; QUALIFY_FLAGS adds options (e.g. --allow-missing-baseline, --suites a,b)
# DEADLINE (epoch seconds) stops a run with SIGINT before it, so it still writes its report of what finished.
# Then, to store the baselines: for d in "$OUT"/*/; do ovi-bench baseline update "$d" --hardware h100-80gb; done
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/gpu}
PARTS=${PARTS:-attention oom peak latents}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
run() {
  local left=$(( ${DEADLINE:-$(( $(date +%s) + 86400 ))} - $(date +%s) ))
  if [ "$left" -le 30 ]; then echo "!! no time left for: $*"; return; fi
  timeout -s INT -k 30 "$left" python3 -m ovi_bench run "$@" --device cuda --preset full \
    --hardware "${HARDWARE:-h100-80gb}" --timeout "${CASE_TIMEOUT:-5 min}" || echo "exit $? from: $*"
}
oom_filter="${OOM_VARIANTS:+$(printf -- '--variant %s ' $OOM_VARIANTS)}${OOM_POLICY:+--policy $OOM_POLICY}"
[ -n "${OOM_POLICY:-}" ] && echo "OOM_POLICY=$OOM_POLICY: oom_regression without its keep_resident negative control"
python3 -m ovi_bench doctor --device cuda > "$OUT/doctor.txt" 2>&1
for part in $PARTS; do
  case $part in
    attention) run attention_backends --variant 720x720_5s --variant 960x960_10s \
                 --attention auto --attention sdpa_cudnn --attention sdpa_flash --attention sdpa_efficient \
                 --attention flex --attention sage --attention flash_attn_3 --report-dir "$OUT/attention_backends" ;;
    oom) run oom_regression $oom_filter --report-dir "$OUT/oom_regression" ;;
    peak) run peak_memory_10s --repeat 2 --report-dir "$OUT/peak_memory_10s" ;;
    latents) run variant_latents --report-dir "$OUT/variant_latents" ;;
    upstream|upstream_peak) run peak_memory_10s --engine "checkout:$OVI_UPSTREAM_DIR" --allow-missing-baseline \
                --report-dir "$OUT/upstream_peak_memory_10s" ;;&
    upstream|upstream_oom) run oom_regression --engine "checkout:$OVI_UPSTREAM_DIR" $oom_filter \
                --allow-missing-baseline --report-dir "$OUT/upstream_oom_regression" ;;&
    upstream|upstream_peak|upstream_oom) ;;
    sequential) run peak_memory_10s --policy sequential --allow-missing-baseline \
                  --report-dir "$OUT/peak_memory_10s_sequential" ;;
    qualify) bundle=${QUALIFY_BUNDLE:-$OUT/qualify}
             left=$(( ${DEADLINE:-$(( $(date +%s) + 86400 ))} - $(date +%s) ))
             [ -d "$bundle.runs" ] && resume=--resume || resume=
             timeout -s INT -k 30 "$left" python3 -m ovi_bench qualify "$HARDWARE" --device cuda \
               --bundle-dir "$bundle" $resume ${QUALIFY_FLAGS:-} || echo "exit $? from: qualify" ;;
    fidelity) run benchmarks/suites/gpu_fidelity.yaml --allow-missing-baseline --report-dir "$OUT/fidelity" ;;
    repeated) run benchmarks/suites/gpu_repeated.yaml --allow-missing-baseline --report-dir "$OUT/repeated" ;;
    *) echo "unknown part $part (attention, oom, peak, latents, upstream, sequential, fidelity, repeated, qualify)"
       exit 2 ;;
  esac
done
