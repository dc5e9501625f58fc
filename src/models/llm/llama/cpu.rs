//! The forward pass on the CPU over plain f32 buffers, used when every
//! weight matrix goes through hearth's kernels ([`QMatrix`]).
//!
//! A decode step through candle's tensors ran ~30 tensor ops per layer,
//! each allocating its result, which cost more than the matrix products
//! themselves. Here keys and values are appended to one growing buffer per
//! layer and attention reads them in place; thread-pool dispatches per
//! layer: q/k/v together, the attention heads, the output projection,
//! gate/up together, down.
//!
//! The arithmetic is llama.cpp's (ggml on AVX2, no flash attention) where
//! it decides greedy output at near-ties: RMSNorm summed in f64, ggml's
//! polynomial `exp` in SwiGLU and softmax, attention dot products and the
//! weighted sum of values in tinyBLAS's lane order over f16-rounded
//! operands, the cache padded to 32 cells. With it, 130 of the 132
//! teacher-forced reference tokens are llama.cpp's choice (the tensor path:
//! 128).

use super::KvType;
use super::{Linear, Llama, Proj};
use crate::error::{Error, Result};
use crate::models::llm::lora::{Adapter, Target};
use half::f16;
use hearth_kernels::decoder::{
    self, add_into, dequantize_q8_0_pair, push_f16, push_q8_0, rms_norm, rope_rows, round_f16,
    Heads, KvBlock,
};
use hearth_kernels::quant::QMatrix;

/// The small per-model vectors the buffer path reads, copied out of their
/// tensors at load.
pub(super) struct HostModel {
    pub layers: Vec<HostLayer>,
    pub norm: Vec<f32>,
    /// RoPE tables (cos, sin), `[context_length, head_dim / 2]` each: the
    /// model's, then the sliding-window layers' when they differ.
    pub ropes: Vec<(Vec<f32>, Vec<f32>)>,
}

/// One layer's norm weights as plain vectors (the biases are read from
/// the layer's `Bias`, which holds both forms).
pub(super) struct HostLayer {
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// Per-head norms of queries and keys, `[head_dim]` each (Qwen 3).
    pub qk_norm: Option<[Vec<f32>; 2]>,
    /// Norms of the attention's and the feed-forward's outputs (Gemma).
    pub post_norms: Option<[Vec<f32>; 2]>,
}

/// One layer's cached keys and values: a row of `n_kv_head * head_dim` per
/// position, in f16 (the values are rounded through f16 before they are
/// cached, so nothing is lost) or, with `limits.kv_cache_type = "q8_0"`,
/// in Q8_0 blocks of 32 (47% fewer bytes; attention reads them back as
/// f16).
pub(super) enum HostKv {
    /// Keys, then values.
    F16([Vec<f16>; 2]),
    Q8_0([Vec<KvBlock>; 2]),
}

/// The first `n` of `x`, with room for `capacity`.
fn copy<T: Copy>(x: &[T], n: usize, capacity: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(capacity.max(n));
    out.extend_from_slice(&x[..n]);
    out
}

impl HostKv {
    pub fn with_capacity(values: usize, kind: KvType) -> Self {
        match kind {
            KvType::F16 => HostKv::F16(std::array::from_fn(|_| Vec::with_capacity(values))),
            KvType::Q8_0 => HostKv::Q8_0(std::array::from_fn(|_| Vec::with_capacity(values / 32))),
        }
    }

    /// A copy of the first `values` keys and values, with room for
    /// `capacity` in all.
    pub fn prefix(&self, values: usize, capacity: usize) -> Self {
        match self {
            HostKv::F16(kv) => HostKv::F16(kv.each_ref().map(|x| copy(x, values, capacity))),
            HostKv::Q8_0(kv) => {
                HostKv::Q8_0(kv.each_ref().map(|b| copy(b, values / 32, capacity / 32)))
            }
        }
    }

    /// Keep the first `len` of the `held` positions.
    pub fn truncate(&mut self, len: usize, held: usize) {
        let values = self.values() / held.max(1) * len;
        match self {
            HostKv::F16(kv) => kv.iter_mut().for_each(|x| x.truncate(values)),
            HostKv::Q8_0(kv) => kv.iter_mut().for_each(|b| b.truncate(values / 32)),
        }
    }

    /// Values held per layer (as many keys).
    pub fn values(&self) -> usize {
        match self {
            HostKv::F16([k, _]) => k.len(),
            HostKv::Q8_0([k, _]) => k.len() * 32,
        }
    }

    /// Bytes held (keys and values).
    pub fn bytes(&self) -> usize {
        match self {
            HostKv::F16([k, v]) => std::mem::size_of_val(&k[..]) + std::mem::size_of_val(&v[..]),
            HostKv::Q8_0([k, v]) => std::mem::size_of_val(&k[..]) + std::mem::size_of_val(&v[..]),
        }
    }

