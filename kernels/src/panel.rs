//! Q4_K, Q5_K, Q6_K and Q4_0 weights repacked sixteen rows to a panel,
//! and the AVX-512 VNNI kernels that multiply a panel by up to four
//! activation rows at once: the prompt's (and a batch's) matrix products
//! on the quantized files people download.
//!
//! The row-at-a-time kernels of [`crate::kquant`] hold one weight row's
//! values across a vector and so end every super-block with horizontal
//! sums, and spend three instructions (`maddubs`, `madd`, `add`) per 64
//! products. Here a vector's sixteen 32-bit lanes are sixteen weight rows
//! (the panel's columns of the output), each lane holding four consecutive
//! weights of its row: one `vpdpbusd` with four activations broadcast to
//! every lane adds 64 products into sixteen outputs, and nothing is summed
//! across lanes. Each weight vector is unpacked once for four activation
//! rows, whose accumulators stay in registers for a whole super-block.
//!
//! Q4_K's sums are the same as the row kernels': per super-block, the
//! exact integer sum of scale x weight x activation (each 32-value
//! sub-block's sum multiplied by its scale in 32-bit integers) and of min x
//! activation sum, each added to an f32 accumulator with one fused
//! multiply-add by `d_w * d_x` (and `dmin_w * d_x`), the second subtracted
//! at the end. So a result is bit for bit what [`crate::kquant`]'s kernels
//! (and llama.cpp's repacked Q4_K kernel) give.
//!
//! Q4_0's are ggml's too: per 32-weight block the exact integer sum
//! `Σ q * x - 8 Σ x`, added in block order with one fused multiply-add by
//! `d_w * d_x` (the order of ggml's repacked Q4_0 kernels, and of
//! [`crate::q4_0`]'s row kernels).
//!
//! Q5_K's (Q4_K's with a fifth bit per weight) and Q6_K's are not: ggml
//! spreads each super-block's sum over eight float lanes, which a column
//! per lane cannot do cheaply. Here a super-block's exact integer sum
//! (Q6_K: `Σ sc * q * x - 32 Σ sc * bsum`) goes into one f32 accumulator
//! with one fused multiply-add by `d_w * d_x`, which rounds less often than
//! ggml does; the results differ from llama.cpp's in the last bits (the
//! family tests bound the logits).
//!
//! Every cache line of a panel is prefetched just before it is read: a
//! decode step streams each panel from memory once, and without the hints
//! the Q5_K and Q6_K kernels decoded a whole model slower than the row
//! kernels; prefetching two blocks ahead was slower still on the model,
//! though it was the fastest form on one matrix alone. Measured in
//! `docs/bench/panels.md`.

use crate::blocks::{BlockQ8, QK};
use crate::kquant::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};

/// Weight rows per panel: the lanes of one 512-bit vector of 32-bit sums.
pub(crate) const ROWS: usize = 16;

/// One super-block (256 weights) of sixteen Q4_K (`H` = 0) or Q5_K
/// (`H` = 1) weight rows.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct PanelK<const H: usize> {
    /// Each row's `d` and `dmin`.
    d: [f32; ROWS],
    dmin: [f32; ROWS],
    /// `sc[s][c]`: row `c`'s scale for sub-block `s`.
    sc: [[u8; ROWS]; 8],
    /// `mins[t][2c + i]`: row `c`'s min for sub-block `2t + i`.
    mins: [[u8; 2 * ROWS]; 4],
    /// Q5_K's fifth bits: `qh[0][g][4c..4c + 4]` is row `c`'s `qh[4g..+4]`
    /// (bit `s` of a byte belongs to sub-block `s`).
    qh: [[[u8; 4 * ROWS]; 8]; H],
    /// `qs[8j + g][4c..4c + 4]`: row `c`'s packed bytes `32j + 4g..+4`,
    /// whose low nibbles are weights `4g..4g+4` of sub-block `2j` and high
    /// nibbles the same weights of sub-block `2j + 1`.
    qs: [[u8; 4 * ROWS]; 32],
}

pub(crate) type PanelQ4K = PanelK<0>;
pub(crate) type PanelQ5K = PanelK<1>;

/// Row-major blocks (`n` rows of `kb` each, `n` a multiple of [`ROWS`]) as
/// panels, panel-major: panel `p`'s block `b` at `p * kb + b`, made by
/// `panel` from the sixteen rows' block `b` (`row(c)`: row `c`'s).
fn repack<'a, B, P>(
    blocks: &'a [B],
    n: usize,
    panel: impl Fn(&dyn Fn(usize) -> &'a B) -> P,
) -> Vec<P> {
    let kb = blocks.len() / n;
    let mut out = Vec::with_capacity(blocks.len() / ROWS);
    for p in 0..n / ROWS {
        for b in 0..kb {
            out.push(panel(&|c| &blocks[(p * ROWS + c) * kb + b]));
        }
    }
    out
}

