#!/usr/bin/env bash
# hearth's test command: fetch the default models if missing, then format,
# lint and run every test against the real models.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-models.sh
scripts/python-env.sh
if [ ! -d ../shared/reference ]; then
  echo "error: ../shared/reference (the reference outputs the tests compare against) is missing" >&2
  exit 1
fi
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets "$@"