    /// Append rows of keys and values.
    fn push(&mut self, k: &[f32], v: &[f32]) {
        match self {
            HostKv::F16([kc, vc]) => {
                push_f16(kc, k);
                push_f16(vc, v);
            }
            HostKv::Q8_0([kc, vc]) => {
                push_q8_0(kc, k);
                push_q8_0(vc, v);
            }
        }
    }

    /// Keys and values as f16: in place, or a Q8_0 cache dequantized into
    /// `scratch`.
    fn view<'a>(&'a self, scratch: &'a mut [Vec<f16>; 2]) -> (&'a [f16], &'a [f16]) {
        match self {
            HostKv::F16([k, v]) => (k, v),
            HostKv::Q8_0([k, v]) => {
                let [sk, sv] = scratch;
                dequantize_q8_0_pair([k, v], [sk, sv]);
                (sk, sv)
            }
        }
    }
}

/// Whether this CPU can run the buffer path (see [`decoder::supported`]).
pub(super) fn supported() -> bool {
    decoder::supported()
}

fn own(l: &Linear) -> Result<&QMatrix> {
    l.as_own().ok_or_else(|| {
        Error::Model("the buffer forward pass needs hearth's kernels for every matrix".into())
    })
}

/// One sequence's share of a batched step on buffers: its new tokens, the
/// position of the first, its per-layer caches, and how many of its last
/// rows' logits are wanted (a prompt chunk that does not end the prompt
/// needs none).
pub(super) struct HostSegment<'a> {
    pub tokens: &'a [u32],
    pub pos: usize,
    pub cache: &'a mut [HostKv],
    pub logits: usize,
    /// The LoRA adapter this sequence runs with, unmerged.
    pub adapter: Option<&'a Adapter>,
}

/// Add each segment's adapter update of `target` in layer `layer` to its
/// rows of `out` (`x`: the product's input rows).
fn add_lora(segments: &[HostSegment], layer: usize, target: Target, x: &[f32], out: &mut [f32]) {
    let rows: usize = segments.iter().map(|s| s.tokens.len()).sum();
    if rows == 0 {
        return;
    }
    let (k, n) = (x.len() / rows, out.len() / rows);
    let mut first = 0;
    for s in segments {
        let len = s.tokens.len();
        if let Some(pair) = s.adapter.and_then(|a| a.pair(layer, target)) {
            pair.add_rows(
                &x[first * k..(first + len) * k],
                &mut out[first * n..(first + len) * n],
            );
        }
        first += len;
    }
}

/// The products of rows `x` by each matrix of `proj` (one thread-pool
/// dispatch for all): a fused matrix's output rows are cut into the parts.
fn products<const N: usize>(proj: &Proj<N>, x: &[f32]) -> Result<[Vec<f32>; N]> {
    let outs = match proj {
        Proj::Separate(ws) => {
            let ws: Vec<&QMatrix> = ws.iter().map(own).collect::<Result<_>>()?;
            QMatrix::matmul_many(&ws, x)?
        }
        Proj::Fused(w, widths) => {
            let y = own(w)?.matmul(x)?;
            let total: usize = widths.iter().sum();
            let mut outs: Vec<Vec<f32>> = widths
                .iter()
                .map(|n| Vec::with_capacity(y.len() / total * n))
                .collect();
            for row in y.chunks_exact(total) {
                let mut start = 0;
                for (out, &n) in outs.iter_mut().zip(widths) {
                    out.extend_from_slice(&row[start..start + n]);
                    start += n;
                }
            }
            outs
        }
    };
    Ok(outs
        .try_into()
        .map_err(|_| ())
        .expect("one product per matrix"))
}

/// Add `bias` to every row of `x`.
fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_into(row, bias);
    }
}

