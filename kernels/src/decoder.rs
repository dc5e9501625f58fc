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
/// then pairwise. Each `a` holds f16 values (in f32), each `b` is f16.
/// `M x N` dot products at once, the same operations for each, interleaved
/// so that their chains of fused multiply-adds overlap: each key chunk is
/// loaded and widened from f16 once for the `M` queries that share it (the
/// query heads of one grouped-query attention group).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot8_mxn<const M: usize, const N: usize>(
    a: [&[f32]; M],
    b: [&[f16]; N],
) -> [[f32; N]; M] {
    use std::arch::x86_64::*;
    let n = a[0].len() / 8;
    assert!(a.iter().all(|a| a.len() >= n * 8) && b.iter().all(|b| b.len() >= n * 8));
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    for c in 0..n {
        for j in 0..N {
            let y = _mm256_cvtph_ps(_mm_loadu_si128(b[j].as_ptr().add(c * 8) as *const __m128i));
            for i in 0..M {
                let x = _mm256_loadu_ps(a[i].as_ptr().add(c * 8));
                acc[i][j] = _mm256_fmadd_ps(x, y, acc[i][j]);
            }
        }
    }
    // Plain loops, not `map`: a closure does not inherit this function's
    // target features, so `hsum` would not be inlined into it.
    let mut sums = [[0f32; N]; M];
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        for (sum, acc) in sums.iter_mut().zip(acc) {
            *sum = crate::simd::hsum(*acc);
        }
    }
    sums
}

/// The portable form of the above.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot8_mxn<const M: usize, const N: usize>(
    a: [&[f32]; M],
    b: [&[f16]; N],
) -> [[f32; N]; M] {
    a.map(|a| {
        b.map(|b| {
            let mut acc = [0f32; 8];
            for c in 0..a.len() / 8 {
                for i in 0..8 {
                    acc[i] = a[c * 8 + i].mul_add(b[c * 8 + i].to_f32(), acc[i]);
                }
            }
            let l: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
            (l[0] + l[2]) + (l[1] + l[3])
        })
    })
}

/// Values summed per chunk of this many dimensions, the chunk's eight
/// lanes held in registers across all positions.
const SUM_CHUNK: usize = 16;

/// `dst = sum_t weights[t] * v_t` (v_t: `values[t * stride + at..][..dst.len()]`,
/// f16) in the order of [`dot8_mxn`] over positions, as ggml multiplies the
/// attention weights by the transposed value cache: position `t` goes to
/// lane `t % 8`, and the lanes are summed as [`dot8_mxn`] sums them. Each
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
/// sums, then the lanes summed in [`dot8_mxn`]'s order.
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

/// 32 cached keys or values in Q8_0, ggml's `block_q8_0`: an f16 scale and
/// 32 signed bytes, 34 bytes for what f16 holds in 64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvBlock {
    pub d: f16,
    pub qs: [i8; 32],
}

/// Append `src` (a multiple of 32 values) to `dst` in Q8_0, as ggml's
/// `quantize_row_q8_0_ref` does it: the scale `d` is the block's largest
/// magnitude over 127, each value rounded times `1 / d`. (The activations'
/// quantizer in `quant.rs` multiplies by `127 / amax`, which rounds a few
/// values the other way and moved a reference answer past a near-tie.)
pub fn push_q8_0(dst: &mut Vec<KvBlock>, src: &[f32]) {
    debug_assert!(src.len().is_multiple_of(32));
    dst.extend(src.chunks_exact(32).map(|x| {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        KvBlock {
            d: f16::from_f32(d),
            qs: std::array::from_fn(|i| (x[i] * id).round() as i8),
        }
    }));
}

/// The f16 values of Q8_0 blocks into `dst` (resized to them), for the
/// attention kernels, which read f16. Every step reads a Q8_0 cache back
/// this way, one layer at a time, so it runs 16 values an instruction
/// where the CPU has AVX-512 (the same values as the portable loop).
pub fn dequantize_q8_0(src: &[KvBlock], dst: &mut Vec<f16>) {
    // Every value is written below: the zeros only fill new room (the
    // previous layer's scratch is as long).
    dst.resize(src.len() * 32, f16::ZERO);
    dequantize_into(src, dst);
}

