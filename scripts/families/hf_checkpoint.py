#!/usr/bin/env python3
"""A small random-weight Hugging Face llama checkpoint, as fine-tuning
leaves one (config.json, tokenizer.json, tokenizer_config.json, and f16
weights in two safetensors shards with model.safetensors.index.json), and
the same weights as the GGUF file llama.cpp's convert_hf_to_gguf.py makes
of it (tensor names mapped, q and k rows permuted, F16 matrices), beside a
copy of the tokenizer. hearth must compute the same logits from both.

    python scripts/families/hf_checkpoint.py --tokenizer models/minilm-l6-v2/tokenizer.json --out DIR

prints `checkpoint DIR/checkpoint` and `gguf DIR/gguf/model.gguf`.
"""

import argparse
import json
import os
import shutil

import gguf
import numpy as np
from safetensors.numpy import save_file

HIDDEN, FF, LAYERS, HEADS, KV_HEADS, CTX = 64, 128, 2, 4, 2, 256
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def permute(rows, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="a tokenizer.json to ship with it")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with open(args.tokenizer, encoding="utf-8") as f:
        vocab = len(json.load(f)["model"]["vocab"])

    rng = np.random.default_rng(args.seed)

    def matrix(rows, cols, std=None):
        std = std if std is not None else 1.0 / np.sqrt(cols)
        return (rng.standard_normal((rows, cols)) * std).astype(np.float16)

    def norm(n):
        return (1.0 + rng.standard_normal(n) * 0.1).astype(np.float16)

    head_dim = HIDDEN // HEADS
    w = {
        "model.embed_tokens.weight": matrix(vocab, HIDDEN, 1.0),
        "model.norm.weight": norm(HIDDEN),
        "lm_head.weight": matrix(vocab, HIDDEN, 0.4),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(HIDDEN)
        w[p + "post_attention_layernorm.weight"] = norm(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = matrix(HEADS * head_dim, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = matrix(KV_HEADS * head_dim, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = matrix(KV_HEADS * head_dim, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = matrix(HIDDEN, HEADS * head_dim)
        w[p + "mlp.gate_proj.weight"] = matrix(FF, HIDDEN)
        w[p + "mlp.up_proj.weight"] = matrix(FF, HIDDEN)
        w[p + "mlp.down_proj.weight"] = matrix(HIDDEN, FF)

    ckpt = os.path.join(args.out, "checkpoint")
    os.makedirs(ckpt, exist_ok=True)
    names = sorted(w)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: w[k] for k in keys}, os.path.join(ckpt, shard))
        weight_map.update({k: shard for k in keys})
    with open(os.path.join(ckpt, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": CTX,
            "vocab_size": vocab, "tie_word_embeddings": False,
            "bos_token_id": 101, "eos_token_id": 102, "torch_dtype": "float16",
        }, f, indent=1)
    with open(os.path.join(ckpt, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": CHATML, "add_bos_token": False}, f, indent=1)
    shutil.copy(args.tokenizer, os.path.join(ckpt, "tokenizer.json"))

    gdir = os.path.join(args.out, "gguf")
    os.makedirs(gdir, exist_ok=True)
    shutil.copy(args.tokenizer, os.path.join(gdir, "tokenizer.json"))
    path = os.path.join(gdir, "model.gguf")
    g = gguf.GGUFWriter(path, "llama")
    g.add_block_count(LAYERS)
    g.add_context_length(CTX)
    g.add_embedding_length(HIDDEN)
    g.add_feed_forward_length(FF)
    g.add_head_count(HEADS)
    g.add_head_count_kv(KV_HEADS)
    g.add_rope_dimension_count(head_dim)
    g.add_rope_freq_base(10000.0)
    g.add_layer_norm_rms_eps(1e-5)
    g.add_vocab_size(vocab)
    g.add_bos_token_id(101)
    g.add_eos_token_id(102)
    g.add_add_bos_token(False)
    g.add_chat_template(CHATML)
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    g.add_tensor("token_embd.weight", w["model.embed_tokens.weight"])
    g.add_tensor("output_norm.weight", w["model.norm.weight"].astype(np.float32))
    g.add_tensor("output.weight", w["lm_head.weight"])
    for i in range(LAYERS):
        for hf, name in names.items():
            t = w[f"model.layers.{i}.{hf}.weight"]
            if name == "attn_q":
                t = permute(t, HEADS)
            elif name == "attn_k":
                t = permute(t, KV_HEADS)
            if t.ndim == 1:
                t = t.astype(np.float32)
            g.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(t))
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    print("checkpoint", ckpt)
    print("gguf", path)


if __name__ == "__main__":
    main()
