//! The BERT encoder on plain buffers, for the CPU: what hearth's embedder
//! runs where the CPU has AVX2 and FMA and the model is a plain BERT
//! (absolute positions, erf GELU or ReLU). candle's `BertModel` stays for
//! GPUs and other variants.
//!
//! What makes it faster than the tensor version (whose profile at batch 32
//! was half matrix products, a sixth `erf` from the pure-Rust `libm`, and the
//! rest exp, masks, copies between head layouts and thread-pool handoffs):
//! - No padding: a work item's texts lie end to end, one row per token, and
//!   attention runs per text over its own rows, so there is no mask.
//! - One matrix product per projection for all of an item's tokens (query,
//!   key and value fused into one `[3h, h]` matrix), on the `gemm` crate
//!   that candle itself uses, with the bias preloaded into the output.
//!   Attention's two products per head read the fused projection in place
//!   through strides: no transposes, no copies.
//! - GELU's `erf` by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7,
//!   the formula PyTorch's vectorised `erf` uses) and softmax's exp by a
//!   branch-free polynomial ([`simd::exp_fast`]), both vectorised by the
//!   compiler; residual and LayerNorm in one pass.
//! - Texts are shared out as whole work items, each run start to end by one
//!   thread of candle's rayon pool: no synchronisation inside the model.

use crate::simd;
use crate::wide_panels::{Bf16, Bf16Panels, Format};
use crate::{Error, Result};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Tokens per work item: large enough that each matrix product amortises
/// packing its weights, small enough that activations stay in cache.
const ITEM_TOKENS: usize = 512;

/// Whether this CPU can run the buffer path (its kernels are compiled for
/// AVX2 and FMA).
pub fn supported() -> bool {
    simd::has_avx2_fma()
}

/// A linear layer `y = x W^T + b`, `W` as PyTorch stores it: `[n, k]`.
struct Dense {
    /// `W` in f32; empty once packed to `panels`, which then do every
    /// product.
    w: Vec<f32>,
    b: Vec<f32>,
    n: usize,
    k: usize,
    /// `W` packed for bf16 products, where [`Precision`] and the CPU let
    /// them run.
    panels: Option<Bf16Panels>,
}

/// The arithmetic of the encoder's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// bf16 products (f32 sums) where the CPU has AVX512-BF16, f32
    /// elsewhere: about 1.5 times the speed, cosine above 0.9999 to the f32
    /// model's vectors.
    #[default]
    Auto,
    /// f32 products everywhere.
    F32,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    qkv: Dense,
    out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    ffn_norm: Norm,
}

#[derive(Clone, Copy)]
enum Act {
    Gelu,
    Relu,
}

/// One text's tokens (no padding).
pub struct Text<'a> {
    pub ids: &'a [u32],
    pub types: &'a [u32],
}

/// A BERT encoder with mean pooling and L2 normalisation.
pub struct HostBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    act: Act,
    vocab: usize,
    types: usize,
    positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

