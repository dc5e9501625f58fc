#!/usr/bin/env bash
# Check a live hearth against its own OpenAPI document with schemathesis
# (every check; schemathesis.toml says what it is told and why).
#
#   scripts/schemathesis.sh                       # a server of its own, seed 1, 10 examples
#   scripts/schemathesis.sh http://127.0.0.1:8080 --max-examples 50 --seed 7
#
# The test suite runs the first form (tests/operations.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/python-env.sh
if [ $# -gt 0 ] && [[ $1 == http* ]]; then
  url=$1; shift
  exec target/py-venv/bin/schemathesis --config-file schemathesis.toml run "$url/openapi.json" \
    --checks all "$@"
fi
exec cargo test --test e2e -- operations::schemathesis_finds_nothing --nocapture
