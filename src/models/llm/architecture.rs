//! A decoder's architecture as its GGUF file declares it: the families
//! hearth runs ([`FAMILIES`], each a row of switches over the one llama
//! forward pass), and [`LlamaConfig`], the shapes and rules read from a
//! file's metadata (`LlamaConfig::from_gguf`), checked before any weight is
//! read. Data only: the forward pass is `llama.rs`; LoRA adapters check
//! their shapes against this.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::Content;

/// The longest context a file may declare: RoPE tables are built for all
/// of it at load (8 bytes per position and pair).
const MAX_CONTEXT: usize = 1 << 20;

/// What a decoder family adds to the llama layout, as data: the forward
/// pass is one (`llama.rs`), and these switch its optional steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// GGUF `general.architecture`.
    pub arch: &'static str,
    /// RoPE pairs (i, i+d/2) instead of (2i, 2i+1).
    pub rope_neox: bool,
    /// Biases on the q, k and v projections (`blk.N.attn_{q,k,v}.bias`).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE
    /// (`blk.N.attn_{q,k}_norm.weight`).
    pub qk_norm: bool,
    /// q, k and v in one matrix (`attn_qkv`), and the SwiGLU's gate and up
    /// in one (`ffn_up`, gate rows first).
    pub fused: bool,
    /// Queries multiplied by 1/sqrt(head_dim) before they meet the keys
    /// (rounded to f16 after the scaling, not before: Phi-3's graph).
    pub scale_q_first: bool,
    /// Gemma's extras: token embeddings scaled by sqrt(n_embd), RMSNorms
    /// after attention and after the feed-forward layer
    /// (`post_attention_norm`, `post_ffw_norm`), GELU (tanh) instead of SiLU in
    /// the gated feed-forward, and sliding-window layers with their own
    /// RoPE base.
    pub gemma: bool,
}

/// The families hearth runs, each proven token for token against llama.cpp
/// on random-weight files (`tests/families.rs`). Mistral's GGUFs (7B, Nemo)
/// are `llama` files; Llama 3's RoPE frequency factors are read from the
/// file (`rope_freqs.weight`). Phi-3's 128k models (LongRoPE) are refused.
pub const FAMILIES: &[Family] = &[
    Family {
        arch: "llama",
        rope_neox: false,
        qkv_bias: false,
        qk_norm: false,
        fused: false,
        scale_q_first: false,
        gemma: false,
    },
    Family {
        arch: "qwen2",
        rope_neox: true,
        qkv_bias: true,
        qk_norm: false,
        fused: false,
        scale_q_first: false,
        gemma: false,
    },
    Family {
        arch: "qwen3",
        rope_neox: true,
        qkv_bias: false,
        qk_norm: true,
        fused: false,
        scale_q_first: false,
        gemma: false,
    },
    Family {
        arch: "phi3",
        rope_neox: true,
        qkv_bias: false,
        qk_norm: false,
        fused: true,
        scale_q_first: true,
        gemma: false,
    },
    Family {
        arch: "gemma3",
        rope_neox: true,
        qkv_bias: false,
        qk_norm: true,
        fused: false,
        scale_q_first: true,
        gemma: true,
    },
];

/// Architectures llama.cpp runs that hearth does not yet: named in the error
/// so that a user knows it is a gap, not a broken file.
const PLANNED: &[&str] = &["gemma2", "mistral3"];

/// GGUF `general.architecture` values hearth loads.
pub fn supported_architectures() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.arch).collect()
}

/// RoPE angles: position `p`, pair `i` turn by
/// `freq_scale * p * base^(-2i/d) / freq_factors[i]` (ggml's `rope_yarn`
/// without YaRN's extrapolation mix).
#[derive(Debug, Clone)]
pub struct Rope {
    pub base: f32,
    /// Linear position interpolation: 1 / `rope.scaling.factor`.
    pub freq_scale: f32,
    /// Llama 3.1's per-pair divisors (`rope_freqs.weight`), when present.
    pub freq_factors: Option<Vec<f32>>,
}

/// Shape of the network, from the GGUF `{arch}.*` metadata.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub family: Family,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_embd: usize,
    /// Width of the feed-forward layer.
    pub n_ff: usize,
    /// Width of one attention head: `{arch}.attention.key_length`, or
    /// `n_embd / n_head` (Qwen 3 sets it apart).
    pub head_dim: usize,
    pub rope: Rope,
    pub rms_eps: f64,
    pub context_length: usize,
    pub vocab_size: usize,
    /// Sliding-window attention (Gemma 3): the window, which layers use
    /// it, and their RoPE (another base, no scaling).
    pub sliding: Option<Sliding>,
    /// `cap * tanh(logits / cap)` on the output, when the file sets it.
    pub final_logit_softcap: Option<f32>,
}

