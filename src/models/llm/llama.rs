//! A llama-family decoder over GGUF-quantized weights, read top to bottom.
//!
//! The weights ([`Llama`]) are immutable and shared (`Arc`) by every sequence;
//! each sequence owns its own [`KvCache`]. This split is what lets one worker
//! interleave many sequences over a single copy of the weights. The layer
//! maths follows llama.cpp's `llm_build_llama` (RMSNorm, interleaved RoPE,
//! grouped-query attention, SwiGLU MLP, tied embeddings when the file has no
//! `output.weight`); the other families it runs (`FAMILIES`: Qwen 2's q/k/v
//! biases, Qwen 3's q/k norms, Phi-3's fused matrices, Gemma 3's extra
//! norms, GELU and sliding-window layers, NeoX RoPE, Llama 3's RoPE
//! frequency factors)
//! are switches of the same pass, each proven against llama.cpp by
//! `tests/families.rs`.

mod cpu;

use super::architecture::{LlamaConfig, Rope};
use super::lora::{Adapter, Target};
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Embedding;
use candle_transformers::quantized_nn::RmsNorm;
use cpu::{HostKv, HostLayer, HostModel, HostSegment};
use hearth_kernels::quant::QMatrix;
use std::io::{Read, Seek};
use std::sync::Arc;

/// `t + scale * B A`, quantized back to `t`'s type.
fn merge(t: QTensor, pair: &super::lora::Pair) -> Result<QTensor> {
    let dtype = t.dtype();
    let device = t.device();
    let w = t.dequantize(&device)?;
    let delta = Tensor::from_vec(pair.delta(), w.shape(), &device)?;
    QTensor::quantize(&(w + delta)?, dtype).map_err(|e| {
        Error::Model(format!(
            "merging an adapter into a {dtype:?} matrix: {e} (use adapters unmerged)"
        ))
    })
}

/// `t` (f32) rounded to the nearest f16 values, kept in f32.
fn round_f16(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F16)?.to_dtype(DType::F32)?)
}

/// A weight matrix applied as `x @ W^T`: on the CPU the types
/// [`QMatrix::supports`] (the quantized ones people download, F16 and BF16)
/// go through hearth's SIMD kernels ([`hearth_kernels::quant`]), everything
/// else (F32, the GPU) through candle's.
enum Linear {
    Candle(QMatMul),
    /// Shared with the token embedding when the output layer is tied to it.
    Own(Arc<QMatrix>),
}

impl Linear {
    fn new(t: QTensor, device: &Device) -> Result<Self> {
        if device.is_cpu() && QMatrix::supports(t.dtype()) {
            return Ok(Self::Own(Arc::new(QMatrix::from_qtensor(&t)?)));
        }
        Ok(Self::Candle(QMatMul::from_qtensor(t)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle(m) => Ok(m.forward(x)?),
            Self::Own(m) => Ok(m.forward(x)?),
        }
    }

    /// hearth's kernel, when this matrix runs on it.
    fn as_own(&self) -> Option<&QMatrix> {
        match self {
            Self::Own(m) => Some(m.as_ref()),
            Self::Candle(_) => None,
        }
    }

    /// Several products of the same input: one quantization of `x` and one
    /// thread-pool dispatch when all are hearth's kernels.
    fn forward_many<const N: usize>(ws: [&Linear; N], x: &Tensor) -> Result<[Tensor; N]> {
        let own: Vec<&QMatrix> = ws.iter().filter_map(|w| w.as_own()).collect();
        let outs = if own.len() == N {
            QMatrix::forward_many(&own, x)?
        } else {
            ws.iter().map(|w| w.forward(x)).collect::<Result<_>>()?
        };
        Ok(outs.try_into().expect("one product per matrix"))
    }
}

/// Products of one input by several matrices: separate matrices, or one
/// fused matrix whose output rows are the parts end to end (Phi-3's
/// `attn_qkv` and its `ffn_up`, gate then up).
enum Proj<const N: usize> {
    Separate([Linear; N]),
    Fused(Linear, [usize; N]),
}

impl<const N: usize> Proj<N> {
    fn forward(&self, x: &Tensor) -> Result<[Tensor; N]> {
        match self {
            Self::Separate(ws) => Linear::forward_many(ws.each_ref(), x),
            Self::Fused(w, widths) => {
                let y = w.forward(x)?;
                let mut start = 0;
                let mut part = |n: usize| -> Result<Tensor> {
                    let t = y.narrow(candle_core::D::Minus1, start, n)?;
                    start += n;
                    Ok(t)
                };
                let parts: Vec<Tensor> = widths.iter().map(|&n| part(n)).collect::<Result<_>>()?;
                Ok(parts
                    .try_into()
                    .map_err(|_| ())
                    .expect("one part per width"))
            }
        }
    }

    fn matrices(&self) -> Vec<&Linear> {
        match self {
            Self::Separate(ws) => ws.iter().collect(),
            Self::Fused(w, _) => vec![w],
        }
    }
}

struct Layer {
    attn_norm: RmsNorm,
    /// Queries, keys and values.
    qkv: Proj<3>,
    /// Qwen 2's biases on q, k and v.
    qkv_bias: Option<[Bias; 3]>,
    /// Qwen 3's per-head norms of queries and keys.
    qk_norm: Option<[RmsNorm; 2]>,
    wo: Linear,
    ffn_norm: RmsNorm,
    /// The SwiGLU's gate and up products.
    gate_up: Proj<2>,
    w_down: Linear,
    /// Gemma's norms of the attention's and the feed-forward's outputs.
    post_norms: Option<[RmsNorm; 2]>,
}

/// A bias vector, as a tensor and as plain floats.
struct Bias {
    tensor: Tensor,
    host: Vec<f32>,
}

/// The model's weights. Immutable after loading; share with `Arc`.
pub struct Llama {
    pub config: LlamaConfig,
    embed: TokenEmbedding,
    /// The f32 table the tensor path looks tokens up in, made on its first
    /// use from quantized rows (the CPU buffer path never needs it: a
    /// 262k-token vocabulary is 671 MB in f32, 178 MB in Q8_0).
    embed_table: std::sync::OnceLock<Embedding>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    /// RoPE's cos and sin tables `[context_length, head_dim / 2]`: the
    /// model's, then the sliding-window layers' when they differ.
    ropes: Vec<(Tensor, Tensor)>,
    device: Device,
    /// Present when every matrix runs on hearth's CPU kernels and the CPU
    /// has FMA: then the forward pass runs on plain buffers ([`cpu`]).
    host: Option<HostModel>,
}

/// The token embeddings: quantized rows, dequantized one token at a time
/// as ggml's `get_rows` does (Q8_0, Q5_0 and Q6_K tables on the CPU), or
/// an f32 table (the other types, and GPUs).
enum TokenEmbedding {
    Rows(Arc<QMatrix>),
    Table(Embedding),
}

/// One sequence's part of a batched step ([`Llama::forward_batch`]).
pub struct Segment<'a> {
    /// The tokens to feed after what the cache holds.
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// How many of the last tokens' logits are wanted: 1 for the next
    /// token, 0 for a prompt chunk that does not finish the prompt, every
    /// token's when drafted tokens are verified (prompt-lookup decoding).
    pub logits: usize,
}

