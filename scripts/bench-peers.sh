#!/usr/bin/env bash
# Hearth against its peers on the same model files, machine and thread
# counts: llama.cpp (llama-cpp-python, built from source), sentence-transformers
# on PyTorch, and hnswlib. Runs alternate hearth / peer so machine drift
# cancels; the table reports medians and ratios (hearth / peer).
#
# Usage: scripts/bench-peers.sh [--reps N] [--threads "1 2"] [--quick] [--no-serving]
#                               [--only llm|embed|hnsw]
# --only runs one part (and needs only that part's peer: `--only hnsw` needs
# hnswlib and numpy, not PyTorch or llama.cpp) and skips the serving run.
# Ends with scripts/bench-serving.sh (hearth serve against llama-server under
# 1-16 concurrent clients) unless --no-serving.
# Writes target/bench-peers/results.json and target/bench-peers/results.md.
# The peers' virtualenv (target/bench-peers/venv) and the embedded corpus
# (target/bench-peers/corpus) are made on the first run and reused after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

reps=5
threads_list="1 2"
serving=1
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    --threads) threads_list="$2"; shift 2 ;;
    --quick) reps=1; shift ;;
    --no-serving) serving=0; shift ;;
    --only) only="$2"; serving=0; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

out=target/bench-peers
venv=$out/venv
corpus=$out/corpus
raw=$out/raw.jsonl
mkdir -p "$out"

# Pinned peers; llama-cpp-python compiles llama.cpp for this CPU (-march=native).
LLAMA_CPP_PYTHON=0.3.36
SENTENCE_TRANSFORMERS=6.2.0
HNSWLIB=0.8.0
case "$only" in
  "") ;;
  llm|embed|hnsw) ;;
  *) echo "--only takes llm, embed or hnsw, not $only" >&2; exit 2 ;;
esac
part() { [ -z "$only" ] || [ "$only" = "$1" ]; }
if [ "$only" = hnsw ]; then
  if ! "$venv/bin/python" -c "import hnswlib, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy "hnswlib==$HNSWLIB"
  fi
elif ! "$venv/bin/python" -c "import llama_cpp, sentence_transformers, hnswlib, numpy" 2>/dev/null; then
  echo "bench-peers: building the peers into $venv (first run only; llama.cpp compiles for minutes)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet --disable-pip-version-check --no-binary llama-cpp-python \
    numpy torch "hnswlib==$HNSWLIB" "sentence-transformers==$SENTENCE_TRANSFORMERS" "llama-cpp-python==$LLAMA_CPP_PYTHON"
fi
py="$venv/bin/python"

scripts/fetch-models.sh --extra >/dev/null
llm_model=models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
# K-quant files: the real Gemma 3 270M (Q4_K_M: Q8_0, Q5_0, Q4_K, Q6_K) and
# random-weight llamas of Llama 3.2 1B's shape (Llama 3's 128,256-token
# vocabulary) in Q4_K_M- and Q5_K_M-like mixes; the same shape in Q4_0,
# Q8_0, F16 and BF16 (2.5 GB each); and Llama 3.2 3B's shape in Q4_K_M, run
# at the widest thread count only. Every file's prompt is timed at 128
# tokens (with 64 decoded) and at 512 (prompt only).
gemma_model=models/gemma3-270m/gemma-3-270m-q4_k_m.gguf
kq_1b=$out/llama1b-v128k-q4km.gguf
kq5_1b=$out/llama1b-v128k-q5km.gguf
q40_1b=$out/llama1b-v128k-q4-0.gguf
q80_1b=$out/llama1b-v128k-q8-0.gguf
f16_1b=$out/llama1b-v128k-f16.gguf
bf16_1b=$out/llama1b-v128k-bf16.gguf
kq_3b=$out/llama3b-q4km.gguf
embed_model=models/minilm-l6-v2
echo "bench-peers: building hearth (release)"
cargo build --release --quiet
hearth=target/release/hearth

"$hearth" bench corpus --out "$corpus" >/dev/null  # minutes, the first time only
if part llm; then
  [ -f "$kq_1b" ] || "$hearth" bench random-llm --shape llama1b --dtype q4k-m --out "$kq_1b" >/dev/null
  [ -f "$kq5_1b" ] || "$hearth" bench random-llm --shape llama1b --dtype q5k-m --out "$kq5_1b" >/dev/null
  [ -f "$q40_1b" ] || "$hearth" bench random-llm --shape llama1b --dtype q4-0 --out "$q40_1b" >/dev/null
  [ -f "$q80_1b" ] || "$hearth" bench random-llm --shape llama1b --dtype q8-0 --out "$q80_1b" >/dev/null
  [ -f "$f16_1b" ] || "$hearth" bench random-llm --shape llama1b --dtype f16 --out "$f16_1b" >/dev/null
  [ -f "$bf16_1b" ] || "$hearth" bench random-llm --shape llama1b --dtype bf16 --out "$bf16_1b" >/dev/null
  [ -f "$kq_3b" ] || "$hearth" bench random-llm --shape llama3b --dtype q4k-m --out "$kq_3b" >/dev/null
