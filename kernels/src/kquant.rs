//! ggml's K-quants on the CPU: Q4_K, Q5_K and Q6_K weights, in super-blocks
//! of 256 with 8 (Q4_K, Q5_K) or 16 (Q6_K) sub-block scales, against activations
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
//! - Q5_K: `ggml_vec_dot_q5_K_q8_K` (see [`dot_q5_k_body`]);
//! - Q6_K: `ggml_vec_dot_q6_K_q8_K`: per super-block eight integer lanes
//!   (lane `l` holds positions `4l..4l+4` of every 32-value vector, each
//!   product scaled by its 16-value sub-block's scale, minus 32 times the
//!   scaled activation sums of sub-blocks `2l, 2l+1`), each lane added into
//!   an f32 lane with one fused multiply-add by `d_w * d_x`, the lanes
//!   summed at the end as `hsum_float_8` sums them.
//!
//! The integer sums are exact however they are computed; only the float
//! steps must keep ggml's order (and Q6_K's lanes their contents).

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

impl BlockQ8K {
    /// A block of zeros, as quantizing zeros gives it.
    const ZERO: Self = Self {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
}

/// ggml's `quantize_row_q8_K_ref`: [`quantize_q8_k_plain`], sixteen values
/// at a time on AVX-512 (the same products, rounded to nearest even by the
/// conversion as `round_ties_even` rounds them; exact integer sums).
pub(crate) fn quantize_q8_k(x: &[f32]) -> BlockQ8K {
    #[cfg(target_arch = "x86_64")]
    if x.len() == QK_K && avx512::available() {
        // SAFETY: the CPU has AVX-512 F and BW (checked above), and `x`
        // holds QK_K values.
        return unsafe { avx512::quantize_q8_k(x) };
    }
    quantize_q8_k_plain(x)
}

/// ggml's `quantize_row_q8_K_ref`, one value at a time.
pub(crate) fn quantize_q8_k_plain(x: &[f32]) -> BlockQ8K {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut out = BlockQ8K::ZERO;
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
    pub(crate) d: f32,
    pub(crate) dmin: f32,
    /// The 8 sub-block scales, then the 8 mins, unpacked from 6 bits.
    pub(crate) sc_m: [u8; 16],
    pub(crate) qs: [u8; QK_K / 2],
}

/// `d`, `dmin` (f16) and the 8 scales and 8 mins packed in 6 bits each
/// (12 bytes), as Q4_K and Q5_K blocks begin: the scales, then the mins.
fn scales_and_mins(b: &[u8]) -> (f32, f32, [u8; 16]) {
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
    let sc_m = std::array::from_fn(|i| if i < 8 { sc[i] } else { m[i - 8] });
    (half(0), half(2), sc_m)
}

impl BlockQ4K {
    /// Bytes per block in GGUF.
    pub const BYTES: usize = 144;

    /// Read a block as ggml stores it.
    pub fn parse(b: &[u8]) -> Self {
        let (d, dmin, sc_m) = scales_and_mins(b);
        Self {
            d,
            dmin,
            sc_m,
            qs: b[16..144].try_into().expect("128 bytes"),
        }
    }
}

/// One Q5_K super-block: as Q4_K, with a fifth bit per weight (`qh`: bit
/// `s` of byte `i` belongs to weight `i` of sub-block `s`), `q` in 0..32.
#[derive(Clone, Copy)]
pub(crate) struct BlockQ5K {
    pub(crate) d: f32,
    pub(crate) dmin: f32,
    pub(crate) sc_m: [u8; 16],
    pub(crate) qh: [u8; QK_K / 8],
    pub(crate) qs: [u8; QK_K / 2],
}

impl BlockQ5K {
    /// Bytes per block in GGUF.
    pub const BYTES: usize = 176;

