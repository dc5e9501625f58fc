//! ggml's K-quants on the CPU: Q4_K and Q6_K weights, in super-blocks of
//! 256 with 8 (Q4_K) or 16 (Q6_K) sub-block scales, against activations
//! quantized to Q8_K (256 int8 values, an f32 scale, and the sums of each
//! 16 values).
//!
//! The numerics are llama.cpp's on an AVX2 CPU, so that a K-quant file's
//! greedy output follows llama.cpp's where logits nearly tie:
//! - activations: `quantize_row_q8_K` (scale `-127 / max`, where `max` is
//!   the value of largest magnitude, rounded half to even, `d = 1/scale`
//!   kept in f32);
//! - Q4_K: the repacked kernel ggml uses for it on AVX2 (`gemv`/`gemm
//!   q4_K_8x8`): per super-block the exact integer sums of scale x weight x
//!   activation and of min x activation, each accumulated in f32 with one
//!   fused multiply-add by `d_w * d_x` (and `dmin_w * d_x`), the second sum
//!   subtracted at the end;
//! - Q6_K: `ggml_vec_dot_q6_K_q8_K`: per super-block eight integer lanes
//!   (lane `l` holds positions `4l..4l+4` of every 32-value vector, each
//!   product scaled by its 16-value sub-block's scale, minus 32 times the
//!   scaled activation sums of sub-blocks `2l, 2l+1`), each lane added into
//!   an f32 lane with one fused multiply-add by `d_w * d_x`, the lanes
//!   summed at the end as `hsum_float_8` sums them.
//!
//! The integer sums are exact however they are computed, so the kernels
//! below are written for the compiler to vectorise; only the float steps
//! keep ggml's order.

use half::f16;

/// Values per super-block.
pub(crate) const QK_K: usize = 256;

/// A row of activations quantized to 8 bits per super-block.
#[derive(Clone, Copy)]
pub(crate) struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// Sums of each 16 consecutive `qs`.
    pub bsums: [i16; QK_K / 16],
}