/// The values of `src` into `dst` (32 per block), with AVX-512 where the
/// CPU has it.
fn dequantize_into(src: &[KvBlock], dst: &mut [f16]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present.
        unsafe { dequantize_q8_0_avx512(src, dst) };
        return;
    }
    dequantize_q8_0_plain(src, dst);
}

/// [`dequantize_q8_0`] for a layer's keys and values together, shared out
/// on candle's barrier pool when they are many (a long context's read-back
/// is otherwise serial work while the pool waits).
pub fn dequantize_q8_0_pair(src: [&[KvBlock]; 2], dst: [&mut Vec<f16>; 2]) {
    let [ks, vs] = src;
    let [kd, vd] = dst;
    let (nk, nv) = (ks.len(), vs.len());
    if nk + nv < PARALLEL_BLOCKS {
        dequantize_q8_0(ks, kd);
        dequantize_q8_0(vs, vd);
        return;
    }
    kd.resize(nk * 32, f16::ZERO);
    vd.resize(nv * 32, f16::ZERO);
    let (kp, vp) = (kd.as_mut_ptr() as usize, vd.as_mut_ptr() as usize);
    let convert = |blocks: &[KvBlock], out: usize, first: usize| {
        // SAFETY: each block index is handed out once, so the ranges of
        // `dst` written here are disjoint, and within its length.
        let dst = unsafe {
            std::slice::from_raw_parts_mut((out as *mut f16).add(first * 32), blocks.len() * 32)
        };
        dequantize_into(blocks, dst);
    };
    candle_core::utils::barrier_pool().execute_chunked(nk + nv, |items| {
        let (a, b) = (items.start, items.end);
        if a < nk {
            convert(&ks[a..b.min(nk)], kp, a);
        }
        if b > nk {
            let a = a.max(nk) - nk;
            convert(&vs[a..b - nk], vp, a);
        }
    });
}

/// Blocks below which a read-back stays on the calling thread.
const PARALLEL_BLOCKS: usize = 2048;