    pub fn parse(b: &[u8]) -> Self {
        let (d, dmin, sc_m) = scales_and_mins(b);
        Self {
            d,
            dmin,
            sc_m,
            qh: b[16..48].try_into().expect("32 bytes"),
            qs: b[48..176].try_into().expect("128 bytes"),
        }
    }
}

/// One Q6_K super-block: 256 weights `d * sc[s] * (q - 32)` for sub-block
/// `s` of 16, `q` in 0..64 from a low nibble (`ql`) and two high bits
/// (`qh`), laid out as ggml lays them.
#[derive(Clone, Copy)]
pub(crate) struct BlockQ6K {
    pub(crate) d: f32,
    pub(crate) sc: [i8; 16],
    pub(crate) ql: [u8; QK_K / 2],
    pub(crate) qh: [u8; QK_K / 4],
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

impl BlockQ6K {
    /// The 256 weights, as ggml's `dequantize_row_q6_K` computes them
    /// (`d * sc * q`, left to right).
    pub fn dequantize(&self) -> [f32; QK_K] {
        let mut out = [0f32; QK_K];
        for j in 0..2 {
            let (ql, qh) = (&self.ql[64 * j..], &self.qh[32 * j..]);
            for e in 0..32 {
                for k in 0..4 {
                    let low = if k % 2 == 0 { ql[e] } else { ql[32 + e] };
                    let low = if k < 2 { low & 0x0F } else { low >> 4 };
                    let q = (low | (((qh[e] >> (2 * k)) & 3) << 4)) as i32 - 32;
                    let sc = self.sc[8 * j + e / 16 + 2 * k] as f32;
                    out[128 * j + 32 * k + e] = self.d * sc * q as f32;
                }
            }
        }
        out
    }
}

/// Sum of `a[i] * b[i]` over 32 values, exactly.
#[inline(always)]
fn dot32(a: &[u8; 32], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// ggml's `ggml_vec_dot_q5_K_q8_K`: eight integer lanes per super-block
/// (lane `l`: positions `4l..4l+4` of each 32-value vector, scaled by its
/// sub-block's scale), each added into an f32 lane by one fused
/// multiply-add with `d_w * d_x`; the mins' sum per super-block added into
/// one f32 by a fused multiply-add with `-d_x * dmin_w`; the lanes summed
/// as `hsum_float_8`, then the mins' total added.
fn dot_q5_k_body(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut lanes = [0i32; 8];
        for j in 0..4 {
            for half in 0..2 {
                let s = 2 * j + half;
                let q8 = &x.qs[64 * j + 32 * half..];
                for (e, &packed) in w.qs[32 * j..32 * j + 32].iter().enumerate() {
                    let low = if half == 0 {
                        packed & 0x0F
                    } else {
                        packed >> 4
                    };
                    let q = (low | (((w.qh[e] >> s) & 1) << 4)) as i32;
                    lanes[e / 4] += w.sc_m[s] as i32 * q * q8[e] as i32;
                }
            }
        }
        let mut mins = 0i32;
        for s in 0..8 {
            mins += w.sc_m[8 + s] as i32 * (x.bsums[2 * s] as i32 + x.bsums[2 * s + 1] as i32);
        }
        let d = x.d * w.d;
        for (acc, lane) in acc.iter_mut().zip(lanes) {
            *acc = d.mul_add(lane as f32, *acc);
        }
        summs = (-x.d * w.dmin).mul_add(mins as f32, summs);
    }
    let q: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
    ((q[0] + q[2]) + (q[1] + q[3])) + summs
}

/// The portable kernels: the sums below, scalar.
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
            sum += w.sc_m[2 * j] as i32 * dot32(&q, &x.qs[64 * j..64 * j + 32]);
            for (q, p) in q.iter_mut().zip(packed) {
                *q = p >> 4;
            }
            sum += w.sc_m[2 * j + 1] as i32 * dot32(&q, &x.qs[64 * j + 32..64 * j + 64]);
        }
        for s in 0..8 {
            let sums = x.bsums[2 * s] as i32 + x.bsums[2 * s + 1] as i32;
            mins += w.sc_m[8 + s] as i32 * sums;
        }
        acc = (sum as f32).mul_add(w.d * x.d, acc);
        acc_min = (mins as f32).mul_add(w.dmin * x.d, acc_min);
    }
    acc - acc_min
}

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