fi
# The index at scale: 100,000 synthetic 384-dimensional vectors clustered as
# sentence embeddings cluster (embedding 100k real chunks would take hours).
corpus_100k=$out/corpus-100k
[ -f "$corpus_100k/vectors.f32" ] || "$hearth" bench synthetic-corpus --vectors 100000 --out "$corpus_100k" >/dev/null
: >"$raw"
record() { # runs a command printing one JSON line, appends it with the rep number
  local rep="$1"; shift
  local line
  line="$("$@")"
  echo "$line" | "$py" -c "import json,sys; d=json.loads(sys.stdin.read()); d['rep']=$rep; print(json.dumps(d))" >>"$raw"
}

for rep in $(seq 1 "$reps"); do
  echo "bench-peers: repetition $rep/$reps"
  for t in $threads_list; do
    part llm || continue
    record "$rep" "$hearth" --threads "$t" bench llm
    record "$rep" "$py" scripts/peers/llm.py --model "$llm_model" --threads "$t" --prompt-text scripts/peers/prompt.txt
    record "$rep" "$hearth" --threads "$t" bench llm --prompt-tokens 512 --gen-tokens 1
    record "$rep" "$py" scripts/peers/llm.py --model "$llm_model" --threads "$t" --prompt-text scripts/peers/prompt.txt --prompt-tokens 512 --gen-tokens 1
    for m in "$gemma_model" "$kq_1b" "$kq5_1b" "$q40_1b" "$q80_1b" "$f16_1b" "$bf16_1b"; do
      record "$rep" "$hearth" --threads "$t" bench llm --llm "$m" --gen-tokens 64
      record "$rep" "$py" scripts/peers/llm.py --model "$m" --threads "$t" --prompt-text scripts/peers/prompt.txt --gen-tokens 64
      # 512-token prompts; the report drops decode rows under 16 tokens.
      record "$rep" "$hearth" --threads "$t" bench llm --llm "$m" --prompt-tokens 512 --gen-tokens 1
      record "$rep" "$py" scripts/peers/llm.py --model "$m" --threads "$t" --prompt-text scripts/peers/prompt.txt --prompt-tokens 512 --gen-tokens 1
    done
  done
  if part llm; then
    # Prompt-lookup decoding against plain decoding (hearth both sides),
    # on RAG answers about the Rust book when the toolchain ships it.
    if [ -d "$(rustc --print sysroot)/share/doc/rust/html/book" ]; then
      for t in $threads_list; do
        record "$rep" "$hearth" --threads "$t" bench drafts --questions 12
      done
    fi
    t_max="${threads_list##* }"
    record "$rep" "$hearth" --threads "$t_max" bench llm --llm "$kq_3b" --gen-tokens 32
    record "$rep" "$py" scripts/peers/llm.py --model "$kq_3b" --threads "$t_max" --prompt-text scripts/peers/prompt.txt --gen-tokens 32
  fi
  for t in $threads_list; do
    part embed || continue
    for b in 1 8 32; do
      record "$rep" "$hearth" --threads "$t" bench embed --batch "$b" --corpus "$corpus"
      record "$rep" "$py" scripts/peers/embed.py --model "$embed_model" --corpus "$corpus" --threads "$t" --batch "$b"
    done
  done
  # Queries are single-threaded on both sides; the build uses every thread.
  t_max="${threads_list##* }"
  part hnsw || continue
  for c in "$corpus" "$corpus_100k"; do
    record "$rep" "$hearth" --threads "$t_max" bench hnsw --corpus "$c"
    record "$rep" "$py" scripts/peers/hnsw.py --corpus "$c" --threads "$t_max"
  done
done

"$py" scripts/peers/report.py "$raw" "$out/results.json" "$out/results.md"
cat "$out/results.md"

# Serving: many clients at once against llama.cpp's llama-server; then RAG's
# first token as users feel it: a ~970-token passage before every question,
# on the 1B shape's Q4_K_M file, at 1 and 4 clients (time to first token is
# the prompt's processing).
if [ "$serving" = 1 ]; then
  scripts/bench-serving.sh --threads "${threads_list##* }" $([ "$reps" = 1 ] && echo --seconds 10)
  scripts/bench-serving.sh --threads "${threads_list##* }" --model "$kq_1b" --context docs/topologies.md \
    --clients "1 4" --max-tokens 16 --seconds "$([ "$reps" = 1 ] && echo 20 || echo 60)" --out "$out/rag-ttft"
fi
