#!/usr/bin/env bash
# Many users at once on one model: `hearth serve` against llama.cpp's own
# server (`llama-server -np 8`, continuous batching), same GGUF, same thread
# count, driven by the same closed-loop client (scripts/peers/serve_load.py:
# streamed greedy /v1/chat/completions, 64 tokens) at 1, 2, 4, 8 and 16
# concurrent clients. The two servers alternate at every load level, so
# machine drift cancels. Part of scripts/bench-peers.sh; runs alone too.
#
# Usage: scripts/bench-serving.sh [--seconds S] [--clients "1 2 4 8 16"] [--threads N]
#          [--model FILE.gguf] [--context FILE] [--max-tokens N] [--out DIR]
# Writes target/bench-serving/{results.jsonl,results.md,serving.svg} (or DIR/).
# --context FILE puts FILE's first 3,000 characters (~970 tokens) before
# every question: RAG-shaped prompts, where time to first token is the
# prompt's processing. For example, RAG's first token on a 1B-shape file:
#   hearth bench random-llm --shape llama1b --dtype q4k-m --out target/l1b-q4km.gguf
#   scripts/bench-serving.sh --model target/l1b-q4km.gguf --context docs/topologies.md \
#     --clients "1 4" --max-tokens 16 --out target/bench-rag-ttft
# llama-server is built once (minutes) from the llama.cpp sources vendored in
# the llama-cpp-python sdist that scripts/bench-peers.sh pins, with cmake
# from PyPI, into target/bench-serving/llama.cpp.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=20
clients_list="1 2 4 8 16"
threads=2
model=""
context=""
max_tokens=64
out=target/bench-serving
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --clients) clients_list="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --context) context="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

LLAMA_CPP_PYTHON=0.3.36 # the same pin as scripts/bench-peers.sh
mkdir -p "$out"
# llama-server is built once, in the default folder, whatever --out says.
build=target/bench-serving
mkdir -p "$build"
server="$build/llama.cpp/build/bin/llama-server"
if [ ! -x "$server" ]; then
  echo "bench-serving: building llama-server from llama-cpp-python $LLAMA_CPP_PYTHON's vendored llama.cpp (first run only)"
  python3 -m pip install --quiet --disable-pip-version-check --target "$build/cmake" cmake
  export PATH="$PWD/$build/cmake/bin:$PATH" PYTHONPATH="$PWD/$build/cmake"
  # The sdist itself (pip would try to build it): the index's link to it.
  mkdir -p "$build/sdist"
  python3 - "$LLAMA_CPP_PYTHON" "$build/sdist" <<'EOF'
import re, sys, urllib.request
version, dest = sys.argv[1:]
page = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/").read().decode()
name = f"llama_cpp_python-{version}.tar.gz"
url = next(u for u in re.findall(r'href="([^"#]+)', page) if u.endswith(name))
urllib.request.urlretrieve(url, f"{dest}/{name}")
EOF
  tar -C "$build" -xzf "$build/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz"
  rm -rf "$build/llama.cpp"
  mv "$build/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp" "$build/llama.cpp"
  rm -rf "$build/llama_cpp_python-$LLAMA_CPP_PYTHON"
  # Native code without AMX: virtual machines may list AMX but not let a
  # process use it (llama-server then dies of SIGILL at its first tile).
  noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  cmake -S "$build/llama.cpp" -B "$build/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
  cmake --build "$build/llama.cpp/build" --target llama-server -j "$(nproc)" >/dev/null
fi

scripts/fetch-models.sh >/dev/null
[ -n "$model" ] || model=models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
echo "bench-serving: building hearth (release)"
cargo build --release --quiet
hearth=target/release/hearth

port=18731
raw="$out/results.jsonl"
: >"$raw"
wait_ready() { # url
  for _ in $(seq 240); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "bench-serving: $1 never answered" >&2
  return 1
}
start() { # which: leaves $pid running on $port
  local data
  data=$(mktemp -d)
  case "$1" in
    hearth)
      "$hearth" --threads "$threads" serve --listen "127.0.0.1:$port" --data-dir "$data" \
        --fine-tuned "$model" --rag-generator "$model" >"$out/hearth.log" 2>&1 &
      pid=$!
      wait_ready "http://127.0.0.1:$port/readyz" ;;
    llama-server)
      "$server" -m "$model" -t "$threads" -np 8 -c 16384 --host 127.0.0.1 --port "$port" \
        >"$out/llama-server.log" 2>&1 &
      pid=$!
      wait_ready "http://127.0.0.1:$port/health" ;;
  esac
}
for c in $clients_list; do
  for which in hearth llama-server; do
    start "$which"
    load=(python3 scripts/peers/serve_load.py --url "http://127.0.0.1:$port" --max-tokens "$max_tokens")
    [ -z "$context" ] || load+=(--context "$context")
    "${load[@]}" --clients 1 --seconds 3 >/dev/null # warm-up
    "${load[@]}" --clients "$c" --seconds "$seconds" --label "$which" | tee -a "$raw"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
python3 scripts/peers/serving_report.py "$raw" "$out"
