//! A llama-style decoder's per-token arithmetic on plain f32 buffers:
//! RMSNorm, RoPE, SwiGLU, the residual add, and attention of each new row
//! against its own sequence's key/value cache. hearth's model code
//! (`models/llm/llama/cpu.rs`) strings these together with
//! [`crate::quant::QMatrix`]'s products into a forward pass.
//!
//! The arithmetic is llama.cpp's (ggml on AVX2, no flash attention) where
//! it decides greedy output at near-ties: RMSNorm summed in f64, ggml's
//! polynomial `exp` in SwiGLU and softmax, attention dot products and the
//! weighted sum of values in tinyBLAS's lane order over f16-rounded
//! operands, the cache padded to 32 cells. The key/value cache is held as
//! f16, as llama.cpp holds it: half the bytes for attention to read.
//!
//! The `unsafe` functions are compiled with FMA (and AVX2 and F16C) on
//! x86-64: call them only where [`supported`] says the CPU has them.

use crate::simd;
use half::f16;

/// Whether this CPU can run the `unsafe` kernels here: they are compiled
/// with FMA (attention also with AVX2 and F16C) on x86-64 (elsewhere they
/// are portable code).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::has_avx2_fma() && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// llama.cpp (without flash attention) sizes the attended cache in
/// multiples of this many cells.
const KV_PAD: usize = 32;

/// ggml's `rms_norm` followed by its multiplication by the weight: the sum
/// of squares in f64, `scale = 1 / sqrt(mean + eps)` in f32, `x * scale * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
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

/// Round every value through f16, as llama.cpp stores activations it
/// caches or attends with.
pub fn round_f16(xs: &mut [f32]) {
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
/// A batch's rows are shared out on candle's barrier pool in pieces whose
/// lengths are multiples of 8 (so each value's exp is the one it gets in
/// one piece).
///
/// # Safety
/// The CPU has FMA ([`supported`]).
pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    const PIECE: usize = 1024;
    let n = gate.len().min(up.len());
    if n < 4 * PIECE {
        return swiglu_piece(&mut gate[..n], &up[..n]);
    }
    let at = gate.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(PIECE), |pieces| {
        let (from, to) = (pieces.start * PIECE, (pieces.end * PIECE).min(n));
        // SAFETY: each range of pieces is given to one thread, inside `gate`.
        let gate = unsafe { std::slice::from_raw_parts_mut((at as *mut f32).add(from), to - from) };
        // SAFETY: the caller's CPU has FMA.
        unsafe { swiglu_piece(gate, &up[from..to]) };
    });
}

/// Eight values at a time: [`simd::exp_ggml_x8`] is [`simd::exp_ggml`]
/// lane by lane, and the division, addition and product are the same IEEE
/// operations in the same order, so every value's bits are the one-lane
/// form's ([`swiglu_piece_plain`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_piece(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let n = gate.len().min(up.len());
    let whole = n / 8 * 8;
    let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
    let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
    for i in (0..whole).step_by(8) {
        let x = _mm256_loadu_ps(g.add(i));
        let e = simd::exp_ggml_x8(_mm256_xor_ps(x, sign));
        let y = _mm256_mul_ps(
            _mm256_div_ps(x, _mm256_add_ps(one, e)),
            _mm256_loadu_ps(u.add(i)),
        );
        _mm256_storeu_ps(g.add(i), y);
    }
    for (g, u) in gate[whole..n].iter_mut().zip(&up[whole..n]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn swiglu_piece(gate: &mut [f32], up: &[f32]) {
    swiglu_piece_plain(gate, up)
}

/// SwiGLU one value at a time: the portable form, and the reference the
/// eight-lane form is tested against.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn swiglu_piece_plain(gate: &mut [f32], up: &[f32]) {
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

/// GELU (tanh form) of `gate` times `up`, in place, as ggml's `geglu`
/// computes it on the CPU: the gate rounded to f16 and looked up in a table
/// of f16 GELU values (so the result is `f16(gelu(f16(x)))`), except at
/// and beyond +-10, where it is `x` and 0. The table is ggml's too: every
/// f16's GELU, computed once (128 KiB), where calling `tanh` per value took
/// a tenth of Gemma 3's prompt time.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    static TABLE: std::sync::OnceLock<Vec<f16>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())))
            .collect()
    });
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[f16::from_f32(x).to_bits() as usize].to_f32() * u
        };
    }
}