impl<const H: usize> PanelK<H> {
    /// One panel from its rows' `d`, `dmin`, scales and mins, packed
    /// nibbles and (Q5_K) fifth bits.
    fn new<'a>(
        row: impl Fn(usize) -> (f32, f32, &'a [u8; 16], &'a [u8; QK_K / 2]),
        high: impl Fn(usize) -> &'a [u8; QK_K / 8],
    ) -> Self {
        let mut panel = Self {
            d: std::array::from_fn(|c| row(c).0),
            dmin: std::array::from_fn(|c| row(c).1),
            sc: std::array::from_fn(|s| std::array::from_fn(|c| row(c).2[s])),
            mins: std::array::from_fn(|t| std::array::from_fn(|i| row(i / 2).2[8 + 2 * t + i % 2])),
            qh: [[[0; 4 * ROWS]; 8]; H],
            qs: [[0; 4 * ROWS]; 32],
        };
        for (v, qs) in panel.qs.iter_mut().enumerate() {
            let at = 32 * (v / 8) + 4 * (v % 8);
            for c in 0..ROWS {
                qs[4 * c..4 * c + 4].copy_from_slice(&row(c).3[at..at + 4]);
            }
        }
        for qh in panel.qh.iter_mut() {
            for (g, qh) in qh.iter_mut().enumerate() {
                for c in 0..ROWS {
                    qh[4 * c..4 * c + 4].copy_from_slice(&high(c)[4 * g..4 * g + 4]);
                }
            }
        }
        panel
    }
}

impl PanelQ4K {
    /// `blocks` (`n` rows) as panels; see [`repack`].
    pub(crate) fn repack(blocks: &[BlockQ4K], n: usize) -> Vec<Self> {
        repack(blocks, n, |row| {
            Self::new(
                |c| (row(c).d, row(c).dmin, &row(c).sc_m, &row(c).qs),
                |_| unreachable!(),
            )
        })
    }
}

impl PanelQ5K {
    /// `blocks` (`n` rows) as panels; see [`repack`].
    pub(crate) fn repack(blocks: &[BlockQ5K], n: usize) -> Vec<Self> {
        repack(blocks, n, |row| {
            Self::new(
                |c| (row(c).d, row(c).dmin, &row(c).sc_m, &row(c).qs),
                |c| &row(c).qh,
            )
        })
    }
}

/// One super-block (256 weights) of sixteen Q6_K weight rows.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct PanelQ6K {
    d: [f32; ROWS],
    /// `sc[s][c]`: row `c`'s scale for sub-block `s` (of 16 weights).
    sc: [[i8; ROWS]; 16],
    /// `pairs[t][2c + i]`: the same scales, `sc[2t + i][c]`, as the 16-bit
    /// pairs the activation sums are multiplied by.
    pairs: [[i8; 2 * ROWS]; 8],
    /// `q[8j + g][a][4c..4c + 4]`: row `c`'s bytes `ql[64j + 32a + 4g..+4]`
    /// (`a` 0 or 1) and `qh[32j + 4g..+4]` (`a` = 2), in the order the
    /// kernel reads them: a panel streams from memory front to back.
    q: [[[u8; 4 * ROWS]; 3]; 16],
}

impl PanelQ6K {
    /// `blocks` (`n` rows) as panels; see [`repack`].
    pub(crate) fn repack(blocks: &[BlockQ6K], n: usize) -> Vec<Self> {
        repack(blocks, n, |row| {
            let mut panel = Self {
                d: std::array::from_fn(|c| row(c).d),
                sc: std::array::from_fn(|s| std::array::from_fn(|c| row(c).sc[s])),
                pairs: std::array::from_fn(|t| {
                    std::array::from_fn(|i| row(i / 2).sc[2 * t + i % 2])
                }),
                q: [[[0; 4 * ROWS]; 3]; 16],
            };
            for (v, [ql0, ql1, qh]) in panel.q.iter_mut().enumerate() {
                let (j, g) = (v / 8, v % 8);
                let (l, h) = (64 * j + 4 * g, 32 * j + 4 * g);
                for c in 0..ROWS {
                    ql0[4 * c..4 * c + 4].copy_from_slice(&row(c).ql[l..l + 4]);
                    ql1[4 * c..4 * c + 4].copy_from_slice(&row(c).ql[l + 32..l + 36]);
                    qh[4 * c..4 * c + 4].copy_from_slice(&row(c).qh[h..h + 4]);
                }
            }
            panel
        })
    }
}

