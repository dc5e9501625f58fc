//! Hugging Face checkpoints, as fine-tuning leaves them: a directory with
//! `config.json`, `tokenizer.json` (and `tokenizer_config.json` for the
//! chat template) and `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), in f32, f16 or bf16. It is turned into
//! the GGUF file `convert_hf_to_gguf.py` would write (same tensor names,
//! same metadata, q and k rows permuted for llama-architecture models),
//! held in memory, so the one loader and forward pass run it, optionally
//! quantized at load to Q8_0 or Q4_K for the fast CPU path.
//!
//! Also the conventions both sides share ([`permute_rows`]), which LoRA
//! adapters in PEFT's format need too.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Whether `dir` holds a checkpoint this module reads.
pub fn is_checkpoint(dir: &Path) -> bool {
    dir.is_dir()
        && dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file())
}

/// What `quantize` may ask for at load.
pub fn quantize_type(name: &str) -> Result<Option<GgmlDType>> {
    match name.to_ascii_lowercase().as_str() {
        "" | "none" => Ok(None),
        "q8_0" => Ok(Some(GgmlDType::Q8_0)),
        "q4_k" => Ok(Some(GgmlDType::Q4K)),
        other => Err(Error::InvalidInput(format!(
            "quantize {other:?}: hearth quantizes checkpoints at load to q8_0 or q4_k (or none)"
        ))),
    }
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "eps")]
    rms_norm_eps: f64,
    #[serde(default = "theta")]
    rope_theta: f64,
    #[serde(default = "positions")]
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    rope_scaling: Option<serde_json::Value>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn eps() -> f64 {
    1e-6
}
fn theta() -> f64 {
    10_000.0
}
fn positions() -> usize {
    4096
}

/// The GGUF architecture of a Hugging Face `model_type`, and whether its
/// q and k rows are permuted on the way (llama's interleaved RoPE).
fn architecture(model_type: &str) -> Result<(&'static str, bool)> {
    match model_type {
        "llama" | "mistral" => Ok(("llama", true)),
        "qwen2" => Ok(("qwen2", false)),
        "qwen3" => Ok(("qwen3", false)),
        other => Err(Error::InvalidInput(format!(
            "config.json: model_type {other:?}: hearth reads Hugging Face checkpoints of llama, mistral, qwen2 and qwen3 \
             (convert others to GGUF with llama.cpp's convert_hf_to_gguf.py)"
        ))),
    }
}