/// How a cache holds keys and values (`limits.kv_cache_type`): f16, or
/// Q8_0 (blocks of 32 signed bytes and an f16 scale: 47% fewer bytes, as
/// llama.cpp's and Ollama's `q8_0` cache type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    #[default]
    F16,
    Q8_0,
}

impl std::str::FromStr for KvType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            other => Err(Error::InvalidInput(format!(
                "kv_cache_type must be \"f16\" or \"q8_0\", not {other:?}"
            ))),
        }
    }
}

/// Attention keys and values of one sequence, one preallocated buffer per
/// layer (appends write in place instead of concatenating every token).
pub struct KvCache {
    layers: LayerCaches,
    len: usize,
    /// The LoRA adapter this sequence runs with (unmerged): its low-rank
    /// updates are added to the base's products for this sequence's rows.
    adapter: Option<Arc<Adapter>>,
}

enum LayerCaches {
    Tensors(Vec<candle_nn::kv_cache::KvCache>),
    Host(Vec<HostKv>),
}

/// The keys and values of a token prefix, kept to start later sequences
/// that begin with the same tokens ([`Llama::cache_from_prefix`]). Only the
/// buffer path's caches can be kept this way.
pub struct KvPrefix {
    layers: Vec<HostKv>,
    len: usize,
    /// The adapter its keys and values were computed with.
    adapter: Option<Arc<Adapter>>,
}