/// ggml's `ggml_gelu_f32`: `0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_560_802_865_4_f64 as f32;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// ggml's `soft_max` of `xs * scale` in place: exp as in [`simd::exp_ggml`] in
/// groups of 8 (each group summed in f32 as ggml's AVX2 code does, the
/// groups in f64), the C library's exp for the rest, then the result
/// rounded through f16 as llama.cpp rounds attention weights. Eight values
/// at a time, each with the one-lane form's operations ([`softmax_f16_plain`]):
/// the maximum is exact whatever the order, [`simd::hsum`] sums a group as
/// the plain form does, and the f16 rounding is the same round to nearest
/// even.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax_f16(xs: &mut [f32], scale: f32) {
    use std::arch::x86_64::*;
    let whole = xs.len() / 8 * 8;
    let p = xs.as_mut_ptr();
    let factor = _mm256_set1_ps(scale);
    let mut top = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..whole).step_by(8) {
        let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), factor);
        _mm256_storeu_ps(p.add(i), v);
        top = _mm256_max_ps(top, v);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), top);
    let mut max = lanes.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for x in &mut xs[whole..] {
        *x *= scale;
        max = max.max(*x);
    }
    let shift = _mm256_set1_ps(max);
    let mut sum = 0f64;
    for i in (0..whole).step_by(8) {
        let e = simd::exp_ggml_x8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), shift));
        _mm256_storeu_ps(p.add(i), e);
        sum += simd::hsum(e) as f64;
    }
    for x in &mut xs[whole..] {
        *x = (*x - max).exp();
        sum += *x as f64;
    }
    let inv = (1.0 / sum) as f32;
    let factor = _mm256_set1_ps(inv);
    for i in (0..whole).step_by(8) {
        let w = _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), factor);
        let rounded = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(w);
        _mm256_storeu_ps(p.add(i), _mm256_cvtph_ps(rounded));
    }
    for x in &mut xs[whole..] {
        *x = f16::from_f32(*x * inv).to_f32();
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn softmax_f16(xs: &mut [f32], scale: f32) {
    softmax_f16_plain(xs, scale)
}

/// The softmax one value at a time: the portable form, and the reference
/// the eight-lane form is tested against.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn softmax_f16_plain(xs: &mut [f32], scale: f32) {
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

/// Dot products as llamafile's tinyBLAS computes them on AVX2 (ggml's
/// matrix product for f16 operands whose length is a multiple of 8): one
/// 8-lane FMA accumulator, then the lanes summed high half onto low half,
/// then pairwise. `a` holds f16 values (in f32), each `b` is f16. `N` dot
/// products at once: the same operations for each, interleaved, so that `N`
/// chains of fused multiply-adds overlap instead of one waiting on each
/// step of its own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot8_xn<const N: usize>(a: &[f32], b: [&[f16]; N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let n = a.len() / 8;
    assert!(b.iter().all(|b| b.len() >= n * 8));
    let mut acc = [_mm256_setzero_ps(); N];
    for c in 0..n {
        let x = _mm256_loadu_ps(a.as_ptr().add(c * 8));
        for (acc, b) in acc.iter_mut().zip(&b) {
            let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(c * 8) as *const __m128i));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
    }
    // `hsum` adds the high half onto the low half, then pairwise.
    acc.map(|acc| crate::simd::hsum(acc))
}

/// The portable form of the above.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot8_xn<const N: usize>(a: &[f32], b: [&[f16]; N]) -> [f32; N] {
    let mut acc = [[0f32; 8]; N];
    for c in 0..a.len() / 8 {
        for (acc, b) in acc.iter_mut().zip(&b) {
            for i in 0..8 {
                acc[i] = a[c * 8 + i].mul_add(b[c * 8 + i].to_f32(), acc[i]);
            }
        }
    }
    acc.map(|acc| {
        let l: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
        (l[0] + l[2]) + (l[1] + l[3])
    })
}

/// The attention scores of `query` against the keys of positions
/// `0..seen` (`keys[t * stride + at..][..query.len()]`), each as
/// [`dot8_xn`] computes it, eight positions at a time.
unsafe fn scores_into(
    query: &[f32],
    keys: &[f16],
    stride: usize,
    at: usize,
    seen: usize,
    out: &mut Vec<f32>,
) {
    let hd = query.len();
    let key = |t: usize| &keys[t * stride + at..][..hd];
    let mut t = 0;
    while t + 8 <= seen {
        out.extend(dot8_xn(
            query,
            std::array::from_fn::<_, 8, _>(|i| key(t + i)),
        ));
        t += 8;
    }
    if t + 4 <= seen {
        out.extend(dot8_xn(
            query,
            std::array::from_fn::<_, 4, _>(|i| key(t + i)),
        ));
        t += 4;
    }
    for t in t..seen {
        out.extend(dot8_xn(query, [key(t)]));
    }
}

