#!/usr/bin/env bash
# The documents study (docs/bench/documents.md): PDF ingest against the
# same text, /search with 20 collections against one, /rag latency while a
# 2,000-file folder syncs. Needs the default models (scripts/fetch-models.sh)
# and Debian's Chromium (scripts/browser-env.sh). Usage:
#   scripts/bench-documents.sh [ingest] [collections] [sync]   # default: all three
# REPS=N sets the repetitions (default 2). Results: target/bench-documents/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-models.sh >/dev/null
scripts/browser-env.sh
cargo build --release --quiet
exec python3 scripts/bench-documents.py "$@"
