//! Q4_0 weights (32 weights `d * (q - 8)`, `q` in 0..16, one f16 scale per
//! block) times activations quantized to 8 bits, with the numerics of
//! ggml's repacked Q4_0 kernels, which llama.cpp runs on every x86-64 CPU
//! with AVX2 (`ggml_gemv_q4_0_8x8_q8_0` and its `gemm`): for each block
//! the exact integer dot product of the weights with the activations'
//! int8 values, then `acc = fma(sum, d_w * d_x, acc)`, block after block
//! in order.
//!
//! Exact integers leave the layout free, and the layout is chosen for
//! AVX-512 VNNI: at load, a row's blocks are regrouped 16 at a time so
//! that 32-bit lane `b` of a vector holds four weights of block `b`. One
//! `vpdpbusd` then adds four products of each of 16 blocks, eight of them
//! give 16 blocks' sums in 16 lanes, and no horizontal sum is needed until
//! the in-order accumulation of the blocks' scaled sums.

use crate::blocks::QK;
use half::f16;

/// Blocks per group.
pub const GROUP: usize = 16;

/// 16 blocks of a weight row: their f16 scales, and their nibbles where
/// byte `64 p + 4 b + i` holds weight `4p + i` of block `b` in its low
/// nibble and weight `16 + 4p + i` in its high one. A row's last group is
/// padded with zero blocks.
#[derive(Clone, Copy)]
pub struct GroupQ4_0 {
    d: [u16; GROUP],
    qs: [u8; GROUP * QK / 2],
}

/// 16 blocks of an activation row (8-bit, one scale per block) laid out to
/// match: byte `64 t + 4 b + i` is value `4t + i` of block `b`; `c` is 8
/// times each block's sum (the weights' offset of 8, taken out at once);
/// `len` counts the blocks that are real, not padding.
#[derive(Clone)]
pub struct GroupX {
    d: [f32; GROUP],
    c: [i32; GROUP],
    qs: [i8; GROUP * QK],
    len: usize,
}

/// Groups per row of `k` weights.
pub fn groups_per_row(k: usize) -> usize {
    (k / QK).div_ceil(GROUP)
}

/// A Q4_0 tensor's raw bytes (18-byte blocks: f16 `d`, then 16 bytes whose
/// low nibbles are weights 0..16 and high ones 16..32), `n` rows of `k`,
/// regrouped.
pub fn regroup(data: &[u8], n: usize, k: usize) -> Vec<GroupQ4_0> {
    let kb = k / QK;
    let per_row = groups_per_row(k);
    let mut out = vec![
        GroupQ4_0 {
            d: [0; GROUP],
            qs: [0; GROUP * QK / 2],
        };
        n * per_row
    ];
    for (j, row) in data.chunks_exact(18 * kb).take(n).enumerate() {
        for (b, block) in row.chunks_exact(18).enumerate() {
            let group = &mut out[j * per_row + b / GROUP];
            let lane = b % GROUP;
            group.d[lane] = u16::from_le_bytes([block[0], block[1]]);
            let q = |w: usize| {
                let byte = block[2 + w % 16];
                if w < 16 {
                    byte & 0x0F
                } else {
                    byte >> 4
                }
            };
            for p in 0..4 {
                for i in 0..4 {
                    group.qs[64 * p + 4 * lane + i] = q(4 * p + i) | (q(16 + 4 * p + i) << 4);
                }
            }
        }
    }
    out
}

/// Weight row `j` (`per_row` groups each) as ggml's `dequantize_row_q4_0`
/// gives it: `(q - 8) * d`, exact in f32.
pub fn dequantize_row(groups: &[GroupQ4_0], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(k);
    for b in 0..k / QK {
        let group = &groups[b / GROUP];
        let lane = b % GROUP;
        let d = f16::from_bits(group.d[lane]).to_f32();
        for w in 0..QK {
            let (t, high) = (w % 16 / 4, w >= 16);
            let byte = group.qs[64 * t + 4 * lane + w % 4];
            let q = if high { byte >> 4 } else { byte & 0x0F };
            out.push((q as i32 - 8) as f32 * d);
        }
    }
    out
}

