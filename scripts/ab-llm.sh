#!/usr/bin/env bash
# Two hearth binaries side by side on the LLM speed benchmark: prompt and
# decode tokens/s (`hearth bench llm`, the default model or the GGUF file
# LLM names), alternating the binaries every run so that machine drift falls
# on both, medians of ROUNDS runs (default 5) at 1 and 2 threads and 128 and
# 512 prompt tokens.
#
#   scripts/ab-llm.sh BEFORE AFTER      (e.g. a copy of target/release/hearth from main)
#   LLM=model.gguf ROUNDS=3 scripts/ab-llm.sh BEFORE AFTER
set -euo pipefail
before=$1 after=$2 rounds=${ROUNDS:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for threads in 1 2; do
  for n in 128 512; do
    for _ in $(seq "$rounds"); do
      for which in before after; do
        bin=$before; [ "$which" = after ] && bin=$after
        "$bin" --threads "$threads" bench llm ${LLM:+--llm "$LLM"} --prompt-tokens "$n" --gen-tokens 32 2>/dev/null |
          tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('$which $threads $n', d['pp_tok_s'], d['tg_tok_s'], d['first_tokens'][:8])" >>"$out"
      done
    done
  done
done
python3 - "$out" <<'PY'
import collections, statistics as st, sys
runs = collections.defaultdict(lambda: collections.defaultdict(list))
firsts = collections.defaultdict(set)
for line in open(sys.argv[1]):
    which, threads, n, pp, tg, first = line.split(" ", 5)
    runs[(threads, n)][which].append((float(pp), float(tg)))
    firsts[(threads, n)].add(first.strip())
print("| threads | prompt tokens | prompt tok/s before -> after | decode tok/s before -> after | same first tokens |")
print("|---|---|---|---|---|")
for (threads, n), by in runs.items():
    pb, pa = (st.median(r[0] for r in by[w]) for w in ("before", "after"))
    tb, ta = (st.median(r[1] for r in by[w]) for w in ("before", "after"))
    same = "yes" if len(firsts[(threads, n)]) == 1 else "NO"
    print(f"| {threads} | {n} | {pb:.0f} -> {pa:.0f} ({pa / pb:.2f}x) | {tb:.1f} -> {ta:.1f} ({ta / tb:.2f}x) | {same} |")
PY
