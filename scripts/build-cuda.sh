#!/usr/bin/env bash
# Build hearth with `--features cuda` on a machine with no CUDA toolkit and
# no GPU: NVIDIA's own wheels from PyPI (pinned below: nvcc, the runtime,
# cuBLAS, cuRAND, NVRTC and their headers) are unpacked under
# target/cuda-toolkit, nothing is installed system-wide. The driver library
# (libcuda.so.1) comes with the GPU machine's driver; to link without it, a
# stub exporting the driver API's names is made from cudarc's bindings.
#
# Usage: scripts/build-cuda.sh [COMPUTE_CAP] [--tests] [--clippy]
#   COMPUTE_CAP  the GPU's compute capability without the dot (default 90:
#                H100/H200; 80 for A100, 89 for L4/RTX 40xx, 120 for RTX 50xx).
#   --tests      also build the test binaries (lib and e2e) with the feature.
#   --clippy     also run clippy on every target with the feature (-D warnings).
#
# Output: target/cuda/release/hearth (and, with --tests, the test binaries
# listed in target/cuda/test-binaries.txt). A separate target directory keeps
# the CPU build's artefacts untouched. At run time the binary needs CUDA 13's
# libcudart/libcublas/libcurand/libnvrtc on LD_LIBRARY_PATH (the same wheels,
# or PyTorch's) and a driver >= 580.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cap=90
tests=0
clippy=0
for arg in "$@"; do
  case "$arg" in
    --tests) tests=1 ;;
    --clippy) clippy=1 ;;
    [0-9][0-9] | [0-9][0-9][0-9] | [0-9][0-9]a | [0-9][0-9][0-9]a) cap="$arg" ;;
    *) echo "build-cuda: unknown argument $arg (usage: scripts/build-cuda.sh [COMPUTE_CAP] [--tests] [--clippy])" >&2; exit 2 ;;
  esac
done

# CUDA 13.0 matches driver 580, the oldest that runs CUDA 13: PTX from a newer
# nvcc would not load on it.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)
toolkit="$PWD/target/cuda-toolkit"
cuda="$toolkit/nvidia/cu13"
stamp="$toolkit/wheels.txt"
if [ ! -x "$cuda/bin/nvcc" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${WHEELS[*]}" ]; then
  echo "build-cuda: fetching the CUDA 13.0 toolkit wheels into $toolkit"
  rm -rf "$toolkit"
  mkdir -p "$toolkit/wheels"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
    -d "$toolkit/wheels" "${WHEELS[@]}"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-index \
    --no-compile --target "$toolkit" "$toolkit"/wheels/*.whl
  rm -rf "$toolkit/wheels"
  echo "${WHEELS[*]}" >"$stamp"
fi

# The linker wants unversioned names; the wheels ship only sonames.
for lib in cudart:13 cublas:13 cublasLt:13 curand:10 nvrtc:13; do
  ln -sf "lib${lib%%:*}.so.${lib##*:}" "$cuda/lib/lib${lib%%:*}.so"
done
# The driver API stub: every cu* function cudarc declares, as an empty symbol,
# under the real library's soname so the binary asks for libcuda.so.1 at run time.
stub="$cuda/lib/stubs/libcuda.so"
if [ ! -f "$stub" ]; then
  mkdir -p "$cuda/lib/stubs"
  bindings=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')
  grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$(dirname "$bindings")/src/driver/sys/mod.rs" |
    sed 's/pub unsafe fn \(.*\)/void \1(void) {}/' | sort -u >"$toolkit/libcuda-stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$toolkit/libcuda-stub.c"
fi

export CUDA_ROOT="$cuda" CUDA_HOME="$cuda" PATH="$cuda/bin:$PATH"
export LIBRARY_PATH="$cuda/lib:$cuda/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="$cap" CARGO_TARGET_DIR="$PWD/target/cuda"
nvcc --version | tail -2 | head -1
echo "build-cuda: cargo build --release --features cuda (compute capability $cap)"
cargo build --release --features cuda
if [ "$tests" = 1 ]; then
  echo "build-cuda: the test binaries"
  cargo test --release --features cuda --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        if kind in ("lib", "test"):
            name = m["target"]["name"]
            print("lib" if name == "hearth" and kind == "lib" else name, m["executable"])' >target/cuda/test-binaries.txt
  cat target/cuda/test-binaries.txt
fi
if [ "$clippy" = 1 ]; then
  echo "build-cuda: cargo clippy --release --features cuda --all-targets"
  cargo clippy --release --features cuda --all-targets -- -D warnings
fi
echo "build-cuda: target/cuda/release/hearth"