/// ggml's `quantize_row_q8_K_ref`.
pub(crate) fn quantize_q8_k(x: &[f32]) -> BlockQ8K {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut out = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    if amax == 0.0 {
        return out;
    }
    let iscale = -127.0 / max;
    for (q, &v) in out.qs.iter_mut().zip(x) {
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    for (s, chunk) in out.bsums.iter_mut().zip(out.qs.chunks_exact(16)) {
        *s = chunk.iter().map(|&q| q as i16).sum();
    }
    out.d = 1.0 / iscale;
    out
}

/// One Q4_K super-block: 256 weights `d * sc[s] * q - dmin * m[s]` for
/// sub-block `s` of 32, `q` in 0..16. In `qs`, each 32 bytes hold two
/// sub-blocks: the low nibbles the first, the high nibbles the second.
#[derive(Clone, Copy)]
pub(crate) struct BlockQ4K {
    d: f32,
    dmin: f32,
    sc: [u8; 8],
    m: [u8; 8],
    qs: [u8; QK_K / 2],
}

impl BlockQ4K {
    /// Bytes per block in GGUF.
    pub const BYTES: usize = 144;

    /// Read a block as ggml stores it (`d`, `dmin` in f16, the 6-bit
    /// scales and mins packed in 12 bytes).
    pub fn parse(b: &[u8]) -> Self {
        let half = |i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let s = &b[4..16];
        let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
        for j in 0..8 {
            if j < 4 {
                sc[j] = s[j] & 63;
                m[j] = s[j + 4] & 63;
            } else {
                sc[j] = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
                m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
            }
        }
        Self {
            d: half(0),
            dmin: half(2),
            sc,
            m,
            qs: b[16..144].try_into().expect("128 bytes"),
        }
    }
}

/// One Q6_K super-block: 256 weights `d * sc[s] * (q - 32)` for sub-block
/// `s` of 16, `q` in 0..64 from a low nibble (`ql`) and two high bits
/// (`qh`), laid out as ggml lays them.
#[derive(Clone, Copy)]
pub(crate) struct BlockQ6K {
    d: f32,
    sc: [i8; 16],
    ql: [u8; QK_K / 2],
    qh: [u8; QK_K / 4],
}

impl BlockQ6K {
    /// Bytes per block in GGUF.
    pub const BYTES: usize = 210;

    pub fn parse(b: &[u8]) -> Self {
        Self {
            ql: b[0..128].try_into().expect("128 bytes"),
            qh: b[128..192].try_into().expect("64 bytes"),
            sc: std::array::from_fn(|i| b[192 + i] as i8),
            d: f16::from_le_bytes([b[208], b[209]]).to_f32(),
        }
    }
}

/// Sum of `a[i] * b[i]` over 32 values, exactly.
#[inline(always)]
fn dot32(a: &[u8; 32], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

#[inline(always)]
fn dot_q4_k_body(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    let mut q = [0u8; 32];
    for (w, x) in w.iter().zip(x) {
        let mut sum = 0i32;
        let mut mins = 0i32;
        for j in 0..4 {
            let packed = &w.qs[32 * j..32 * j + 32];
            for (q, p) in q.iter_mut().zip(packed) {
                *q = p & 0x0F;
            }
            sum += w.sc[2 * j] as i32 * dot32(&q, &x.qs[64 * j..64 * j + 32]);
            for (q, p) in q.iter_mut().zip(packed) {
                *q = p >> 4;
            }
            sum += w.sc[2 * j + 1] as i32 * dot32(&q, &x.qs[64 * j + 32..64 * j + 64]);
        }
        for s in 0..8 {
            let sums = x.bsums[2 * s] as i32 + x.bsums[2 * s + 1] as i32;
            mins += w.m[s] as i32 * sums;
        }
        acc = (sum as f32).mul_add(w.d * x.d, acc);
        acc_min = (mins as f32).mul_add(w.dmin * x.d, acc_min);
    }
    acc - acc_min
}

#[inline(always)]
fn dot_q6_k_body(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    for (w, x) in w.iter().zip(x) {
        let mut lanes = [0i32; 8];
        for j in 0..2 {
            let (ql, qh, q8) = (&w.ql[64 * j..], &w.qh[32 * j..], &x.qs[128 * j..]);
            for k in 0..4 {
                let q: [i32; 32] = std::array::from_fn(|e| {
                    let low = if k % 2 == 0 { ql[e] } else { ql[32 + e] };
                    let low = if k < 2 { low & 0x0F } else { low >> 4 };
                    (low | (((qh[e] >> (2 * k)) & 3) << 4)) as i32
                });
                let q8 = &q8[32 * k..32 * k + 32];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    let sc = w.sc[8 * j + 2 * k + l / 4] as i32;
                    let part: i32 = (4 * l..4 * l + 4).map(|e| q[e] * q8[e] as i32).sum();
                    *lane += sc * part;
                }
            }
        }
        let d = x.d * w.d;
        for (l, (acc, lane)) in acc.iter_mut().zip(lanes).enumerate() {
            let sub = 32
                * (x.bsums[2 * l] as i32 * w.sc[2 * l] as i32
                    + x.bsums[2 * l + 1] as i32 * w.sc[2 * l + 1] as i32);
            *acc = d.mul_add((lane - sub) as f32, *acc);
        }
    }
    // ggml's hsum_float_8: high half onto low half, then pairwise.
    let q: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// The kernels compiled for AVX2 + FMA (vectorised integer sums, one
/// instruction per fused multiply-add), and portably.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_q4_k_avx2(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    dot_q4_k_body(w, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_q6_k_avx2(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    dot_q6_k_body(w, x)
}

pub(crate) fn dot_q4_k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { dot_q4_k_avx2(w, x) };
    }
    dot_q4_k_body(w, x)
}

pub(crate) fn dot_q6_k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { dot_q6_k_avx2(w, x) };
    }
    dot_q6_k_body(w, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_k_is_ggmls_reference_quantization() {
        let x: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let q = quantize_q8_k(&x);
        // The largest magnitude is -50/7 (first reached at i = 0): the scale
        // -127 / max maps it to -127.
        assert_eq!(q.qs[0], -127);
        assert!((q.d - (50.0 / 7.0) / 127.0).abs() < 1e-7);
        let back: Vec<f32> = q.qs.iter().map(|&v| v as f32 * q.d).collect();
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= q.d.abs() / 2.0 + 1e-6);
        }
        assert_eq!(
            q.bsums[0],
            q.qs[..16].iter().map(|&v| v as i16).sum::<i16>()
        );
    }
}
