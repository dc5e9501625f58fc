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

use super::{Linear, Llama};
use crate::error::{Error, Result};
use crate::models::llm::qmatmul::QMatrix;
use crate::simd;
use half::f16;

/// The small per-model vectors the buffer path reads, copied out of their
/// tensors at load.
pub(super) struct HostModel {
    pub attn_norm: Vec<Vec<f32>>,
    pub ffn_norm: Vec<Vec<f32>>,
    pub norm: Vec<f32>,
    /// RoPE tables, `[context_length, head_dim / 2]`.
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// One layer's cached keys and values: a row of `n_kv_head * head_dim` per
/// position, at f16 precision held in f32.
pub(super) struct HostKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl HostKv {
    pub fn with_capacity(values: usize) -> Self {
        Self {
            k: Vec::with_capacity(values),
            v: Vec::with_capacity(values),
        }
    }

    /// A copy of the first `values` keys and values, with room for
    /// `capacity` in all.
    pub fn prefix(&self, values: usize, capacity: usize) -> Self {
        let copy = |x: &Vec<f32>| {
            let mut out = Vec::with_capacity(capacity.max(values));
            out.extend_from_slice(&x[..values]);
            out
        };
        Self {
            k: copy(&self.k),
            v: copy(&self.v),
        }
    }

    /// Values held per layer (as many keys).
    pub fn values(&self) -> usize {
        self.k.len()
    }

    /// Bytes held (keys and values).
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f32>()
    }
}

/// Whether this CPU can run the buffer path: its kernels are compiled with
/// FMA on x86-64 (elsewhere they are portable code).
pub(super) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// llama.cpp (without flash attention) sizes the attended cache in
/// multiples of this many cells.
const KV_PAD: usize = 32;

fn own(l: &Linear) -> Result<&QMatrix> {
    l.as_own().ok_or_else(|| {
        Error::Model("the buffer forward pass needs hearth's kernels for every matrix".into())
    })
}

/// ggml's `rms_norm` followed by its multiplication by the weight: the sum
/// of squares in f64, `scale = 1 / sqrt(mean + eps)` in f32, `x * scale * w`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let n = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let sum: f64 = row.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, a)| v * scale * a));
    }
    out
}

fn round_f16(xs: &mut [f32]) {
    for x in xs {
        *x = f16::from_f32(*x).to_f32();
    }
}

/// Rotate one head in place by the angles of one position (`cos`, `sin`:
/// `head_dim / 2` values): pairs `(2i, 2i+1)`, or `(i, i + d/2)` for NeoX.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], neox: bool) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = if neox {
            (i, i + half)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * cos[i] - x1 * sin[i];
        x[b] = x0 * sin[i] + x1 * cos[i];
    }
}

/// SwiGLU as ggml computes it: `g / (1 + exp(-g)) * u`, exp as in
/// [`simd::exp_ggml`] for whole groups of 8, the C library's for the rest.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "fma"))]
unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let whole = gate.len() / 8 * 8;
    for (i, (g, u)) in gate.iter_mut().zip(up).enumerate() {
        let e = if i < whole {
            simd::exp_ggml(-*g)
        } else {
            (-*g).exp()
        };
        *g = *g / (1.0 + e) * u;
    }
}

/// ggml's `soft_max` of `xs * scale` in place: exp as in [`simd::exp_ggml`] in
/// groups of 8 (each group summed in f32 as ggml's AVX2 code does, the
/// groups in f64), the C library's exp for the rest, then the result
/// rounded through f16 as llama.cpp rounds attention weights.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "fma"))]
unsafe fn softmax_f16(xs: &mut [f32], scale: f32) {
    for x in xs.iter_mut() {
        *x *= scale;
    }
    let max = xs.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0f64;
    let mut groups = xs.chunks_exact_mut(8);
    for group in &mut groups {
        for x in group.iter_mut() {
            *x = simd::exp_ggml(*x - max);
        }
        let l: [f32; 4] = std::array::from_fn(|i| group[4 + i] + group[i]);
        sum += ((l[0] + l[2]) + (l[1] + l[3])) as f64;
    }
    for x in groups.into_remainder() {
        *x = (*x - max).exp();
        sum += *x as f64;
    }
    let inv = (1.0 / sum) as f32;
    for x in xs.iter_mut() {
        *x = f16::from_f32(*x * inv).to_f32();
    }
}

