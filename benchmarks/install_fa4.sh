#!/usr/bin/env bash
# FlashAttention-4 on a GPU machine that cannot reach PyPI, from wheels carried there. The
# nvidia-cutlass-dsl-libs-cu13 wheel (92 MB) is larger than one call may carry, so it travels split
# (`split -b 46000000 WHEEL cu13.part.`) over two calls; the first copies its part out of the tree (e.g. to
# /tmp/fa4parts), the second brings the rest. This joins the parts found in the folders given, installs every
# wheel there into $FA4_TARGET and prints the PYTHONPATH to use:
#   eval "$(bash benchmarks/install_fa4.sh /tmp/fa4parts .fa4b)"
# Wheels (py3.12, x86-64): flash_attn_4 4.0.0b40, nvidia_cutlass_dsl 4.8.1 with its libs_base, libs_core
# and libs_cu13, apache_tvm_ffi 0.1.15.post2, torch_c_dlpack_ext 0.1.5, quack_kernels 0.6.5.
set -euo pipefail
target=$(realpath -m "${FA4_TARGET:-/tmp/fa4}")
wheels=$(mktemp -d)
# each part once (the first folder that has it), in name order
parts=()
for f in $(for d in "$@"; do for f in "$d"/cu13.part.*; do [ -e "$f" ] || continue; echo "$(basename "$f") $f"
           done; done | sort -u -k1,1 | cut -d' ' -f2-); do parts+=("$f"); done
[ ${#parts[@]} -gt 0 ] || { echo "install_fa4.sh: no cu13.part.* in $*" >&2; exit 2; }
cat "${parts[@]}" > "$wheels/nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl"
for d in "$@"; do cp "$d"/*.whl "$wheels"/ 2>/dev/null || true; done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$target" \
  "$wheels"/*.whl >&2
# the wheel's .pth is not read from a --target folder: its packages go on the path by hand
echo "export PYTHONPATH=$target:$target/nvidia_cutlass_dsl/dsl_packages\${PYTHONPATH:+:\$PYTHONPATH}"
