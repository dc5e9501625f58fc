#!/usr/bin/env bash
# The Python the OpenAI-compatibility tests run with: a virtualenv under
# target/ holding the official `openai` package from PyPI (pinned). Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OPENAI_VERSION=3.57.0
venv=target/py-venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  exit 0
fi
echo "python-env: installing openai==$OPENAI_VERSION into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
