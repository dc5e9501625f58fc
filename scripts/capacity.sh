#!/usr/bin/env bash
# Capacity on paper: what one replica of each role sustains on this
# machine, for docs/scaling.md's replica counts. Release build, default
# models, closed-loop clients (8 at a time, scripts/capacity.py):
#
#   1. one `generate` process alone (--threads 2): RAG-shaped generations
#      (an ~870-token prompt of passages, 64 tokens out), requests/s;
#   2. one `embed` process alone (--threads 2): one question per request,
#      requests/s;
#   3. the per-model topology on one machine (embed and generate 1 thread
#      each, rag): /rag and /search under load, and the CPU seconds the
#      `rag` process (the one store writer) spends per request, read from
#      /proc: its ceiling, in requests/s per core, when the models are
#      elsewhere.
#
#   scripts/capacity.sh [--seconds S]      (default 45 per measurement)
# Writes target/capacity/results.json and prints a table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=45
if [ "${1:-}" = "--seconds" ]; then seconds=$2; fi
scripts/fetch-models.sh >/dev/null
cargo build --release --quiet --bin hearth
out=target/capacity
rm -rf "$out" && mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
serve() { # LOG ARGS...: start one; its pid in $started
  local log=$1; shift
  env -u HEARTH_API_KEYS RUST_LOG=hearth=warn target/release/hearth serve "$@" >"$out/$log" 2>&1 &
  started=$!
  pids+=("$started")
}
ready() { until curl -sf "$1/readyz" >/dev/null; do sleep 0.1; done; }

# 1 and 2: each role alone, at 2 threads.
serve generate.log --threads 2 --role generate --model fine-tuned --listen 127.0.0.1:18501 --data-dir "$out/d1"
gen=$started
ready http://127.0.0.1:18501
target/py-venv/bin/python scripts/capacity.py generate http://127.0.0.1:18501 "$seconds" "$gen" >>"$out/results.jsonl"
kill "$gen"
serve embed.log --threads 2 --role embed --listen 127.0.0.1:18502 --data-dir "$out/d2"
emb=$started
ready http://127.0.0.1:18502
target/py-venv/bin/python scripts/capacity.py embed http://127.0.0.1:18502 "$seconds" "$emb" >>"$out/results.jsonl"
kill "$emb"

# 3: the per-model topology, the rag process measured.
serve embed3.log --threads 1 --role embed --listen 127.0.0.1:18503 --data-dir "$out/d3"
serve gen3.log --threads 1 --role generate --model rag-generator --listen 127.0.0.1:18504 --data-dir "$out/d4"
ready http://127.0.0.1:18503
ready http://127.0.0.1:18504
serve rag.log --threads 1 --role rag --listen 127.0.0.1:18505 --data-dir "$out/d5" \
  --embedder http://127.0.0.1:18503 --rag-generator http://127.0.0.1:18504
rag=$started
ready http://127.0.0.1:18505
target/py-venv/bin/python scripts/capacity.py rag http://127.0.0.1:18505 "$seconds" "$rag" >>"$out/results.jsonl"
target/py-venv/bin/python scripts/capacity.py search http://127.0.0.1:18505 "$seconds" "$rag" >>"$out/results.jsonl"
target/py-venv/bin/python - "$out/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
json.dump(rows, open(sys.argv[1].replace(".jsonl", ".json"), "w"), indent=2)
print("| measured | requests/s | p50 ms | p95 ms | CPU-s of the measured process per request |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r['what']} | {r['rps']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['cpu_s_per_request']:.4f} |")
EOF