impl PanelQ6K {
    /// Row `c`'s 256 weights, as [`BlockQ6K::dequantize`] gives them.
    pub(crate) fn dequantize(&self, c: usize) -> [f32; QK_K] {
        let mut block = BlockQ6K {
            d: self.d[c],
            sc: std::array::from_fn(|s| self.sc[s][c]),
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
        };
        for (v, [ql0, ql1, qh]) in self.q.iter().enumerate() {
            let (j, g) = (v / 8, v % 8);
            let (l, h) = (64 * j + 4 * g, 32 * j + 4 * g);
            block.ql[l..l + 4].copy_from_slice(&ql0[4 * c..4 * c + 4]);
            block.ql[l + 32..l + 36].copy_from_slice(&ql1[4 * c..4 * c + 4]);
            block.qh[h..h + 4].copy_from_slice(&qh[4 * c..4 * c + 4]);
        }
        block.dequantize()
    }
}

/// Two Q4_0 blocks (64 weights) of sixteen weight rows.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct PanelQ4_0 {
    /// `d[h][c]`: row `c`'s f16 scale for block `h`.
    d: [[u16; ROWS]; 2],
    /// `qs[h][g][4c..4c + 4]`: row `c`'s bytes `4g..4g + 4` of block `h`,
    /// whose low nibbles are weights `4g..4g + 4` and high nibbles weights
    /// `16 + 4g..`.
    qs: [[[u8; 4 * ROWS]; 4]; 2],
}

impl PanelQ4_0 {
    /// A Q4_0 tensor's raw bytes (18-byte blocks: f16 `d`, then 16 bytes
    /// whose low nibbles are weights 0..16 and high ones 16..32), `n` rows
    /// of `k` (`n` a multiple of [`ROWS`], `k` of 64), as panels, panel
    /// `p`'s pair of blocks `u` at `p * k / 64 + u`.
    pub(crate) fn repack(data: &[u8], n: usize, k: usize) -> Vec<Self> {
        let kb = k / QK;
        let block = |row: usize, b: usize| &data[(row * kb + b) * 18..][..18];
        let mut out = Vec::with_capacity(n / ROWS * kb / 2);
        for p in 0..n / ROWS {
            for u in 0..kb / 2 {
                let mut panel = Self {
                    d: [[0; ROWS]; 2],
                    qs: [[[0; 4 * ROWS]; 4]; 2],
                };
                for h in 0..2 {
                    for c in 0..ROWS {
                        let b = block(p * ROWS + c, 2 * u + h);
                        panel.d[h][c] = u16::from_le_bytes([b[0], b[1]]);
                        for g in 0..4 {
                            panel.qs[h][g][4 * c..4 * c + 4].copy_from_slice(&b[2 + 4 * g..][..4]);
                        }
                    }
                }
                out.push(panel);
            }
        }
        out
    }
}

impl PanelQ4_0 {
    /// Row `c`'s 64 weights, as ggml's `dequantize_row_q4_0` gives them:
    /// `(q - 8) * d`, exact in f32.
    pub(crate) fn dequantize(&self, c: usize) -> impl Iterator<Item = f32> + '_ {
        (0..2 * QK).map(move |v| {
            let (h, w) = (v / QK, v % QK);
            let byte = self.qs[h][w % 16 / 4][4 * c + w % 4];
            let q = if w >= 16 { byte >> 4 } else { byte & 0x0F };
            (q as i32 - 8) as f32 * half::f16::from_bits(self.d[h][c]).to_f32()
        })
    }
}

/// Eight times each 8-bit activation block's sum: the weights' offset of
/// 8, taken out of a Q4_0 block's sum at once.
pub(crate) fn offsets(x: &BlockQ8) -> i32 {
    8 * x.qs.iter().map(|&q| q as i32).sum::<i32>()
}

/// The Q4_0 panel kernel: up to four rows of 8-bit activation blocks and
/// their [`offsets`] against one panel's pairs of blocks.
pub(crate) type PanelQ4_0Fn =
    fn(&[PanelQ4_0], [&[BlockQ8]; 4], [&[i32]; 4], usize, &mut [[f32; ROWS]; 4]);