impl KvPrefix {
    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(HostKv::bytes).sum()
    }

    /// Whether these keys and values are what a sequence with `adapter`
    /// computes (the same adapter, or none for both).
    pub fn serves(&self, adapter: Option<&Arc<Adapter>>) -> bool {
        match (&self.adapter, adapter) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl KvCache {
    /// Tokens already in the cache: the position of the next token.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A copy of the first `len` positions, where the cache is the buffer
    /// path's (None on the tensor path, or past what the cache holds).
    pub fn prefix(&self, len: usize) -> Option<KvPrefix> {
        match &self.layers {
            LayerCaches::Host(layers) if len <= self.len => Some(KvPrefix {
                layers: layers
                    .iter()
                    .map(|l| l.prefix(l.values() / self.len.max(1) * len, 0))
                    .collect(),
                len,
                adapter: self.adapter.clone(),
            }),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of keys and values held, on the buffer path (None on the
    /// tensor path).
    pub fn bytes(&self) -> Option<usize> {
        match &self.layers {
            LayerCaches::Host(layers) => Some(layers.iter().map(HostKv::bytes).sum()),
            LayerCaches::Tensors(_) => None,
        }
    }

    /// Forget every position from `len` on (drafted tokens that were not
    /// accepted); nothing happens past what the cache holds.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        match &mut self.layers {
            LayerCaches::Host(layers) => {
                for l in layers {
                    l.truncate(len, self.len);
                }
            }
            LayerCaches::Tensors(layers) => {
                for l in layers {
                    let (k, v) = (l.k()?, l.v()?);
                    l.reset();
                    if let (Some(k), Some(v), true) = (k, v, len > 0) {
                        let dim = l.k_cache().dim();
                        l.append(&k.narrow(dim, 0, len)?, &v.narrow(dim, 0, len)?)?;
                    }
                }
            }
        }
        self.len = len;
        Ok(())
    }

    /// The adapter this sequence runs with.
    pub fn adapter(&self) -> Option<&Arc<Adapter>> {
        self.adapter.as_ref()
    }
}

impl Llama {
    pub fn from_gguf<R: Read + Seek>(
        ct: &Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        Self::from_gguf_merged(ct, reader, device, None)
    }

    /// [`from_gguf`](Self::from_gguf) with `adapter` merged into the
    /// matrices it changes: each is dequantized, `scale * B A` added, and
    /// quantized again to its own type (so the merged model runs as fast
    /// as the base; the requantization rounds the sum to that type's
    /// grid). `adapter` must have been loaded for this file's config.
    pub fn from_gguf_merged<R: Read + Seek>(
        ct: &Content,
        reader: &mut R,
        device: &Device,
        adapter: Option<&Adapter>,
    ) -> Result<Self> {
        let mut config = LlamaConfig::from_gguf(ct)?;
        let family = config.family;
        // Every tensor is checked against the shape the metadata implies
        // before any of it is read: a file whose tensors disagree with its
        // metadata is refused at load, not by a shape error mid-request.
        let mut tensor = |name: &str| {
            let info = ct
                .tensor_infos
                .get(name)
                .ok_or_else(|| Error::Model(format!("GGUF file lacks tensor {name}")))?;
            let dims = info.shape.dims();
            if let Some(want) = config.tensor_dims(name) {
                if dims != want.as_slice() {
                    return Err(Error::Model(format!(
                        "GGUF tensor {name} has shape {dims:?} where the metadata implies {want:?}"
                    )));
                }
            }
            ct.tensor(reader, name, device)
                .map_err(|e| Error::Model(format!("GGUF tensor {name}: {e}")))
        };
        let embed_q = tensor("token_embd.weight")?;
        let embed_rows = (device.is_cpu() && QMatrix::supports(embed_q.dtype()))
            .then(|| QMatrix::from_qtensor(&embed_q))
            .transpose()?
            .filter(|m| m.row(0).is_some())
            .map(Arc::new);
        // The norms' weights, as tensors and as plain vectors.
        let eps = config.rms_eps;
        let norm_of = |t: QTensor| -> Result<(RmsNorm, Vec<f32>)> {
            let host = t.dequantize(device)?.to_vec1::<f32>()?;
            Ok((RmsNorm::from_qtensor(t, eps)?, host))
        };
        // A vector's length was checked with its shape by `tensor`.
        let vector = |t: QTensor| -> Result<Vec<f32>> { Ok(t.dequantize(device)?.to_vec1()?) };
        let (norm, norm_host) = norm_of(tensor("output_norm.weight")?)?;
        // Llama 3.1's RoPE frequency factors, one per pair.
        let freq_factors = if ct.tensor_infos.contains_key("rope_freqs.weight") {
            Some(vector(tensor("rope_freqs.weight")?)?)
        } else {
            None
        };
        // Tied embeddings: small models reuse token_embd as the output layer.
        let output = tensor("output.weight").ok();
        let (q_dim, kv_dim) = (config.q_dim(), config.n_kv_head * config.head_dim);
        let mut layers = Vec::with_capacity(config.n_layer);
        let mut host_layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let mut q = |suffix: &str| -> Result<Linear> {
                let t = tensor(&format!("blk.{i}.{suffix}.weight"))?;
                let pair = Target::ALL
                    .into_iter()
                    .find(|t| t.gguf() == suffix)
                    .and_then(|target| adapter?.pair(i, target));
                match pair {
                    Some(pair) => Linear::new(merge(t, pair)?, device),
                    None => Linear::new(t, device),
                }
            };
            let qkv = if family.fused {
                Proj::Fused(q("attn_qkv")?, [q_dim, kv_dim, kv_dim])
            } else {
                Proj::Separate([q("attn_q")?, q("attn_k")?, q("attn_v")?])
            };
            let gate_up = if family.fused {
                Proj::Fused(q("ffn_up")?, [config.n_ff, config.n_ff])
            } else {
                Proj::Separate([q("ffn_gate")?, q("ffn_up")?])
            };
            let (wo, w_down) = (q("attn_output")?, q("ffn_down")?);
            let (attn_norm, attn_host) = norm_of(tensor(&format!("blk.{i}.attn_norm.weight"))?)?;
            let (ffn_norm, ffn_host) = norm_of(tensor(&format!("blk.{i}.ffn_norm.weight"))?)?;
            let qkv_bias = if family.qkv_bias {
                let mut bias = |part: &str| -> Result<Bias> {
                    let host = vector(tensor(&format!("blk.{i}.attn_{part}.bias"))?)?;
                    Ok(Bias {
                        tensor: Tensor::from_slice(&host, host.len(), device)?,
                        host,
                    })
                };
                Some([bias("q")?, bias("k")?, bias("v")?])
            } else {
                None
            };
            let (qk_norm, qk_host) = if family.qk_norm {
                let mut norm = |part: &str| -> Result<(RmsNorm, Vec<f32>)> {
                    norm_of(tensor(&format!("blk.{i}.attn_{part}_norm.weight"))?)
                };
                let ((qn, qh), (kn, kh)) = (norm("q")?, norm("k")?);
                (Some([qn, kn]), Some([qh, kh]))
            } else {
                (None, None)
            };
            let (post_norms, post_host) = if family.gemma {
                let (an, ah) = norm_of(tensor(&format!("blk.{i}.post_attention_norm.weight"))?)?;
                let (fnn, fh) = norm_of(tensor(&format!("blk.{i}.post_ffw_norm.weight"))?)?;
                (Some([an, fnn]), Some([ah, fh]))
            } else {
                (None, None)
            };
            host_layers.push(HostLayer {
                attn_norm: attn_host,
                ffn_norm: ffn_host,
                post_norms: post_host,
                qk_norm: qk_host,
            });
            layers.push(Layer {
                attn_norm,
                qkv,
                qkv_bias,
                qk_norm,
                wo,
                ffn_norm,
                gate_up,
                w_down,
                post_norms,
            });
        }
        // Tied embeddings: small models reuse token_embd as the output
        // layer (one copy of the quantized rows serves both).
        let (output, embed) = match (output, embed_rows) {
            (Some(t), Some(rows)) => (Linear::new(t, device)?, TokenEmbedding::Rows(rows)),
            (None, Some(rows)) => (Linear::Own(rows.clone()), TokenEmbedding::Rows(rows)),
            (output, None) => {
                let table = Embedding::new(embed_q.dequantize(device)?, config.n_embd);
                (
                    Linear::new(output.unwrap_or(embed_q), device)?,
                    TokenEmbedding::Table(table),
                )
            }
        };
        config.rope.freq_factors = freq_factors;
        let mut tables = vec![rope_tables(&config, &config.rope)];
        if let Some(sliding) = &config.sliding {
            tables.push(rope_tables(&config, &sliding.rope));
        }
        let shape = (config.context_length, config.head_dim / 2);
        let ropes = tables
            .iter()
            .map(|(cos, sin)| -> Result<(Tensor, Tensor)> {
                Ok((
                    Tensor::from_slice(cos, shape, device)?,
                    Tensor::from_slice(sin, shape, device)?,
                ))
            })
            .collect::<Result<_>>()?;
        let all_own = layers.iter().all(|l| {
            let mut ws = l.qkv.matrices();
            ws.extend(l.gate_up.matrices());
            ws.extend([&l.wo, &l.w_down]);
            ws.iter().all(|w| w.as_own().is_some())
        }) && output.as_own().is_some();
        let host = if all_own && cpu::supported() {
            Some(HostModel {
                layers: host_layers,
                norm: norm_host,
                ropes: tables,
            })
        } else {
            None
        };
        Ok(Self {
            config,
            embed,
            embed_table: std::sync::OnceLock::new(),
            layers,
            norm,
            output,
            ropes,
            device: device.clone(),
            host,
        })
    }

    /// Whether a row's logits are the same bits whatever else is in its
    /// forward pass (the buffer path's kernels; a GPU's matrix products may
    /// sum in another order for another number of rows). Prompt-lookup
    /// decoding runs only where they are, so that it never changes output.
    pub fn rows_are_independent(&self) -> bool {
        self.host.is_some()
    }

    /// The cache types this model's caches can take: Q8_0 on the buffer
    /// path where a kv row is whole blocks of 32, f16 everywhere.
    pub fn supports_kv_type(&self, kind: KvType) -> bool {
        match kind {
            KvType::F16 => true,
            KvType::Q8_0 => {
                self.host.is_some()
                    && (self.config.n_kv_head * self.config.head_dim).is_multiple_of(32)
            }
        }
    }

    /// A fresh cache for a sequence expected to hold `capacity` tokens (it
    /// grows if needed, up to the context length checked by the caller).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        self.new_cache_typed(capacity, None, KvType::F16)
    }

    /// [`new_cache`](Self::new_cache) for a sequence that runs with
    /// `adapter` (unmerged; made for this model by [`Adapter::load`] with
    /// its config).
    pub fn new_cache_with(&self, capacity: usize, adapter: Option<Arc<Adapter>>) -> KvCache {
        self.new_cache_typed(capacity, adapter, KvType::F16)
    }

    /// [`new_cache_with`](Self::new_cache_with) holding keys and values as
    /// `kind` where [`supports_kv_type`](Self::supports_kv_type), else f16.
    pub fn new_cache_typed(
        &self,
        capacity: usize,
        adapter: Option<Arc<Adapter>>,
        kind: KvType,
    ) -> KvCache {
        let kind = match self.supports_kv_type(kind) {
            true => kind,
            false => KvType::F16,
        };
        let capacity = capacity.clamp(1, self.config.context_length);
        let n = self.config.n_layer;
        let layers = if self.host.is_some() {
            let values = capacity * self.config.n_kv_head * self.config.head_dim;
            LayerCaches::Host(
                (0..n)
                    .map(|_| HostKv::with_capacity(values, kind))
                    .collect(),
            )
        } else {
            LayerCaches::Tensors(
                (0..n)
                    .map(|_| candle_nn::kv_cache::KvCache::new(2, capacity))
                    .collect(),
            )
        };
        KvCache {
            layers,
            len: 0,
            adapter,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A cache for a sequence that begins with the first `len` tokens of
    /// `prefix` (whose keys and values are copied, not recomputed), with
    /// room for `capacity` tokens. The logits that follow are the same as
    /// from a cache fed those tokens: each position's keys and values
    /// depend only on the tokens before it.
    pub fn cache_from_prefix(&self, prefix: &KvPrefix, len: usize, capacity: usize) -> KvCache {
        let len = len.min(prefix.len);
        let per_token = self.config.n_kv_head * self.config.head_dim;
        let capacity = capacity.clamp(len.max(1), self.config.context_length) * per_token;
        KvCache {
            layers: LayerCaches::Host(
                prefix
                    .layers
                    .iter()
                    .map(|l| l.prefix(len * per_token, capacity))
                    .collect(),
            ),
            len,
            adapter: prefix.adapter.clone(),
        }
    }

    /// Feed `tokens` after what `cache` holds; return the logits (f32,
    /// `[vocab]`) predicting the token after the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let mut one = [Segment {
            tokens,
            cache,
            logits: 1,
        }];
        let logits = self.forward_batch(&mut one)?.pop().flatten();
        let logits = logits.expect("logits were asked for");
        let n = logits.len();
        Ok(Tensor::from_vec(logits, n, &Device::Cpu)?)
    }

    /// One step for several sequences at once: each segment's tokens are fed
    /// after what its cache holds, and the logits after its last
    /// `logits` tokens come back where asked for (row after row, each of
    /// the vocabulary's width). On the buffer path the whole batch shares each
    /// read of the weights, on the buffer path (CPUs with FMA) and on the
    /// tensor path (GPUs, other CPUs) alike. On the CPU a sequence's logits
    /// are the same whether it runs alone or in a batch; a GPU's matrix
    /// products may sum in another order for another batch size.
    pub fn forward_batch(&self, segments: &mut [Segment]) -> Result<Vec<Option<Vec<f32>>>> {
        for s in segments.iter() {
            self.check_segment(s.tokens.len(), s.cache.len)?;
            if s.logits > s.tokens.len() {
                return Err(Error::InvalidInput(format!(
                    "logits for {} tokens asked of a segment of {}",
                    s.logits,
                    s.tokens.len()
                )));
            }
        }
        if let Some(host) = &self.host {
            if segments
                .iter()
                .all(|s| matches!(s.cache.layers, LayerCaches::Host(_)))
            {
                let mut parts: Vec<HostSegment> = segments
                    .iter_mut()
                    .map(|s| {
                        let pos = s.cache.len;
                        let LayerCaches::Host(layers) = &mut s.cache.layers else {
                            unreachable!("checked above")
                        };
                        HostSegment {
                            tokens: s.tokens,
                            pos,
                            cache: layers,
                            logits: s.logits,
                            adapter: s.cache.adapter.as_deref(),
                        }
                    })
                    .collect();
                let out = self.forward_host(host, &mut parts)?;
                drop(parts);
                for s in segments.iter_mut() {
                    s.cache.len += s.tokens.len();
                }
                return Ok(out);
            }
        }
        let mut parts = Vec::with_capacity(segments.len());
        for s in segments.iter_mut() {
            let LayerCaches::Tensors(layers) = &mut s.cache.layers else {
                return Err(Error::Model("a cache made for another model".into()));
            };
            parts.push(TensorSegment {
                tokens: s.tokens,
                pos: s.cache.len,
                cache: layers,
                logits: s.logits,
                adapter: s.cache.adapter.as_deref(),
            });
        }
        let logits = self.forward_tensors(&mut parts)?;
        drop(parts);
        for s in segments.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        let mut rows = logits.into_iter();
        Ok(segments
            .iter()
            .map(|s| {
                (s.logits > 0).then(|| rows.by_ref().take(s.logits).flatten().collect::<Vec<f32>>())
            })
            .collect())
    }

    /// The f32 embedding table of the tensor path.
    fn embedding_table(&self) -> Result<&Embedding> {
        let rows = match &self.embed {
            TokenEmbedding::Table(table) => return Ok(table),
            TokenEmbedding::Rows(rows) => rows,
        };
        if let Some(table) = self.embed_table.get() {
            return Ok(table);
        }
        let (n, d) = (self.config.vocab_size, self.config.n_embd);
        let mut values = Vec::with_capacity(n * d);
        for j in 0..n {
            values.extend(rows.row(j).expect("rows checked at load"));
        }
        let table = Tensor::from_vec(values, (n, d), &self.device)?;
        Ok(self.embed_table.get_or_init(|| Embedding::new(table, d)))
    }

    /// The embedding of `token`, as f32.
    fn embedding_row(&self, token: u32) -> Result<Vec<f32>> {
        match &self.embed {
            TokenEmbedding::Rows(rows) => rows.row(token as usize).ok_or_else(|| {
                Error::InvalidInput(format!("token {token} is outside the vocabulary"))
            }),
            TokenEmbedding::Table(table) => {
                Ok(table.embeddings().get(token as usize)?.to_vec1()?)
            }
        }
    }

    fn check_segment(&self, seq_len: usize, pos: usize) -> Result<()> {
        if seq_len == 0 {
            return Err(Error::InvalidInput("no tokens to feed the model".into()));
        }
        if pos + seq_len > self.config.context_length {
            return Err(Error::TooLarge(format!(
                "sequence of {} tokens exceeds the model's context window of {}",
                pos + seq_len,
                self.config.context_length
            )));
        }
        Ok(())
    }

    /// The forward pass through candle's tensors for a batch: every
    /// segment's rows go through each matrix product together (one read of
    /// the weights per step on a GPU too); RoPE, the cache and attention
    /// are per segment. Returns the rows of logits the segments want, in
    /// order.
    fn forward_tensors(&self, segments: &mut [TensorSegment]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let n_rep = cfg.n_head / cfg.n_kv_head;
        let (q_scale, scale) = cfg.attention_scales();
        let tokens: Vec<u32> = segments
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let input = Tensor::new(tokens.as_slice(), &self.device)?.unsqueeze(0)?;
        // Per segment: its first row in the batch, its rows, its mask (one
        // row per query per head sharing a kv head, see the attention), and
        // its RoPE angles.
        // Masks and angles come in two kinds: the model's, and the
        // sliding-window layers' ([`LlamaConfig::layer_kind`]).
        let mut first = 0;
        let mut shapes = Vec::with_capacity(segments.len());
        for s in segments.iter() {
            let (len, pos) = (s.tokens.len(), s.pos);
            let mut kinds = Vec::new();
            for (kind, (cos, sin)) in self.ropes.iter().enumerate() {
                let window = cfg.window(kind);
                let mask = attention_mask(len, pos, window, &self.device)?
                    .map(|m| m.repeat((n_rep, 1)))
                    .transpose()?;
                kinds.push((mask, cos.narrow(0, pos, len)?, sin.narrow(0, pos, len)?));
            }
            shapes.push((first, len, kinds));
            first += len;
        }
        let mut x = self.embedding_table()?.forward(&input)?;
        if cfg.family.gemma {
            x = (x * (cfg.n_embd as f32).sqrt() as f64)?;
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let kind = cfg.layer_kind(li);
            let h = layer.attn_norm.forward(&x)?;
            let [q, k, v] = layer.qkv.forward(&h)?;
            let mut q = lora_tensors(segments, li, Target::Q, &h, q)?;
            let mut k = lora_tensors(segments, li, Target::K, &h, k)?;
            let mut v = lora_tensors(segments, li, Target::V, &h, v)?;
            if let Some([bq, bk, bv]) = &layer.qkv_bias {
                q = q.broadcast_add(&bq.tensor)?;
                k = k.broadcast_add(&bk.tensor)?;
                v = v.broadcast_add(&bv.tensor)?;
            }
            let mut ys = Vec::with_capacity(segments.len());
            for (s, (first, len, kinds)) in segments.iter_mut().zip(&shapes) {
                let (first, len) = (*first, *len);
                let (mask, cos, sin) = &kinds[kind];
                // Per head: [1, len, heads, head_dim], normed over
                // head_dim where the family norms queries and keys, then
                // [1, heads, len, head_dim].
                let heads = |t: &Tensor, n: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
                    let mut t = t
                        .narrow(1, first, len)?
                        .reshape((1, len, n, cfg.head_dim))?;
                    if let Some(norm) = norm {
                        t = norm.forward(&t)?;
                    }
                    Ok(t.transpose(1, 2)?.contiguous()?)
                };
                let [q_norm, k_norm] = match &layer.qk_norm {
                    Some([qn, kn]) => [Some(qn), Some(kn)],
                    None => [None, None],
                };
                let (q, k, v) = (
                    heads(&q, cfg.n_head, q_norm)?,
                    heads(&k, cfg.n_kv_head, k_norm)?,
                    heads(&v, cfg.n_kv_head, None)?,
                );
                let (q, k) = if cfg.family.rope_neox {
                    (
                        candle_nn::rotary_emb::rope(&q, cos, sin)?,
                        candle_nn::rotary_emb::rope(&k, cos, sin)?,
                    )
                } else {
                    (
                        candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                        candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
                    )
                };
                // Keys and values are cached with f16 precision, as
                // llama.cpp stores them by default, but held as f32 so that
                // no token pays for converting the whole cache back.
                // llama.cpp also multiplies the cache by f16 copies of the
                // queries and of the attention weights: rounding them the
                // same way keeps greedy output on its path where logits
                // nearly tie.
                let (k, v) = s.cache[li].append(&round_f16(&k)?, &round_f16(&v)?)?;
                // Grouped-query attention without copying the cache per
                // head: the n_rep query heads that share a kv head are
                // stacked as rows.
                let q = round_f16(&(q * q_scale as f64)?)?.reshape((
                    1,
                    cfg.n_kv_head,
                    n_rep * len,
                    cfg.head_dim,
                ))?;
                let mut att = (q.matmul(&k.t()?)? * scale as f64)?;
                if let Some(mask) = mask {
                    att = att.broadcast_add(mask)?;
                }
                let att = round_f16(&candle_nn::ops::softmax_last_dim(&att)?)?;
                ys.push(
                    att.matmul(&v)?
                        .reshape((1, cfg.n_head, len, cfg.head_dim))?
                        .transpose(1, 2)?
                        .reshape((1, len, cfg.q_dim()))?,
                );
            }
            let y = Tensor::cat(&ys, 1)?;
            let mut y = lora_tensors(segments, li, Target::O, &y, layer.wo.forward(&y)?)?;
            if let Some([post, _]) = &layer.post_norms {
                y = post.forward(&y)?;
            }
            x = (x + y)?;

            let h = layer.ffn_norm.forward(&x)?;
            let [gate, up] = layer.gate_up.forward(&h)?;
            let gate = lora_tensors(segments, li, Target::Gate, &h, gate)?;
            let up = lora_tensors(segments, li, Target::Up, &h, up)?;
            let act = if cfg.family.gemma {
                // ggml's f16 GELU table: f16(gelu(f16(x))).
                round_f16(&round_f16(&gate)?.gelu()?)?
            } else {
                candle_nn::ops::silu(&gate)?
            };
            let act = (act * up)?;
            let mut y = lora_tensors(
                segments,
                li,
                Target::Down,
                &act,
                layer.w_down.forward(&act)?,
            )?;
            if let Some([_, post]) = &layer.post_norms {
                y = post.forward(&y)?;
            }
            x = (x + y)?;
        }
        // The last rows of each segment that wants logits, through the
        // output layer together.
        let last: Vec<Tensor> = segments
            .iter()
            .zip(&shapes)
            .filter(|(s, _)| s.logits > 0)
            .map(|(s, (first, len, ..))| x.narrow(1, first + len - s.logits, s.logits))
            .collect::<candle_core::Result<_>>()?;
        if last.is_empty() {
            return Ok(Vec::new());
        }
        let last = self.norm.forward(&Tensor::cat(&last, 1)?)?;
        let logits = self
            .output
            .forward(&last)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        let mut rows = logits.to_vec2::<f32>()?;
        for row in &mut rows {
            cfg.soft_cap(row);
        }
        Ok(rows)
    }
}

