"""PyTorch's side of `scripts/gpu-check.sh`: the same shapes as hearth's GPU
runs, in fp16 on the same card, with random weights (speed does not depend
on their values). Prints one JSON line per measurement.

- llm: a llama of a given shape (HF transformers, SDPA attention): one
  prompt of N tokens at once (tok/s), then greedy decode of M tokens with
  the KV cache, one token per forward (tok/s), as `hearth bench llm` does.
- embed: a BERT of MiniLM-L6's shape (the config.json given): texts/s at a
  batch size over the passages given, padded per batch to the longest, and
  one short query's median latency, as `hearth bench embed` does.
Each timing is the median of --reps runs after one warm-up.
"""
import argparse
import json
import statistics
import time

import torch

SHAPES = {  # layers, hidden, ffn, heads, kv heads, tied, as hearth's bench/shapes.rs
    "smollm2-135m": (30, 576, 1536, 9, 3, True),
    "llama1b": (16, 2048, 8192, 32, 8, True),
    "llama8b": (32, 4096, 14336, 32, 8, False),
}
QUERY = "How do I borrow a value mutably in Rust?"  # the same as hearth's


def timed(fn, reps):
    fn()
    out = []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def llm(a):
    from transformers import LlamaConfig, LlamaForCausalLM

    layers, hidden, ffn, heads, kv, tied = SHAPES[a.shape]
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=hidden, intermediate_size=ffn,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, max_position_embeddings=4096,
                      tie_word_embeddings=tied, attn_implementation="sdpa")
    torch.set_default_dtype(torch.float16)
    with torch.device(a.device):  # initialised on the card: an 8B model in seconds
        model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, a.vocab, (1, a.prompt_tokens), device=a.device)

    def prompt():
        return model(ids, use_cache=True)

    def decode():
        out = model(ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(a.gen_tokens):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

    with torch.inference_mode():
        pp = timed(prompt, a.reps)
        total = timed(decode, a.reps)
    tg = total - pp
    print(json.dumps({"peer": "pytorch", "kind": "llm", "shape": a.shape, "dtype": "f16",
                      "prompt_tokens": a.prompt_tokens, "gen_tokens": a.gen_tokens,
                      "pp_tok_s": a.prompt_tokens / pp, "tg_tok_s": a.gen_tokens / tg}))


def embed(a):
    from transformers import AutoTokenizer, BertConfig, BertModel

    cfg = BertConfig.from_json_file(f"{a.model}/config.json")
    try:
        cfg._attn_implementation = "sdpa"
    except Exception:  # transformers versions differ; the default is SDPA where it exists
        pass
    model = BertModel(cfg, add_pooling_layer=False).to(a.device, torch.float16).eval()
    tok = AutoTokenizer.from_pretrained(a.model)
    texts = json.load(open(a.corpus + "/texts.json", encoding="utf-8"))[: a.passages]

    def run(batch):
        enc = tok(batch, padding=True, truncation=True, max_length=256, return_tensors="pt").to(a.device)
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()

    def all_batches():
        for i in range(0, len(texts), a.batch):
            run(texts[i : i + a.batch])

    with torch.inference_mode():
        secs = timed(all_batches, a.reps)
        query = timed(lambda: run([QUERY]), 50)
    print(json.dumps({"peer": "pytorch", "kind": "embed", "batch": a.batch, "texts": len(texts),
                      "texts_per_s": len(texts) / secs, "query_ms": query * 1e3}))


ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda")
sub = ap.add_subparsers(dest="what", required=True)
p = sub.add_parser("llm")
p.add_argument("--shape", choices=SHAPES, required=True)
p.add_argument("--vocab", type=int, default=49152)
p.add_argument("--prompt-tokens", type=int, default=128)
p.add_argument("--gen-tokens", type=int, default=128)
p.add_argument("--reps", type=int, default=3)
p = sub.add_parser("embed")
p.add_argument("--model", required=True, help="folder with config.json and tokenizer.json")
p.add_argument("--corpus", required=True, help="folder holding texts.json")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--passages", type=int, default=1024)
p.add_argument("--reps", type=int, default=3)
a = ap.parse_args()
torch.manual_seed(0)
llm(a) if a.what == "llm" else embed(a)
