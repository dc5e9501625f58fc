#!/usr/bin/env python3
"""A random LoRA adapter for a llama-family GGUF base, written twice: as
Hugging Face PEFT writes it (`adapter_config.json` and
`adapter_model.safetensors`, with the `safetensors` package) and as
llama.cpp's `convert_lora_to_gguf.py` turns that into a GGUF adapter (with
`gguf`, the format's reference writer). The two hold the same numbers, so
hearth must compute the same logits from either, and llama.cpp
(`llama-cpp-python`'s `lora_path`) on the GGUF one.

Like the converter, the GGUF adapter's B matrices for q_proj and k_proj
have their rows permuted (`LlamaModel.permute`: Hugging Face orders each
head's rotary pairs as two halves, GGUF llama files interleave them); A
matrices and the other targets are copied as they are. Tensors are F32.

    python scripts/families/lora_adapter.py --base BASE.gguf --out DIR [--rank 16 --alpha 32 --seed 0]

prints `peft DIR/peft` and `gguf DIR/adapter.gguf`. The weights come from
a seeded NumPy generator, so every machine writes the same bytes.
"""

import argparse
import json
import os

import gguf
import numpy as np
from safetensors.numpy import save_file

# Hugging Face module -> GGUF tensor (llama layout).
TARGETS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def permute(rows, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute on the rows of a matrix."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--b-std", type=float, default=0.02,
                    help="spread of B's entries (PEFT starts B at zero; a trained one is not)")
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.base)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise SystemExit(f"the base is a {arch} file; this script writes llama adapters")
    n_head = reader.fields[f"{arch}.attention.head_count"].contents()
    n_kv_head = reader.fields[f"{arch}.attention.head_count_kv"].contents()
    n_layer = reader.fields[f"{arch}.block_count"].contents()
    shapes = {t.name: [int(d) for d in reversed(t.shape)] for t in reader.tensors}

    rng = np.random.default_rng(args.seed)
    r = args.rank
    peft, ggml = {}, {}
    for i in range(n_layer):
        for module, tensor in TARGETS.items():
            n, k = shapes[f"blk.{i}.{tensor}.weight"]
            a = (rng.standard_normal((r, k)) / np.sqrt(k)).astype(np.float32)
            b = (rng.standard_normal((n, r)) * args.b_std).astype(np.float32)
            prefix = f"base_model.model.model.layers.{i}.{module}"
            peft[f"{prefix}.lora_A.weight"] = a
            peft[f"{prefix}.lora_B.weight"] = b
            if tensor == "attn_q":
                b = permute(b, n_head)
            elif tensor == "attn_k":
                b = permute(b, n_kv_head)
            ggml[f"blk.{i}.{tensor}.weight.lora_a"] = a
            ggml[f"blk.{i}.{tensor}.weight.lora_b"] = np.ascontiguousarray(b)

    peft_dir = os.path.join(args.out, "peft")
    os.makedirs(peft_dir, exist_ok=True)
    save_file(peft, os.path.join(peft_dir, "adapter_model.safetensors"))
    with open(os.path.join(peft_dir, "adapter_config.json"), "w", encoding="utf-8") as f:
        json.dump({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "r": r,
            "lora_alpha": args.alpha,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "target_modules": sorted(m.split(".")[1] for m in TARGETS),
        }, f, indent=2)

    path = os.path.join(args.out, "adapter.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, args.alpha)
    for name, data in ggml.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("peft", peft_dir)
    print("gguf", path)


if __name__ == "__main__":
    main()
