//! Random-weight LLMs of real models' shapes, for speed runs where the real
//! weights cannot travel (a GPU machine with no network) or do not exist in
//! the wanted quantization. Speed does not depend on the weights' values, so
//! a file of the right shapes and tensor types measures what the real model
//! would. The tokenizer and chat template are copied from a template GGUF.
//! The Llama 3 shapes pad its vocabulary to Llama 3's 128,256 tokens, so
//! that their embeddings and output layer cost what the real models' do;
//! the padding tokens are plain tokens that no merge produces (text never
//! tokenizes to them, but a random model can sample them).

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A llama-architecture shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// 2 layers of 64: loading tests and a small tokenizer carrier.
    Tiny,
    /// SmolLM2-135M: 30 layers of 576, 9 heads (3 KV), FFN 1536.
    Smollm2_135m,
    /// Llama 3.2 1B: 16 layers of 2048, 32 heads (8 KV), FFN 8192, 128,256
    /// tokens, output tied to the embeddings (as the real model's).
    Llama1b,
    /// Llama 3.2 3B: 28 layers of 3072, 24 heads (8 KV), FFN 8192, 128,256
    /// tokens, output tied to the embeddings (as the real model's).
    Llama3b,
    /// Llama 3.1 8B: 32 layers of 4096, 32 heads (8 KV), FFN 14336, 128,256
    /// tokens, untied output.
    Llama8b,
}

struct Dims {
    layers: usize,
    embd: usize,
    ffn: usize,
    heads: usize,
    kv_heads: usize,
    rope_base: f32,
    tied: bool,
    /// The vocabulary the template's is padded to (none: the template's).
    vocab: Option<usize>,
}

/// Llama 3's vocabulary size.
const LLAMA3_VOCAB: usize = 128_256;

impl Shape {
    fn dims(self) -> Dims {
        let (layers, embd, ffn, heads, kv_heads, rope_base, tied) = match self {
            Shape::Tiny => (2, 64, 128, 2, 1, 10_000.0, true),
            Shape::Smollm2_135m => (30, 576, 1536, 9, 3, 100_000.0, true),
            Shape::Llama1b => (16, 2048, 8192, 32, 8, 500_000.0, true),
            Shape::Llama3b => (28, 3072, 8192, 24, 8, 500_000.0, true),
            Shape::Llama8b => (32, 4096, 14336, 32, 8, 500_000.0, false),
        };
        let vocab = match self {
            Shape::Tiny | Shape::Smollm2_135m => None,
            Shape::Llama1b | Shape::Llama3b | Shape::Llama8b => Some(LLAMA3_VOCAB),
        };
        Dims {
            layers,
            embd,
            ffn,
            heads,
            kv_heads,
            rope_base,
            tied,
            vocab,
        }
    }
}

/// The tensor types a random model can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightType {
    Q4_0,
    Q4_1,
    Q8_0,
    Q4k,
    Q6k,
    /// llama.cpp's Q4_K_M mix: Q6_K for the value and down projections and
    /// the embeddings (the output layer when tied), Q4_K for the rest.
    Q4kM,
    /// The same with Q5_K for the rest (Q5_K_M).
    Q5kM,
    F16,
    Bf16,
}

impl WeightType {
    /// The type of the tensor `name` (a `*.weight` of the llama layout).
    fn ggml(self, name: &str) -> GgmlDType {
        match self {
            WeightType::Q4_0 => GgmlDType::Q4_0,
            WeightType::Q4_1 => GgmlDType::Q4_1,
            WeightType::Q8_0 => GgmlDType::Q8_0,
            WeightType::Q4k => GgmlDType::Q4K,
            WeightType::Q6k => GgmlDType::Q6K,
            WeightType::Q4kM | WeightType::Q5kM => {
                let six = ["attn_v.", "ffn_down.", "token_embd.", "output."];
                if six.iter().any(|part| name.contains(part)) {
                    GgmlDType::Q6K
                } else if self == WeightType::Q4kM {
                    GgmlDType::Q4K
                } else {
                    GgmlDType::Q5K
                }
            }
            WeightType::F16 => GgmlDType::F16,
            WeightType::Bf16 => GgmlDType::BF16,
        }
    }
}