/// One activation row's 8-bit blocks (scale `d`, 32 values each),
/// regrouped to match the weights.
pub fn group_activations<'a>(
    blocks: impl ExactSizeIterator<Item = (f32, &'a [i8; QK])>,
) -> Vec<GroupX> {
    let kb = blocks.len();
    let mut out = vec![
        GroupX {
            d: [0.0; GROUP],
            c: [0; GROUP],
            qs: [0; GROUP * QK],
            len: 0,
        };
        kb.div_ceil(GROUP)
    ];
    for (b, (d, qs)) in blocks.enumerate() {
        let group = &mut out[b / GROUP];
        let lane = b % GROUP;
        group.d[lane] = d;
        group.c[lane] = 8 * qs.iter().map(|&q| q as i32).sum::<i32>();
        group.len = lane + 1;
        for (v, &q) in qs.iter().enumerate() {
            group.qs[64 * (v / 4) + 4 * lane + v % 4] = q;
        }
    }
    out
}

pub(crate) type DotQ4_0 = fn(&[GroupQ4_0], &[GroupX]) -> f32;
pub(crate) type DotQ4_0x4 = fn(&[GroupQ4_0], [&[GroupX]; 4]) -> [f32; 4];

/// One weight row against one and against four activation rows.
pub(crate) fn dots() -> (DotQ4_0, DotQ4_0x4) {
    #[cfg(target_arch = "x86_64")]
    if vnni::available() {
        // SAFETY: the CPU has AVX-512 F/BW/VNNI and FMA (checked above).
        return (
            |w, x| unsafe { vnni::dot::<1>(w, [x])[0] },
            |w, xs| unsafe { vnni::dot::<4>(w, xs) },
        );
    }
    (|w, x| dot_body::<1>(w, [x])[0], dot_body::<4>)
}

/// The blocks' scaled sums added in order: `acc = fma(sum, d_w * d_x, acc)`.
#[inline(always)]
fn accumulate(acc: &mut f32, sums: &[f32; GROUP], scales: &[f32; GROUP], len: usize) {
    for b in 0..len {
        *acc = sums[b].mul_add(scales[b], *acc);
    }
}