impl HostBert {
    /// The model in `vb` described by `config` (config.json), its products
    /// in `precision`, or `None` when it needs something this path lacks
    /// (candle's model runs then).
    pub fn load(
        vb: &VarBuilder,
        config: &serde_json::Value,
        precision: Precision,
    ) -> Result<Option<Self>> {
        let act = match config["hidden_act"].as_str() {
            Some("gelu") => Act::Gelu,
            Some("relu") => Act::Relu,
            _ => return Ok(None),
        };
        if config["position_embedding_type"]
            .as_str()
            .is_some_and(|p| p != "absolute")
        {
            return Ok(None);
        }
        let size = |key: &str| -> Result<usize> {
            config[key]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| Error::Model(format!("config.json has no {key}")))
        };
        let (hidden, heads, inter) = (
            size("hidden_size")?,
            size("num_attention_heads")?,
            size("intermediate_size")?,
        );
        let (vocab, positions) = (size("vocab_size")?, size("max_position_embeddings")?);
        let types = config["type_vocab_size"].as_u64().unwrap_or(2) as usize;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "hidden size {hidden} is not a multiple of {heads} heads"
            )));
        }
        let eps = config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
        // Weights at the root (sentence-transformers' export) or under the
        // model type (a full checkpoint), as candle's loader accepts them.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb.clone()
        } else {
            vb.pp(config["model_type"].as_str().unwrap_or("bert"))
        };
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = vb
                .get(shape, name)
                .map_err(|e| Error::Model(format!("BERT weight {name}: {e}")))?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let dense = |prefix: &str, n: usize, k: usize| -> Result<Dense> {
            Ok(Dense {
                w: get(&format!("{prefix}.weight"), &[n, k])?,
                b: get(&format!("{prefix}.bias"), &[n])?,
                n,
                k,
                panels: None,
            })
        };
        let norm = |prefix: &str| -> Result<Norm> {
            Ok(Norm {
                w: get(&format!("{prefix}.weight"), &[hidden])?,
                b: get(&format!("{prefix}.bias"), &[hidden])?,
            })
        };
        let mut layers = Vec::new();
        for i in 0..size("num_hidden_layers")? {
            let p = format!("encoder.layer.{i}");
            let [q, k, v] = ["query", "key", "value"]
                .map(|name| dense(&format!("{p}.attention.self.{name}"), hidden, hidden));
            let (q, k, v) = (q?, k?, v?);
            let qkv = Dense {
                w: [q.w, k.w, v.w].concat(),
                b: [q.b, k.b, v.b].concat(),
                n: 3 * hidden,
                k: hidden,
                panels: None,
            };
            layers.push(Layer {
                qkv,
                out: dense(&format!("{p}.attention.output.dense"), hidden, hidden)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: dense(&format!("{p}.intermediate.dense"), inter, hidden)?,
                down: dense(&format!("{p}.output.dense"), hidden, inter)?,
                ffn_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        if precision == Precision::Auto && Bf16::available() {
            for layer in &mut layers {
                for d in [
                    &mut layer.qkv,
                    &mut layer.out,
                    &mut layer.up,
                    &mut layer.down,
                ] {
                    d.panels = Bf16Panels::pack(&d.w, d.n, d.k);
                    if d.panels.is_some() {
                        d.w = Vec::new();
                    }
                }
            }
        }
        Ok(Some(Self {
            hidden,
            heads,
            eps,
            act,
            vocab,
            types,
            positions,
            word: get("embeddings.word_embeddings.weight", &[vocab, hidden])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[positions, hidden],
            )?,
            token_type: get("embeddings.token_type_embeddings.weight", &[types, hidden])?,
            emb_norm: norm("embeddings.LayerNorm")?,
            layers,
        }))
    }

    /// Whether the matrix products run in bf16.
    pub fn bf16(&self) -> bool {
        self.layers.iter().any(|l| l.qkv.panels.is_some())
    }

    /// Unit-length mean-pooled embeddings of `texts`, in order. Texts are
    /// grouped into work items (see [`work_items`]) run on candle's rayon pool.
    pub fn embed(&self, texts: &[Text]) -> Result<Vec<Vec<f32>>> {
        for t in texts {
            if t.ids.is_empty() || t.ids.len() > self.positions || t.types.len() != t.ids.len() {
                return Err(Error::Model(format!(
                    "cannot embed {} tokens (1 to {} per text)",
                    t.ids.len(),
                    self.positions
                )));
            }
            if let Some(id) = t.ids.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(Error::Model(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
            if let Some(ty) = t.types.iter().find(|&&ty| ty as usize >= self.types) {
                return Err(Error::Model(format!(
                    "token type {ty} is outside the model's"
                )));
            }
        }
        let items = work_items(texts, candle_core::utils::get_num_threads());
        // candle's rayon pool, not the barrier pool the LLM's kernels use:
        // a long embedding batch must not hold generation up behind it.
        let results: Vec<Vec<Vec<f32>>> = candle_core::utils::with_threadpool(|| {
            items
                .par_iter()
                .map(|item| {
                    let group: Vec<&Text> = item.iter().map(|&t| &texts[t]).collect();
                    // SAFETY: `supported()` was checked before this model was made.
                    unsafe { self.forward(&group) }
                })
                .collect()
        });
        let mut out = vec![Vec::new(); texts.len()];
        for (item, vectors) in items.iter().zip(results) {
            for (&t, v) in item.iter().zip(vectors) {
                out[t] = v;
            }
        }
        Ok(out)
    }

    /// The encoder on one work item: pooled, normalised vectors per text.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    unsafe fn forward(&self, texts: &[&Text]) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let lens: Vec<usize> = texts.iter().map(|t| t.ids.len()).collect();
        let rows: usize = lens.iter().sum();
        let mut x = vec![0f32; rows * h];
        let mut row = 0;
        for t in texts {
            for (pos, (&id, &ty)) in t.ids.iter().zip(t.types).enumerate() {
                let dst = &mut x[row * h..][..h];
                let word = &self.word[id as usize * h..][..h];
                let position = &self.position[pos * h..][..h];
                let token_type = &self.token_type[ty as usize * h..][..h];
                for i in 0..h {
                    dst[i] = word[i] + position[i] + token_type[i];
                }
                layer_norm(dst, &self.emb_norm, self.eps);
                row += 1;
            }
        }
        let inter = self.layers.first().map_or(0, |l| l.up.n);
        let longest = lens.iter().copied().max().unwrap_or(0);
        let mut qkv = vec![0f32; rows * 3 * h];
        let mut ctx = vec![0f32; rows * h];
        let mut tmp = vec![0f32; rows * h];
        let mut mid = vec![0f32; rows * inter];
        let mut scores = vec![0f32; longest * longest];
        for layer in &self.layers {
            dense(&layer.qkv, &x, &mut qkv, rows);
            self.attention(&qkv, &lens, &mut scores, &mut ctx);
            dense(&layer.out, &ctx, &mut tmp, rows);
            add_norm(&mut x, &tmp, &layer.attn_norm, self.eps);
            dense(&layer.up, &x, &mut mid, rows);
            match self.act {
                Act::Gelu => gelu(&mut mid),
                Act::Relu => mid.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
            dense(&layer.down, &mid, &mut tmp, rows);
            add_norm(&mut x, &tmp, &layer.ffn_norm, self.eps);
        }
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                let mut mean = vec![0f32; h];
                for r in start..start + len {
                    for (m, v) in mean.iter_mut().zip(&x[r * h..(r + 1) * h]) {
                        *m += v;
                    }
                }
                start += len;
                let inv = 1.0 / len as f32;
                mean.iter_mut().for_each(|m| *m *= inv);
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                mean.iter_mut().for_each(|m| *m /= norm);
                mean
            })
            .collect()
    }

    /// Self-attention of each text over its own rows: `qkv` holds each
    /// row's query, key and value (`3h` values), `ctx` receives `h` per row.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    unsafe fn attention(&self, qkv: &[f32], lens: &[usize], scores: &mut [f32], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let stride = 3 * h as isize;
        let scale = 1.0 / (d as f32).sqrt();
        let mut start = 0;
        for &len in lens {
            for head in 0..self.heads {
                let q = qkv[start * 3 * h + head * d..].as_ptr();
                let k = qkv[start * 3 * h + h + head * d..].as_ptr();
                let v = qkv[start * 3 * h + 2 * h + head * d..].as_ptr();
                let s = &mut scores[..len * len];
                // SAFETY: every index the strides reach lies inside `qkv`
                // (rows start..start+len, columns of this head), `scores`
                // (len x len) and `ctx` (rows start..start+len, this head's d
                // columns); the three buffers do not overlap.
                unsafe {
                    // scores = scale * Q K^T: K^T read through K's strides.
                    gemm::gemm(
                        len,
                        len,
                        d,
                        s.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        stride,
                        k,
                        stride,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for r in s.chunks_exact_mut(len) {
                    softmax(r);
                }
                // SAFETY: as above.
                unsafe {
                    // ctx rows of this head = P V.
                    gemm::gemm(
                        len,
                        d,
                        len,
                        ctx[start * h + head * d..].as_mut_ptr(),
                        1,
                        h as isize,
                        false,
                        s.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        stride,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            start += len;
        }
    }
}

/// Share `texts` out as work items of about [`ITEM_TOKENS`] tokens, at
/// least one per thread when there are texts enough. Without padding a
/// text's cost is its own length, so items need not hold similar lengths:
/// texts sorted by length are dealt round-robin, which evens out the
/// items' token counts (to within one text).
fn work_items(texts: &[Text], threads: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].ids.len()));
    let total: usize = texts.iter().map(|t| t.ids.len()).sum();
    let count = total.div_ceil(ITEM_TOKENS).max(threads).min(texts.len());
    let mut items = vec![Vec::new(); count];
    for (n, i) in order.into_iter().enumerate() {
        items[n % count].push(i);
    }
    items
}

/// Up to this many rows, [`dense`] reads the weights in place
/// ([`dense_few_rows`]) instead of having `gemm` pack them: a short query
/// has ~10 tokens, too few to repay copying every matrix.
const FEW_ROWS: usize = 16;

/// `out = x W^T + b` for `rows` rows of `x`.
fn dense(layer: &Dense, x: &[f32], out: &mut [f32], rows: usize) {
    let (n, k) = (layer.n, layer.k);
    assert!(x.len() >= rows * k && out.len() >= rows * n);
    if let Some(panels) = &layer.panels {
        thread_local! {
            /// The rounded activations, reused across products.
            static PAIRS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        PAIRS.with_borrow_mut(|pairs| {
            // SAFETY: panels are made only where Bf16::available().
            unsafe { panels.product(x, rows, &layer.b, out, pairs) }
        });
        return;
    }
    if rows <= FEW_ROWS {
        // SAFETY: the buffer path runs only where `supported()`; the
        // lengths are asserted above.
        unsafe { dense_few_rows(layer, x, out, rows) };
        return;
    }
    for r in out[..rows * n].chunks_exact_mut(n) {
        r.copy_from_slice(&layer.b);
    }
    // SAFETY: out holds rows x n, x rows x k, w n x k values (asserted and
    // by construction); `W^T` is read through W's strides.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            layer.w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// [`dense`] for a few rows: output columns four at a time, each weight
/// row read once from memory while the rows of `x` (a few KiB) stay in
/// cache; 4 x 3 tiles of 8-lane FMA accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dense_few_rows(layer: &Dense, x: &[f32], out: &mut [f32], rows: usize) {
    let n = layer.n;
    let mut j = 0;
    while j + 4 <= n {
        let mut r = 0;
        while r + 3 <= rows {
            tile::<3>(layer, x, out, r, j);
            r += 3;
        }
        match rows - r {
            2 => tile::<2>(layer, x, out, r, j),
            1 => tile::<1>(layer, x, out, r, j),
            _ => {}
        }
        j += 4;
    }
    let k = layer.k;
    for c in j..n {
        for r in 0..rows {
            out[r * n + c] = simd::dot(&x[r * k..][..k], &layer.w[c * k..][..k]) + layer.b[c];
        }
    }
}

/// Never reached: the buffer path needs AVX2 and FMA.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn dense_few_rows(_: &Dense, _: &[f32], _: &mut [f32], _: usize) {
    unreachable!("the buffer path runs only on x86-64 with AVX2 and FMA")
}

/// Output columns `j..j + 4` of rows `r..r + R` of [`dense`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(layer: &Dense, x: &[f32], out: &mut [f32], r: usize, j: usize) {
    use std::arch::x86_64::*;
    let (n, k) = (layer.n, layer.k);
    assert!((j + 4) * k <= layer.w.len() && (r + R) * k <= x.len() && (r + R) * n <= out.len());
    let w = layer.w.as_ptr().add(j * k);
    let xs = x.as_ptr().add(r * k);
    let mut acc = [[_mm256_setzero_ps(); R]; 4];
    let whole = k / 8 * 8;
    let mut i = 0;
    while i < whole {
        let xv: [__m256; R] = std::array::from_fn(|ri| _mm256_loadu_ps(xs.add(ri * k + i)));
        for (c, acc) in acc.iter_mut().enumerate() {
            let wv = _mm256_loadu_ps(w.add(c * k + i));
            for ri in 0..R {
                acc[ri] = _mm256_fmadd_ps(wv, xv[ri], acc[ri]);
            }
        }
        i += 8;
    }
    for (c, acc) in acc.iter().enumerate() {
        for (ri, &v) in acc.iter().enumerate() {
            let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
            let one = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
            let mut sum = _mm_cvtss_f32(one);
            for t in whole..k {
                sum += *w.add(c * k + t) * *xs.add(ri * k + t);
            }
            out[(r + ri) * n + j + c] = sum + layer.b[j + c];
        }
    }
}

