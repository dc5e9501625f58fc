#!/usr/bin/env python3
"""Tiny random-weight GGUF files, one per architecture hearth runs.

Written with `gguf`, the format's reference writer from llama.cpp (pinned in
scripts/python-env.sh), so that the files are what llama.cpp's own tools
would write, not what hearth thinks a GGUF is. Each file borrows the
tokenizer of the default LLM (SmolLM2) so that tokens mean something, and
has 2 layers of width 64: a few MB, loaded in milliseconds.

The weights come from a seeded NumPy generator, so every machine writes the
same bytes (the test checks each file's sha256 against the fixture made by
llama.cpp on the same file: tests/fixtures/families.json, made by
scripts/families/llama_cpp_reference.py).

    python scripts/families/tiny_gguf.py --vocab models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR

prints one line per file: NAME PATH. Files `tok-PRE` hold only a tokenizer
(SmolLM2's vocabulary under another family's pre-tokenizer rules).
"""

import argparse
import math
import os

import gguf
import numpy as np

N_EMBD, N_LAYER, N_HEAD, N_KV_HEAD, N_FF, N_CTX = 64, 2, 4, 2, 128, 256


def llama3_freq_factors(head_dim, base, factor=8.0, low=1.0, high=4.0, original=8192):
    """Llama 3.1's RoPE frequency factors, as convert_hf_to_gguf.py writes
    them into `rope_freqs.weight`."""
    low_wavelen, high_wavelen = original / low, original / high
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / (base ** (i / head_dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


# name -> (GGUF architecture, what the family adds to the llama layout)
FAMILIES = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tied": True}),
    # Llama 3.1/3.2: RoPE frequency factors and a large base.
    "llama3": ("llama", {"rope_freqs": True, "rope_base": 500000.0}),
    # Qwen 2/2.5: q/k/v biases, NeoX RoPE.
    "qwen2": ("qwen2", {"qkv_bias": True, "rope_base": 1000000.0}),
    # Qwen 3: per-head RMSNorm on q and k, head_dim (32) apart from
    # n_embd / n_head (16), NeoX RoPE.
    "qwen3": ("qwen3", {"qk_norm": True, "head_dim": 32, "rope_base": 1000000.0}),
    # Linear RoPE scaling (position interpolation, `rope.scaling.*`).
    "llama-linear": ("llama", {"rope_linear": 4.0}),
    # Phi-3 (mini, 4k): q/k/v in one matrix, gate and up in one, NeoX RoPE,
    # queries scaled before attention (heads of 24, whose 1/sqrt is no
    # power of two, so that the order of the rounding shows).
    "phi3": ("phi3", {"fused": True, "n_embd": 96}),
    # Gemma 3: embeddings scaled by sqrt(n_embd), q/k norms, norms after
    # attention and after the feed-forward, GELU, queries scaled first;
    # layer 0 attends over a sliding window of 8 (another RoPE base),
    # layer 1 to everything; logits soft-capped.
    "gemma3": ("gemma3", {"qk_norm": True, "head_dim": 32, "rope_base": 1000000.0,
                          "post_norms": True, "sliding_window": 8, "softcap": 30.0}),
}

QUANTS = {
    "f32": gguf.GGMLQuantizationType.F32,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}

# Families also written as a K-quant mix, as Q4_K_M and Q5_K_M files mix
# them: Q4_K for q and gate, Q5_K for k and up, Q6_K for v and down, Q5_0
# for the attention output, Q8_0 for the embeddings and the output layer.
# Width 256, the K-quants' block size.
KQUANT_FAMILIES = ["llama", "gemma3"]
KQUANT_TYPES = {
    "attn_q": "Q4_K", "attn_k": "Q5_K", "ffn_gate": "Q4_K", "ffn_up": "Q5_K",
    "attn_v": "Q6_K", "ffn_down": "Q6_K", "attn_output": "Q5_0",
}

# A llama file in the other types people download: F16 and BF16 (what
# convert_hf_to_gguf.py writes by default) and Q4_0, mixed so that one
# forward pass runs every one of them; the embeddings in BF16, the output
# layer in Q4_0. gguf-py quantizes all three.
WIDE_FAMILIES = ["llama"]
WIDE_TYPES = {
    "attn_q": "F16", "attn_k": "BF16", "attn_v": "Q4_0", "attn_output": "F16",
    "ffn_gate": "BF16", "ffn_up": "Q4_0", "ffn_down": "F16",
    "token_embd": "BF16", "output": "Q4_0",
}


def f16_bytes(values):
    return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(-1, 2)


def random_blocks(rng, qtype, rows, cols):
    """Random but well-formed blocks of a quantized type, as raw bytes
    `[rows, bytes per row]`: gguf-py cannot quantize to the K-quants, and
    the test needs no quantizer, only bytes both programs read alike. The
    scales are sized for weights of about 1/sqrt(cols)."""
    nb = rows * cols // (256 if qtype.endswith("_K") else 32)
    u8 = lambda n: rng.integers(0, 256, size=(nb, n), dtype=np.uint8)  # noqa: E731
    if qtype in ("Q4_K", "Q5_K"):  # d, dmin, 12 bytes of 6-bit scales and mins,
        # (Q5_K: 32 bytes of fifth bits,) 128 nibble bytes
        top = 16 if qtype == "Q4_K" else 32
        d = f16_bytes(np.abs(rng.standard_normal(nb)) * 0.3 / (16 * top * np.sqrt(cols)) + 1e-5)
        dmin = f16_bytes(np.abs(rng.standard_normal(nb)) * 2.0 / (32 * np.sqrt(cols)))
        fifth = [u8(32)] if qtype == "Q5_K" else []
        blocks = np.concatenate([d, dmin, u8(12)] + fifth + [u8(128)], axis=1)
    elif qtype == "Q6_K":  # 128 low-nibble bytes, 64 high-bit bytes, 16 int8 scales, d
        scales = rng.integers(-40, 41, size=(nb, 16)).astype(np.int8).view(np.uint8)
        d = f16_bytes(np.abs(rng.standard_normal(nb)) * 1.0 / (40 * 16 * np.sqrt(cols)) + 1e-5)
        blocks = np.concatenate([u8(128), u8(64), scales, d], axis=1)
    else:  # Q5_0: d, 4 bytes of fifth bits, 16 nibble bytes
        d = f16_bytes(rng.standard_normal(nb) * 1.0 / (8 * np.sqrt(cols)))
        blocks = np.concatenate([d, u8(4), u8(16)], axis=1)
    return blocks.reshape(rows, -1)


TOKENIZER_KEYS = [
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.chat_template",
]


def read_tokenizer(vocab_path):
    reader = gguf.GGUFReader(vocab_path)
    return {key: reader.fields[key].contents() for key in TOKENIZER_KEYS}


def copy_tokenizer(writer, vocab):
    f = vocab.__getitem__
    writer.add_tokenizer_model(f("tokenizer.ggml.model"))
    writer.add_tokenizer_pre(f("tokenizer.ggml.pre"))
    tokens = f("tokenizer.ggml.tokens")
    writer.add_token_list(tokens)
    writer.add_token_types(f("tokenizer.ggml.token_type"))
    writer.add_token_merges(f("tokenizer.ggml.merges"))
    writer.add_bos_token_id(f("tokenizer.ggml.bos_token_id"))
    writer.add_eos_token_id(f("tokenizer.ggml.eos_token_id"))
    writer.add_add_bos_token(f("tokenizer.ggml.add_bos_token"))
    writer.add_chat_template(f("tokenizer.chat_template"))
    return len(tokens)


def write(path, name, quant, vocab, seed):
    arch, extra = FAMILIES[name]
    if quant == "kquant":
        extra = {**extra, "n_embd": 256, "n_ff": 512}
    rng = np.random.default_rng(seed)
    n_embd = extra.get("n_embd", N_EMBD)
    n_ff = extra.get("n_ff", N_FF)
    head_dim = extra.get("head_dim", n_embd // N_HEAD)
    q_dim, kv_dim = N_HEAD * head_dim, N_KV_HEAD * head_dim
    base = extra.get("rope_base", 10000.0)

    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(N_LAYER)
    w.add_context_length(N_CTX)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV_HEAD)
    if "head_dim" in extra:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(base)
    if "sliding_window" in extra:
        w.add_sliding_window(extra["sliding_window"])
        w.add_sliding_window_pattern(2)
        w.add_rope_freq_base_swa(10000.0)
    if "softcap" in extra:
        w.add_final_logit_softcapping(extra["softcap"])
    if "rope_linear" in extra:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(extra["rope_linear"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type({"f32": 0, "q8_0": 7, "kquant": 15, "wide": 1}[quant])
    n_vocab = copy_tokenizer(w, vocab)
    w.add_vocab_size(n_vocab)

    def matrix(tensor, rows, cols, std=None):
        kind = tensor.split(".")[-2]
        if quant == "kquant" and kind in KQUANT_TYPES:
            qtype = KQUANT_TYPES[kind]
            w.add_tensor(tensor, random_blocks(rng, qtype, rows, cols),
                         raw_dtype=gguf.GGMLQuantizationType[qtype])
            return
        std = std if std is not None else 1.0 / math.sqrt(cols)
        data = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)
        qtype = QUANTS.get(quant, gguf.GGMLQuantizationType.Q8_0)
        if quant == "wide":
            qtype = gguf.GGMLQuantizationType[WIDE_TYPES[kind]]
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(tensor, data)
        else:
            w.add_tensor(tensor, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def vector(tensor, n, mean, std):
        data = (mean + rng.standard_normal(n, dtype=np.float32) * np.float32(std)).astype(np.float32)
        w.add_tensor(tensor, data)

    matrix("token_embd.weight", n_vocab, n_embd, std=1.0)
    vector("output_norm.weight", n_embd, 1.0, 0.1)
    # Tied embeddings (no output.weight, the logits come from token_embd)
    # make a random model repeat its input; the others get an output layer
    # whose logits spread like a trained model's (std ~3).
    if not extra.get("tied"):
        matrix("output.weight", n_vocab, n_embd, std=0.4)
    if extra.get("rope_freqs"):
        w.add_tensor("rope_freqs.weight", llama3_freq_factors(head_dim, base))
    for i in range(N_LAYER):
        vector(f"blk.{i}.attn_norm.weight", n_embd, 1.0, 0.1)
        if extra.get("fused"):
            matrix(f"blk.{i}.attn_qkv.weight", q_dim + 2 * kv_dim, n_embd)
        else:
            matrix(f"blk.{i}.attn_q.weight", q_dim, n_embd)
            matrix(f"blk.{i}.attn_k.weight", kv_dim, n_embd)
            matrix(f"blk.{i}.attn_v.weight", kv_dim, n_embd)
        if extra.get("qkv_bias"):
            vector(f"blk.{i}.attn_q.bias", q_dim, 0.0, 0.5)
            vector(f"blk.{i}.attn_k.bias", kv_dim, 0.0, 0.5)
            vector(f"blk.{i}.attn_v.bias", kv_dim, 0.0, 0.5)
        if extra.get("qk_norm"):
            vector(f"blk.{i}.attn_q_norm.weight", head_dim, 1.0, 0.2)
            vector(f"blk.{i}.attn_k_norm.weight", head_dim, 1.0, 0.2)
        matrix(f"blk.{i}.attn_output.weight", n_embd, q_dim)
        if extra.get("post_norms"):
            vector(f"blk.{i}.post_attention_norm.weight", n_embd, 1.0, 0.1)
            vector(f"blk.{i}.post_ffw_norm.weight", n_embd, 1.0, 0.1)
        vector(f"blk.{i}.ffn_norm.weight", n_embd, 1.0, 0.1)
        if extra.get("fused"):
            # Gate rows first, then up (what ggml's swiglu splits).
            matrix(f"blk.{i}.ffn_up.weight", 2 * n_ff, n_embd)
        else:
            matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
            matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)

    finish(w)


# Pre-tokenizers checked on SmolLM2's vocabulary: the same merges split by
# each family's rules (`tokenizer.ggml.pre`).
PRE_TOKENIZERS = ["smollm", "gpt-2", "default", "llama-bpe", "qwen2"]


def vocab_only_writer(path):
    """A llama file's writer for a file with no tensors: enough for
    llama.cpp's vocab_only load."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(N_LAYER)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    return w


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_vocab_only(path, pre, vocab):
    """SmolLM2's vocabulary under the pre-tokenizer rules `pre`."""
    w = vocab_only_writer(path)
    copy_tokenizer(w, {**vocab, "tokenizer.ggml.pre": pre})
    finish(w)


def byte_level_decoder():
    """GPT-2's byte-level alphabet, reversed: the character a byte-level BPE
    token uses for each byte -> that byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def write_spm_vocab_only(path, vocab, add_space_prefix):
    """A SentencePiece-style vocabulary (`tokenizer.ggml.model = "llama"`,
    as Llama 2, Mistral, Phi-3 and Gemma carry) made from SmolLM2's: each
    byte-level token turned back into its text with spaces as U+2581, a
    score that falls with the token's rank, the 256 byte tokens <0xXX>, and
    <unk>, <s>, </s> and SmolLM2's control tokens."""
    to_byte = byte_level_decoder()
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    scores += [0.0] * 256
    types += [6] * 256
    seen = set(tokens)
    for rank, (text, kind) in enumerate(zip(vocab["tokenizer.ggml.tokens"],
                                            vocab["tokenizer.ggml.token_type"])):
        if kind == 3:
            piece = text
        else:
            try:
                piece = bytes(to_byte[c] for c in text).decode("utf-8")
            except (KeyError, UnicodeDecodeError):
                continue
            piece = piece.replace(" ", "\u2581")
        if piece in seen or not piece:
            continue
        seen.add(piece)
        tokens.append(piece)
        scores.append(-float(rank))
        types.append(3 if kind == 3 else 1)
    w = vocab_only_writer(path)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_space_prefix(add_space_prefix)
    finish(w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", required=True, help="a GGUF whose tokenizer the files borrow")
    ap.add_argument("--out", required=True, help="directory to write into")
    ap.add_argument("--only", help="comma-separated family names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    names = args.only.split(",") if args.only else list(FAMILIES)
    vocab = read_tokenizer(args.vocab)
    for seed, name in enumerate(FAMILIES):
        if name not in names:
            continue
        for quant in QUANTS:
            file = f"{name}-{quant}"
            path = os.path.join(args.out, f"{file}.gguf")
            write(path, name, quant, vocab, seed)
            print(file, path)
    # The type mixes, each family's seed counted from its own start.
    for quant, families, start in [("kquant", KQUANT_FAMILIES, 100), ("wide", WIDE_FAMILIES, 200)]:
        for seed, name in enumerate(families, start=start):
            if name not in names:
                continue
            file = f"{name}-{quant}"
            path = os.path.join(args.out, f"{file}.gguf")
            write(path, name, quant, vocab, seed)
            print(file, path)
    for pre in PRE_TOKENIZERS:
        path = os.path.join(args.out, f"tok-{pre}.gguf")
        write_vocab_only(path, pre, vocab)
        print(f"tok-{pre}", path)
    for name, prefix in [("spm", True), ("spm-no-prefix", False)]:
        path = os.path.join(args.out, f"tok-{name}.gguf")
        write_spm_vocab_only(path, vocab, prefix)
        print(f"tok-{name}", path)


if __name__ == "__main__":
    main()