/// The checkpoint at `dir` as the bytes of a GGUF file, with the matrices
/// quantized to `quantize` when given (and the others in their own type:
/// F16, BF16 or F32).
pub fn to_gguf(dir: &Path, quantize: Option<GgmlDType>) -> Result<Vec<u8>> {
    let bad = |why: String| Error::InvalidInput(format!("checkpoint {}: {why}", dir.display()));
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let cfg: Config = serde_json::from_str(&text).map_err(|e| bad(format!("config.json: {e}")))?;
    let (arch, permute) = architecture(&cfg.model_type)?;
    let heads = cfg.num_attention_heads;
    let kv_heads = cfg.num_key_value_heads.unwrap_or(heads);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(bad(format!(
            "{heads} attention heads and {kv_heads} key/value heads"
        )));
    }
    let head_dim = cfg.head_dim.unwrap_or(cfg.hidden_size / heads);
    let mut meta: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| meta.push((k.to_string(), v));
    let u32_of = |n: usize| Value::U32(n as u32);
    put("general.architecture", Value::String(arch.into()));
    put(
        "general.name",
        Value::String(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    );
    put(
        &format!("{arch}.block_count"),
        u32_of(cfg.num_hidden_layers),
    );
    put(
        &format!("{arch}.context_length"),
        u32_of(cfg.max_position_embeddings),
    );
    put(&format!("{arch}.embedding_length"), u32_of(cfg.hidden_size));
    put(
        &format!("{arch}.feed_forward_length"),
        u32_of(cfg.intermediate_size),
    );
    put(&format!("{arch}.attention.head_count"), u32_of(heads));
    put(&format!("{arch}.attention.head_count_kv"), u32_of(kv_heads));
    put(&format!("{arch}.attention.key_length"), u32_of(head_dim));
    put(&format!("{arch}.attention.value_length"), u32_of(head_dim));
    put(&format!("{arch}.rope.dimension_count"), u32_of(head_dim));
    put(
        &format!("{arch}.rope.freq_base"),
        Value::F32(cfg.rope_theta as f32),
    );
    put(
        &format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(cfg.rms_norm_eps as f32),
    );
    put(&format!("{arch}.vocab_size"), u32_of(cfg.vocab_size));
    if let Some(scaling) = &cfg.rope_scaling {
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let factor = scaling.get("factor").and_then(|v| v.as_f64());
        match (kind, factor) {
            ("linear", Some(f)) => {
                put(
                    &format!("{arch}.rope.scaling.type"),
                    Value::String("linear".into()),
                );
                put(&format!("{arch}.rope.scaling.factor"), Value::F32(f as f32));
            }
            ("default", _) => {}
            _ => {
                return Err(bad(format!(
                    "rope_scaling {scaling}: hearth reads linear scaling from checkpoints \
                     (convert others, such as Llama 3's, with convert_hf_to_gguf.py)"
                )))
            }
        }
    }
    // The tokenizer comes from tokenizer.json beside the weights; its
    // special ids and chat template go in the metadata as a GGUF holds them.
    put("tokenizer.ggml.model", Value::String("gpt2".into()));
    let first_id = |v: &Option<serde_json::Value>| match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|n| n.as_u64()),
        _ => None,
    };
    if let Some(id) = first_id(&cfg.bos_token_id) {
        put("tokenizer.ggml.bos_token_id", Value::U32(id as u32));
    }
    if let Some(id) = first_id(&cfg.eos_token_id) {
        put("tokenizer.ggml.eos_token_id", Value::U32(id as u32));
    }
    let tc_path = dir.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&tc_path) {
        let tc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("tokenizer_config.json: {e}")))?;
        if let Some(t) = tc.get("chat_template").and_then(|t| t.as_str()) {
            put("tokenizer.chat_template", Value::String(t.into()));
        }
        if let Some(b) = tc.get("add_bos_token").and_then(|b| b.as_bool()) {
            put("tokenizer.ggml.add_bos_token", Value::Bool(b));
        }
    }

    let weights = read_weights(dir)?;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut used = BTreeSet::new();
    let mut take = |hf: &str, gguf: String, heads_to_permute: Option<usize>| -> Result<()> {
        let Some(t) = weights.get(hf) else {
            return Err(bad(format!("no tensor {hf}")));
        };
        used.insert(hf.to_string());
        let t = match heads_to_permute {
            Some(heads) => {
                let (rows, cols) = t.dims2()?;
                let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let values = permute_rows(&values, rows, cols, heads)
                    .map_err(|why| bad(format!("{hf}: {why}")))?;
                Tensor::from_vec(values, (rows, cols), &Device::Cpu)?.to_dtype(t.dtype())?
            }
            None => t.clone(),
        };
        tensors.push((
            gguf,
            to_qtensor(&t, quantize).map_err(|e| bad(format!("{hf}: {e}")))?,
        ));
        Ok(())
    };
    take(
        "model.embed_tokens.weight",
        "token_embd.weight".into(),
        None,
    )?;
    take("model.norm.weight", "output_norm.weight".into(), None)?;
    if !cfg.tie_word_embeddings && weights.contains_key("lm_head.weight") {
        take("lm_head.weight", "output.weight".into(), None)?;
    }
    for i in 0..cfg.num_hidden_layers {
        let hf = |n: &str| format!("model.layers.{i}.{n}");
        let blk = |n: &str| format!("blk.{i}.{n}");
        let (q_perm, k_perm) = if permute {
            (Some(heads), Some(kv_heads))
        } else {
            (None, None)
        };
        take(&hf("input_layernorm.weight"), blk("attn_norm.weight"), None)?;
        take(
            &hf("post_attention_layernorm.weight"),
            blk("ffn_norm.weight"),
            None,
        )?;
        take(&hf("self_attn.q_proj.weight"), blk("attn_q.weight"), q_perm)?;
        take(&hf("self_attn.k_proj.weight"), blk("attn_k.weight"), k_perm)?;
        take(&hf("self_attn.v_proj.weight"), blk("attn_v.weight"), None)?;
        take(
            &hf("self_attn.o_proj.weight"),
            blk("attn_output.weight"),
            None,
        )?;
        take(&hf("mlp.gate_proj.weight"), blk("ffn_gate.weight"), None)?;
        take(&hf("mlp.up_proj.weight"), blk("ffn_up.weight"), None)?;
        take(&hf("mlp.down_proj.weight"), blk("ffn_down.weight"), None)?;
        if arch == "qwen2" {
            for p in ["q", "k", "v"] {
                take(
                    &hf(&format!("self_attn.{p}_proj.bias")),
                    blk(&format!("attn_{p}.bias")),
                    None,
                )?;
            }
        }
        if arch == "qwen3" {
            take(
                &hf("self_attn.q_norm.weight"),
                blk("attn_q_norm.weight"),
                None,
            )?;
            take(
                &hf("self_attn.k_norm.weight"),
                blk("attn_k_norm.weight"),
                None,
            )?;
        }
    }
    let unused: Vec<&String> = weights
        .keys()
        .filter(|k| !used.contains(*k) && !k.ends_with("rotary_emb.inv_freq"))
        .filter(|k| !(cfg.tie_word_embeddings && k.as_str() == "lm_head.weight"))
        .collect();
    if let Some(name) = unused.first() {
        return Err(bad(format!(
            "tensor {name} has no place in a {} model ({} unused)",
            cfg.model_type,
            unused.len()
        )));
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta_refs, &tensor_refs)
        .map_err(|e| bad(format!("building its GGUF form: {e}")))?;
    Ok(out.into_inner())
}