/// Which layers attend over a sliding window, and how.
#[derive(Debug, Clone)]
pub struct Sliding {
    /// A query at position p sees keys at p - window + 1 ..= p.
    pub window: usize,
    /// Per layer: whether it slides (the others attend to everything).
    pub layers: Vec<bool>,
    pub rope: Rope,
}

impl LlamaConfig {
    /// Width of all query heads together (the attention output's width).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Which RoPE table and mask layer `li` uses: 0, the model's; 1, the
    /// sliding window's.
    pub fn layer_kind(&self, li: usize) -> usize {
        match &self.sliding {
            Some(s) if s.layers[li] => 1,
            _ => 0,
        }
    }

    /// The attention window of a layer kind (`usize::MAX`: none).
    pub fn window(&self, kind: usize) -> usize {
        match (&self.sliding, kind) {
            (Some(s), 1) => s.window,
            _ => usize::MAX,
        }
    }

    /// Gemma's final logit soft-capping, when the file asks for it.
    pub fn soft_cap(&self, logits: &mut [f32]) {
        if let Some(cap) = self.final_logit_softcap {
            for l in logits {
                // As ggml: scale by 1/cap, tanh, scale by cap.
                *l = (*l * (1.0 / cap)).tanh() * cap;
            }
        }
    }

    /// The factors applied to the queries before attention and to the
    /// query-key products: 1/sqrt(head_dim) on one side, 1 on the other.
    pub fn attention_scales(&self) -> (f32, f32) {
        let scale = (1.0 / (self.head_dim as f64).sqrt()) as f32;
        if self.family.scale_q_first {
            (scale, 1.0)
        } else {
            (1.0, scale)
        }
    }

    /// The shape (rows, then columns) the tensor `name` must have, or None
    /// for a name this model does not read.
    pub(super) fn tensor_dims(&self, name: &str) -> Option<Vec<usize>> {
        let (d, q, kv) = (self.n_embd, self.q_dim(), self.n_kv_head * self.head_dim);
        let suffix = match name.strip_prefix("blk.") {
            Some(rest) => rest.split_once('.')?.1,
            None => name,
        };
        Some(match suffix {
            "token_embd.weight" | "output.weight" => vec![self.vocab_size, d],
            "output_norm.weight"
            | "attn_norm.weight"
            | "ffn_norm.weight"
            | "post_attention_norm.weight"
            | "post_ffw_norm.weight" => vec![d],
            "rope_freqs.weight" => vec![self.head_dim / 2],
            "attn_q.weight" => vec![q, d],
            "attn_k.weight" | "attn_v.weight" => vec![kv, d],
            "attn_q.bias" => vec![q],
            "attn_k.bias" | "attn_v.bias" => vec![kv],
            "attn_q_norm.weight" | "attn_k_norm.weight" => vec![self.head_dim],
            "attn_output.weight" => vec![d, q],
            "attn_qkv.weight" => vec![q + 2 * kv, d],
            "ffn_gate.weight" => vec![self.n_ff, d],
            "ffn_up.weight" if self.family.fused => vec![2 * self.n_ff, d],
            "ffn_up.weight" => vec![self.n_ff, d],
            "ffn_down.weight" => vec![d, self.n_ff],
            _ => return None,
        })
    }