/// Values summed per chunk of this many dimensions, the chunk's eight
/// lanes held in registers across all positions.
const SUM_CHUNK: usize = 16;

/// `dst = sum_t weights[t] * v_t` (v_t: `values[t * stride + at..][..dst.len()]`,
/// f16) in the order of [`dot8_xn`] over positions, as ggml multiplies the
/// attention weights by the transposed value cache: position `t` goes to
/// lane `t % 8`, and the lanes are summed as [`dot8_xn`] sums them. Each
/// output's operations are in that order; the dimensions go
/// [`SUM_CHUNK`] at a time so that the lanes stay in registers.
unsafe fn weighted_sum(weights: &[f32], values: &[f16], stride: usize, at: usize, dst: &mut [f32]) {
    let hd = dst.len();
    let mut from = 0;
    while from < hd {
        let width = SUM_CHUNK.min(hd - from);
        if width == SUM_CHUNK {
            weighted_sum_chunk(
                weights,
                values,
                stride,
                at + from,
                &mut dst[from..from + SUM_CHUNK],
            );
        } else {
            // A head width that is not a multiple of the chunk: the rest
            // one dimension at a time, in the same order.
            for (d, out) in dst[from..].iter_mut().enumerate() {
                let mut lanes = [0f32; 8];
                for (t, w) in weights.iter().enumerate() {
                    let v = values[t * stride + at + from + d].to_f32();
                    lanes[t % 8] = w.mul_add(v, lanes[t % 8]);
                }
                let l: [f32; 4] = std::array::from_fn(|i| lanes[4 + i] + lanes[i]);
                *out = (l[0] + l[2]) + (l[1] + l[3]);
            }
        }
        from += width;
    }
}

/// One [`SUM_CHUNK`] of [`weighted_sum`]'s outputs: each position lane's
/// sums, then the lanes summed in [`dot8_xn`]'s order.
unsafe fn weighted_sum_chunk(
    weights: &[f32],
    values: &[f16],
    stride: usize,
    at: usize,
    dst: &mut [f32],
) {
    let lanes = lanes_of(weights, values, (stride, at));
    for (d, out) in dst.iter_mut().enumerate() {
        let l: [f32; 4] = std::array::from_fn(|i| lanes[4 + i][d] + lanes[i][d]);
        *out = (l[0] + l[2]) + (l[1] + l[3]);
    }
}

/// A chunk's eight position lanes: lane `t % 8` sums `weights[t] * v_t`.
type Lanes = [[f32; SUM_CHUNK]; 8];

/// [`Lanes`] with sixteen dimensions as two 8-lane vectors per position
/// lane, sixteen registers in all. `place`: the values' row stride and the
/// chunk's first dimension.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes_of(weights: &[f32], values: &[f16], (stride, at): (usize, usize)) -> Lanes {
    use std::arch::x86_64::*;
    let last = weights.len().saturating_sub(1);
    assert!(weights.is_empty() || values.len() >= last * stride + at + SUM_CHUNK);
    let mut lanes = [[_mm256_setzero_ps(); 2]; 8];
    let v = values.as_ptr();
    let mut add = |lane: usize, t: usize| {
        let w = _mm256_set1_ps(weights[t]);
        let p = v.add(t * stride + at) as *const __m128i;
        let (lo, hi) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
        lanes[lane][0] = _mm256_fmadd_ps(w, _mm256_cvtph_ps(lo), lanes[lane][0]);
        lanes[lane][1] = _mm256_fmadd_ps(w, _mm256_cvtph_ps(hi), lanes[lane][1]);
    };
    let whole = weights.len() / 8 * 8;
    for t0 in (0..whole).step_by(8) {
        for lane in 0..8 {
            add(lane, t0 + lane);
        }
    }
    for (lane, t) in (whole..weights.len()).enumerate() {
        add(lane, t);
    }
    let mut sums = [[0f32; SUM_CHUNK]; 8];
    for (sum, lane) in sums.iter_mut().zip(&lanes) {
        _mm256_storeu_ps(sum.as_mut_ptr(), lane[0]);
        _mm256_storeu_ps(sum.as_mut_ptr().add(8), lane[1]);
    }
    sums
}

/// The portable form of the above.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn lanes_of(weights: &[f32], values: &[f16], (stride, at): (usize, usize)) -> Lanes {
    let mut lanes = [[0f32; SUM_CHUNK]; 8];
    for (t, w) in weights.iter().enumerate() {
        let v = &values[t * stride + at..][..SUM_CHUNK];
        for i in 0..SUM_CHUNK {
            lanes[t % 8][i] = w.mul_add(v[i].to_f32(), lanes[t % 8][i]);
        }
    }
    lanes
}