/// Every tensor of the checkpoint, from one file or its shards.
fn read_weights(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let files: Vec<PathBuf> = if dir.join("model.safetensors").is_file() {
        vec![dir.join("model.safetensors")]
    } else {
        let index = dir.join("model.safetensors.index.json");
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", index.display())))?;
        let shards: BTreeSet<String> = v["weight_map"]
            .as_object()
            .ok_or_else(|| Error::InvalidInput(format!("{}: no weight_map", index.display())))?
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        shards.into_iter().map(|f| dir.join(f)).collect()
    };
    let mut all = BTreeMap::new();
    for file in files {
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu).map_err(|e| {
            Error::InvalidInput(format!(
                "{}: not a readable safetensors file: {e}",
                file.display()
            ))
        })?;
        all.extend(tensors);
    }
    Ok(all)
}

/// A checkpoint tensor as GGUF stores it: vectors in F32; matrices
/// quantized to `quantize`, or kept in their own type (F32, F16, BF16).
fn to_qtensor(t: &Tensor, quantize: Option<GgmlDType>) -> candle_core::Result<QTensor> {
    let f32s = t.to_dtype(DType::F32)?;
    if t.rank() == 1 {
        return QTensor::quantize(&f32s, GgmlDType::F32);
    }
    let dtype = match (quantize, t.dtype()) {
        (Some(q), _) => q,
        (None, DType::F16) => GgmlDType::F16,
        (None, DType::BF16) => GgmlDType::BF16,
        (None, _) => GgmlDType::F32,
    };
    QTensor::quantize(&f32s, dtype)
}

/// `convert_hf_to_gguf.py`'s `LlamaModel.permute` on the rows of a
/// `[rows, cols]` row-major matrix: within each of `heads` heads, row
/// `j * half + i` (half `j` of rotary pair `i`, Hugging Face's order) moves
/// to `2 i + j` (GGUF llama's interleaved order).
pub fn permute_rows(
    values: &[f32],
    rows: usize,
    cols: usize,
    heads: usize,
) -> std::result::Result<Vec<f32>, String> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) || values.len() != rows * cols {
        return Err(format!(
            "{rows} rows do not split into {heads} heads of pairs"
        ));
    }
    let head = rows / heads;
    let half = head / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let from = h * head + j * half + i;
                let to = h * head + 2 * i + j;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_each_heads_halves() {
        // 2 heads of 4 rows, 1 column: head rows [a0 a1 | b0 b1] become
        // [a0 b0 a1 b1].
        let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let p = permute_rows(&v, 8, 1, 2).unwrap();
        assert_eq!(p, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(permute_rows(&v, 8, 1, 3).is_err());
    }

    #[test]
    fn quantize_names() {
        assert_eq!(quantize_type("Q8_0").unwrap(), Some(GgmlDType::Q8_0));
        assert_eq!(quantize_type("").unwrap(), None);
        assert!(quantize_type("q2_k").is_err());
    }
}