fn dot_body<const R: usize>(w: &[GroupQ4_0], xs: [&[GroupX]; R]) -> [f32; R] {
    let mut acc = [0f32; R];
    for (g, wg) in w.iter().enumerate() {
        for r in 0..R {
            let xg = &xs[r][g];
            let mut sums = [0f32; GROUP];
            let mut scales = [0f32; GROUP];
            for lane in 0..xg.len {
                let mut sum = -xg.c[lane];
                for p in 0..4 {
                    for i in 0..4 {
                        let byte = wg.qs[64 * p + 4 * lane + i];
                        sum += (byte & 0x0F) as i32 * xg.qs[64 * p + 4 * lane + i] as i32;
                        sum += (byte >> 4) as i32 * xg.qs[64 * (p + 4) + 4 * lane + i] as i32;
                    }
                }
                sums[lane] = sum as f32;
                scales[lane] = f16::from_bits(wg.d[lane]).to_f32() * xg.d[lane];
            }
            accumulate(&mut acc[r], &sums, &scales, xg.len);
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{accumulate, GroupQ4_0, GroupX, GROUP};
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("fma")
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(super) unsafe fn dot<const R: usize>(w: &[GroupQ4_0], xs: [&[GroupX]; R]) -> [f32; R] {
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [0f32; R];
        let mut sums = [0f32; GROUP];
        let mut scales = [0f32; GROUP];
        for (g, wg) in w.iter().enumerate() {
            let wd = _mm512_cvtph_ps(_mm256_loadu_si256(wg.d.as_ptr() as *const __m256i));
            let mut nibbles = [_mm512_setzero_si512(); 8];
            for p in 0..4 {
                let packed = _mm512_loadu_si512(wg.qs.as_ptr().add(64 * p) as *const _);
                nibbles[p] = _mm512_and_si512(packed, low);
                nibbles[p + 4] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low);
            }
            for r in 0..R {
                let xg = xs[r].get_unchecked(g);
                let mut sum = _mm512_setzero_si512();
                for (t, q) in nibbles.iter().enumerate() {
                    let x = _mm512_loadu_si512(xg.qs.as_ptr().add(64 * t) as *const _);
                    sum = _mm512_dpbusd_epi32(sum, *q, x);
                }
                let sum = _mm512_sub_epi32(sum, _mm512_loadu_si512(xg.c.as_ptr() as *const _));
                _mm512_storeu_ps(sums.as_mut_ptr(), _mm512_cvtepi32_ps(sum));
                let scale = _mm512_mul_ps(wd, _mm512_loadu_ps(xg.d.as_ptr()));
                _mm512_storeu_ps(scales.as_mut_ptr(), scale);
                accumulate(&mut acc[r], &sums, &scales, xg.len);
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random Q4_0 bytes: `n` rows of `k`, scales near 0.01.
    fn random_q4_0(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        };
        let mut out = Vec::new();
        for _ in 0..n * k / QK {
            let d = f16::from_f32(0.005 + (next() % 1000) as f32 * 1e-5);
            out.extend_from_slice(&d.to_le_bytes());
            out.extend((0..16).map(|_| next() as u8));
        }
        out
    }

    fn activations(kb: usize, seed: u32) -> (Vec<f32>, Vec<[i8; QK]>) {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 8
        };
        let d = (0..kb)
            .map(|_| (next() % 100) as f32 * 1e-3 + 1e-3)
            .collect();
        let qs = (0..kb)
            .map(|_| std::array::from_fn(|_| ((next() % 255) as i32 - 127) as i8))
            .collect();
        (d, qs)
    }

    #[test]
    fn regrouping_keeps_every_weight() {
        let (n, k) = (3, 32 * 20);
        let data = random_q4_0(n, k, 7);
        let groups = regroup(&data, n, k);
        let per_row = groups_per_row(k);
        for j in 0..n {
            let row = dequantize_row(&groups[j * per_row..(j + 1) * per_row], k);
            for (b, block) in data[j * 18 * k / QK..]
                .chunks_exact(18)
                .take(k / QK)
                .enumerate()
            {
                let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for w in 0..QK {
                    let q = if w < 16 {
                        block[2 + w] & 0x0F
                    } else {
                        block[2 + w - 16] >> 4
                    };
                    assert_eq!(row[b * QK + w], (q as i32 - 8) as f32 * d);
                }
            }
        }
    }

    #[test]
    fn kernels_follow_ggmls_order_and_agree() {
        // 20 blocks: one full group and one padded.
        let k = 32 * 20;
        let data = random_q4_0(1, k, 3);
        let w = regroup(&data, 1, k);
        let rows: Vec<_> = (0..4).map(|s| activations(k / QK, s)).collect();
        let xs: Vec<Vec<GroupX>> = rows
            .iter()
            .map(|(d, qs)| group_activations(d.iter().copied().zip(qs.iter())))
            .collect();
        // ggml's formula on the file's own layout.
        let ggml = |(d, qs): &(Vec<f32>, Vec<[i8; QK]>)| {
            let mut acc = 0f32;
            for (b, block) in data.chunks_exact(18).enumerate() {
                let dw = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let mut sum = 0i32;
                for v in 0..QK {
                    let q = if v < 16 {
                        block[2 + v] & 0x0F
                    } else {
                        block[2 + v - 16] >> 4
                    };
                    sum += (q as i32 - 8) * qs[b][v] as i32;
                }
                acc = (sum as f32).mul_add(dw * d[b], acc);
            }
            acc
        };
        let (one, four) = dots();
        let x4 = [&xs[0][..], &xs[1], &xs[2], &xs[3]];
        let got4 = four(&w, x4);
        for (r, row) in rows.iter().enumerate() {
            let want = ggml(row);
            assert_eq!(one(&w, &xs[r]).to_bits(), want.to_bits());
            assert_eq!(got4[r].to_bits(), want.to_bits());
            assert_eq!(dot_body::<1>(&w, [&xs[r]])[0].to_bits(), want.to_bits());
        }
    }
}