impl Llama {
    /// [`Llama::forward_batch`] on buffers: every segment's rows go through
    /// each matrix product together (the weights are read once per step for
    /// the whole batch); RoPE, the cache and attention are per sequence.
    /// Each row's arithmetic is the same whatever else is in the batch, so a
    /// sequence's output does not depend on its neighbours.
    pub(super) fn forward_host(
        &self,
        host: &HostModel,
        segments: &mut [HostSegment],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let cfg = &self.config;
        let (d, hd) = (cfg.n_embd, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.n_head * hd, cfg.n_kv_head * hd);
        let eps = cfg.rms_eps as f32;
        let (q_scale, k_scale) = cfg.attention_scales();
        let heads = |kind: usize| Heads {
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: hd,
            scale: k_scale,
            window: cfg.window(kind),
        };
        // Row r belongs to segment seg_of[r] at position pos_of[r].
        let (mut seg_of, mut pos_of) = (Vec::new(), Vec::new());
        for (i, s) in segments.iter().enumerate() {
            seg_of.extend(std::iter::repeat_n(i, s.tokens.len()));
            pos_of.extend(s.pos..s.pos + s.tokens.len());
        }
        let mut x = Vec::with_capacity(seg_of.len() * d);
        for s in segments.iter() {
            for &t in s.tokens {
                x.extend(self.embedding_row(t)?);
            }
        }
        let neox = cfg.family.rope_neox;
        if cfg.family.gemma {
            let scale = (d as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let mut scratch: Vec<[Vec<f16>; 2]> = segments.iter().map(|_| Default::default()).collect();
        for ((li, layer), hl) in self.layers.iter().enumerate().zip(&host.layers) {
            let kind = cfg.layer_kind(li);
            let (cos, sin) = &host.ropes[kind];
            let tables = (cos.as_slice(), sin.as_slice());
            let h = rms_norm(&x, &hl.attn_norm, eps);
            let [mut q, mut k, mut v] = products(&layer.qkv, &h)?;
            add_lora(segments, li, Target::Q, &h, &mut q);
            add_lora(segments, li, Target::K, &h, &mut k);
            add_lora(segments, li, Target::V, &h, &mut v);
            if let Some([bq, bk, bv]) = &layer.qkv_bias {
                add_rows(&mut q, &bq.host);
                add_rows(&mut k, &bk.host);
                add_rows(&mut v, &bv.host);
            }
            if let Some([qn, kn]) = &hl.qk_norm {
                // Each head's slice is a row of head_dim values.
                q = rms_norm(&q, qn, eps);
                k = rms_norm(&k, kn, eps);
            }
            rope_rows(&mut q, q_dim, &pos_of, tables, hd, neox);
            rope_rows(&mut k, kv_dim, &pos_of, tables, hd, neox);
            if q_scale != 1.0 {
                q.iter_mut().for_each(|v| *v *= q_scale);
            }
            // The same f16 roundings as the tensor path (see there).
            round_f16(&mut q);
            round_f16(&mut k);
            round_f16(&mut v);
            let mut first = 0;
            for s in segments.iter_mut() {
                let n = s.tokens.len() * kv_dim;
                s.cache[li].push(&k[first..first + n], &v[first..first + n]);
                first += n;
            }

            // Attention, each row against its own sequence's cache (a
            // Q8_0 cache read back to f16 in `scratch`).
            let caches: Vec<(&[f16], &[f16])> = segments
                .iter()
                .zip(scratch.iter_mut())
                .map(|(s, scratch)| s.cache[li].view(scratch))
                .collect();
            // SAFETY: the buffer path runs only where `supported()`.
            let y = unsafe { decoder::attention(heads(kind), &q, &caches, &seg_of, &pos_of) };
            let mut out = own(&layer.wo)?.matmul(&y)?;
            add_lora(segments, li, Target::O, &y, &mut out);
            let mut y = out;
            if let Some([post, _]) = &hl.post_norms {
                y = rms_norm(&y, post, eps);
            }
            add_into(&mut x, &y);

            let h = rms_norm(&x, &hl.ffn_norm, eps);
            let [mut gate, mut up] = products(&layer.gate_up, &h)?;
            add_lora(segments, li, Target::Gate, &h, &mut gate);
            add_lora(segments, li, Target::Up, &h, &mut up);
            if cfg.family.gemma {
                decoder::geglu(&mut gate, &up);
            } else {
                // SAFETY: as for attention.
                unsafe { decoder::swiglu(&mut gate, &up) };
            }
            let mut y = own(&layer.w_down)?.matmul(&gate)?;
            add_lora(segments, li, Target::Down, &gate, &mut y);
            if let Some([_, post]) = &hl.post_norms {
                y = rms_norm(&y, post, eps);
            }
            add_into(&mut x, &y);
        }
        // The last rows of each segment that wants logits, through the
        // output layer together.
        let mut last = Vec::new();
        let mut end = 0;
        for s in segments.iter() {
            end += s.tokens.len();
            if s.logits > 0 {
                let rows = &x[(end - s.logits) * d..end * d];
                last.extend(rms_norm(rows, &host.norm, eps));
            }
        }
        if last.is_empty() {
            return Ok(segments.iter().map(|_| None).collect());
        }
        let mut logits = own(&self.output)?.matmul(&last)?;
        let vocab = logits.len() / (last.len() / d);
        for row in logits.chunks_exact_mut(vocab) {
            cfg.soft_cap(row);
        }
        let mut first = 0;
        Ok(segments
            .iter()
            .map(|s| {
                (s.logits > 0).then(|| {
                    first += s.logits * vocab;
                    logits[first - s.logits * vocab..first].to_vec()
                })
            })
            .collect())
    }
}
