#!/usr/bin/env bash
# Render the Kubernetes examples under deploy/kubernetes/ (one directory per
# topology) from hearth.toml and the default models, with
# `hearth deploy kubernetes`. tests/deploy.rs renders them again into a
# temporary directory and requires the same files.
#
#   scripts/render-kubernetes.sh [OUT_ROOT]     (default: deploy/kubernetes)
#
# HEARTH names the binary (default: target/debug/hearth, built if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out_root=${1:-deploy/kubernetes}
hearth=${HEARTH:-target/debug/hearth}
if [ -z "${HEARTH:-}" ]; then cargo build --quiet --bin hearth; fi
render() {
  local topology=$1; shift
  # No api_keys: the operator writes api-keys.env (no key ships in git).
  env -u HEARTH_API_KEYS "$hearth" deploy kubernetes --config hearth.toml \
    --topology "$topology" --out "$out_root/$topology" "$@" >/dev/null
}
render unified
render separated
render gateway
# Each LLM's process twice: the replicas hearth's clients balance over.
render per-model --replicas generate=2
echo "rendered $out_root/{unified,separated,gateway,per-model}"
