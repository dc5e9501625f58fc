#!/usr/bin/env python3
"""What llama.cpp computes on the tiny GGUF files of tiny_gguf.py: the
fixture (tests/fixtures/families.json) that hearth's family tests compare
against.

For each model file: its sha256 (the test checks it wrote the same bytes),
the tokens of each prompt, the greedy continuation, and at every step the
top logits. For each tokenizer-only file: the tokens of each text. With
--real-fixture, the same for the real models of `fetch-models.sh --extra`
(tests/fixtures/real-models.json).

Run by scripts/families/make-fixtures.sh, which builds llama-cpp-python
(pinned like scripts/bench-peers.sh). llama.cpp runs as hearth does by
default: f16 KV cache, no flash attention, one sequence.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

import llama_cpp
import numpy as np

PROMPTS = [
    "<|im_start|>user\nWhat is ownership in Rust?<|im_end|>\n<|im_start|>assistant\n",
    "The borrow checker rejects 2 mutable borrows; fix it with",
]
TEXTS = [
    "Hello world",
    "  leading spaces,\ttabs\n\n\nand newlines  ",
    "numbers 1234567 and 3.14159, 2024-11-29",
    "don't WON'T I'LL we'Ve",
    "unicode: café naïve 日本語 🙂 ünïcödé",
    "<|im_start|>user\nHi<|im_end|>",
    'fn main() { println!("{}", x[0..=3]); } // E0502',
]
STEPS = 12
TOP = 8
# The random adapter of the LoRA fixture (lora_adapter.py's arguments):
# rank 16 (llama.cpp's f32 products run tinyBLAS's lanes at multiples of
# 16, as hearth's do), alpha 32.
# On the tiny llama (whose logits hearth computes bit for bit as llama.cpp
# does, so the adapter's arithmetic is checked exactly) and on the default
# LLM (the real model).
LORA_TINY_BASE = "llama-q8_0"
LORA_ARGS = {
    "tiny": ["--rank", "16", "--alpha", "32", "--seed", "1", "--b-std", "0.05"],
    "smollm2": ["--rank", "16", "--alpha", "32", "--seed", "0", "--b-std", "0.01"],
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenize(llm, text):
    return llm.tokenize(text.encode(), add_bos=False, special=True)


# Real models (scripts/fetch-models.sh --extra): plain continuations (the
# Gemma 3 270M file is the pretrained model, not the instruction-tuned one)
# and one turn in the model's own markup.
REAL_MODELS = {
    "gemma3-270m": "models/gemma3-270m/gemma-3-270m-q4_k_m.gguf",
}
REAL_PROMPTS = [
    "The capital of France is",
    "fn main() {\n    let v = vec![1, 2, 3];\n",
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
]


def run_model(path, prompts=PROMPTS, steps=STEPS, batch=256, lora=None, like=None):
    """`batch`: how many prompt tokens llama.cpp evaluates at once (the
    default, as its users run it). Its logits depend on it: on the real
    Gemma file, with 4 or more rows at once it multiplies Q4_K matrices
    with another kernel (the repacked `gemm`) than for fewer (`gemv`), and
    for one row it takes attention's dot products in another order than
    for several, so the same prompt gives logits up to 0.64 apart when fed
    whole or token by token. hearth's do not depend on the batching.
    `lora`: a GGUF adapter applied at scale 1 (`--lora`). `like`: another
    run's output, whose tokens are fed instead of the greedy ones and whose
    top tokens' logits are reported."""
    llm = llama_cpp.Llama(path, n_ctx=256, n_batch=batch, n_ubatch=batch, n_threads=2,
                          logits_all=True, flash_attn=False, verbose=False, lora_path=lora)
    out = []
    for n, prompt in enumerate(prompts):
        llm.reset()
        tokens = tokenize(llm, prompt)
        if llm.metadata.get("tokenizer.ggml.add_bos_token") == "true":
            tokens = [llm.token_bos()] + tokens
        for start in range(0, len(tokens), batch):
            llm.eval(tokens[start:start + batch])
        taken = []
        for _ in range(steps):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            top = np.argsort(-logits, kind="stable")[:TOP]
            chosen = int(top[0])
            if like is not None:
                step = like[n]["steps"][len(taken)]
                chosen, top = step["token"], [pair[0] for pair in step["top"]]
            taken.append({"token": chosen, "top": [[int(i), float(logits[i])] for i in top]})
            llm.eval([chosen])
        out.append({"prompt": prompt, "tokens": tokens, "steps": taken})
    return out


def run_tokenizer(path):
    llm = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    return [{"text": t, "tokens": tokenize(llm, t)} for t in TEXTS]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--out", required=True, help="where tiny_gguf.py writes the files")
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--real-fixture", help="also run the real models present into this file")
    ap.add_argument("--lora-fixture",
                    help="also run the --vocab model with lora_adapter.py's adapter into this file")
    args = ap.parse_args()

    if args.real_fixture:
        real = {"llama_cpp_python": llama_cpp.__version__, "models": {}}
        for name, path in REAL_MODELS.items():
            real["models"][name] = {
                "path": path,
                "sha256": sha256(path),
                "texts": run_tokenizer(path),
                "prompts": run_model(path, REAL_PROMPTS, 16),
            }
            print(name, file=sys.stderr)
        with open(args.real_fixture, "w") as f:
            json.dump(real, f, indent=1, ensure_ascii=False)
            f.write("\n")
    listing = subprocess.run(
        [sys.executable, __file__.replace("llama_cpp_reference.py", "tiny_gguf.py"),
         "--vocab", args.vocab, "--out", args.out],
        check=True, capture_output=True, text=True).stdout
    fixture = {"llama_cpp_python": llama_cpp.__version__, "models": {}, "tokenizers": {}}
    for line in listing.splitlines():
        name, path = line.split(" ", 1)
        if name.startswith("tok-"):
            fixture["tokenizers"][name[4:]] = run_tokenizer(path)
        else:
            fixture["models"][name] = {"sha256": sha256(path), "prompts": run_model(path)}
        print(name, file=sys.stderr)
    with open(args.fixture, "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    if args.lora_fixture:
        tiny = dict(line.split(" ", 1) for line in listing.splitlines())
        bases = {"tiny": tiny[LORA_TINY_BASE], "smollm2": args.vocab}
        lora = {"llama_cpp_python": llama_cpp.__version__, "bases": {}}
        for name, base in bases.items():
            lora_args = LORA_ARGS[name]
            out = subprocess.run(
                [sys.executable, __file__.replace("llama_cpp_reference.py", "lora_adapter.py"),
                 "--base", base, "--out", os.path.join(args.out, f"lora-{name}"), *lora_args],
                check=True, capture_output=True, text=True).stdout
            files = dict(line.split(" ", 1) for line in out.splitlines())
            with_lora = run_model(base, lora=files["gguf"])
            lora["bases"][name] = {
                "base": LORA_TINY_BASE if name == "tiny" else "default LLM",
                "args": lora_args,
                "sha256": {
                    "base": sha256(base),
                    "gguf": sha256(files["gguf"]),
                    "peft": sha256(os.path.join(files["peft"], "adapter_model.safetensors")),
                },
                "prompts": with_lora,
                # The base alone, fed the same tokens, on the same top
                # tokens: what the adapter moved.
                "without": run_model(base, like=with_lora),
            }
            print(f"lora on {name}", file=sys.stderr)
        with open(args.lora_fixture, "w") as f:
            json.dump(lora, f, indent=1, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main()