/// A dot product as llamafile's tinyBLAS computes it on AVX2 (ggml's
/// matrix product for f16 operands whose length is a multiple of 8): one
/// 8-lane FMA accumulator, then the lanes summed high half onto low half,
/// then pairwise. `a` and `b` hold f16 values (in f32).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "fma"))]
unsafe fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let l: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
    (l[0] + l[2]) + (l[1] + l[3])
}

/// `dst = sum_t weights[t] * v_t` (v_t: `values[t * stride + at..][..dst.len()]`)
/// in the order of [`dot8`] over positions, as ggml multiplies the
/// attention weights by the transposed value cache: position `t` goes to
/// lane `t % 8`, and the lanes are summed as [`dot8`] sums them.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "fma"))]
unsafe fn weighted_sum(
    weights: &[f32],
    values: &[f32],
    stride: usize,
    at: usize,
    lanes: &mut [f32],
    dst: &mut [f32],
) {
    let hd = dst.len();
    lanes.fill(0.0);
    for (t, w) in weights.iter().enumerate() {
        let lane = &mut lanes[(t % 8) * hd..][..hd];
        let v = &values[t * stride + at..][..hd];
        for (acc, v) in lane.iter_mut().zip(v) {
            *acc = w.mul_add(*v, *acc);
        }
    }
    for (d, out) in dst.iter_mut().enumerate() {
        let l: [f32; 4] = std::array::from_fn(|i| lanes[(4 + i) * hd + d] + lanes[i * hd + d]);
        *out = (l[0] + l[2]) + (l[1] + l[3]);
    }
}