/// Append `src` (values already rounded through f16) to a cache as f16.
pub fn push_f16(dst: &mut Vec<f16>, src: &[f32]) {
    use half::slice::HalfFloatSliceExt;
    let from = dst.len();
    dst.resize(from + src.len(), f16::ZERO);
    dst[from..].convert_from_f32_slice(src);
}

/// `x += y`, element by element (the residual connections).
pub fn add_into(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// Rotate every head (`hd` values) of every row (`width` values) of `x` by
/// the angles of that row's position `pos[r]`; `tables` are the cos and
/// sin tables, `[positions, hd / 2]` each.
pub fn rope_rows(
    x: &mut [f32],
    width: usize,
    pos: &[usize],
    tables: (&[f32], &[f32]),
    hd: usize,
    neox: bool,
) {
    let half = hd / 2;
    let (cos, sin) = tables;
    for (row, &p) in x.chunks_exact_mut(width).zip(pos) {
        let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
        for head in row.chunks_exact_mut(hd) {
            rope(head, c, s, neox);
        }
    }
}

/// The shape of attention: query heads, key/value heads (grouped-query
/// attention shares each among `n_head / n_kv_head` query heads), head
/// width, the score scale (`1 / sqrt(head_dim)`), and the sliding window:
/// a query at position `p` sees the keys at positions `t` with
/// `p - t < window` (`usize::MAX`: all of them).
#[derive(Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub window: usize,
}