/// One activation row or four: the `_x4` kernels unpack each weight block
/// once for four rows, and every row's arithmetic is the same as alone.
pub(crate) type DotK<W> = fn(&[W], &[BlockQ8K]) -> f32;
pub(crate) type DotK4<W> = fn(&[W], [&[BlockQ8K]; 4]) -> [f32; 4];

/// `$name()`: the fastest kernels this CPU runs for one block type (AVX-512,
/// else AVX2, else the portable `$body`), one row and four.
macro_rules! dispatch {
    ($name:ident, $block:ty, $kernel:ident, $body:ident) => {
        pub(crate) fn $name() -> (DotK<$block>, DotK4<$block>) {
            #[cfg(target_arch = "x86_64")]
            if avx512::available() {
                // SAFETY: the CPU has AVX-512 F/BW, AVX2 and FMA (checked above).
                return (
                    |w, x| unsafe { avx512::$kernel::<1>(w, [x])[0] },
                    |w, xs| unsafe { avx512::$kernel::<4>(w, xs) },
                );
            }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                return (
                    |w, x| unsafe { avx2::$kernel::<1>(w, [x])[0] },
                    |w, xs| unsafe { avx2::$kernel::<4>(w, xs) },
                );
            }
            ($body, |w, xs| xs.map(|x| $body(w, x)))
        }
    };
}

dispatch!(dot_q4_k, BlockQ4K, q4_k, dot_q4_k_body);
dispatch!(dot_q5_k, BlockQ5K, q5_k, dot_q5_k_body);
dispatch!(dot_q6_k, BlockQ6K, q6_k, dot_q6_k_body);