/// Write a random-weight llama of `shape` to `out`, every matrix in `dtype`
/// (norms in F32), with the tokenizer metadata of `template`. Returns the
/// number of parameters. Matrices of one shape share one random draw, so an
/// 8B file takes seconds to make, not minutes.
pub fn write_random_llm(
    template: &Path,
    shape: Shape,
    dtype: WeightType,
    out: &Path,
) -> Result<u64> {
    let (_, content) = crate::models::llm::gguf::open(template)?;
    let vocab = match content.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(tokens)) if !tokens.is_empty() => tokens.len(),
        _ => {
            return Err(Error::Model(format!(
                "{} carries no tokenizer (tokenizer.ggml.tokens)",
                template.display()
            )))
        }
    };
    let d = shape.dims();
    let mut meta: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer.") || k.as_str() == "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vocab = match d.vocab {
        Some(target) if target > vocab => {
            pad_vocabulary(&mut meta, vocab, target)?;
            target
        }
        _ => vocab,
    };
    let u32_of = |n: usize| Value::U32(n as u32);
    meta.extend([
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "general.name".into(),
            Value::String(format!("random {shape:?} {dtype:?}")),
        ),
        ("llama.block_count".into(), u32_of(d.layers)),
        ("llama.context_length".into(), u32_of(4096)),
        ("llama.embedding_length".into(), u32_of(d.embd)),
        ("llama.feed_forward_length".into(), u32_of(d.ffn)),
        ("llama.attention.head_count".into(), u32_of(d.heads)),
        ("llama.attention.head_count_kv".into(), u32_of(d.kv_heads)),
        ("llama.rope.freq_base".into(), Value::F32(d.rope_base)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.vocab_size".into(), u32_of(vocab)),
    ]);

    let head_dim = d.embd / d.heads;
    let kv = d.kv_heads * head_dim;
    let mut names: Vec<(String, [usize; 2])> = vec![
        ("token_embd.weight".into(), [vocab, d.embd]),
        ("output_norm.weight".into(), [1, d.embd]),
    ];
    if !d.tied {
        names.push(("output.weight".into(), [vocab, d.embd]));
    }
    for i in 0..d.layers {
        let blk = |n: &str| format!("blk.{i}.{n}.weight");
        names.extend([
            (blk("attn_norm"), [1, d.embd]),
            (blk("ffn_norm"), [1, d.embd]),
            (blk("attn_q"), [d.embd, d.embd]),
            (blk("attn_k"), [kv, d.embd]),
            (blk("attn_v"), [kv, d.embd]),
            (blk("attn_output"), [d.embd, d.embd]),
            (blk("ffn_gate"), [d.ffn, d.embd]),
            (blk("ffn_up"), [d.ffn, d.embd]),
            (blk("ffn_down"), [d.embd, d.ffn]),
        ]);
    }
    // One draw per shape and type.
    let key = |name: &str, dims: &[usize; 2]| (*dims, format!("{:?}", dtype.ggml(name)));
    let mut draws: HashMap<([usize; 2], String), QTensor> = HashMap::new();
    let mut params = 0u64;
    for (name, dims) in &names {
        params += (dims[0] * dims[1]) as u64;
        let k = key(name, dims);
        if draws.contains_key(&k) {
            continue;
        }
        draws.insert(k, random_tensor(*dims, dtype.ggml(name))?);
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = names
        .iter()
        .map(|(name, dims)| (name.as_str(), &draws[&key(name, dims)]))
        .collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| Error::io(out, e))?);
    gguf_file::write(&mut w, &meta_refs, &tensor_refs)
        .map_err(|e| Error::Model(format!("writing {}: {e}", out.display())))?;
    Ok(params)
}

/// Pad the tokenizer arrays in `meta` from `vocab` entries to `target`:
/// tokens `<pad N>` (skipping any the vocabulary already holds), of the
/// plain type, score zero. No merge makes them, so text tokenizes as
/// before; decoding one gives its text.
fn pad_vocabulary(meta: &mut [(String, Value)], vocab: usize, target: usize) -> Result<()> {
    let mut taken = std::collections::HashSet::new();
    for (key, value) in meta.iter() {
        if let ("tokenizer.ggml.tokens", Value::Array(tokens)) = (key.as_str(), value) {
            taken.extend(tokens.iter().filter_map(|t| t.to_string().ok().cloned()));
        }
    }
    let mut names = (0..)
        .map(|i| format!("<pad {i}>"))
        .filter(|t| !taken.contains(t));
    let added: Vec<String> = names.by_ref().take(target - vocab).collect();
    let per_token = [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.scores",
    ];
    for (key, value) in meta.iter_mut() {
        let Value::Array(items) = value else { continue };
        if !per_token.contains(&key.as_str()) {
            continue;
        }
        if items.len() != vocab {
            return Err(Error::Model(format!(
                "the template's {key} holds {} entries for {vocab} tokens",
                items.len()
            )));
        }
        let fill = match (key.as_str(), items.first()) {
            ("tokenizer.ggml.tokens", _) => {
                items.extend(added.iter().map(|t| Value::String(t.clone())));
                continue;
            }
            // Plain ("normal") tokens, in the array's own integer type.
            ("tokenizer.ggml.token_type", Some(Value::I32(_))) => Value::I32(1),
            ("tokenizer.ggml.token_type", Some(Value::U32(_))) => Value::U32(1),
            ("tokenizer.ggml.scores", Some(Value::F32(_))) => Value::F32(0.0),
            (other, first) => {
                return Err(Error::Model(format!(
                    "cannot pad the template's {other} ({first:?}) to {target} tokens"
                )))
            }
        };
        items.resize(target, fill);
    }
    Ok(())
}

