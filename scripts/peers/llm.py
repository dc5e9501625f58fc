"""llama.cpp's side of `hearth bench llm`: one measurement, one JSON line.

Prompt processing of the first N tokens of the same text hearth uses, then
M greedy decode steps (argmax of the last logits, fed back one at a time),
on the same GGUF file with the same thread count.
"""
import argparse
import json
import os
import time

import numpy as np
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--prompt-text", required=True, help="file holding the prompt text")
ap.add_argument("--prompt-tokens", type=int, default=128)
ap.add_argument("--gen-tokens", type=int, default=128)
a = ap.parse_args()

llm = Llama(
    model_path=a.model,
    n_ctx=a.prompt_tokens + a.gen_tokens + 8,
    n_batch=512,
    n_threads=a.threads,
    n_threads_batch=a.threads,
    verbose=False,
)
text = open(a.prompt_text, encoding="utf-8").read() * 4
prompt = llm.tokenize(text.encode(), add_bos=False, special=False)[: a.prompt_tokens]
assert len(prompt) == a.prompt_tokens, len(prompt)


n_vocab = llm.n_vocab()


def last_logits():
    # The last evaluated token's logits, read in place (llama-cpp-python
    # keeps no copy unless logits_all is set).
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))


llm.reset()
start = time.perf_counter()
llm.eval(prompt)
nxt = int(np.argmax(last_logits()))
pp = time.perf_counter() - start
generated = []
start = time.perf_counter()
for _ in range(a.gen_tokens):
    generated.append(nxt)
    llm.eval([nxt])
    nxt = int(np.argmax(last_logits()))
tg = time.perf_counter() - start
print(json.dumps({
    "peer": "llama.cpp",
    "kind": "llm",
    "model": os.path.splitext(os.path.basename(a.model))[0],
    "threads": a.threads,
    "prompt_tokens": a.prompt_tokens,
    "gen_tokens": a.gen_tokens,
    "pp_tok_s": a.prompt_tokens / pp,
    "tg_tok_s": a.gen_tokens / tg,
    "prompt_head": prompt[:8],
    "first_tokens": generated[:8],
}))