/// One sequence's share of a batched step on buffers: its new tokens, the
/// position of the first, its per-layer caches, and whether its logits are
/// wanted (a prompt chunk that does not end the prompt needs none).
pub(super) struct HostSegment<'a> {
    pub tokens: &'a [u32],
    pub pos: usize,
    pub cache: &'a mut [HostKv],
    pub logits: bool,
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
        let n_rep = cfg.n_head / cfg.n_kv_head;
        let eps = cfg.rms_eps as f32;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let half = hd / 2;
        // Row r belongs to segment seg_of[r] at position pos_of[r].
        let (mut seg_of, mut pos_of) = (Vec::new(), Vec::new());
        for (i, s) in segments.iter().enumerate() {
            seg_of.extend(std::iter::repeat_n(i, s.tokens.len()));
            pos_of.extend(s.pos..s.pos + s.tokens.len());
        }
        let rows = seg_of.len();
        let table = self.embed.embeddings();
        let mut x = Vec::with_capacity(rows * d);
        for s in segments.iter() {
            for &t in s.tokens {
                x.extend(table.get(t as usize)?.to_vec1::<f32>()?);
            }
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &host.attn_norm[li], eps);
            let qkv = [own(&layer.wq)?, own(&layer.wk)?, own(&layer.wv)?];
            let [mut q, mut k, mut v]: [Vec<f32>; 3] = QMatrix::matmul_many(&qkv, &h)?
                .try_into()
                .expect("three products");
            for (r, &p) in pos_of.iter().enumerate() {
                let (cos, sin) = (
                    &host.cos[p * half..(p + 1) * half],
                    &host.sin[p * half..(p + 1) * half],
                );
                for head in q[r * q_dim..(r + 1) * q_dim].chunks_exact_mut(hd) {
                    rope(head, cos, sin, cfg.rope_is_neox);
                }
                for head in k[r * kv_dim..(r + 1) * kv_dim].chunks_exact_mut(hd) {
                    rope(head, cos, sin, cfg.rope_is_neox);
                }
            }
            // The same f16 roundings as the tensor path (see there).
            round_f16(&mut q);
            round_f16(&mut k);
            round_f16(&mut v);
            let mut first = 0;
            for s in segments.iter_mut() {
                let n = s.tokens.len() * kv_dim;
                let kv = &mut s.cache[li];
                kv.k.extend_from_slice(&k[first..first + n]);
                kv.v.extend_from_slice(&v[first..first + n]);
                first += n;
            }

            // Attention, one work item per (row, head), each row against its
            // own sequence's cache.
            let caches: Vec<(&[f32], &[f32])> = segments
                .iter()
                .map(|s| (s.cache[li].k.as_slice(), s.cache[li].v.as_slice()))
                .collect();
            let mut y = vec![0f32; rows * q_dim];
            let out = y.as_mut_ptr() as usize;
            candle_core::utils::barrier_pool().execute_chunked(rows * cfg.n_head, |items| {
                let mut scores = Vec::new();
                let mut lanes = vec![0f32; 8 * hd];
                for item in items {
                    let (r, head) = (item / cfg.n_head, item % cfg.n_head);
                    let (keys, values) = caches[seg_of[r]];
                    let at = (head / n_rep) * hd;
                    let query = &q[r * q_dim + head * hd..][..hd];
                    let seen = pos_of[r] + 1;
                    scores.clear();
                    scores.extend((0..seen).map(|t| {
                        // SAFETY: the buffer path runs only where `supported()`.
                        unsafe { dot8(query, &keys[t * kv_dim + at..][..hd]) }
                    }));
                    // llama.cpp attends over the cache padded to KV_PAD
                    // cells, the padding masked out.
                    scores.resize(seen.next_multiple_of(KV_PAD), f32::NEG_INFINITY);
                    // SAFETY: as above.
                    unsafe { softmax_f16(&mut scores, scale) };
                    // SAFETY: each (row, head) item owns its `hd` outputs,
                    // and `y` holds rows * q_dim values.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            (out as *mut f32).add(r * q_dim + head * hd),
                            hd,
                        )
                    };
                    // SAFETY: `supported()`, as for `dot8`.
                    unsafe { weighted_sum(&scores[..seen], values, kv_dim, at, &mut lanes, dst) };
                }
            });
            let o = own(&layer.wo)?.matmul(&y)?;
            for (x, o) in x.iter_mut().zip(&o) {
                *x += o;
            }

            let h = rms_norm(&x, &host.ffn_norm[li], eps);
            let gate_up = [own(&layer.w_gate)?, own(&layer.w_up)?];
            let [mut gate, up]: [Vec<f32>; 2] = QMatrix::matmul_many(&gate_up, &h)?
                .try_into()
                .expect("two products");
            // SAFETY: the buffer path runs only where `supported()`.
            unsafe { swiglu(&mut gate, &up) };
            let down = own(&layer.w_down)?.matmul(&gate)?;
            for (x, y) in x.iter_mut().zip(&down) {
                *x += y;
            }
        }
        // The last row of each segment that wants logits, through the
        // output layer together.
        let mut last = Vec::new();
        let mut end = 0;
        for s in segments.iter() {
            end += s.tokens.len();
            if s.logits {
                last.extend(rms_norm(&x[(end - 1) * d..end * d], &host.norm, eps));
            }
        }
        if last.is_empty() {
            return Ok(segments.iter().map(|_| None).collect());
        }
        let logits = own(&self.output)?.matmul(&last)?;
        let mut rows = logits.chunks_exact(logits.len() / (last.len() / d));
        Ok(segments
            .iter()
            .map(|s| {
                s.logits
                    .then(|| rows.next().expect("a row per segment").to_vec())
            })
            .collect())
    }
}
