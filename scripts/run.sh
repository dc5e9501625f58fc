#!/usr/bin/env bash
# hearth's main job: fetch the default models if missing, build in release,
# ingest a sample corpus on first start (hearth's own docs, and the Rust book
# from the local Rust documentation when present), then serve both pipelines
# (one process on one port, or any topology) and print curl examples.
# Ctrl-C stops it gracefully.
#
#   scripts/run.sh                 # http://127.0.0.1:8080, data in ./data
#   HEARTH_TOPOLOGY=gateway scripts/run.sh   # unified|separated|per-model|gateway
#   HEARTH_LISTEN=127.0.0.1:9000 HEARTH_DATA_DIR=/tmp/h scripts/run.sh
#   HEARTH_SKIP_BOOK=1 scripts/run.sh   # skip the Rust book (a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-models.sh
cargo build --release
bin=${CARGO_TARGET_DIR:-target}/release/hearth
data_dir=${HEARTH_DATA_DIR:-data}
listen=${HEARTH_LISTEN:-127.0.0.1:8080}
export HEARTH_DATA_DIR=$data_dir HEARTH_LISTEN=$listen

if [ ! -f "$data_dir/.sample-ingested" ]; then
  echo "first start: ingesting the sample corpus into $data_dir (once)"
  "$bin" ingest --id-prefix hearth/ README.md docs/*.md models/README.md
  book="$(rustc --print sysroot 2>/dev/null || true)/share/doc/rust/html/book"
  if [ -z "${HEARTH_SKIP_BOOK:-}" ] && [ -d "$book" ]; then
    echo "ingesting the Rust book from $book"
    "$bin" ingest --id-prefix book/ "$book"/ch*.html "$book"/appendix-*.html
  fi
  touch "$data_dir/.sample-ingested"
fi

topology=${HEARTH_TOPOLOGY:-unified}
case $topology in
  unified | separated | per-model | gateway) ;;
  *) echo "HEARTH_TOPOLOGY must be unified, separated, per-model or gateway" >&2; exit 2 ;;
esac
# The launcher writes where each pipeline is served (and every process's
# URL and pid) to this file, with "ready": true once all answer /readyz.
endpoints="$(mktemp -d)/endpoints.json"
"$bin" up --topology "$topology" --endpoints-file "$endpoints" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit 0' INT TERM
serves() { # ready | rag | fine_tuned
  python3 - "$endpoints" "$1" <<'PY' 2>/dev/null
import json, sys
d = json.load(open(sys.argv[1]))
if sys.argv[2] == "ready":
    sys.exit(0 if d["ready"] else 1)
print(d["serves"][sys.argv[2]])
PY
}
until serves ready; do
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server"
    exit 1
  fi
  sleep 0.2
done
url=$(serves rag)
fine_tuned=$(serves fine_tuned)

page="Open $url/ in a browser: chat with both pipelines, see the sources, manage documents."
if [ "$url" != "$fine_tuned" ]; then
  page="Open $url/ in a browser (RAG and documents; the fine-tuned pipeline's page is $fine_tuned/)."
fi
cat <<EXAMPLES

$page

hearth ($topology) is ready. Or try:

  curl -s $url/rag -H 'content-type: application/json' \\
    -d '{"question": "What is ownership in Rust?", "max_tokens": 64}'

  curl -sN $fine_tuned/fine-tuned -H 'content-type: application/json' \\
    -d '{"messages": [{"role": "user", "content": "Write a haiku about crabs."}], "stream": true}'

  curl -s $url/search -H 'content-type: application/json' \\
    -d '{"query": "borrow checker", "top_k": 3}'

  curl -s $url/documents -H 'content-type: application/json' \\
    -d '{"id": "note-1", "text": "The staging cluster is called kestrel."}'

  curl -s $url/topology      # the processes, their pids and health

Ctrl-C stops the server (in-flight requests finish, the index is saved).
EXAMPLES
wait "$server"