/// The same sums with AVX2: `maddubs` (u8 x i8 pairs into i16, which
/// cannot saturate here: weights below 64, activations within 127) then
/// `madd` by the sub-block scales into i32 lanes, which for Q6_K are
/// exactly ggml's lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
    use std::arch::x86_64::*;

    /// Byte shuffles that spread Q6_K scales `2i` (to bytes 0..8) and
    /// `2i + 1` (to bytes 8..16).
    const PAIRS: [[u8; 16]; 8] = {
        let mut t = [[0u8; 16]; 8];
        let mut i = 0;
        while i < 8 {
            let mut b = 0;
            while b < 16 {
                t[i][b] = (2 * i + b / 8) as u8;
                b += 1;
            }
            i += 1;
        }
        t
    };

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn hsum_i32(v: __m256i) -> i32 {
        let q = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0b01_00_11_10));
        let q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0b10_11_00_01));
        _mm_cvtsi128_si32(q)
    }

    /// Sub-blocks `2j` and `2j + 1` of a Q5_K block's weights (0..32): the
    /// nibbles with their fifth bits.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q5_values(w: &BlockQ5K, j: usize) -> [__m256i; 2] {
        let (low, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
        let hbits = _mm256_loadu_si256(w.qh.as_ptr() as *const __m256i);
        // Bit s of each byte of qh, as 16 (shifts within 16-bit lanes leave
        // each byte's own bit in its bit 0).
        let fifth = |s: i32| {
            let h = _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(s));
            _mm256_slli_epi16(_mm256_and_si256(h, one), 4)
        };
        let bits = _mm256_loadu_si256(w.qs.as_ptr().add(32 * j) as *const __m256i);
        [
            _mm256_or_si256(_mm256_and_si256(bits, low), fifth(2 * j as i32)),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), low),
                fifth(2 * j as i32 + 1),
            ),
        ]
    }

    /// Half `j` of a Q6_K block's weights (0..64, before the -32) as four
    /// 32-value vectors, in the order of the activations.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q6_values(w: &BlockQ6K, j: usize) -> [__m256i; 4] {
        let (m3, m15) = (_mm256_set1_epi8(3), _mm256_set1_epi8(15));
        let ql0 = _mm256_loadu_si256(w.ql.as_ptr().add(64 * j) as *const __m256i);
        let ql1 = _mm256_loadu_si256(w.ql.as_ptr().add(64 * j + 32) as *const __m256i);
        let qh = _mm256_loadu_si256(w.qh.as_ptr().add(32 * j) as *const __m256i);
        [
            _mm256_or_si256(
                _mm256_and_si256(ql0, m15),
                _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4),
            ),
            _mm256_or_si256(
                _mm256_and_si256(ql1, m15),
                _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m15),
                _mm256_and_si256(qh, _mm256_set1_epi8(48)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15),
                _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(-64)), 2),
            ),
        ]
    }

    /// A Q4_K or Q5_K block's 8 scales as 16-bit values in both halves of
    /// one register (to broadcast with [`scale`]), and its 8 mins.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scales_and_mins(sc_m: &[u8; 16]) -> (__m256i, __m128i) {
        let sc_m = _mm256_cvtepu8_epi16(_mm_loadu_si128(sc_m.as_ptr() as *const __m128i));
        let sc128 = _mm256_castsi256_si128(sc_m);
        (
            _mm256_set_m128i(sc128, sc128),
            _mm256_extracti128_si256(sc_m, 1),
        )
    }

    /// Scale `i` in every 16-bit lane.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scale(scales: __m256i, i: usize) -> __m256i {
        let pick = _mm256_set1_epi16(i16::from_le_bytes([2 * i as u8, 2 * i as u8 + 1]));
        _mm256_shuffle_epi8(scales, pick)
    }

    /// The 8 mins times the activations' sums over their sub-blocks (pairs
    /// of bsums), summed: exact.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mins_sum(mins: __m128i, x: &BlockQ8K) -> i32 {
        let bsums = _mm256_loadu_si256(x.bsums.as_ptr() as *const __m256i);
        let pairs = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256(bsums, 1),
        );
        let m = _mm_madd_epi16(mins, pairs);
        let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b01_00_11_10));
        let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b10_11_00_01));
        _mm_cvtsi128_si32(m)
    }

    /// `Σ sc_lo * (lo . q8[..32]) + sc_hi * (hi . q8[32..64])` in 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair(lo: __m256i, hi: __m256i, scales: (__m256i, __m256i), q8: *const i8) -> __m256i {
        let q8_lo = _mm256_loadu_si256(q8 as *const __m256i);
        let q8_hi = _mm256_loadu_si256(q8.add(32) as *const __m256i);
        let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, q8_lo), scales.0);
        let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, q8_hi), scales.1);
        _mm256_add_epi32(p_lo, p_hi)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q4_k<const R: usize>(w: &[BlockQ4K], xs: [&[BlockQ8K]; R]) -> [f32; R] {
        let low = _mm256_set1_epi8(0x0F);
        let (mut acc, mut acc_min) = ([0f32; R], [0f32; R]);
        let n = xs.iter().fold(w.len(), |n, x| n.min(x.len()));
        for b in 0..n {
            let w = &w[b];
            let mut sums = [_mm256_setzero_si256(); R];
            let (scales, mins) = scales_and_mins(&w.sc_m);
            for j in 0..4 {
                let bits = _mm256_loadu_si256(w.qs.as_ptr().add(32 * j) as *const __m256i);
                let lo = _mm256_and_si256(bits, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
                let sc = (scale(scales, 2 * j), scale(scales, 2 * j + 1));
                for (sum, x) in sums.iter_mut().zip(&xs) {
                    let p = pair(lo, hi, sc, x[b].qs.as_ptr().add(64 * j));
                    *sum = _mm256_add_epi32(*sum, p);
                }
            }
            for r in 0..R {
                let x = &xs[r][b];
                acc[r] = (hsum_i32(sums[r]) as f32).mul_add(w.d * x.d, acc[r]);
                acc_min[r] = (mins_sum(mins, x) as f32).mul_add(w.dmin * x.d, acc_min[r]);
            }
        }
        std::array::from_fn(|r| acc[r] - acc_min[r])
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q5_k<const R: usize>(w: &[BlockQ5K], xs: [&[BlockQ8K]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut summs = [0f32; R];
        let n = xs.iter().fold(w.len(), |n, x| n.min(x.len()));
        for b in 0..n {
            let w = &w[b];
            let mut lanes = [_mm256_setzero_si256(); R];
            let (scales, mins) = scales_and_mins(&w.sc_m);
            for j in 0..4 {
                let [lo, hi] = q5_values(w, j);
                let sc = (scale(scales, 2 * j), scale(scales, 2 * j + 1));
                for (lane, x) in lanes.iter_mut().zip(&xs) {
                    let p = pair(lo, hi, sc, x[b].qs.as_ptr().add(64 * j));
                    *lane = _mm256_add_epi32(*lane, p);
                }
            }
            for r in 0..R {
                let x = &xs[r][b];
                summs[r] = (-x.d * w.dmin).mul_add(mins_sum(mins, x) as f32, summs[r]);
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(x.d * w.d),
                    _mm256_cvtepi32_ps(lanes[r]),
                    acc[r],
                );
            }
        }
        std::array::from_fn(|r| crate::simd::hsum(acc[r]) + summs[r])
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q6_k<const R: usize>(w: &[BlockQ6K], xs: [&[BlockQ8K]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let n = xs.iter().fold(w.len(), |n, x| n.min(x.len()));
        for b in 0..n {
            let w = &w[b];
            let mut lanes = [_mm256_setzero_si256(); R];
            let sc = _mm_loadu_si128(w.sc.as_ptr() as *const __m128i);
            for j in 0..2 {
                let q = q6_values(w, j);
                for (k, q) in q.iter().enumerate() {
                    // Values 0..16 of the vector take one sub-block's
                    // scale, 16..32 the next one's.
                    let pick = _mm_loadu_si128(PAIRS[4 * j + k].as_ptr() as *const __m128i);
                    let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pick));
                    for (lane, x) in lanes.iter_mut().zip(&xs) {
                        let q8 = _mm256_loadu_si256(
                            x[b].qs.as_ptr().add(128 * j + 32 * k) as *const __m256i
                        );
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*q, q8), scale);
                        *lane = _mm256_add_epi32(*lane, p);
                    }
                }
            }
            let scales = _mm256_cvtepi8_epi16(sc);
            for r in 0..R {
                let x = &xs[r][b];
                let bsums = _mm256_loadu_si256(x.bsums.as_ptr() as *const __m256i);
                let sub = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales), 5);
                let sumi = _mm256_sub_epi32(lanes[r], sub);
                acc[r] =
                    _mm256_fmadd_ps(_mm256_set1_ps(x.d * w.d), _mm256_cvtepi32_ps(sumi), acc[r]);
            }
        }
        std::array::from_fn(|r| crate::simd::hsum(acc[r]))
    }
}