pub(crate) fn q4_0() -> Option<PanelQ4_0Fn> {
    #[cfg(target_arch = "x86_64")]
    if vnni::available() {
        return Some(|w, xs, offsets, rows, out| {
            // SAFETY: the CPU has the features `vnni::available` checks.
            unsafe {
                match rows {
                    1 => vnni::q4_0::<1>(w, xs, offsets, out),
                    2 => vnni::q4_0::<2>(w, xs, offsets, out),
                    3 => vnni::q4_0::<3>(w, xs, offsets, out),
                    _ => vnni::q4_0::<4>(w, xs, offsets, out),
                }
            }
        });
    }
    None
}

/// The sums of each activation block's sub-blocks of 32 (pairs of its
/// `bsums`), as the 16-bit pairs the kernel broadcasts: `[t]` holds
/// sub-blocks `2t` (low half) and `2t + 1`.
pub(crate) fn sub_sums(x: &BlockQ8K) -> [i32; 4] {
    let s = |i: usize| x.bsums[2 * i].wrapping_add(x.bsums[2 * i + 1]) as u16 as u32;
    std::array::from_fn(|t| (s(2 * t) | (s(2 * t + 1) << 16)) as i32)
}

/// A panel kernel: up to four activation rows (their Q8_K blocks and
/// [`sub_sums`], the first `rows` of each used) against one panel's
/// blocks, the sixteen outputs of each row in `out[r]`.
pub(crate) type PanelFn<P> =
    fn(&[P], [&[BlockQ8K]; 4], [&[[i32; 4]]; 4], usize, &mut [[f32; ROWS]; 4]);

/// Whether the CPU runs the panel kernels (AVX-512 F, BW and VNNI).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return vnni::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `$name()`: the kernel for one panel type where the CPU runs it.
macro_rules! dispatch {
    ($name:ident, $panel:ty, $kernel:ident) => {
        pub(crate) fn $name() -> Option<PanelFn<$panel>> {
            #[cfg(target_arch = "x86_64")]
            if vnni::available() {
                return Some(|w, xs, sums, rows, out| {
                    // SAFETY: the CPU has the features `vnni::available` checks.
                    unsafe {
                        match rows {
                            1 => vnni::$kernel::<1>(w, xs, sums, out),
                            2 => vnni::$kernel::<2>(w, xs, sums, out),
                            3 => vnni::$kernel::<3>(w, xs, sums, out),
                            _ => vnni::$kernel::<4>(w, xs, sums, out),
                        }
                    }
                });
            }
            None
        }
    };
}