/// Attention for a batch of rows, one work item per (row, head) on candle's
/// barrier pool: row `r` (its query heads at `q[r * n_head * head_dim..]`)
/// belongs to the sequence whose cache is `caches[seq[r]]` (keys, values,
/// f16: one row of `n_kv_head * head_dim` per position) and attends to that
/// cache's positions `0..=pos[r]`. Returns the rows' outputs, `n_head *
/// head_dim` values each.
///
/// # Safety
/// The CPU has FMA ([`supported`]).
pub unsafe fn attention(
    heads: Heads,
    q: &[f32],
    caches: &[(&[f16], &[f16])],
    seq: &[usize],
    pos: &[usize],
) -> Vec<f32> {
    let Heads {
        n_head,
        n_kv_head,
        head_dim: hd,
        scale,
        window,
    } = heads;
    let (q_dim, kv_dim) = (n_head * hd, n_kv_head * hd);
    let n_rep = n_head / n_kv_head;
    let rows = seq.len();
    let mut y = vec![0f32; rows * q_dim];
    let out = y.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(rows * n_head, |items| {
        let mut scores = Vec::new();
        for item in items {
            let (r, head) = (item / n_head, item % n_head);
            let (keys, values) = caches[seq[r]];
            let at = (head / n_rep) * hd;
            let query = &q[r * q_dim + head * hd..][..hd];
            let seen = pos[r] + 1;
            scores.clear();
            // SAFETY (the three calls): the caller's CPU has FMA.
            unsafe { scores_into(query, keys, kv_dim, at, seen, &mut scores) };
            // Keys out of the sliding window are masked, as llama.cpp masks
            // them: still summed over, with weight zero.
            let first = seen.saturating_sub(window);
            scores[..first].fill(f32::NEG_INFINITY);
            // llama.cpp attends over the cache padded to KV_PAD cells, the
            // padding masked out.
            scores.resize(seen.next_multiple_of(KV_PAD), f32::NEG_INFINITY);
            unsafe { softmax_f16(&mut scores, scale) };
            // SAFETY: each (row, head) item owns its `hd` outputs, and `y`
            // holds rows * q_dim values.
            let dst = unsafe {
                std::slice::from_raw_parts_mut((out as *mut f32).add(r * q_dim + head * hd), hd)
            };
            unsafe { weighted_sum(&scores[..seen], values, kv_dim, at, dst) };
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f16> {
        (0..n)
            .map(|i| f16::from_f32(((i * 37 + seed) % 101) as f32 / 50.0 - 1.0))
            .collect()
    }

    /// Eight lanes by position (or by element, for a dot product), summed
    /// high half onto low half, then pairwise: ggml's order, written plainly.
    fn lanes_sum(terms: impl Iterator<Item = (f32, f32)>) -> f32 {
        let mut lanes = [0f32; 8];
        for (i, (a, b)) in terms.enumerate() {
            lanes[i % 8] = a.mul_add(b, lanes[i % 8]);
        }
        let l: [f32; 4] = std::array::from_fn(|i| lanes[4 + i] + lanes[i]);
        (l[0] + l[2]) + (l[1] + l[3])
    }

    #[test]
    fn eight_lane_softmax_and_swiglu_are_the_one_lane_forms_bit_for_bit() {
        assert!(supported(), "the attention kernels need AVX2, FMA and F16C");
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for len in [1, 7, 8, 9, 31, 64, 100, 256, 300, 512, 1000] {
            for spread in [0.5f32, 8.0, 60.0, 400.0] {
                let mut scores: Vec<f32> = (0..len).map(|_| (next() - 0.5) * spread).collect();
                // Masked and padded positions, as attention gives them.
                for i in (0..len).step_by(5) {
                    scores[i] = f32::NEG_INFINITY;
                }
                scores[len / 2] = 1.0;
                scores.resize(len.next_multiple_of(KV_PAD), f32::NEG_INFINITY);
                let mut want = scores.clone();
                softmax_f16_plain(&mut want, 0.125);
                // SAFETY: AVX2, FMA and F16C are present (asserted above).
                unsafe { softmax_f16(&mut scores, 0.125) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&scores),
                    bits(&want),
                    "softmax of {len}, spread {spread}"
                );

                let gate: Vec<f32> = (0..len).map(|_| (next() - 0.5) * spread).collect();
                let up: Vec<f32> = (0..len).map(|_| next() - 0.5).collect();
                let (mut got, mut want) = (gate.clone(), gate);
                swiglu_piece_plain(&mut want, &up);
                // SAFETY: as above.
                unsafe { swiglu_piece(&mut got, &up) };
                assert_eq!(bits(&got), bits(&want), "swiglu of {len}, spread {spread}");
            }
        }
    }

    #[test]
    fn attention_sums_keep_ggmls_order() {
        assert!(supported(), "the attention kernels need AVX2, FMA and F16C");
        for hd in [64, 72, 128] {
            let stride = 3 * hd;
            for seen in [1, 3, 4, 7, 8, 9, 12, 31, 64, 133] {
                let keys = values(seen * stride, 5);
                let query: Vec<f32> = values(hd, 11).iter().map(|v| v.to_f32()).collect();
                let weights: Vec<f32> = values(seen, 3).iter().map(|v| v.to_f32()).collect();
                let mut scores = Vec::new();
                // SAFETY (both calls): the CPU has what they need (above).
                unsafe { scores_into(&query, &keys, stride, hd, seen, &mut scores) };
                assert_eq!(scores.len(), seen);
                for (t, score) in scores.iter().enumerate() {
                    let key = &keys[t * stride + hd..][..hd];
                    // A dot product's lanes are its elements modulo 8.
                    let want = lanes_sum(query.iter().zip(key).map(|(q, k)| (*q, k.to_f32())));
                    assert_eq!(score.to_bits(), want.to_bits(), "hd {hd}, position {t}");
                }
                let mut dst = vec![0f32; hd];
                unsafe { weighted_sum(&weights, &keys, stride, hd, &mut dst) };
                for (d, got) in dst.iter().enumerate() {
                    let want = lanes_sum(
                        weights
                            .iter()
                            .enumerate()
                            .map(|(t, w)| (*w, keys[t * stride + hd + d].to_f32())),
                    );
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "hd {hd}, {seen} positions, d {d}"
                    );
                }
            }
        }
    }

    #[test]
    fn caches_take_f16_exactly() {
        let xs: Vec<f32> = values(37, 1).iter().map(|v| v.to_f32()).collect();
        let mut cache = vec![f16::ONE];
        push_f16(&mut cache, &xs);
        assert_eq!(cache.len(), 38);
        assert!(cache[1..].iter().zip(&xs).all(|(c, x)| c.to_f32() == *x));
    }

    #[test]
    fn geglu_is_ggmls_f16_table_gelu_times_up() {
        let xs = [
            -12.0f32, -10.0, -1.5, -0.001, 0.0, 0.3, 1.0, 2.5, 9.99, 10.0, 12.5,
        ];
        let up = [2.0f32; 11];
        let mut gate = xs;
        geglu(&mut gate, &up);
        for (x, y) in xs.iter().zip(gate) {
            let want = if *x <= -10.0 {
                0.0
            } else if *x >= 10.0 {
                x * 2.0
            } else {
                // The plain formula in f64, on the f16 input, rounded to f16.
                let h = f16::from_f32(*x).to_f32() as f64;
                let g = 0.5
                    * h
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * h * (1.0 + 0.044715 * h * h))
                            .tanh());
                f16::from_f64(g).to_f32() * 2.0
            };
            assert_eq!(y, want, "geglu({x})");
        }
    }
}
