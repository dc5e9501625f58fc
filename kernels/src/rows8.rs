//! Q4_1 and Q8_0 weight rows against up to eight activation rows at once,
//! on 512-bit vectors (AVX-512 VNNI): the batched decode step's main cost
//! (a batch's sequences' next tokens are its activation rows).
//!
//! The four-row kernels in `quant.rs` spend most of their time on
//! per-row scalar work: each block's `d_w * d_x` product and its broadcast,
//! and the `m_w * s_x` offset. Here the activations are first laid out for
//! eight rows ([`Rows8`]): two rows' quants side by side in one 512-bit
//! vector, their scales already repeated across the eight lanes each row's
//! sum uses, and the eight rows' offsets in one vector. A weight block is
//! then unpacked once into both halves of a vector, and each pair of rows
//! costs one integer dot product, one conversion, one scale product and one
//! fused multiply-add; the eight offsets cost one product and one addition.
//! Fewer than eight rows go in as many pairs as they fill (the kernels are
//! instantiated for one to four pairs).
//!
//! Every lane sees exactly the operations the one-row kernel gives it (the
//! integer sums are exact, the scale product and the accumulation are the
//! same IEEE operations in the same order, the final sums the same
//! [`hsum`]), so a row's result is bit for bit the same whichever kernel
//! computes it, and so llama.cpp's.

use crate::blocks::{BlockQ4, BlockQ8, QK};
use crate::simd::hsum;

/// Activation rows of `kb` blocks each, in groups of eight (the last group
/// may hold fewer: its rows go in pairs, an odd one out paired with a row
/// of zeros whose results are dropped), for one kind of weights.
pub(crate) struct Rows8 {
    /// Per group, per block, per pair of rows: the pair's 32 quants each,
    /// side by side (for Q8_0 weights, plus 128 as unsigned bytes: see
    /// [`dot_q8_0`]).
    qs: Vec<Quants>,
    /// Per group, block and pair: each row's scale repeated eight times.
    d: Vec<Scales>,
    /// Per group and block: the group's rows' `s` (Q4_1's offsets; zero
    /// past its last row).
    s: Vec<Sums>,
    kb: usize,
    /// How many rows: every group but the last holds eight.
    m: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Quants([u8; 2 * QK]);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Scales([f32; 16]);

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Sums([f32; 8]);

impl Rows8 {
    /// The `m` rows of `kb` quantized blocks in `xq` (row-major).
    /// `unsigned` stores each quant plus 128, as the Q8_0 kernel takes
    /// them.
    pub(crate) fn new(xq: &[BlockQ8], kb: usize, unsigned: bool) -> Self {
        let m = xq.len() / kb;
        let groups = m.div_ceil(8);
        let pairs = m.div_ceil(2);
        let mut qs = Vec::with_capacity(pairs * kb);
        let mut d = Vec::with_capacity(pairs * kb);
        let mut s = Vec::with_capacity(groups * kb);
        let flip = if unsigned { 0x80 } else { 0 };
        let zero = BlockQ8 {
            d: 0.0,
            s: 0.0,
            qs: [0; QK],
        };
        for g in 0..groups {
            let rows = (m - g * 8).min(8);
            let block = |r: usize, b: usize| {
                if r < rows {
                    &xq[(g * 8 + r) * kb + b]
                } else {
                    &zero
                }
            };
            for b in 0..kb {
                for p in 0..rows.div_ceil(2) {
                    let (x0, x1) = (block(2 * p, b), block(2 * p + 1, b));
                    qs.push(Quants(std::array::from_fn(|i| {
                        let q = if i < QK { x0.qs[i] } else { x1.qs[i - QK] };
                        q as u8 ^ flip
                    })));
                    d.push(Scales(std::array::from_fn(
                        |i| {
                            if i < 8 {
                                x0.d
                            } else {
                                x1.d
                            }
                        },
                    )));
                }
                s.push(Sums(std::array::from_fn(|r| block(r, b).s)));
            }
        }
        Self { qs, d, s, kb, m }
    }

    /// How many groups of (up to) eight rows it holds.
    pub(crate) fn groups(&self) -> usize {
        self.m.div_ceil(8)
    }

    /// How many rows group `g` holds.
    pub(crate) fn rows(&self, g: usize) -> usize {
        (self.m - g * 8).min(8)
    }

