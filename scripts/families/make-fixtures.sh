#!/usr/bin/env bash
# Remake the fixtures the tests compare hearth with, from independent
# implementations (tests/README.md lists them):
# - tests/fixtures/families.json: what llama.cpp computes on the tiny
#   random-weight GGUF files of scripts/families/tiny_gguf.py (one per model
#   family hearth runs); tests/fixtures/real-models.json: the same on the
#   real models of scripts/fetch-models.sh --extra (Gemma 3 270M);
#   tests/fixtures/lora.json: the default LLM with the random LoRA adapter
#   of scripts/families/lora_adapter.py (tests/families.rs, tests/lora.rs);
# - tests/fixtures/tokenizer-reference.json and llm-reference.json:
#   llama.cpp's token ids and greedy answers on the default LLM, and
#   tests/fixtures/embed-reference.json: sentence-transformers' embeddings
#   with the default embedder (scripts/families/default_models_reference.py;
#   tests/llm.rs, tests/embedder.rs).
# Run it after changing those scripts, their prompts or the pins below.
#
# Usage: scripts/families/make-fixtures.sh [--only families|default-models]
#
# llama.cpp comes from llama-cpp-python, built from its sdist (minutes, the
# first time only) with the same pin as scripts/bench-peers.sh, into
# target/families-venv with the same gguf and NumPy as scripts/python-env.sh.
# AMX is left out of the build: on CPUs that list it but trap on it (this
# project's 2-core machines), ggml would die of SIGILL. sentence-transformers
# and PyTorch (CPU) go into target/reference-venv (a large download, the
# first time only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
only=""
case "${1:-}" in
  "") ;;
  --only) only="${2:?--only takes families or default-models}" ;;
  *) echo "usage: $0 [--only families|default-models]" >&2; exit 2 ;;
esac
case "$only" in ""|families|default-models) ;; *) echo "--only takes families or default-models" >&2; exit 2 ;; esac
LLAMA_CPP_PYTHON=0.3.36
GGUF_VERSION=0.19.0
NUMPY_VERSION=2.4.6
SAFETENSORS_VERSION=0.8.0
TORCH_VERSION=2.9.1
SENTENCE_TRANSFORMERS_VERSION=6.2.0 # the same pin as scripts/bench-peers.sh
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
if [ "$only" != default-models ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  "$venv/bin/python" scripts/families/llama_cpp_reference.py \
    --vocab models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
    --out "$out" --fixture tests/fixtures/families.json \
    --real-fixture tests/fixtures/real-models.json \
    --lora-fixture tests/fixtures/lora.json
  echo "make-fixtures: wrote tests/fixtures/families.json, real-models.json and lora.json"
fi
if [ "$only" != families ]; then
  "$venv/bin/python" scripts/families/default_models_reference.py --part llm --out tests/fixtures
  st=target/reference-venv
  if ! "$st/bin/python" -c "import sentence_transformers, torch" 2>/dev/null; then
    echo "make-fixtures: installing sentence-transformers $SENTENCE_TRANSFORMERS_VERSION and torch $TORCH_VERSION into $st (first run only)"
    python3 -m venv "$st"
    "$st/bin/pip" install --quiet --disable-pip-version-check \
      "torch==$TORCH_VERSION" "sentence-transformers==$SENTENCE_TRANSFORMERS_VERSION"
  fi
  "$st/bin/python" scripts/families/default_models_reference.py --part embed --out tests/fixtures
  echo "make-fixtures: wrote tests/fixtures/tokenizer-reference.json, llm-reference.json and embed-reference.json"
fi