/// One sequence's share of a batched step on tensors (see
/// [`Llama::forward_tensors`]).
struct TensorSegment<'a> {
    tokens: &'a [u32],
    pos: usize,
    cache: &'a mut [candle_nn::kv_cache::KvCache],
    logits: usize,
    adapter: Option<&'a Adapter>,
}

/// `out + scale * B (A x)` for the rows of each segment whose adapter
/// changes `target` of layer `layer` (`x`, `out`: `[1, rows, _]`); `out`
/// unchanged when none does.
fn lora_tensors(
    segments: &[TensorSegment],
    layer: usize,
    target: Target,
    x: &Tensor,
    out: Tensor,
) -> Result<Tensor> {
    if segments
        .iter()
        .all(|s| s.adapter.and_then(|a| a.pair(layer, target)).is_none())
    {
        return Ok(out);
    }
    let mut parts = Vec::with_capacity(segments.len());
    let mut first = 0;
    for s in segments {
        let len = s.tokens.len();
        let rows = out.narrow(1, first, len)?;
        parts.push(match s.adapter.and_then(|a| a.pair(layer, target)) {
            Some(pair) => {
                let (a, b) = pair.tensors(x.device())?;
                let t = x.narrow(1, first, len)?.broadcast_matmul(&a.t()?)?;
                let ab = t.broadcast_matmul(&b.t()?)?;
                (rows + (ab * pair.scale() as f64)?)?
            }
            None => rows,
        });
        first += len;
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// RoPE's cos and sin, `[context_length, head_dim / 2]` row-major.
fn rope_tables(cfg: &LlamaConfig, rope: &Rope) -> (Vec<f32>, Vec<f32>) {
    // As ggml computes it: theta starts at the position and is multiplied by
    // base^(-2/d) for each pair (not recomputed with powf), in f32; then
    // divided by the pair's frequency factor and scaled.
    let half = cfg.head_dim / 2;
    let theta_scale = rope.base.powf(-2.0 / cfg.head_dim as f32);
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..cfg.context_length {
        let mut theta = p as f32;
        for i in 0..half {
            let factor = rope.freq_factors.as_ref().map_or(1.0, |f| f[i]);
            let angle = rope.freq_scale * (theta / factor);
            cos.push(angle.cos());
            sin.push(angle.sin());
            theta *= theta_scale;
        }
    }
    (cos, sin)
}

/// Additive mask `[seq_len, pos + seq_len]`: query i (at position pos + i)
/// sees the keys at positions pos + i - window + 1 ..= pos + i. None when
/// nothing is masked (one query, all keys in its window).
fn attention_mask(
    seq_len: usize,
    pos: usize,
    window: usize,
    device: &Device,
) -> Result<Option<Tensor>> {
    let kv_len = pos + seq_len;
    if seq_len == 1 && kv_len <= window {
        return Ok(None);
    }
    let mask: Vec<f32> = (0..seq_len)
        .flat_map(|i| {
            (0..kv_len).map(move |j| {
                let p = pos + i;
                if j > p || p - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(mask, (seq_len, kv_len), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};

    /// A random-weight llama (2 layers, GQA 2:1) written as GGUF in memory.
    fn tiny_model() -> Llama {
        load(&tiny_gguf(), &Device::Cpu)
    }

    fn load(gguf: &[u8], dev: &Device) -> Llama {
        let mut buf = std::io::Cursor::new(gguf);
        let content = gguf_file::Content::read(&mut buf).unwrap();
        Llama::from_gguf(&content, &mut buf, dev).unwrap()
    }

    /// The GGUF bytes of a random-weight llama (2 layers, GQA 2:1).
    fn tiny_gguf() -> Vec<u8> {
        let cpu = Device::Cpu;
        let (embd, ffn, vocab) = (64usize, 64usize, 48usize);
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        // Seeded, so that every run tests the same model (with unseeded
        // weights the two paths' difference occasionally passed 1e-3).
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut add = |name: &str, shape: &[usize], dtype: GgmlDType| {
            // Normal(0, 0.5) by Box-Muller.
            let data: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| {
                    let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
                    0.5 * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                })
                .collect();
            let t = (Tensor::from_vec(data, shape, &cpu).unwrap())
                .abs()
                .unwrap();
            let t = if name.contains("norm") {
                (t + 0.5).unwrap()
            } else {
                (t - 0.4).unwrap()
            };
            tensors.push((name.to_string(), QTensor::quantize(&t, dtype).unwrap()));
        };
        add("token_embd.weight", &[vocab, embd], GgmlDType::Q8_0);
        add("output_norm.weight", &[embd], GgmlDType::F32);
        for i in 0..2 {
            add(
                &format!("blk.{i}.attn_norm.weight"),
                &[embd],
                GgmlDType::F32,
            );
            add(&format!("blk.{i}.ffn_norm.weight"), &[embd], GgmlDType::F32);
            add(
                &format!("blk.{i}.attn_q.weight"),
                &[embd, embd],
                GgmlDType::Q4_1,
            );
            add(
                &format!("blk.{i}.attn_k.weight"),
                &[embd / 2, embd],
                GgmlDType::Q4_1,
            );
            add(
                &format!("blk.{i}.attn_v.weight"),
                &[embd / 2, embd],
                GgmlDType::Q4_1,
            );
            add(
                &format!("blk.{i}.attn_output.weight"),
                &[embd, embd],
                GgmlDType::Q4_1,
            );
            add(
                &format!("blk.{i}.ffn_gate.weight"),
                &[ffn, embd],
                GgmlDType::Q4_1,
            );
            add(
                &format!("blk.{i}.ffn_up.weight"),
                &[ffn, embd],
                GgmlDType::Q4_1,
            );
            add(
                &format!("blk.{i}.ffn_down.weight"),
                &[embd, ffn],
                GgmlDType::Q4_1,
            );
        }
        let meta: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("llama.context_length", Value::U32(64)),
            ("llama.embedding_length", Value::U32(embd as u32)),
            ("llama.feed_forward_length", Value::U32(ffn as u32)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(1)),
            ("llama.rope.freq_base", Value::F32(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.vocab_size", Value::U32(vocab as u32)),
        ];
        let mut buf = std::io::Cursor::new(Vec::new());
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut buf, &meta_refs, &tensor_refs).unwrap();
        buf.into_inner()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn prefill_and_token_by_token_agree_and_caches_are_independent() {
        let model = tiny_model();
        assert_eq!(model.config.n_kv_head, 1);
        assert_eq!(model.config.head_dim, 32);
        let tokens = [3u32, 17, 5, 42, 8, 1];

        let mut whole = model.new_cache(8);
        let at_once = model.forward(&tokens, &mut whole).unwrap();
        assert_eq!(at_once.dims(), [48]);
        assert_eq!(whole.len(), tokens.len());

        // Token by token, with a second sequence interleaved on the same weights.
        let (mut one, mut other) = (model.new_cache(2), model.new_cache(8));
        let mut last = None;
        for (i, t) in tokens.iter().enumerate() {
            last = Some(model.forward(&[*t], &mut one).unwrap());
            model.forward(&[(i as u32 * 7) % 48], &mut other).unwrap();
        }
        let diff = max_diff(&at_once, &last.unwrap());
        assert!(
            diff < 1e-3,
            "prefill and incremental logits differ by {diff}"
        );

        // Too long for the context window: a clear error, not a panic.
        let mut cache = model.new_cache(4);
        let err = model.forward(&[1; 65], &mut cache).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
    }

    #[test]
    fn buffer_and_tensor_paths_agree() {
        let mut model = tiny_model();
        assert!(
            model.host.is_some(),
            "Q4_1/Q8_0 weights on the CPU take the buffer path"
        );
        // A prompt, then single tokens, past the caches' initial capacity.
        let steps: [&[u32]; 4] = [&[3, 17, 5, 42, 8], &[1], &[30], &[47]];
        let mut cache = model.new_cache(4);
        assert!(matches!(cache.layers, LayerCaches::Host(_)));
        let host: Vec<Tensor> = steps
            .iter()
            .map(|t| model.forward(t, &mut cache).unwrap())
            .collect();
        let buffers = model.host.take();
        let mut tensor_cache = model.new_cache(4);
        assert!(matches!(tensor_cache.layers, LayerCaches::Tensors(_)));
        for (tokens, want) in steps.iter().zip(&host) {
            let got = model.forward(tokens, &mut tensor_cache).unwrap();
            let diff = max_diff(&got, want);
            assert!(diff < 1e-3, "paths differ by {diff} after {tokens:?}");
        }
        assert_eq!((cache.len(), tensor_cache.len()), (8, 8));
        // A buffer cache cannot feed the tensor path.
        let err = model.forward(&[1], &mut cache).unwrap_err();
        assert!(matches!(err, Error::Model(_)), "{err}");
        model.host = buffers;
    }

    #[test]
    fn every_rows_logits_and_a_truncated_cache_are_those_of_plain_steps() {
        // What prompt-lookup decoding relies on: the logits of each of
        // several fed tokens are those of feeding them one at a time, and a
        // cache truncated back continues as if the rest was never fed.
        let mut model = tiny_model();
        for host in [true, false] {
            if !host {
                model.host = None; // the tensor path (GPUs, CPUs without FMA)
            }
            let prompt = [3, 17, 5, 42];
            let (drafts, next) = ([8, 30, 2], 47);
            let mut plain = model.new_cache(4);
            model.forward(&prompt, &mut plain).unwrap();
            let one_by_one: Vec<Vec<f32>> = drafts
                .iter()
                .map(|&t| model.forward(&[t], &mut plain).unwrap().to_vec1().unwrap())
                .collect();
            let mut cache = model.new_cache(4);
            model.forward(&prompt, &mut cache).unwrap();
            let rows = model
                .forward_batch(&mut [Segment {
                    tokens: &drafts,
                    cache: &mut cache,
                    logits: 3,
                }])
                .unwrap()
                .pop()
                .flatten()
                .unwrap();
            let vocab = rows.len() / 3;
            for (got, want) in rows.chunks_exact(vocab).zip(&one_by_one) {
                let diff = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                match host {
                    true => assert_eq!(got, &want[..]),
                    false => assert!(diff < 1e-4, "rows differ by {diff}"),
                }
            }
            // Keep the first draft only, then feed another token.
            cache.truncate(prompt.len() + 1).unwrap();
            assert_eq!(cache.len(), 5);
            let mut kept = model.new_cache(4);
            model.forward(&prompt, &mut kept).unwrap();
            model.forward(&drafts[..1], &mut kept).unwrap();
            let want = model.forward(&[next], &mut kept).unwrap();
            let got = model.forward(&[next], &mut cache).unwrap();
            assert!(max_diff(&got, &want) == 0.0 || !host, "host path moved");
            assert!(max_diff(&got, &want) < 1e-4);
            // Asking for more rows than fed is refused.
            let err = model
                .forward_batch(&mut [Segment {
                    tokens: &[1],
                    cache: &mut cache,
                    logits: 2,
                }])
                .unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        }
    }

    #[test]
    fn a_q8_0_cache_takes_34_of_64_bytes_and_moves_logits_a_little() {
        let model = tiny_model();
        assert!(model.supports_kv_type(KvType::Q8_0));
        let prompt = [3, 17, 5, 42, 8, 30, 2, 11];
        let mut f16 = model.new_cache(16);
        let mut q8 = model.new_cache_typed(16, None, KvType::Q8_0);
        let a = model.forward(&prompt, &mut f16).unwrap();
        let b = model.forward(&prompt, &mut q8).unwrap();
        let (fb, qb) = (f16.bytes().unwrap(), q8.bytes().unwrap());
        assert_eq!(qb * 64, fb * 34, "{qb} bytes against {fb}");
        let (diff, top) = (max_diff(&a, &b), max_diff(&a, &a.zeros_like().unwrap()));
        assert!(
            // Random weights attend sharply, which 8-bit keys move more
            // than a trained model's (the default model's agreement test
            // bounds those); a wrong block or scale moves them by as much
            // as they are large.
            diff > 0.0 && diff < 0.1 * top,
            "Q8_0 moved the logits by {diff} (largest {top})"
        );
        // Drafts forgotten, then the same next step as a cache that never
        // held them; a prefix copy keeps the kind (and the bits).
        let want = model.forward(&[47], &mut q8).unwrap();
        let mut again = model.new_cache_typed(16, None, KvType::Q8_0);
        model.forward(&prompt, &mut again).unwrap();
        model.forward(&[1, 2], &mut again).unwrap();
        again.truncate(prompt.len()).unwrap();
        assert_eq!(
            max_diff(&model.forward(&[47], &mut again).unwrap(), &want),
            0.0
        );
        let kept = again.prefix(prompt.len()).unwrap();
        let mut copy = model.cache_from_prefix(&kept, prompt.len(), 16);
        assert_eq!(copy.bytes(), Some(qb));
        assert_eq!(
            max_diff(&model.forward(&[47], &mut copy).unwrap(), &want),
            0.0
        );
        assert_eq!("q8_0".parse::<KvType>().unwrap(), KvType::Q8_0);
        assert!("q4_0".parse::<KvType>().is_err());
    }

    #[test]
    fn a_sequence_computes_the_same_alone_and_in_a_batch() {
        let mut model = tiny_model();
        assert!(model.host.is_some());
        same_alone_and_batched(&model);
        // The tensor path (GPUs, CPUs without FMA) batches too.
        model.host = None;
        same_alone_and_batched(&model);
    }

    fn same_alone_and_batched(model: &Llama) {
        // Three sequences: one alone, token by token after a prompt; then the
        // same three in batched steps mixing a prompt chunk, a finished
        // prompt and single decode tokens.
        let prompts: [&[u32]; 3] = [&[3, 17, 5], &[9, 2, 40, 11, 7, 6], &[1]];
        let follow: [u32; 3] = [21, 4, 33];
        let alone: Vec<(Vec<f32>, Vec<f32>)> = prompts
            .iter()
            .zip(follow)
            .map(|(p, next)| {
                let mut c = model.new_cache(8);
                let a = model.forward(p, &mut c).unwrap().to_vec1().unwrap();
                let b = model.forward(&[next], &mut c).unwrap().to_vec1().unwrap();
                (a, b)
            })
            .collect();
        let (mut c0, mut c1, mut c2) = (model.new_cache(8), model.new_cache(8), model.new_cache(8));
        let (c0, c1, c2) = (&mut c0, &mut c1, &mut c2);
        // Step 1: sequence 0's whole prompt, the first half of 1's (no
        // logits wanted), sequence 2's one-token prompt.
        let out = model
            .forward_batch(&mut [
                Segment {
                    tokens: prompts[0],
                    cache: c0,
                    logits: 1,
                },
                Segment {
                    tokens: &prompts[1][..3],
                    cache: c1,
                    logits: 0,
                },
                Segment {
                    tokens: prompts[2],
                    cache: c2,
                    logits: 1,
                },
            ])
            .unwrap();
        assert!(out[1].is_none());
        assert_eq!(out[0].as_ref().unwrap(), &alone[0].0);
        assert_eq!(out[2].as_ref().unwrap(), &alone[2].0);
        // Step 2: decode tokens for 0 and 2, the rest of 1's prompt.
        let out = model
            .forward_batch(&mut [
                Segment {
                    tokens: &[follow[0]],
                    cache: c0,
                    logits: 1,
                },
                Segment {
                    tokens: &prompts[1][3..],
                    cache: c1,
                    logits: 1,
                },
                Segment {
                    tokens: &[follow[2]],
                    cache: c2,
                    logits: 1,
                },
            ])
            .unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &alone[0].1);
        assert_eq!(out[1].as_ref().unwrap(), &alone[1].0);
        assert_eq!(out[2].as_ref().unwrap(), &alone[2].1);
        let out = model
            .forward_batch(&mut [Segment {
                tokens: &[follow[1]],
                cache: c1,
                logits: 1,
            }])
            .unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &alone[1].1);
        assert_eq!((c0.len(), c1.len(), c2.len()), (4, 7, 2));
        // An empty segment is refused before any compute.
        let err = model
            .forward_batch(&mut [Segment {
                tokens: &[],
                cache: c0,
                logits: 1,
            }])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }

    /// The GPU path (candle's CUDA kernels) against the CPU's on the same
    /// weights: a prompt, then single tokens, and the same prompt fed one
    /// token at a time. The kernels quantize activations differently (and
    /// dequantize for larger batches), so logits are compared relative to
    /// their range, and the greedy choice must agree.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_and_cpu_agree() {
        let gpu = Device::new_cuda(0).expect("built with --features cuda: a CUDA GPU is required");
        // One random draw, loaded on both devices.
        let gguf = tiny_gguf();
        let (model, on_gpu) = (load(&gguf, &Device::Cpu), load(&gguf, &gpu));
        let prompt: &[u32] = &[3, 17, 5, 42, 8];
        let steps: [&[u32]; 4] = [prompt, &[1], &[30], &[47]];
        let (mut c, mut g) = (model.new_cache(4), on_gpu.new_cache(4));
        assert!(matches!(g.layers, LayerCaches::Tensors(_)));
        let mut one_by_one = on_gpu.new_cache(4);
        let mut last = None;
        for t in prompt {
            last = Some(on_gpu.forward(&[*t], &mut one_by_one).unwrap());
        }
        let mut worst = 0f32;
        for (i, tokens) in steps.iter().enumerate() {
            let want = model.forward(tokens, &mut c).unwrap();
            let got = on_gpu.forward(tokens, &mut g).unwrap();
            let got = got.to_device(&Device::Cpu).unwrap();
            let range = want
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let rel = max_diff(&got, &want) / range;
            let argmax = |t: &Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            eprintln!(
                "step {i}: GPU vs CPU differ by {rel:.4} of the logits' range {range:.2}; greedy {} vs {}",
                argmax(&got),
                argmax(&want)
            );
            if i == 0 {
                let single = last.take().unwrap().to_device(&Device::Cpu).unwrap();
                eprintln!(
                    "  the prompt one token at a time on the GPU: {:.4} of the range from the CPU, {:.4} from the GPU's batch",
                    max_diff(&single, &want) / range,
                    max_diff(&single, &got) / range
                );
            }
            assert_eq!(argmax(&got), argmax(&want), "greedy choice at step {i}");
            worst = worst.max(rel);
        }
        assert!(
            worst < 0.1,
            "GPU and CPU logits differ by {worst} of their range"
        );
    }

    #[test]
    fn unproven_architectures_are_refused_with_the_supported_list() {
        for arch in ["gemma2", "mistral3", "gpt2", ""] {
            let gguf = tiny_gguf();
            let mut buf = std::io::Cursor::new(&gguf);
            let mut content = gguf_file::Content::read(&mut buf).unwrap();
            content.metadata.insert(
                "general.architecture".into(),
                Value::String(arch.to_string()),
            );
            let err = match Llama::from_gguf(&content, &mut buf, &Device::Cpu) {
                Ok(_) => panic!("architecture {arch:?} loaded"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(&format!("{arch:?}"))
                    && err.contains("supported: llama, qwen2, qwen3, phi3, gemma3"),
                "{err}"
            );
        }
    }

    /// Loading `gguf` fails with an error whose text has `want`.
    fn load_error(gguf: &[u8], want: &str) {
        let mut buf = std::io::Cursor::new(gguf);
        let err = match crate::models::llm::gguf::read_content(&mut buf, "the file") {
            Err(e) => e.to_string(),
            Ok(content) => match Llama::from_gguf(&content, &mut buf, &Device::Cpu) {
                Ok(_) => panic!("a broken file loaded (wanted {want:?})"),
                Err(e) => e.to_string(),
            },
        };
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }

    /// A GGUF v3 header with the given metadata and tensor infos (name,
    /// dims, ggml type id, offset), no data.
    fn raw_gguf(meta: &[(&str, u32)], tensors: &[(&str, &[u64], u32, u64)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((meta.len() as u64).to_le_bytes());
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        for (key, value) in meta {
            string(&mut b, key);
            b.extend(4u32.to_le_bytes()); // u32
            b.extend(value.to_le_bytes());
        }
        for (name, dims, dtype, offset) in tensors {
            string(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(dtype.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        b.resize(b.len() + 64, 0);
        b
    }

    #[test]
    fn broken_files_are_clear_errors_not_panics() {
        let good = tiny_gguf();
        // Cut short: the last tensors' bytes are missing.
        load_error(&good[..good.len() * 4 / 5], "remaining");
        // A tensor whose shape disagrees with the metadata.
        let mut buf = std::io::Cursor::new(&good);
        let mut content = gguf_file::Content::read(&mut buf).unwrap();
        let info = content.tensor_infos.get_mut("blk.1.attn_k.weight").unwrap();
        info.shape = candle_core::Shape::from(vec![16, 64]);
        let err = Llama::from_gguf(&content, &mut buf, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("blk.1.attn_k.weight has shape [16, 64]"),
            "{err}"
        );
        assert!(err.contains("implies [32, 64]"), "{err}");
        // Data said to lie past the end of the file.
        let info = content.tensor_infos.get_mut("blk.1.attn_k.weight").unwrap();
        info.shape = candle_core::Shape::from(vec![32, 64]);
        let offset = std::mem::replace(&mut info.offset, 1 << 40);
        let err = Llama::from_gguf(&content, &mut buf, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("remaining in file"), "{err}");
        // A required tensor missing.
        content
            .tensor_infos
            .get_mut("blk.1.attn_k.weight")
            .unwrap()
            .offset = offset;
        content.tensor_infos.remove("blk.1.ffn_up.weight");
        let err = Llama::from_gguf(&content, &mut buf, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("lacks tensor blk.1.ffn_up.weight"), "{err}");
        // A tensor type candle does not read (IQ2_XXS, id 16).
        load_error(
            &raw_gguf(&[], &[("t", &[256], 16, 0)]),
            "the IQ and TQ types",
        );
        // An alignment of zero (a division by zero inside the parser).
        load_error(
            &raw_gguf(&[("general.alignment", 0)], &[]),
            "header is inconsistent",
        );
        // Lying counts and sizes: no huge allocation, an error.
        let mut lying = raw_gguf(&[], &[]);
        lying[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        load_error(&lying, "not a readable GGUF file");
        load_error(
            &raw_gguf(&[], &[("t", &[1 << 40, 1 << 40], 0, 0)]),
            "architecture",
        );
    }

    #[test]
    fn sliding_window_keys_are_ignored_outside_gemma() {
        // Phi-3 mini and Qwen 2 files can carry one; llama.cpp ignores it.
        let gguf = tiny_gguf();
        let mut buf = std::io::Cursor::new(&gguf);
        let mut content = gguf_file::Content::read(&mut buf).unwrap();
        content
            .metadata
            .insert("llama.attention.sliding_window".into(), Value::U32(4));
        let model = Llama::from_gguf(&content, &mut buf, &Device::Cpu).unwrap();
        assert!(model.config.sliding.is_none());
        assert_eq!(model.config.window(1), usize::MAX);
    }

    #[test]
    fn causal_mask_lets_each_query_see_the_prefix_and_itself() {
        assert!(attention_mask(1, 3, usize::MAX, &Device::Cpu)
            .unwrap()
            .is_none());
        let m = attention_mask(2, 3, usize::MAX, &Device::Cpu)
            .unwrap()
            .unwrap();
        let m: Vec<Vec<f32>> = m.to_vec2().unwrap();
        assert_eq!(m[0][..4], [0.0; 4]);
        assert_eq!(m[0][4], f32::NEG_INFINITY);
        assert_eq!(m[1], [0.0; 5]);
    }
}