dispatch!(q4_k, PanelQ4K, q4_k);
dispatch!(q5_k, PanelQ5K, q5_k);
dispatch!(q6_k, PanelQ6K, q6_k);

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{PanelK, PanelQ4K, PanelQ4_0, PanelQ5K, PanelQ6K, ROWS};
    use crate::blocks::BlockQ8;
    use crate::kquant::BlockQ8K;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q4_0<const R: usize>(
        w: &[PanelQ4_0],
        xs: [&[BlockQ8]; 4],
        offsets: [&[i32]; 4],
        out: &mut [[f32; ROWS]; 4],
    ) {
        let low = _mm512_set1_epi8(0x0F);
        let four = |x: &BlockQ8, at: usize| {
            _mm512_set1_epi32((x.qs.as_ptr().add(at) as *const i32).read_unaligned())
        };
        let mut acc = [_mm512_setzero_ps(); R];
        for (u, w) in w.iter().enumerate() {
            // As in `q6_k`: every line prefetched as its turn comes.
            let lines = w as *const PanelQ4_0 as *const i8;
            for line in 0..std::mem::size_of::<PanelQ4_0>() / 64 {
                _mm_prefetch::<_MM_HINT_T0>(lines.add(64 * line));
            }
            for h in 0..2 {
                let b = 2 * u + h;
                let dw = _mm512_cvtph_ps(_mm256_load_si256(w.d[h].as_ptr() as *const __m256i));
                let mut lo = [_mm512_setzero_si512(); R];
                let mut hi = [_mm512_setzero_si512(); R];
                for g in 0..4 {
                    let bits = _mm512_load_si512(w.qs[h][g].as_ptr() as *const _);
                    let q_lo = _mm512_and_si512(bits, low);
                    let q_hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), low);
                    for r in 0..R {
                        let x = &xs[r][b];
                        lo[r] = _mm512_dpbusd_epi32(lo[r], q_lo, four(x, 4 * g));
                        hi[r] = _mm512_dpbusd_epi32(hi[r], q_hi, four(x, 16 + 4 * g));
                    }
                }
                for r in 0..R {
                    let sum = _mm512_sub_epi32(
                        _mm512_add_epi32(lo[r], hi[r]),
                        _mm512_set1_epi32(offsets[r][b]),
                    );
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(xs[r][b].d));
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[r]);
                }
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
    }

    pub(super) fn available() -> bool {
        crate::simd::has_avx2_fma()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }

    /// Four activations (bytes `at..at + 4` of a block) in every lane.
    #[inline(always)]
    unsafe fn four(x: &BlockQ8K, at: usize) -> __m512i {
        _mm512_set1_epi32((x.qs.as_ptr().add(at) as *const i32).read_unaligned())
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(super) unsafe fn q4_k<const R: usize>(
        w: &[PanelQ4K],
        xs: [&[BlockQ8K]; 4],
        sums: [&[[i32; 4]]; 4],
        out: &mut [[f32; ROWS]; 4],
    ) {
        k::<R, 0>(w, xs, sums, out)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(super) unsafe fn q5_k<const R: usize>(
        w: &[PanelQ5K],
        xs: [&[BlockQ8K]; 4],
        sums: [&[[i32; 4]]; 4],
        out: &mut [[f32; ROWS]; 4],
    ) {
        k::<R, 1>(w, xs, sums, out)
    }

    /// Q4_K and Q5_K: the same sums, Q5_K's weights with their fifth bits.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    #[inline]
    unsafe fn k<const R: usize, const H: usize>(
        w: &[PanelK<H>],
        xs: [&[BlockQ8K]; 4],
        sums: [&[[i32; 4]]; 4],
        out: &mut [[f32; ROWS]; 4],
    ) {
        let (low, bit4) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x10));
        // Bit `s` of each byte as its bit 4, ORed into `q` (which has none):
        // the byte's own bit, whatever crosses bytes in the 16-bit shifts
        // falls outside bit 4.
        let fifth = |q: __m512i, qh: __m512i, s: i32| {
            let h = _mm512_srl_epi16(qh, _mm_cvtsi32_si128(s));
            // (a & b) | c
            _mm512_ternarylogic_epi32::<0xEA>(_mm512_slli_epi16(h, 4), bit4, q)
        };
        let mut acc = [_mm512_setzero_ps(); R];
        let mut acc_min = [_mm512_setzero_ps(); R];
        for (b, w) in w.iter().enumerate() {
            // As in `q6_k`: every line prefetched as its turn comes (Q5_K's
            // decode on the 1B shape: 16.7 tok/s without, 24.7 with; Q4_K
            // the same either way).
            let header = w as *const PanelK<H> as *const i8;
            for line in 0..6 + 8 * H {
                _mm_prefetch::<_MM_HINT_T0>(header.add(64 * line));
            }
            let mut total = [_mm512_setzero_si512(); R];
            for j in 0..4 {
                let mut lo = [_mm512_setzero_si512(); R];
                let mut hi = [_mm512_setzero_si512(); R];
                for g in 0..8 {
                    _mm_prefetch::<_MM_HINT_T0>(w.qs[8 * j + g].as_ptr() as *const i8);
                    let bits = _mm512_load_si512(w.qs[8 * j + g].as_ptr() as *const _);
                    let mut q_lo = _mm512_and_si512(bits, low);
                    let mut q_hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), low);
                    for qh in &w.qh {
                        let qh = _mm512_load_si512(qh[g].as_ptr() as *const _);
                        q_lo = fifth(q_lo, qh, 2 * j as i32);
                        q_hi = fifth(q_hi, qh, 2 * j as i32 + 1);
                    }
                    for r in 0..R {
                        let x = &xs[r][b];
                        lo[r] = _mm512_dpbusd_epi32(lo[r], q_lo, four(x, 64 * j + 4 * g));
                        hi[r] = _mm512_dpbusd_epi32(hi[r], q_hi, four(x, 64 * j + 32 + 4 * g));
                    }
                }
                let scale = |s: usize| {
                    _mm512_cvtepu8_epi32(_mm_load_si128(w.sc[s].as_ptr() as *const __m128i))
                };
                let (s_lo, s_hi) = (scale(2 * j), scale(2 * j + 1));
                for r in 0..R {
                    let p = _mm512_add_epi32(
                        _mm512_mullo_epi32(lo[r], s_lo),
                        _mm512_mullo_epi32(hi[r], s_hi),
                    );
                    total[r] = _mm512_add_epi32(total[r], p);
                }
            }
            let mins: [__m512i; 4] = std::array::from_fn(|t| {
                _mm512_cvtepu8_epi16(_mm256_load_si256(w.mins[t].as_ptr() as *const __m256i))
            });
            let (d, dmin) = (
                _mm512_load_ps(w.d.as_ptr()),
                _mm512_load_ps(w.dmin.as_ptr()),
            );
            for r in 0..R {
                let mut m = _mm512_setzero_si512();
                for (t, mins) in mins.iter().enumerate() {
                    m = _mm512_dpwssd_epi32(m, *mins, _mm512_set1_epi32(sums[r][b][t]));
                }
                let dx = _mm512_set1_ps(xs[r][b].d);
                acc[r] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(total[r]), _mm512_mul_ps(d, dx), acc[r]);
                acc_min[r] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmin, dx), acc_min[r]);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), _mm512_sub_ps(acc[r], acc_min[r]));
        }
    }

    /// Two 16-bit values (activation sums `at`, `at + 1`) in every lane.
    #[inline(always)]
    unsafe fn two(x: &BlockQ8K, at: usize) -> __m512i {
        _mm512_set1_epi32((x.bsums.as_ptr().add(at) as *const i32).read_unaligned())
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(super) unsafe fn q6_k<const R: usize>(
        w: &[PanelQ6K],
        xs: [&[BlockQ8K]; 4],
        _sums: [&[[i32; 4]]; 4],
        out: &mut [[f32; ROWS]; 4],
    ) {
        let (m15, m3, m12) = (
            _mm512_set1_epi8(15),
            _mm512_set1_epi8(3),
            _mm512_set1_epi8(12),
        );
        let (m48, m192) = (_mm512_set1_epi8(48), _mm512_set1_epi8(-64));
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, w) in w.iter().enumerate() {
            // Every line of the block is prefetched as its turn comes (the
            // header here, each load triple just before its loads). On the
            // 1B shape's Q4_K_M decode: 26.7 tok/s so, 18.0 with no hints
            // (behind the row kernels), and two blocks ahead slower than
            // either (see `docs/bench/panels.md`). Measured, not
            // understood.
            let header = w as *const PanelQ6K as *const i8;
            for line in 0..9 {
                _mm_prefetch::<_MM_HINT_T0>(header.add(64 * line));
            }
            let fetch = |v: usize| {
                for q in &w.q[v] {
                    _mm_prefetch::<_MM_HINT_T0>(q.as_ptr() as *const i8);
                }
            };
            let mut total = [_mm512_setzero_si512(); R];
            let scale =
                |s: usize| _mm512_cvtepi8_epi32(_mm_load_si128(w.sc[s].as_ptr() as *const __m128i));
            let load = |v: &[u8; 4 * ROWS]| _mm512_load_si512(v.as_ptr() as *const _);
            // Values 128j + 32k + 16h + (0..16) take scale 8j + 2k + h; the
            // four vectors k of one load triple, in the order ggml packs them.
            let values = |[ql0, ql1, qh]: [__m512i; 3]| {
                [
                    _mm512_or_si512(
                        _mm512_and_si512(ql0, m15),
                        _mm512_slli_epi16(_mm512_and_si512(qh, m3), 4),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(ql1, m15),
                        _mm512_slli_epi16(_mm512_and_si512(qh, m12), 2),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql0, 4), m15),
                        _mm512_and_si512(qh, m48),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql1, 4), m15),
                        _mm512_srli_epi16(_mm512_and_si512(qh, m192), 2),
                    ),
                ]
            };
            // Up to two rows hold all four vectors' sums in registers and
            // read the panel once, front to back (a decode step streams it
            // from memory); more rows take the vectors in two passes of
            // two, the second reading the block again from the nearest
            // cache. Loop bounds are constants so the sums stay in
            // registers.
            for j in 0..2 {
                for h in 0..2 {
                    if R <= 2 {
                        let mut sums = [[_mm512_setzero_si512(); R]; 4];
                        for g in 4 * h..4 * h + 4 {
                            fetch(8 * j + g);
                            let v = values(w.q[8 * j + g].each_ref().map(load));
                            for k in 0..4 {
                                let at = 128 * j + 32 * k + 4 * g;
                                for r in 0..R {
                                    let x = four(&xs[r][b], at);
                                    sums[k][r] = _mm512_dpbusd_epi32(sums[k][r], v[k], x);
                                }
                            }
                        }
                        for (k, sums) in sums.iter().enumerate() {
                            let sc = scale(8 * j + 2 * k + h);
                            for r in 0..R {
                                total[r] =
                                    _mm512_add_epi32(total[r], _mm512_mullo_epi32(sums[r], sc));
                            }
                        }
                    } else {
                        for kp in 0..2 {
                            let mut a = [_mm512_setzero_si512(); R];
                            let mut c = [_mm512_setzero_si512(); R];
                            for g in 4 * h..4 * h + 4 {
                                if kp == 0 {
                                    fetch(8 * j + g);
                                }
                                let v = values(w.q[8 * j + g].each_ref().map(load));
                                let at = 128 * j + 64 * kp + 4 * g;
                                for r in 0..R {
                                    let x = &xs[r][b];
                                    a[r] = _mm512_dpbusd_epi32(a[r], v[2 * kp], four(x, at));
                                    c[r] =
                                        _mm512_dpbusd_epi32(c[r], v[2 * kp + 1], four(x, at + 32));
                                }
                            }
                            let sa = scale(8 * j + 4 * kp + h);
                            let sc = scale(8 * j + 4 * kp + 2 + h);
                            for r in 0..R {
                                let p = _mm512_add_epi32(
                                    _mm512_mullo_epi32(a[r], sa),
                                    _mm512_mullo_epi32(c[r], sc),
                                );
                                total[r] = _mm512_add_epi32(total[r], p);
                            }
                        }
                    }
                }
            }
            let pairs: [__m512i; 8] = std::array::from_fn(|t| {
                _mm512_cvtepi8_epi16(_mm256_load_si256(w.pairs[t].as_ptr() as *const __m256i))
            });
            let d = _mm512_load_ps(w.d.as_ptr());
            for r in 0..R {
                let x = &xs[r][b];
                let mut m = _mm512_setzero_si512();
                for (t, pairs) in pairs.iter().enumerate() {
                    m = _mm512_dpwssd_epi32(m, *pairs, two(x, 2 * t));
                }
                let sum = _mm512_sub_epi32(total[r], _mm512_slli_epi32(m, 5));
                let dd = _mm512_mul_ps(d, _mm512_set1_ps(x.d));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), dd, acc[r]);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kquant::tests::random_bytes;
    use crate::kquant::{dot_q4_k, quantize_q8_k};
    use half::f16;

    fn activations(kb: usize) -> (Vec<Vec<BlockQ8K>>, Vec<Vec<[i32; 4]>>) {
        let xs: Vec<Vec<BlockQ8K>> = (0..4)
            .map(|r| {
                let x: Vec<f32> = random_bytes(kb * QK_K, 70 + r)
                    .iter()
                    .map(|&b| (b as f32 - 128.0) / 9.0)
                    .collect();
                x.chunks_exact(QK_K).map(quantize_q8_k).collect()
            })
            .collect();
        let sums = xs
            .iter()
            .map(|x| x.iter().map(sub_sums).collect())
            .collect();
        (xs, sums)
    }

    /// Each of a panel kernel's results for 1 to 4 activation rows within
    /// `1e-6 * bound(row, x)` of `want(row, x)`: the row kernels' (ggml's)
    /// result, and a bound on the sum of the terms' magnitudes (which
    /// bounds the rounding of either order).
    #[allow(clippy::type_complexity)]
    fn close_to_rows<B, P>(
        blocks: &[B],
        panels: &[P],
        kernel: PanelFn<P>,
        want: &dyn Fn(&[B], &[BlockQ8K]) -> f32,
        bound: &dyn Fn(&[B], &[BlockQ8K]) -> f32,
    ) {
        let kb = 3;
        let n = blocks.len() / kb;
        let (xs, sums) = activations(kb);
        for rows in 1..=4 {
            for p in 0..n / ROWS {
                let mut out = [[0f32; ROWS]; 4];
                let x: [&[BlockQ8K]; 4] = std::array::from_fn(|r| xs[r].as_slice());
                let s: [&[[i32; 4]]; 4] = std::array::from_fn(|r| sums[r].as_slice());
                kernel(&panels[p * kb..(p + 1) * kb], x, s, rows, &mut out);
                for (r, out) in out.iter().enumerate().take(rows) {
                    for (c, &v) in out.iter().enumerate() {
                        let j = p * ROWS + c;
                        let row = &blocks[j * kb..(j + 1) * kb];
                        let (want, bound) = (want(row, &xs[r]), bound(row, &xs[r]));
                        assert!(
                            (v - want).abs() <= bound * 1e-6,
                            "rows {rows}, row {r}, column {j}: {v} against {want} (terms {bound})"
                        );
                    }
                }
            }
        }
    }

    /// Q6_K panels agree with the row kernels (see [`close_to_rows`]), and
    /// a row read back from a panel is the block's row.
    #[test]
    fn q6_k_panels_agree_with_the_row_kernels() {
        let Some(panel) = q6_k() else {
            eprintln!("this CPU has no AVX-512 VNNI: the panel kernel does not run here");
            return;
        };
        let (n, kb) = (2 * ROWS, 3);
        let blocks: Vec<BlockQ6K> = (0..n * kb)
            .map(|i| {
                let mut b = random_bytes(BlockQ6K::BYTES, 31 + i as u64);
                b[208..210].copy_from_slice(&f16::from_f32(0.01 + i as f32 * 1e-4).to_le_bytes());
                BlockQ6K::parse(&b)
            })
            .collect();
        let panels = PanelQ6K::repack(&blocks, n);
        let (dot, _) = crate::kquant::dot_q6_k();
        let terms = |row: &[BlockQ6K], x: &[BlockQ8K]| -> f32 {
            row.iter()
                .zip(x)
                .flat_map(|(w, x)| {
                    w.dequantize()
                        .into_iter()
                        .zip(x.qs)
                        .map(move |(w, q)| (w * q as f32 * x.d).abs())
                })
                .sum()
        };
        close_to_rows(&blocks, &panels, panel, &|w, x| dot(w, x), &terms);
        for j in [0, 5, ROWS + 3] {
            let (p, c) = (j / ROWS, j % ROWS);
            for b in 0..kb {
                assert_eq!(
                    panels[p * kb + b].dequantize(c),
                    blocks[j * kb + b].dequantize()
                );
            }
        }
    }

    /// Q5_K panels agree with the row kernels (see [`close_to_rows`]; the
    /// bound takes every weight at its largest, 31 x scale, and every min).
    #[test]
    fn q5_k_panels_agree_with_the_row_kernels() {
        let Some(panel) = q5_k() else {
            eprintln!("this CPU has no AVX-512 VNNI: the panel kernel does not run here");
            return;
        };
        let n = 2 * ROWS;
        let blocks: Vec<BlockQ5K> = (0..n * 3)
            .map(|i| {
                let mut b = random_bytes(BlockQ5K::BYTES, 51 + i as u64);
                b[0..2].copy_from_slice(&f16::from_f32(0.01 + i as f32 * 1e-4).to_le_bytes());
                b[2..4].copy_from_slice(&f16::from_f32(0.003).to_le_bytes());
                BlockQ5K::parse(&b)
            })
            .collect();
        let panels = PanelQ5K::repack(&blocks, n);
        let (dot, _) = crate::kquant::dot_q5_k();
        let bound = |row: &[BlockQ5K], x: &[BlockQ8K]| -> f32 {
            row.iter()
                .zip(x)
                .map(|(w, x)| {
                    let xs: f32 = x.qs.iter().map(|&q| (q as f32).abs()).sum();
                    (w.d.abs() * 63.0 * 31.0 + w.dmin.abs() * 63.0) * xs * x.d.abs()
                })
                .sum()
        };
        close_to_rows(&blocks, &panels, panel, &|w, x| dot(w, x), &bound);
    }

    /// Every row of a repacked matrix, against 1 to 4 activation rows,
    /// bit for bit what the row kernels give.
    #[test]
    fn panels_give_the_row_kernels_bits() {
        let Some(panel) = q4_k() else {
            eprintln!("this CPU has no AVX-512 VNNI: the panel kernel does not run here");
            return;
        };
        let (n, kb) = (2 * ROWS, 3);
        let blocks: Vec<BlockQ4K> = (0..n * kb)
            .map(|i| {
                let mut b = random_bytes(BlockQ4K::BYTES, 11 + i as u64);
                b[0..2].copy_from_slice(&f16::from_f32(0.01 + i as f32 * 1e-4).to_le_bytes());
                b[2..4].copy_from_slice(&f16::from_f32(0.003).to_le_bytes());
                BlockQ4K::parse(&b)
            })
            .collect();
        let (xs, sums) = activations(kb);
        let panels = PanelQ4K::repack(&blocks, n);
        let (dot, _) = dot_q4_k();
        for rows in 1..=4 {
            for p in 0..n / ROWS {
                let mut out = [[0f32; ROWS]; 4];
                let x: [&[BlockQ8K]; 4] = std::array::from_fn(|r| xs[r].as_slice());
                let s: [&[[i32; 4]]; 4] = std::array::from_fn(|r| sums[r].as_slice());
                panel(&panels[p * kb..(p + 1) * kb], x, s, rows, &mut out);
                for (r, out) in out.iter().enumerate().take(rows) {
                    for (c, &v) in out.iter().enumerate() {
                        let j = p * ROWS + c;
                        let want = dot(&blocks[j * kb..(j + 1) * kb], &xs[r]);
                        assert_eq!(
                            v.to_bits(),
                            want.to_bits(),
                            "rows {rows}, row {r}, column {j}"
                        );
                    }
                }
            }
        }
    }
}