/// Write a random LoRA adapter for the llama-layout `base` to `out`: an
/// A (`[rank, k]`, spread 1/sqrt(k)) and B (`[n, rank]`, spread 0.01)
/// pair for every attention and feed-forward matrix of every layer, as the
/// GGUF adapter `convert_lora_to_gguf.py` writes (F32). Returns the
/// number of parameters.
pub fn write_random_adapter(
    base: &Path,
    rank: usize,
    alpha: f32,
    seed: u64,
    out: &Path,
) -> Result<u64> {
    use crate::models::llm::lora::Target;
    use rand::{Rng, SeedableRng};
    if rank == 0 {
        return Err(Error::InvalidInput("--rank must be at least 1".into()));
    }
    let (_, content) = crate::models::llm::gguf::open(base)?;
    let config = crate::models::llm::architecture::LlamaConfig::from_gguf(&content)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut normal = |n: usize, std: f32| -> Vec<f32> {
        // Box-Muller pairs.
        (0..n)
            .map(|_| {
                let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos() * std
            })
            .collect()
    };
    let model = |e: candle_core::Error| Error::Model(format!("random adapter: {e}"));
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut params = 0u64;
    for layer in 0..config.n_layer {
        for target in Target::ALL {
            let name = format!("blk.{layer}.{}.weight", target.gguf());
            let info = content.tensor_infos.get(&name).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{} has no {name}: not a llama-layout model",
                    base.display()
                ))
            })?;
            let (n, k) = info.shape.dims2().map_err(model)?;
            let a = Tensor::from_vec(
                normal(rank * k, 1.0 / (k as f32).sqrt()),
                (rank, k),
                &Device::Cpu,
            )
            .map_err(model)?;
            let b =
                Tensor::from_vec(normal(n * rank, 0.01), (n, rank), &Device::Cpu).map_err(model)?;
            params += (rank * (k + n)) as u64;
            tensors.push((
                format!("{name}.lora_a"),
                QTensor::quantize(&a, GgmlDType::F32).map_err(model)?,
            ));
            tensors.push((
                format!("{name}.lora_b"),
                QTensor::quantize(&b, GgmlDType::F32).map_err(model)?,
            ));
        }
    }
    let meta = [
        (
            "general.architecture",
            Value::String(config.family.arch.into()),
        ),
        ("general.type", Value::String("adapter".into())),
        ("adapter.type", Value::String("lora".into())),
        ("adapter.lora.alpha", Value::F32(alpha)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| Error::io(out, e))?);
    gguf_file::write(&mut w, &meta_refs, &tensor_refs)
        .map_err(|e| Error::Model(format!("writing {}: {e}", out.display())))?;
    Ok(params)
}

/// One random matrix (rows x cols), or a norm's weights (1 x n, F32 near 1),
/// in `dtype`. Values are small so that activations stay finite.
fn random_tensor(dims: [usize; 2], dtype: GgmlDType) -> Result<QTensor> {
    let cpu = Device::Cpu;
    let model = |e: candle_core::Error| Error::Model(format!("random weights {dims:?}: {e}"));
    if dims[0] == 1 {
        let t = (Tensor::randn(0f32, 0.1, dims[1], &cpu).map_err(model)? + 1.0).map_err(model)?;
        return QTensor::quantize(&t, GgmlDType::F32).map_err(model);
    }
    let std = 1.0 / (dims[1] as f32).sqrt();
    let t = Tensor::randn(0f32, std, (dims[0], dims[1]), &cpu).map_err(model)?;
    QTensor::quantize(&t, dtype).map_err(|e| {
        Error::Model(format!(
            "cannot write a {dims:?} matrix as {dtype:?} (rows must be whole blocks): {e}"
        ))
    })
}
