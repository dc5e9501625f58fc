#!/usr/bin/env bash
# The default model (SmolLM2-135M-Instruct Q4_1), hearth against llama.cpp,
# at the prompt lengths RAG sends: 128 and 512 prompt tokens (the same
# token ids on both sides), 64 greedy tokens, 1 and 2 threads, runs
# alternating hearth / llama.cpp, medians of REPS (default 5). The quick
# part of scripts/bench-peers.sh, whose venv it uses (or the fixtures'
# venv, scripts/families/make-fixtures.sh: the same llama-cpp-python).
#
#   scripts/bench-default-llm.sh [REPS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
reps=${1:-5}
py=""
for venv in target/bench-peers/venv target/families-venv; do
  if "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then py=$venv/bin/python; break; fi
done
if [ -z "$py" ]; then
  echo "no llama-cpp-python: run scripts/bench-peers.sh once (it builds it)" >&2
  exit 1
fi
scripts/fetch-models.sh >/dev/null
cargo build --release --quiet --bin hearth
model=models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
for _ in $(seq "$reps"); do
  for t in 1 2; do
    for n in 128 512; do
      target/release/hearth --threads "$t" bench llm --prompt-tokens "$n" --gen-tokens 64 2>/dev/null | tail -1 >>"$raw"
      "$py" scripts/peers/llm.py --model "$model" --threads "$t" --prompt-text scripts/peers/prompt.txt \
        --prompt-tokens "$n" --gen-tokens 64 2>/dev/null | tail -1 >>"$raw"
    done
  done
done
"$py" -c "import llama_cpp; print('llama.cpp:', llama_cpp.llama_print_system_info().decode().strip())"
python3 - "$raw" <<'PY'
import collections, json, statistics as st, sys
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows[(d["threads"], d["prompt_tokens"])][d["peer"]].append(d)
print("| threads | prompt tokens | prompt tok/s hearth / llama.cpp | ratio | decode tok/s hearth / llama.cpp | ratio |")
print("|---|---|---|---|---|---|")
for (t, n), by in sorted(rows.items()):
    h, p = by["hearth"], by["llama.cpp"]
    hp, pp = (st.median(x["pp_tok_s"] for x in r) for r in (h, p))
    ht, pt = (st.median(x["tg_tok_s"] for x in r) for r in (h, p))
    print(f"| {t} | {n} | {hp:.0f} / {pp:.0f} | {hp / pp:.2f}x | {ht:.1f} / {pt:.1f} | {ht / pt:.2f}x |")
PY
