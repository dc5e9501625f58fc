#!/usr/bin/env bash
# The Python the tests run with: a virtualenv under target/ holding, pinned
# from PyPI, the official `openai` package (the OpenAI-compatibility tests)
# and `gguf` with NumPy (scripts/families/tiny_gguf.py writes the model
# families' test files with them). Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OPENAI_VERSION=3.57.0
GGUF_VERSION=0.19.0
NUMPY_VERSION=2.4.6
venv=target/py-venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "
import sys, importlib.metadata as m
sys.exit([m.version(p) for p in ('openai', 'gguf', 'numpy')] != ['$OPENAI_VERSION', '$GGUF_VERSION', '$NUMPY_VERSION'])
" 2>/dev/null; then
  exit 0
fi
echo "python-env: installing openai==$OPENAI_VERSION gguf==$GGUF_VERSION numpy==$NUMPY_VERSION into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "openai==$OPENAI_VERSION" "gguf==$GGUF_VERSION" "numpy==$NUMPY_VERSION"