    pub fn from_gguf(ct: &Content) -> Result<Self> {
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let family = *FAMILIES.iter().find(|f| f.arch == arch).ok_or_else(|| {
            let why = if PLANNED.contains(&arch.as_str()) {
                "its layers are not yet implemented and proven against llama.cpp"
            } else {
                "hearth does not know it"
            };
            Error::Model(format!(
                "GGUF architecture {arch:?} is not supported: {why}; supported: {}",
                supported_architectures().join(", ")
            ))
        })?;
        let get = |key: &str| -> Result<&candle_core::quantized::gguf_file::Value> {
            ct.metadata
                .get(&format!("{arch}.{key}"))
                .ok_or_else(|| Error::Model(format!("GGUF metadata lacks {arch}.{key}")))
        };
        let int = |key: &str| -> Result<usize> {
            super::gguf::value_u32(get(key)?)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    Error::Model(format!("GGUF metadata {arch}.{key} is not an integer"))
                })
        };
        let float = |key: &str| -> Result<Option<f32>> {
            match ct.metadata.get(&format!("{arch}.{key}")) {
                None => Ok(None),
                Some(v) => v.to_f32().map(Some).map_err(|_| {
                    Error::Model(format!("GGUF metadata {arch}.{key} is not a float"))
                }),
            }
        };
        let n_head = int("attention.head_count")?;
        let n_embd = int("embedding_length")?;
        let n_kv_head = int("attention.head_count_kv").unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(Error::Model(format!(
                "GGUF metadata: {n_head} attention heads cannot share {n_kv_head} key/value heads"
            )));
        }
        let head_dim = int("attention.key_length").unwrap_or(n_embd / n_head);
        let value_dim = int("attention.value_length").unwrap_or(head_dim);
        if value_dim != head_dim || head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::Model(format!(
                "attention heads of key width {head_dim} and value width {value_dim} are not supported"
            )));
        }
        if let Ok(rope_dim) = int("rope.dimension_count") {
            if rope_dim != head_dim {
                return Err(Error::Model(format!(
                    "partial RoPE (rope dim {rope_dim} != head dim {head_dim}) is not supported"
                )));
            }
        }
        let scaling = ct
            .metadata
            .get(&format!("{arch}.rope.scaling.type"))
            .and_then(|v| v.to_string().ok())
            .map(String::as_str);
        let freq_scale = match scaling {
            None | Some("none") => 1.0,
            Some("linear") => match float("rope.scaling.factor")? {
                Some(f) if f > 0.0 => 1.0 / f,
                _ => 1.0,
            },
            Some(other) => {
                return Err(Error::Model(format!(
                    "RoPE scaling {other:?} is not supported (supported: none, linear, and \
                     Llama 3's frequency factors)"
                )))
            }
        };
        if ct.tensor_infos.contains_key("rope_factors_long.weight") {
            return Err(Error::Model(
                "LongRoPE (rope_factors_long/short, as in Phi-3's 128k models) is not supported; \
                 the 4k models are"
                    .into(),
            ));
        }
        let vocab_size = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(candle_core::quantized::gguf_file::Value::Array(t)) => t.len(),
            _ => int("vocab_size")?,
        };
        let context_length = int("context_length")?;
        if context_length == 0 || context_length > MAX_CONTEXT {
            return Err(Error::Model(format!(
                "GGUF context length {context_length} is outside 1..={MAX_CONTEXT}"
            )));
        }
        let n_layer = int("block_count")?;
        Ok(Self {
            family,
            n_layer,
            n_head,
            n_kv_head,
            n_embd,
            n_ff: int("feed_forward_length")?,
            head_dim,
            rope: Rope {
                base: float("rope.freq_base")?.unwrap_or(10_000.0),
                freq_scale,
                freq_factors: None,
            },
            rms_eps: get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            context_length,
            vocab_size,
            sliding: Self::sliding(ct, &arch, family, n_layer)?,
            final_logit_softcap: float("final_logit_softcapping")?.filter(|c| *c > 0.0),
        })
    }

    /// Gemma 3's sliding-window layers, as llama.cpp reads them (other
    /// families ignore the keys): `attention.sliding_window` (absent or 0:
    /// none), the pattern
    /// `attention.sliding_window_pattern` (an array of per-layer flags, or
    /// n: every n-th layer attends to everything, default 6), and
    /// `rope.freq_base_swa` (default 10,000).
    fn sliding(
        ct: &Content,
        arch: &str,
        family: Family,
        n_layer: usize,
    ) -> Result<Option<Sliding>> {
        use candle_core::quantized::gguf_file::Value;
        // As llama.cpp: only Gemma's layers read the key (a Qwen 2 file
        // may carry one it does not use).
        if !family.gemma {
            return Ok(None);
        }
        let meta = |key: &str| ct.metadata.get(&format!("{arch}.{key}"));
        let window = meta("attention.sliding_window").and_then(super::gguf::value_u32);
        let window = match window {
            Some(w) if w > 0 => w as usize,
            _ => return Ok(None),
        };
        let layers = match meta("attention.sliding_window_pattern") {
            Some(Value::Array(flags)) => {
                let flags: Vec<bool> = flags.iter().map(|v| v.to_bool().unwrap_or(false)).collect();
                if flags.len() < n_layer {
                    return Err(Error::Model(format!(
                        "GGUF sliding_window_pattern has {} flags for {n_layer} layers",
                        flags.len()
                    )));
                }
                flags[..n_layer].to_vec()
            }
            other => {
                let n = other.and_then(super::gguf::value_u32).unwrap_or(6) as usize;
                (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
            }
        };
        let base = match meta("rope.freq_base_swa") {
            Some(v) => v.to_f32().map_err(|_| {
                Error::Model(format!(
                    "GGUF metadata {arch}.rope.freq_base_swa is not a float"
                ))
            })?,
            None => 10_000.0,
        };
        Ok(Some(Sliding {
            window,
            layers,
            rope: Rope {
                base,
                freq_scale: 1.0,
                freq_factors: None,
            },
        }))
    }
}