fn dequantize_q8_0_plain(src: &[KvBlock], dst: &mut [f16]) {
    use half::slice::HalfFloatSliceExt;
    for (b, out) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        let x: [f32; 32] = std::array::from_fn(|i| b.qs[i] as f32 * d);
        out.convert_from_f32_slice(&x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dequantize_q8_0_avx512(src: &[KvBlock], dst: &mut [f16]) {
    use std::arch::x86_64::*;
    for (b, out) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = _mm512_set1_ps(b.d.to_f32());
        for half in 0..2 {
            let q = _mm_loadu_si128(b.qs.as_ptr().add(16 * half) as *const __m128i);
            let x = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d);
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            _mm256_storeu_si256(out.as_mut_ptr().add(16 * half) as *mut __m256i, h);
        }
    }
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

/// The attention scores of the `M` query heads `queries` of one group
/// against the keys they share (`keys[t * stride + at..]`):
/// `out[i * padded + t]` is query `i`'s score for position `t < seen`,
/// each as [`dot8_mxn`] computes it. Each key is read once for the group;
/// `N` keys go at a time (`M x N` accumulators in registers).
unsafe fn group_scores<const M: usize, const N: usize>(
    queries: [&[f32]; M],
    (keys, stride, at): (&[f16], usize, usize),
    seen: usize,
    (out, padded): (&mut [f32], usize),
) {
    let hd = queries[0].len();
    let key = |t: usize| &keys[t * stride + at..][..hd];
    let mut t = 0;
    while t + N <= seen {
        let dots = dot8_mxn(queries, std::array::from_fn::<_, N, _>(|j| key(t + j)));
        for (i, dots) in dots.iter().enumerate() {
            out[i * padded + t..][..N].copy_from_slice(dots);
        }
        t += N;
    }
    for t in t..seen {
        let dots = dot8_mxn(queries, [key(t)]);
        for (i, dots) in dots.iter().enumerate() {
            out[i * padded + t] = dots[0];
        }
    }
}

/// [`Lanes`] of a chunk for the `M` weight rows of one group against the
/// values they share: lane by lane (lane `l` sums positions `l, l + 8,
/// ...`), so that each value is read and widened once for the group while
/// the `M` heads' sums stay in registers. Each lane's sum takes the same
/// operations in the same order as in [`lanes_of`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_lanes<const M: usize>(
    weights: [&[f32]; M],
    values: &[f16],
    (stride, at): (usize, usize),
) -> [Lanes; M] {
    use std::arch::x86_64::*;
    let len = weights[0].len();
    assert!(weights.iter().all(|w| w.len() == len));
    assert!(len == 0 || values.len() >= (len - 1) * stride + at + SUM_CHUNK);
    let v = values.as_ptr();
    let mut out = [[[0f32; SUM_CHUNK]; 8]; M];
    for lane in 0..8.min(len) {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        for t in (lane..len).step_by(8) {
            let p = v.add(t * stride + at) as *const __m128i;
            let lo = _mm256_cvtph_ps(_mm_loadu_si128(p));
            let hi = _mm256_cvtph_ps(_mm_loadu_si128(p.add(1)));
            for i in 0..M {
                let w = _mm256_set1_ps(*weights[i].get_unchecked(t));
                acc[i][0] = _mm256_fmadd_ps(w, lo, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(w, hi, acc[i][1]);
            }
        }
        for (out, acc) in out.iter_mut().zip(&acc) {
            _mm256_storeu_ps(out[lane].as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(out[lane].as_mut_ptr().add(8), acc[1]);
        }
    }
    out
}

/// The portable form of the above.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn group_lanes<const M: usize>(
    weights: [&[f32]; M],
    values: &[f16],
    place: (usize, usize),
) -> [Lanes; M] {
    weights.map(|w| lanes_of(w, values, place))
}

/// [`weighted_sum`] for the `M` heads of one group: `dst[i * hd..][..hd]`
/// is head `i`'s sum, with the same bits as [`weighted_sum`] gives it.
unsafe fn group_weighted_sum<const M: usize>(
    weights: [&[f32]; M],
    (values, stride, at): (&[f16], usize, usize),
    dst: &mut [f32],
) {
    let hd = dst.len() / M;
    let whole = hd / SUM_CHUNK * SUM_CHUNK;
    for from in (0..whole).step_by(SUM_CHUNK) {
        let lanes = group_lanes(weights, values, (stride, at + from));
        for (i, lanes) in lanes.iter().enumerate() {
            for (d, out) in dst[i * hd + from..][..SUM_CHUNK].iter_mut().enumerate() {
                let l: [f32; 4] = std::array::from_fn(|k| lanes[4 + k][d] + lanes[k][d]);
                *out = (l[0] + l[2]) + (l[1] + l[3]);
            }
        }
    }
    if whole < hd {
        // The rest of a head width that is not a multiple of the chunk.
        for (i, w) in weights.iter().enumerate() {
            let mut rest = vec![0f32; hd - whole];
            weighted_sum(w, values, stride, at + whole, &mut rest);
            dst[i * hd + whole..][..hd - whole].copy_from_slice(&rest);
        }
    }
}

/// One group's attention: the `M` query heads in `queries` (`M * hd`
/// values) against the keys and values they share at `at` in each cached
/// row, over positions `0..seen` (those before `first` masked), into
/// `dst` (`M * hd` values). `scores` is scratch.
#[allow(clippy::too_many_arguments)]
unsafe fn group_attention<const M: usize>(
    queries: &[f32],
    (keys, values, stride, at): (&[f16], &[f16], usize, usize),
    (seen, first, scale): (usize, usize, f32),
    scores: &mut Vec<f32>,
    dst: &mut [f32],
) {
    let hd = queries.len() / M;
    let padded = seen.next_multiple_of(KV_PAD);
    scores.clear();
    // llama.cpp attends over the cache padded to KV_PAD cells, the padding
    // masked out.
    scores.resize(M * padded, f32::NEG_INFINITY);
    let qs: [&[f32]; M] = std::array::from_fn(|i| &queries[i * hd..][..hd]);
    // Accumulators for M queries by N keys: twelve registers or fewer.
    match M {
        1 => group_scores::<M, 8>(qs, (keys, stride, at), seen, (scores, padded)),
        2 => group_scores::<M, 6>(qs, (keys, stride, at), seen, (scores, padded)),
        3 => group_scores::<M, 4>(qs, (keys, stride, at), seen, (scores, padded)),
        _ => group_scores::<M, 3>(qs, (keys, stride, at), seen, (scores, padded)),
    }
    for row in scores.chunks_exact_mut(padded) {
        // Keys out of the sliding window are masked, as llama.cpp masks
        // them: still summed over, with weight zero.
        row[..first].fill(f32::NEG_INFINITY);
        softmax_f16(row, scale);
    }
    let ws: [&[f32]; M] = std::array::from_fn(|i| &scores[i * padded..][..seen]);
    if M == 1 {
        // One head: the position-ordered sums, all eight lanes in
        // registers at once.
        weighted_sum(ws[0], values, stride, at, dst);
    } else {
        group_weighted_sum(ws, (values, stride, at), dst);
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

/// Attention for a batch of rows on candle's barrier pool, one work item
/// per (row, group of query heads): row `r` (its query heads at
/// `q[r * n_head * head_dim..]`) belongs to the sequence whose cache is
/// `caches[seq[r]]` (keys, values, f16: one row of `n_kv_head * head_dim`
/// per position) and attends to that cache's positions `0..=pos[r]`.
/// The query heads that share a key/value head read its keys and values
/// once for all of them (grouped-query attention); a group is split in
/// halves only where whole groups would leave the pool's threads idle (one
/// decode row of a model with one key/value head). Every score and sum
/// takes the same operations in the same order as one head alone.
/// Returns the rows' outputs, `n_head * head_dim` values each.
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
    let threads = candle_core::utils::get_num_threads();
    let mut group = n_rep;
    while group % 2 == 0 && rows * (n_head / group) < threads {
        group /= 2;
    }
    let per_row = n_head / group;
    let mut y = vec![0f32; rows * q_dim];
    let out = y.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(rows * per_row, |items| {
        let mut scores = Vec::new();
        // Groups of more than four heads go four (or fewer) at a time.
        let step = if group <= 4 { group } else { 4 };
        for item in items {
            let (r, first_head) = (item / per_row, (item % per_row) * group);
            let (keys, values) = caches[seq[r]];
            let seen = pos[r] + 1;
            let span = (seen, seen.saturating_sub(window), scale);
            let place = (keys, values, kv_dim, (first_head / n_rep) * hd);
            let mut head = first_head;
            while head < first_head + group {
                let m = step.min(first_head + group - head);
                let queries = &q[r * q_dim + head * hd..][..m * hd];
                // SAFETY: each (row, group) item owns its heads' outputs,
                // and `y` holds rows * q_dim values.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        (out as *mut f32).add(r * q_dim + head * hd),
                        m * hd,
                    )
                };
                // SAFETY: the caller's CPU has FMA (and AVX2, F16C).
                unsafe {
                    match m {
                        1 => group_attention::<1>(queries, place, span, &mut scores, dst),
                        2 => group_attention::<2>(queries, place, span, &mut scores, dst),
                        3 => group_attention::<3>(queries, place, span, &mut scores, dst),
                        _ => group_attention::<4>(queries, place, span, &mut scores, dst),
                    }
                }
                head += m;
            }
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
                let mut scores = vec![0f32; seen];
                // SAFETY (both calls): the CPU has what they need (above).
                unsafe {
                    group_scores::<1, 8>([&query], (&keys, stride, hd), seen, (&mut scores, seen))
                };
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

    /// Grouped-query attention reads each key and value once per group,
    /// and still gives every head the bits it gets alone: groups of 2, 3,
    /// 4, 6 and 8 heads (and 8 split into two passes of 4), head widths a
    /// multiple of the value chunk and not, rows that see 1, 8 and 37
    /// positions, with and without a sliding window.
    #[test]
    fn grouped_attention_gives_each_head_its_own_bits() {
        assert!(supported(), "the attention kernels need AVX2, FMA and F16C");
        for (n_head, n_kv_head, hd) in [
            (4, 1, 64),
            (9, 3, 64),
            (8, 2, 72),
            (16, 2, 64),
            (6, 3, 128),
            (12, 2, 64),
        ] {
            for window in [usize::MAX, 5] {
                let (kv_dim, len) = (n_kv_head * hd, 37);
                let keys = values(len * kv_dim, 5);
                let vals = values(len * kv_dim, 9);
                let pos = [0usize, 7, 36];
                let q: Vec<f32> = values(pos.len() * n_head * hd, 11)
                    .iter()
                    .map(|v| v.to_f32() * 3.0)
                    .collect();
                let heads = Heads {
                    n_head,
                    n_kv_head,
                    head_dim: hd,
                    scale: 0.125,
                    window,
                };
                // SAFETY (both calls): the CPU has what they need (above).
                let got = unsafe { attention(heads, &q, &[(&keys, &vals)], &[0; 3], &pos) };
                for (r, p) in pos.iter().enumerate() {
                    // The row alone: a group may be split to keep the
                    // pool's threads busy.
                    let row = &q[r * n_head * hd..][..n_head * hd];
                    let alone = unsafe { attention(heads, row, &[(&keys, &vals)], &[0], &[*p]) };
                    for h in 0..n_head {
                        let at = (h / (n_head / n_kv_head)) * hd;
                        let span = (p + 1, (p + 1).saturating_sub(window), 0.125);
                        let (mut scores, mut want) = (Vec::new(), vec![0f32; hd]);
                        let query = &q[(r * n_head + h) * hd..][..hd];
                        unsafe {
                            group_attention::<1>(
                                query,
                                (&keys, &vals, kv_dim, at),
                                span,
                                &mut scores,
                                &mut want,
                            )
                        };
                        let batched = &got[(r * n_head + h) * hd..][..hd];
                        let alone = &alone[h * hd..][..hd];
                        for (d, w) in want.iter().enumerate() {
                            for g in [batched[d], alone[d]] {
                                assert_eq!(
                                    g.to_bits(),
                                    w.to_bits(),
                                    "{n_head} heads on {n_kv_head}, hd {hd}, window {window}, \
                                     row {r}, head {h}, d {d}"
                                );
                            }
                        }
                    }
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

    #[test]
    fn q8_0_blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut blocks = Vec::new();
        push_q8_0(&mut blocks, &x);
        push_q8_0(&mut blocks, &[0.0; 32]);
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[3].qs, [0; 32]);
        let mut back = Vec::new();
        dequantize_q8_0(&blocks, &mut back);
        assert_eq!(back.len(), 128);
        let mut plain = vec![f16::ZERO; 128];
        dequantize_q8_0_plain(&blocks, &mut plain);
        assert_eq!(
            back, plain,
            "the SIMD and portable loops give the same values"
        );
        // Keys and values together, on the pool past PARALLEL_BLOCKS.
        let many: Vec<KvBlock> = (0..PARALLEL_BLOCKS + 37).map(|i| blocks[i % 4]).collect();
        let (mut k, mut v) = (Vec::new(), Vec::new());
        dequantize_q8_0_pair([&many, &many[..1000]], [&mut k, &mut v]);
        let (mut k1, mut v1) = (Vec::new(), Vec::new());
        dequantize_q8_0(&many, &mut k1);
        dequantize_q8_0(&many[..1000], &mut v1);
        assert!(k == k1 && v == v1, "the pool's read-back is the same");
        for (i, (&v, got)) in x.iter().zip(&back).enumerate() {
            let (b, got) = (&blocks[i / 32], got.to_f32());
            assert!(
                b.qs.iter().any(|&q| q.abs() == 127),
                "the largest value maps to 127"
            );
            // Half a step of the block's grid, and f16's rounding of it.
            let bound = 0.5 * b.d.to_f32() + v.abs() * 1e-3;
            assert!((got - v).abs() <= bound, "{v} came back {got}");
        }
    }
}