/// LayerNorm of one row in place.
#[inline(always)]
fn layer_norm(x: &mut [f32], norm: &Norm, eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in x.iter_mut().zip(&norm.w).zip(&norm.b) {
        *v = (*v - mean) * inv * w + b;
    }
}

/// `x = LayerNorm(x + y)`, row by row.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn add_norm(x: &mut [f32], y: &[f32], norm: &Norm, eps: f32) {
    let h = norm.w.len();
    for (xr, yr) in x.chunks_exact_mut(h).zip(y.chunks_exact(h)) {
        for (a, b) in xr.iter_mut().zip(yr) {
            *a += b;
        }
        layer_norm(xr, norm, eps);
    }
}

/// Softmax of one row of scores in place.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = simd::exp_fast(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Exact (erf) GELU in place: `x/2 * (1 + erf(x / sqrt 2))`.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn gelu(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26: `1 - t P(t) exp(-x^2)` with
/// `t = 1 / (1 + p|x|)`, odd in `x`; absolute error below 1.5e-7.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let poly = 1.061_405_4f32
        .mul_add(t, -1.453_152_1)
        .mul_add(t, 1.421_413_8)
        .mul_add(t, -0.284_496_74)
        .mul_add(t, 0.254_829_6)
        * t;
    let y = 1.0 - poly * simd::exp_fast(-a * a);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_its_bound() {
        for i in -600..=600 {
            let x = i as f64 / 100.0;
            let want = libm::erf(x);
            let got = erf(x as f32) as f64;
            assert!((got - want).abs() < 3e-7, "erf({x}) = {got}, want {want}");
        }
    }

    /// A random-weight BERT: its config and its weights on the CPU.
    fn tiny_bert(act: &str) -> (serde_json::Value, VarBuilder<'static>) {
        let (config, weights) = tiny_bert_weights(act);
        (
            config,
            VarBuilder::from_tensors(weights, candle_core::DType::F32, &candle_core::Device::Cpu),
        )
    }

    /// A random-weight BERT's config and weights by name.
    fn tiny_bert_weights(
        act: &str,
    ) -> (
        serde_json::Value,
        std::collections::HashMap<String, candle_core::Tensor>,
    ) {
        use candle_core::{DType, Device, Tensor};
        let config = serde_json::json!({
            "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
            "num_hidden_layers": 2, "vocab_size": 50, "max_position_embeddings": 40,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": act,
            "hidden_dropout_prob": 0.0, "position_embedding_type": "absolute",
            "model_type": "bert", "initializer_range": 0.02, "pad_token_id": 0,
            "use_cache": false, "classifier_dropout": null,
        });
        let dev = Device::Cpu;
        let mut weights = std::collections::HashMap::new();
        let mut put = |name: String, dims: &[usize], mean: f64, std: f64| {
            let t = Tensor::randn(mean, std, dims, &dev).unwrap();
            weights.insert(name, t.to_dtype(DType::F32).unwrap());
        };
        put(
            "embeddings.word_embeddings.weight".into(),
            &[50, 32],
            0.0,
            1.0,
        );
        put(
            "embeddings.position_embeddings.weight".into(),
            &[40, 32],
            0.0,
            1.0,
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            &[2, 32],
            0.0,
            1.0,
        );
        for l in ["embeddings.LayerNorm".to_string()]
            .into_iter()
            .chain((0..2).flat_map(|i| {
                [
                    format!("encoder.layer.{i}.attention.output.LayerNorm"),
                    format!("encoder.layer.{i}.output.LayerNorm"),
                ]
            }))
        {
            put(format!("{l}.weight"), &[32], 1.0, 0.1);
            put(format!("{l}.bias"), &[32], 0.0, 0.1);
        }
        for i in 0..2 {
            let p = format!("encoder.layer.{i}");
            for (name, n, k) in [
                ("attention.self.query", 32, 32),
                ("attention.self.key", 32, 32),
                ("attention.self.value", 32, 32),
                ("attention.output.dense", 32, 32),
                ("intermediate.dense", 64, 32),
                ("output.dense", 32, 64),
            ] {
                put(format!("{p}.{name}.weight"), &[n, k], 0.0, 0.3);
                put(format!("{p}.{name}.bias"), &[n], 0.0, 0.1);
            }
        }
        (config, weights)
    }

    /// candle's model on one text (on `dev`): the mean-pooled unit vector.
    fn candle_embedding(
        model: &candle_transformers::models::bert::BertModel,
        text: &Text,
        dev: &candle_core::Device,
    ) -> Vec<f32> {
        use candle_core::{Tensor, D};
        let row = |v: &[u32]| Tensor::new(v, dev).unwrap().unsqueeze(0).unwrap();
        let hidden = model
            .forward(&row(text.ids), &row(text.types), None)
            .unwrap();
        let mean = hidden.mean(1).unwrap();
        let norm = mean
            .sqr()
            .unwrap()
            .sum_keepdim(D::Minus1)
            .unwrap()
            .sqrt()
            .unwrap();
        let unit = mean.broadcast_div(&norm).unwrap().squeeze(0).unwrap();
        unit.to_device(&candle_core::Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn buffer_and_candle_encoders_agree() {
        use candle_core::Device;
        use candle_transformers::models::bert::{BertModel, Config};
        if !supported() {
            eprintln!("this CPU lacks AVX2/FMA: the buffer path never runs here");
            return;
        }
        let precisions = if Bf16::available() {
            vec![Precision::F32, Precision::Auto]
        } else {
            vec![Precision::F32]
        };
        for (act, precision) in ["gelu", "relu"]
            .into_iter()
            .flat_map(|a| precisions.iter().map(move |p| (a, *p)))
        {
            let (config, vb) = tiny_bert(act);
            let host = HostBert::load(&vb, &config, precision)
                .unwrap()
                .expect("a plain BERT");
            let cfg: Config = serde_json::from_value(config.clone()).unwrap();
            let model = BertModel::load(vb, &cfg).unwrap();
            let ids: Vec<Vec<u32>> = [1usize, 7, 40, 3, 23]
                .iter()
                .map(|&n| (0..n).map(|i| ((i * 13 + n) % 50) as u32).collect())
                .collect();
            let types: Vec<Vec<u32>> = ids
                .iter()
                .map(|v| v.iter().map(|&i| i % 2).collect())
                .collect();
            let texts: Vec<Text> = ids
                .iter()
                .zip(&types)
                .map(|(ids, types)| Text { ids, types })
                .collect();
            let got = host.embed(&texts).unwrap();
            for (t, v) in texts.iter().zip(&got) {
                let want = candle_embedding(&model, t, &Device::Cpu);
                let worst = max_diff(v, &want);
                if precision == Precision::F32 {
                    assert!(
                        worst < 1e-5,
                        "{act}, {} tokens: differs by {worst}",
                        t.ids.len()
                    );
                } else {
                    // bf16 products: unit vectors within a cosine of 0.999.
                    let cos: f32 = v.iter().zip(&want).map(|(a, b)| a * b).sum();
                    assert!(
                        cos > 0.999 && worst < 0.05,
                        "{act} in bf16, {} tokens: cosine {cos}, differs by {worst}",
                        t.ids.len()
                    );
                }
            }
        }
    }

    /// candle's encoder on the GPU against the buffer path, same weights.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_and_buffer_encoders_agree() {
        use candle_core::{DType, Device, Tensor};
        use candle_transformers::models::bert::{BertModel, Config};
        let gpu = Device::new_cuda(0).expect("built with --features cuda: a CUDA GPU is required");
        let (config, weights) = tiny_bert_weights("gelu");
        let host_vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
        let host = HostBert::load(&host_vb, &config, Precision::F32)
            .unwrap()
            .expect("a plain BERT");
        let on_gpu: std::collections::HashMap<String, Tensor> = weights
            .into_iter()
            .map(|(k, t)| (k, t.to_device(&gpu).unwrap()))
            .collect();
        let cfg: Config = serde_json::from_value(config).unwrap();
        let model =
            BertModel::load(VarBuilder::from_tensors(on_gpu, DType::F32, &gpu), &cfg).unwrap();
        let ids: Vec<u32> = (0..23).map(|i| (i * 13 % 50) as u32).collect();
        let types = vec![0u32; ids.len()];
        let got = host
            .embed(&[Text {
                ids: &ids,
                types: &types,
            }])
            .unwrap()
            .remove(0);
        let want = candle_embedding(
            &model,
            &Text {
                ids: &ids,
                types: &types,
            },
            &gpu,
        );
        let worst = max_diff(&got, &want);
        assert!(worst < 1e-4, "GPU and buffer encoders differ by {worst}");
    }

    #[test]
    fn few_row_products_equal_gemm_products() {
        if !supported() {
            eprintln!("this CPU lacks AVX2/FMA: the buffer path never runs here");
            return;
        }
        let value = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) / 300.0;
        for (n, k) in [(12, 64), (9, 37), (3, 8)] {
            let layer = Dense {
                w: (0..n * k).map(value).collect(),
                b: (0..n).map(|i| value(i * 31)).collect(),
                n,
                k,
                panels: None,
            };
            for rows in 1..=FEW_ROWS + 1 {
                let x: Vec<f32> = (0..rows * k).map(|i| value(i * 13 + 5)).collect();
                let mut want = vec![0f32; rows * n];
                for r in 0..rows {
                    for c in 0..n {
                        let dot: f64 = (0..k)
                            .map(|i| x[r * k + i] as f64 * layer.w[c * k + i] as f64)
                            .sum();
                        want[r * n + c] = (dot + layer.b[c] as f64) as f32;
                    }
                }
                let mut got = vec![0f32; rows * n];
                dense(&layer, &x, &mut got, rows);
                let worst = max_diff(&got, &want);
                assert!(worst < 1e-3, "[{rows} x {k}] x [{k} x {n}]: off by {worst}");
            }
        }
    }

    #[test]
    fn other_variants_are_left_to_candle() {
        let (mut config, vb) = tiny_bert("gelu_new");
        assert!(HostBert::load(&vb, &config, Precision::F32)
            .unwrap()
            .is_none());
        config["hidden_act"] = "gelu".into();
        config["position_embedding_type"] = "relative_key".into();
        assert!(HostBert::load(&vb, &config, Precision::F32)
            .unwrap()
            .is_none());
    }

    #[test]
    fn out_of_range_tokens_are_errors() {
        let (config, vb) = tiny_bert("gelu");
        let host = HostBert::load(&vb, &config, Precision::Auto)
            .unwrap()
            .unwrap();
        let bad = [50u32];
        let ok = [0u32];
        for (ids, types) in [
            (&bad[..], &ok[..]),
            (&ok[..], &[2u32][..]),
            (&[][..], &[][..]),
        ] {
            assert!(host.embed(&[Text { ids, types }]).is_err());
        }
        let long: Vec<u32> = vec![1; 41];
        assert!(host
            .embed(&[Text {
                ids: &long,
                types: &long
            }])
            .is_err());
    }

    #[test]
    fn work_items_cover_every_text_once_and_fill_every_thread() {
        let ids: Vec<Vec<u32>> = (0..37).map(|i| vec![1; 1 + (i * 7) % 200]).collect();
        let texts: Vec<Text> = ids.iter().map(|v| Text { ids: v, types: v }).collect();
        for threads in [1, 2, 4, 64] {
            let items = work_items(&texts, threads);
            let mut seen: Vec<usize> = items.iter().flatten().copied().collect();
            seen.sort();
            assert_eq!(seen, (0..37).collect::<Vec<_>>());
            assert!(
                items.len() >= threads.min(37),
                "{threads} threads, {} items",
                items.len()
            );
            let tokens: Vec<usize> = items
                .iter()
                .map(|item| item.iter().map(|&i| texts[i].ids.len()).sum())
                .collect();
            let (least, most) = (tokens.iter().min().unwrap(), tokens.iter().max().unwrap());
            assert!(most - least <= 200, "{tokens:?}");
            assert!(*most <= ITEM_TOKENS + 200, "{tokens:?}");
        }
        assert!(work_items(&[], 2).is_empty());
    }
}