    /// Group `g`'s pairs of rows, and where its quants and scales begin.
    fn pairs(&self, g: usize) -> (usize, usize) {
        (self.rows(g).div_ceil(2), g * 4 * self.kb)
    }
}

/// One weight row against the eight rows of group `g`.
pub(crate) type Dot8Fn<W> = fn(&[W], &Rows8, usize) -> [f32; 8];

/// The kernels, if this CPU has what they need (AVX-512 F, BW, VL and VNNI).
pub(crate) fn kernels() -> Option<(Dot8Fn<BlockQ4>, Dot8Fn<BlockQ8>)> {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
    {
        // One instance per number of pairs in the group.
        macro_rules! by_pairs {
            ($kernel:ident) => {
                // SAFETY: the CPU has every feature the kernels enable
                // (checked above).
                |w, x, g| unsafe {
                    match x.pairs(g).0 {
                        4 => $kernel::<4>(w, x, g),
                        3 => $kernel::<3>(w, x, g),
                        2 => $kernel::<2>(w, x, g),
                        _ => $kernel::<1>(w, x, g),
                    }
                }
            };
        }
        return Some((by_pairs!(dot_q4_1), by_pairs!(dot_q8_0)));
    }
    None
}

/// One block's integer sums for a pair of rows into the pair's
/// accumulator: `(d_w * d_x) * sum + acc` in each lane, the one-row
/// kernel's operations (`wd`: the weight block's scale in every lane).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn add_pair(
    acc: &mut std::arch::x86_64::__m512,
    sums: std::arch::x86_64::__m512i,
    wd: std::arch::x86_64::__m512,
    scales: &Scales,
) {
    use std::arch::x86_64::*;
    let d = _mm512_mul_ps(wd, _mm512_load_ps(scales.0.as_ptr()));
    *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sums), *acc);
}

/// Each row's sum from the pairs' accumulators (row `2p` in the low half
/// of pair `p`'s), as the one-row kernel finishes its own accumulator;
/// rows past the last pair read zero.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn finish<const P: usize>(acc: [std::arch::x86_64::__m512; P]) -> [f32; 8] {
    use std::arch::x86_64::*;
    let mut out = [0f32; 8];
    for (p, acc) in acc.into_iter().enumerate() {
        let low = _mm512_castps512_ps256(acc);
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
        out[2 * p] = hsum(low);
        out[2 * p + 1] = hsum(high);
    }
    out
}

/// Q4_1: per block, `d_w * d_x * sum(q_w * q_x)` into each row's eight
/// lanes, `m_w * s_x` into its offset, as `dot_q4_1_vnni` does per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn dot_q4_1<const P: usize>(w: &[BlockQ4], x: &Rows8, g: usize) -> [f32; 8] {
    use std::arch::x86_64::*;
    let kb = x.kb;
    let (pairs, base) = x.pairs(g);
    assert!(w.len() == kb && g < x.groups() && pairs == P);
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); P];
    let mut offsets = _mm256_setzero_ps();
    let (qs, ds, ss) = (x.qs.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
    for (b, w) in w.iter().enumerate() {
        // The 16 packed bytes in all four 128-bit lanes; the odd lanes take
        // the high nibbles: [low, high, low, high], one row's 32 weights
        // per half.
        let packed = _mm512_broadcast_i32x4(_mm_loadu_si128(w.qs.as_ptr() as *const __m128i));
        let qw = _mm512_and_si512(_mm512_mask_srli_epi16(packed, 0xFF00_FF00, packed, 4), low);
        let wd = _mm512_set1_ps(w.d);
        let at = base + b * P;
        for (p, acc) in acc.iter_mut().enumerate() {
            let qx = _mm512_load_si512((*qs.add(at + p)).0.as_ptr() as *const __m512i);
            let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qw, qx);
            add_pair(acc, sums, wd, &*ds.add(at + p));
        }
        let s = _mm256_load_ps((*ss.add(g * kb + b)).0.as_ptr());
        offsets = _mm256_add_ps(offsets, _mm256_mul_ps(_mm256_set1_ps(w.m), s));
    }
    let mut offs = [0f32; 8];
    _mm256_storeu_ps(offs.as_mut_ptr(), offsets);
    let mut out = finish(acc);
    for (out, offset) in out.iter_mut().zip(offs) {
        *out += offset;
    }
    out
}

/// Q8_0 (and Q5_0 widened to it): per block, `d_w * d_x * sum(q_w * q_x)`
/// into each row's eight lanes. The integer sum comes from one VNNI
/// product of the unsigned `q_x + 128` by the signed weights, started from
/// `-128 * sum(q_w)` (computed once per block for every row), which leaves
/// exactly `sum(q_w * q_x)` in each lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn dot_q8_0<const P: usize>(w: &[BlockQ8], x: &Rows8, g: usize) -> [f32; 8] {
    use std::arch::x86_64::*;
    let kb = x.kb;
    let (pairs, base) = x.pairs(g);
    assert!(w.len() == kb && g < x.groups() && pairs == P);
    let bias = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_ps(); P];
    let (qs, ds) = (x.qs.as_ptr(), x.d.as_ptr());
    for (b, w) in w.iter().enumerate() {
        let qw = _mm512_broadcast_i64x4(_mm256_loadu_si256(w.qs.as_ptr() as *const __m256i));
        // 0x80 taken as unsigned is 128: this is 128 * (four weights' sum).
        let correction = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, qw),
        );
        let wd = _mm512_set1_ps(w.d);
        let at = base + b * P;
        for (p, acc) in acc.iter_mut().enumerate() {
            let qx = _mm512_load_si512((*qs.add(at + p)).0.as_ptr() as *const __m512i);
            add_pair(
                acc,
                _mm512_dpbusd_epi32(correction, qx, qw),
                wd,
                &*ds.add(at + p),
            );
        }
    }
    finish(acc)
}
