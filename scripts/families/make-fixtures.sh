#!/usr/bin/env bash
# Remake tests/fixtures/families.json: what llama.cpp computes on the tiny
# random-weight GGUF files of scripts/families/tiny_gguf.py (one per model
# family hearth runs), and tests/fixtures/real-models.json: the same on the
# real models of scripts/fetch-models.sh --extra (Gemma 3 270M), and
# tests/fixtures/lora.json: the default LLM with the random LoRA adapter of
# scripts/families/lora_adapter.py. Run it after changing those scripts or
# their prompts; the tests (tests/families.rs, tests/lora.rs) then compare
# hearth with it.
#
# llama.cpp comes from llama-cpp-python, built from its sdist (minutes, the
# first time only) with the same pin as scripts/bench-peers.sh, into
# target/families-venv with the same gguf and NumPy as scripts/python-env.sh.
# AMX is left out of the build: on CPUs that list it but trap on it (this
# project's 2-core machines), ggml would die of SIGILL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LLAMA_CPP_PYTHON=0.3.36
GGUF_VERSION=0.19.0
NUMPY_VERSION=2.4.6
SAFETENSORS_VERSION=0.8.0
venv=target/families-venv
if ! "$venv/bin/python" -c "import llama_cpp, gguf, numpy, safetensors" 2>/dev/null; then
  echo "make-fixtures: building llama-cpp-python $LLAMA_CPP_PYTHON into $venv (first run only)"
  python3 -m venv "$venv"
  noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'" \
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_PYTHON" "gguf==$GGUF_VERSION" "numpy==$NUMPY_VERSION" \
    "safetensors==$SAFETENSORS_VERSION"
fi
scripts/fetch-models.sh --extra >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" scripts/families/llama_cpp_reference.py \
  --vocab models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
  --out "$out" --fixture tests/fixtures/families.json \
  --real-fixture tests/fixtures/real-models.json \
  --lora-fixture tests/fixtures/lora.json
echo "make-fixtures: wrote tests/fixtures/families.json, real-models.json and lora.json"