/// The same sums with AVX-512 (F, BW): 64 weights per instruction where
/// AVX2 takes 32. Integer totals are the same whatever the grouping; where
/// ggml's float steps take eight 32-bit lanes (Q5_K, Q6_K), the 16 lanes
/// here are folded onto those 8 before any float is formed (lane `l` and
/// `l + 8` hold the same positions of two consecutive 32-value vectors),
/// so the results are the AVX2 kernels' bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::avx2::{hsum_i32, mins_sum, q5_values, q6_values, scale, scales_and_mins};
    use super::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn quantize_q8_k(x: &[f32]) -> BlockQ8K {
        let p = x.as_ptr();
        let mut top = _mm512_setzero_ps();
        for i in (0..QK_K).step_by(16) {
            top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(p.add(i))));
        }
        let amax = _mm512_reduce_max_ps(top);
        let mut out = BlockQ8K::ZERO;
        if amax == 0.0 {
            return out;
        }
        // The first value of that magnitude, with its sign.
        let max = *x
            .iter()
            .find(|v| v.abs() == amax)
            .expect("amax is some |v|");
        let iscale = -127.0 / max;
        let (scale, most) = (_mm512_set1_ps(iscale), _mm512_set1_epi32(127));
        for i in (0..QK_K).step_by(16) {
            let v = _mm512_mul_ps(scale, _mm512_loadu_ps(p.add(i)));
            let q = _mm512_min_epi32(_mm512_cvtps_epi32(v), most);
            _mm_storeu_si128(
                out.qs.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(q),
            );
            out.bsums[i / 16] = _mm512_reduce_add_epi32(q) as i16;
        }
        out.d = 1.0 / iscale;
        out
    }

    pub(super) fn available() -> bool {
        crate::simd::has_avx2_fma()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
    }

    /// Two 256-bit halves as one 512-bit vector (`lo` first).
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
    }

    /// The 16 lanes folded onto 8: lane `l` plus lane `l + 8`.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    unsafe fn fold(v: __m512i) -> __m256i {
        _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1))
    }

    /// `Σ scale * (q . q8)` over 64 values (32-bit lanes of 4 products).
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    unsafe fn scaled(q: __m512i, scales: __m512i, q8: *const i8) -> __m512i {
        let q8 = _mm512_loadu_si512(q8 as *const _);
        _mm512_madd_epi16(_mm512_maddubs_epi16(q, q8), scales)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn q4_k<const R: usize>(w: &[BlockQ4K], xs: [&[BlockQ8K]; R]) -> [f32; R] {
        let low = _mm256_set1_epi8(0x0F);
        let (mut acc, mut acc_min) = ([0f32; R], [0f32; R]);
        let n = xs.iter().fold(w.len(), |n, x| n.min(x.len()));
        for b in 0..n {
            let w = &w[b];
            let mut sums = [_mm512_setzero_si512(); R];
            let (scales, mins) = scales_and_mins(&w.sc_m);
            for j in 0..4 {
                let bits = _mm256_loadu_si256(w.qs.as_ptr().add(32 * j) as *const __m256i);
                let q = join(
                    _mm256_and_si256(bits, low),
                    _mm256_and_si256(_mm256_srli_epi16(bits, 4), low),
                );
                let sc = join(scale(scales, 2 * j), scale(scales, 2 * j + 1));
                for (sum, x) in sums.iter_mut().zip(&xs) {
                    let p = scaled(q, sc, x[b].qs.as_ptr().add(64 * j));
                    *sum = _mm512_add_epi32(*sum, p);
                }
            }
            for r in 0..R {
                let x = &xs[r][b];
                let total = hsum_i32(fold(sums[r]));
                acc[r] = (total as f32).mul_add(w.d * x.d, acc[r]);
                acc_min[r] = (mins_sum(mins, x) as f32).mul_add(w.dmin * x.d, acc_min[r]);
            }
        }
        std::array::from_fn(|r| acc[r] - acc_min[r])
    }

    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn q5_k<const R: usize>(w: &[BlockQ5K], xs: [&[BlockQ8K]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut summs = [0f32; R];
        let n = xs.iter().fold(w.len(), |n, x| n.min(x.len()));
        for b in 0..n {
            let w = &w[b];
            let mut lanes = [_mm512_setzero_si512(); R];
            let (scales, mins) = scales_and_mins(&w.sc_m);
            for j in 0..4 {
                let [lo, hi] = q5_values(w, j);
                let q = join(lo, hi);
                let sc = join(scale(scales, 2 * j), scale(scales, 2 * j + 1));
                for (lane, x) in lanes.iter_mut().zip(&xs) {
                    let p = scaled(q, sc, x[b].qs.as_ptr().add(64 * j));
                    *lane = _mm512_add_epi32(*lane, p);
                }
            }
            for r in 0..R {
                let x = &xs[r][b];
                summs[r] = (-x.d * w.dmin).mul_add(mins_sum(mins, x) as f32, summs[r]);
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(x.d * w.d),
                    _mm256_cvtepi32_ps(fold(lanes[r])),
                    acc[r],
                );
            }
        }
        std::array::from_fn(|r| crate::simd::hsum(acc[r]) + summs[r])
    }

    /// Byte shuffles giving, in each 128-bit half, Q6_K scales
    /// `4t, 4t + 1` (low half) and `4t + 2, 4t + 3` (high half), eight
    /// bytes each: the scales of 64 consecutive weights.
    const QUADS: [[u8; 32]; 4] = {
        let mut m = [[0u8; 32]; 4];
        let mut t = 0;
        while t < 4 {
            let mut i = 0;
            while i < 32 {
                m[t][i] = (4 * t + i / 8) as u8;
                i += 1;
            }
            t += 1;
        }
        m
    };

    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn q6_k<const R: usize>(w: &[BlockQ6K], xs: [&[BlockQ8K]; R]) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let n = xs.iter().fold(w.len(), |n, x| n.min(x.len()));
        for b in 0..n {
            let w = &w[b];
            let mut lanes = [_mm512_setzero_si512(); R];
            let sc = _mm_loadu_si128(w.sc.as_ptr() as *const __m128i);
            let sc2 = _mm256_broadcastsi128_si256(sc);
            for j in 0..2 {
                let [q0, q1, q2, q3] = q6_values(w, j);
                let (q01, q23) = (join(q0, q1), join(q2, q3));
                let quad = |t: usize| {
                    let pick = _mm256_loadu_si256(QUADS[t].as_ptr() as *const __m256i);
                    _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(sc2, pick))
                };
                let (s01, s23) = (quad(2 * j), quad(2 * j + 1));
                for (lane, x) in lanes.iter_mut().zip(&xs) {
                    let q8 = x[b].qs.as_ptr().add(128 * j);
                    let p = _mm512_add_epi32(scaled(q01, s01, q8), scaled(q23, s23, q8.add(64)));
                    *lane = _mm512_add_epi32(*lane, p);
                }
            }
            let scales = _mm256_cvtepi8_epi16(sc);
            for r in 0..R {
                let x = &xs[r][b];
                let bsums = _mm256_loadu_si256(x.bsums.as_ptr() as *const __m256i);
                let sub = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales), 5);
                let sumi = _mm256_sub_epi32(fold(lanes[r]), sub);
                acc[r] =
                    _mm256_fmadd_ps(_mm256_set1_ps(x.d * w.d), _mm256_cvtepi32_ps(sumi), acc[r]);
            }
        }
        std::array::from_fn(|r| crate::simd::hsum(acc[r]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Random but well-formed blocks (any bytes are valid K-quant blocks
    /// once the f16 scales are finite), from a fixed seed.
    pub(crate) fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn with_scale(mut b: Vec<u8>, at: &[usize], value: f32) -> Vec<u8> {
        for &i in at {
            b[i..i + 2].copy_from_slice(&f16::from_f32(value).to_le_bytes());
        }
        b
    }

    /// The AVX2 and AVX-512 kernels (one row and four) against the
    /// portable ones, bit for bit, so that each gives ggml's result.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_and_portable_kernels_give_the_same_bits() {
        if !crate::simd::has_avx2_fma() {
            eprintln!("this CPU has no AVX2: only the portable kernels run here");
            return;
        }
        let blocks = 3;
        let xs: Vec<Vec<BlockQ8K>> = (0..4)
            .map(|r| {
                let x: Vec<f32> = random_bytes(blocks * QK_K, 7 + r)
                    .iter()
                    .map(|&b| (b as f32 - 128.0) / 9.0)
                    .collect();
                x.chunks_exact(QK_K).map(quantize_q8_k).collect()
            })
            .collect();
        let rows: [&[BlockQ8K]; 4] = std::array::from_fn(|r| xs[r].as_slice());
        let q4: Vec<BlockQ4K> = (0..blocks as u64)
            .map(|i| with_scale(random_bytes(BlockQ4K::BYTES, 99 + i), &[0, 2], 0.01))
            .map(|b| BlockQ4K::parse(&b))
            .collect();
        let q5: Vec<BlockQ5K> = (0..blocks as u64)
            .map(|i| with_scale(random_bytes(BlockQ5K::BYTES, 299 + i), &[0, 2], 0.01))
            .map(|b| BlockQ5K::parse(&b))
            .collect();
        let q6: Vec<BlockQ6K> = (0..blocks as u64)
            .map(|i| with_scale(random_bytes(BlockQ6K::BYTES, 199 + i), &[208], 0.01))
            .map(|b| BlockQ6K::parse(&b))
            .collect();
        let bits = |v: [f32; 4]| v.map(f32::to_bits);
        let want4 = bits(rows.map(|x| dot_q4_k_body(&q4, x)));
        let want5 = bits(rows.map(|x| dot_q5_k_body(&q5, x)));
        let want6 = bits(rows.map(|x| dot_q6_k_body(&q6, x)));
        // SAFETY: the CPU has AVX2 and FMA (checked above), and AVX-512
        // where `avx512::available()`.
        unsafe {
            assert_eq!(bits(avx2::q4_k::<4>(&q4, rows)), want4);
            assert_eq!(bits(avx2::q5_k::<4>(&q5, rows)), want5);
            assert_eq!(bits(avx2::q6_k::<4>(&q6, rows)), want6);
            assert_eq!(avx2::q6_k::<1>(&q6, [rows[0]])[0].to_bits(), want6[0]);
            if avx512::available() {
                assert_eq!(bits(avx512::q4_k::<4>(&q4, rows)), want4);
                assert_eq!(bits(avx512::q5_k::<4>(&q5, rows)), want5);
                assert_eq!(bits(avx512::q6_k::<4>(&q6, rows)), want6);
                assert_eq!(avx512::q4_k::<1>(&q4, [rows[0]])[0].to_bits(), want4[0]);
            } else {
                eprintln!("this CPU has no AVX-512: only the AVX2 kernels checked");
            }
        }
        // And what the matrix products dispatch to.
        assert_eq!((dot_q5_k().1)(&q5, rows).map(f32::to_bits), want5);
    }

    #[test]
    fn q8_k_sixteen_at_a_time_is_the_plain_form() {
        let spreads = [1e-3f32, 1.0, 50.0];
        for (seed, spread) in spreads.iter().enumerate() {
            let mut x: Vec<f32> = random_bytes(QK_K, 40 + seed as u64)
                .iter()
                .map(|&b| (b as f32 - 127.5) * spread)
                .collect();
            // A tie for the largest magnitude, the negative one first, and
            // values exactly halfway between two steps.
            x[3] = -300.0 * spread;
            x[200] = 300.0 * spread;
            x[7] = x[3] * 0.5 / 127.0;
            for x in [x.clone(), vec![0.0; QK_K], x.iter().map(|v| -v).collect()] {
                let (a, b) = (quantize_q8_k(&x), quantize_q8_k_plain(&x));
                assert_eq!(
                    (a.d.to_bits(), a.qs, a.bsums),
                    (b.d.to_bits(), b.qs, b.bsums)
                );
            }
        }
    }

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
