//! 16-bit float matrices (BF16, F16) packed in panels of sixteen output
//! columns, for products on AVX-512: an LLM's BF16 and F16 matrices
//! ([`crate::quant::QMatrix`]) and the BERT embedder's layers, rounded to
//! bf16 at load ([`crate::bert`]).
//!
//! One 512-bit line holds inputs `2q` and `2q + 1` of each of the sixteen
//! columns. Tiles of up to 8 rows by one or two panels keep their
//! accumulators in registers for the whole row, each line read once for
//! the tile's rows; nothing is summed across lanes, and each output is one
//! lane's chain over the inputs in order, so a row's results do not depend
//! on the batch.
//!
//! - **BF16** (CPUs with AVX512-BF16): a line holds each column's pair
//!   side by side, the operand of one `vdpbf16ps` lane; the activations
//!   are rounded to bf16 pairs once per product.
//! - **F16** (AVX-512 F): a line holds the sixteen columns' inputs `2q`,
//!   then their inputs `2q + 1`, widened in registers to two vectors of
//!   f32; the activations are rounded to f16 and held as f32.
//!
//! Either way each product is exact in f32 and the activations are rounded
//! as ggml rounds them for such weights, so only the order of the sums
//! differs from llama.cpp's (tinyBLAS sums sixteen lanes per weight row).
//! bf16 has 8 bits of mantissa: on the default embedder the pooled vectors
//! keep a cosine of 0.99997 to sentence-transformers' f32 ones
//! (`tests/embedder.rs`).

use half::{bf16, f16};
use std::marker::PhantomData;

/// One 512-bit panel line (its layout is the [`Format`]'s).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Line([u16; 32]);

/// Output columns per panel.
const PANEL: usize = 16;

/// A 16-bit float format: where a line keeps each value, how values and
/// activations convert, and the kernel.
pub trait Format {
    /// One activation as the kernel takes it.
    type Act: Copy;
    /// Activations per pair of inputs.
    const ACTS_PER_PAIR: usize;
    /// Whether several rows go two panels at a time (one row always
    /// does). Measured on the 1B shape's prompt: bf16 1.3x faster so, f16
    /// 8% slower (its wider tile spills).
    const ROWS_BY_TWO: bool;
    /// Where column `c`'s input `2q + odd` sits in line `q`.
    fn at(c: usize, odd: usize) -> usize;
    /// The value of `bits`, exactly.
    fn value(bits: u16) -> f32;
    /// `x` rounded as the kernel takes it.
    fn activations(x: &[f32]) -> Vec<Self::Act>;
    /// Whether this CPU runs the kernel.
    fn available() -> bool;
    /// The kernel: rows `0..m` of `x` times the panel at `w` (`pairs`
    /// lines; two panels, one after the other, where `two`), plus `bias`,
    /// into `dst` (row stride `n`). Call it only where
    /// [`Format::available`] holds, with pointers that hold what they are
    /// said to.
    const TILES: Tiles<Self::Act>;
}

/// A [`Format::TILES`] kernel: `(w, two, pairs, x, m, bias, dst, n)`.
pub type Tiles<A> =
    unsafe fn(*const Line, bool, usize, *const A, usize, *const f32, *mut f32, usize);

/// BF16 weights, `vdpbf16ps` on bf16 activation pairs.
pub struct Bf16;

/// F16 weights, widened to f32 for fused multiply-adds.
pub struct F16;

/// A matrix `W` (`[n, k]`, as a GGUF file or PyTorch stores it) packed
/// for `x W^T`.
pub struct Panels<F> {
    lines: Vec<Line>,
    n: usize,
    k: usize,
    format: PhantomData<F>,
}

pub type Bf16Panels = Panels<Bf16>;
pub type F16Panels = Panels<F16>;

/// No bias: [`Panels::columns`]' tiles add zeros.
static ZERO: [f32; 2 * PANEL] = [0.0; 2 * PANEL];

impl<F: Format> Panels<F> {
    /// `bits` (`n` rows of `k` values) packed, or `None` where the shape
    /// does not fit the panels (`n` a multiple of 16, `k` even).
    pub fn from_bits(bits: &[u16], n: usize, k: usize) -> Option<Self> {
        (bits.len() == n * k).then_some(())?;
        Self::packed(n, k, |j, i| bits[j * k + i])
    }

    /// The panels of an `[n, k]` matrix whose row `j`, input `i`, has the
    /// bits `bits_at(j, i)`.
    fn packed(n: usize, k: usize, bits_at: impl Fn(usize, usize) -> u16) -> Option<Self> {
        if n == 0 || !n.is_multiple_of(PANEL) || k == 0 || !k.is_multiple_of(2) {
            return None;
        }
        let pairs = k / 2;
        let mut lines = Vec::with_capacity(n / PANEL * pairs);
        for panel in 0..n / PANEL {
            for q in 0..pairs {
                let mut line = Line([0; 32]);
                for c in 0..PANEL {
                    for odd in 0..2 {
                        line.0[F::at(c, odd)] = bits_at(panel * PANEL + c, 2 * q + odd);
                    }
                }
                lines.push(line);
            }
        }
        Some(Self {
            lines,
            n,
            k,
            format: PhantomData,
        })
    }

    /// The output width `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The input width `k`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `j` of `W` (its values, exactly), or `None` past the end.
    pub fn row(&self, j: usize) -> Option<Vec<f32>> {
        if j >= self.n {
            return None;
        }
        let pairs = self.k / 2;
        let (panel, c) = (j / PANEL, j % PANEL);
        Some(
            self.lines[panel * pairs..][..pairs]
                .iter()
                .flat_map(|line| [0, 1].map(|odd| F::value(line.0[F::at(c, odd)])))
                .collect(),
        )
    }

    /// The rows of `x` (`k` values each) rounded as
    /// [`Panels::columns`] takes them.
    pub fn activations(x: &[f32]) -> Vec<F::Act> {
        F::activations(x)
    }

    /// Output columns per work unit of [`Panels::columns`]: two panels, so
    /// that a single row (a decode step) runs two chains of sums at once.
    pub const UNIT: usize = 2 * PANEL;

    /// Columns `32 u..32 u + 32` (fewer at the end) of `x W^T` for the `m`
    /// rows of `x` ([`Panels::activations`]), written to `out[r * n + j]`.
    ///
    /// # Safety
    /// The CPU runs the kernel ([`Format::available`]); `out` holds `m * n`
    /// values, of which this call writes only its unit's columns.
    pub unsafe fn columns(&self, u: usize, x: &[F::Act], m: usize, out: *mut f32) {
        let (pairs, panels, first) = (self.k / 2, self.n / PANEL, 2 * u);
        assert!(first < panels && x.len() >= m * pairs * F::ACTS_PER_PAIR);
        // SAFETY: as the caller promises; each panel holds `pairs` lines.
        unsafe {
            let w = self.lines.as_ptr().add(first * pairs);
            let (x, zero, dst) = (x.as_ptr(), ZERO.as_ptr(), out.add(first * PANEL));
            let two = first + 1 < panels;
            if !two || m == 1 || F::ROWS_BY_TWO {
                (F::TILES)(w, two, pairs, x, m, zero, dst, self.n)
            } else {
                // The same sums, one panel at a time.
                (F::TILES)(w, false, pairs, x, m, zero, dst, self.n);
                let (w, dst) = (w.add(pairs), dst.add(PANEL));
                (F::TILES)(w, false, pairs, x, m, zero, dst, self.n)
            }
        }
    }
}

impl Panels<Bf16> {
    /// `w` (f32, `n` rows of `k`) rounded to bf16 and packed, or `None`
    /// where the shape does not fit the panels.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Option<Self> {
        (w.len() == n * k).then_some(())?;
        Self::packed(n, k, |j, i| bf16::from_f32(w[j * k + i]).to_bits())
    }

    /// `out = x W^T + bias` for `rows` rows of `x` (`k` values each), two
    /// panels at a time; `out` holds `n` values per row. `scratch` holds
    /// the rounded activations.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16 ([`Format::available`]).
    pub unsafe fn product(
        &self,
        x: &[f32],
        rows: usize,
        bias: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<u32>,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= rows * k && out.len() >= rows * n && bias.len() == n);
        let pairs = k / 2;
        scratch.clear();
        scratch.extend(
            x[..rows * k]
                .chunks_exact(2)
                .map(|two| bf16_pair(two[0], two[1])),
        );
        let mut panel = 0;
        while panel < n / PANEL {
            let two = n / PANEL - panel >= 2;
            let at = panel * PANEL;
            // SAFETY: the caller's CPU has the kernel; the lengths are
            // asserted above and the panels hold n / 16 panels of `pairs`
            // lines.
            unsafe {
                let w = self.lines.as_ptr().add(panel * pairs);
                let dst = out.as_mut_ptr().add(at);
                (Bf16::TILES)(
                    w,
                    two,
                    pairs,
                    scratch.as_ptr(),
                    rows,
                    bias.as_ptr().add(at),
                    dst,
                    n,
                )
            };
            panel += if two { 2 } else { 1 };
        }
    }
}

/// `a` and `b` rounded to bf16 (to nearest, ties to even) as one lane's
/// pair: `a` in the low half.
fn bf16_pair(a: f32, b: f32) -> u32 {
    let bits = |v: f32| bf16::from_f32(v).to_bits() as u32;
    bits(a) | (bits(b) << 16)
}

impl Format for Bf16 {
    type Act = u32;
    const ACTS_PER_PAIR: usize = 1;
    const ROWS_BY_TWO: bool = true;

    fn at(c: usize, odd: usize) -> usize {
        2 * c + odd
    }

    fn value(bits: u16) -> f32 {
        bf16::from_bits(bits).to_f32()
    }

    fn activations(x: &[f32]) -> Vec<u32> {
        x.chunks_exact(2)
            .map(|two| bf16_pair(two[0], two[1]))
            .collect()
    }

    fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    const TILES: Tiles<u32> = simd::bf16_tiles;
}

impl Format for F16 {
    type Act = f32;
    const ACTS_PER_PAIR: usize = 2;
    const ROWS_BY_TWO: bool = false;

    fn at(c: usize, odd: usize) -> usize {
        PANEL * odd + c
    }

    fn value(bits: u16) -> f32 {
        f16::from_bits(bits).to_f32()
    }

    fn activations(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
    }

    fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    const TILES: Tiles<f32> = simd::f16_tiles;
}

/// Elsewhere no panels are made ([`Format::available`] is false).
#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::Line;

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn never<A>(
        _: *const Line,
        _: bool,
        _: usize,
        _: *const A,
        _: usize,
        _: *const f32,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("panels are made only where the kernel runs")
    }
    pub(super) use never as bf16_tiles;
    pub(super) use never as f16_tiles;
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Line, PANEL};
    use std::arch::x86_64::*;

    /// Rows go this many at a time: 8 x 2 accumulators, the panel lines
    /// and a broadcast, under the 32 registers.
    const ROWS: usize = 8;

    /// The tile for `take` rows by one or `two` panels, each size its own
    /// compiled tile.
    macro_rules! pick {
        ($tile:ident, $take:expr, $two:expr, $args:tt, $($h:literal)*) => {
            match ($take, $two) {
                $(($h, true) => $tile::<$h, 2> $args,
                  ($h, false) => $tile::<$h, 1> $args,)*
                _ => unreachable!(),
            }
        };
    }

    /// Rows `0..m`, eight at a time, by one or two panels; `$acts`
    /// activations per input pair.
    macro_rules! tiles {
        ($name:ident, $tile:ident, $act:ty, $features:literal, $acts:literal) => {
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: *const Line,
                two: bool,
                pairs: usize,
                x: *const $act,
                m: usize,
                bias: *const f32,
                dst: *mut f32,
                n: usize,
            ) {
                let mut r = 0;
                while r < m {
                    let take = (m - r).min(ROWS);
                    let (xs, out) = (x.add(r * $acts * pairs), dst.add(r * n));
                    pick!($tile, take, two, (w, pairs, xs, bias, out, n), 1 2 3 4 5 6 7 8);
                    r += take;
                }
            }
        };
    }

    tiles!(bf16_tiles, bf16_tile, u32, "avx512f,avx512bf16", 1);
    tiles!(f16_tiles, f16_tile, f32, "avx512f", 2);

    /// The sums of a tile, plus the bias, stored.
    #[inline(always)]
    unsafe fn store<const R: usize, const P: usize>(
        acc: &[[__m512; P]; R],
        bias: *const f32,
        dst: *mut f32,
        n: usize,
    ) {
        for (r, acc) in acc.iter().enumerate() {
            for (p, acc) in acc.iter().enumerate() {
                let b = _mm512_loadu_ps(bias.add(p * PANEL));
                _mm512_storeu_ps(dst.add(r * n + p * PANEL), _mm512_add_ps(*acc, b));
            }
        }
    }

    /// Rows `0..R` of `xs` (bf16 pairs, `pairs` per row) times `P` panels
    /// at `w` (each `pairs` lines, one after the other).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn bf16_tile<const R: usize, const P: usize>(
        w: *const Line,
        pairs: usize,
        xs: *const u32,
        bias: *const f32,
        dst: *mut f32,
        n: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for q in 0..pairs {
            let wv: [__m512bh; P] = std::array::from_fn(|p| {
                std::mem::transmute(_mm512_load_si512(w.add(p * pairs + q) as *const _))
            });
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*xs.add(r * pairs + q) as i32));
                for p in 0..P {
                    acc[p] = _mm512_dpbf16_ps(acc[p], xv, wv[p]);
                }
            }
        }
        store(&acc, bias, dst, n);
    }

    /// Rows `0..R` of `xs` (f32, `2 pairs` per row) times `P` panels at
    /// `w`: each line widened once for the rows, inputs `2q` then `2q + 1`
    /// into each column's chain.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn f16_tile<const R: usize, const P: usize>(
        w: *const Line,
        pairs: usize,
        xs: *const f32,
        bias: *const f32,
        dst: *mut f32,
        n: usize,
    ) {
        let k = 2 * pairs;
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for q in 0..pairs {
            let wv: [[__m512; 2]; P] = std::array::from_fn(|p| {
                let line = _mm512_load_si512(w.add(p * pairs + q) as *const _);
                [
                    _mm512_cvtph_ps(_mm512_castsi512_si256(line)),
                    _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(line)),
                ]
            });
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = xs.add(r * k + 2 * q);
                let (even, odd) = (_mm512_set1_ps(*x), _mm512_set1_ps(*x.add(1)));
                for p in 0..P {
                    acc[p] = _mm512_fmadd_ps(wv[p][0], even, acc[p]);
                    acc[p] = _mm512_fmadd_ps(wv[p][1], odd, acc[p]);
                }
            }
        }
        store(&acc, bias, dst, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The products against plain f64 sums of the same rounded operands:
    /// every tile height (1 to 17 rows) and width (the bias product takes
    /// two panels at a time, `columns` one), within f32 summation error;
    /// a row's results the same whatever the batch; the rows exactly.
    #[test]
    fn panel_products_are_the_rounded_operands_products() {
        assert!(
            Bf16::available() && F16::available(),
            "this test needs a CPU with AVX-512 BF16 (this project's machines have it)"
        );
        let mut seed = 0x9e37_79b9_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        };
        for (n, k) in [(16, 2), (48, 384), (64, 100)] {
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let x: Vec<f32> = (0..17 * k).map(|_| next()).collect();
            let b16 = Bf16Panels::pack(&w, n, k).unwrap();
            let h16 = F16Panels::from_bits(
                &w.iter()
                    .map(|&v| f16::from_f32(v).to_bits())
                    .collect::<Vec<_>>(),
                n,
                k,
            )
            .unwrap();
            let (xb, xh) = (Bf16Panels::activations(&x), F16Panels::activations(&x));
            let round_b = |v: f32| bf16::from_f32(v).to_f32() as f64;
            let round_h = |v: f32| f16::from_f32(v).to_f32() as f64;
            for rows in [1, 3, 8, 9, 17] {
                let mut biased = vec![0f32; rows * n];
                let (mut b_out, mut h_out) = (vec![0f32; rows * n], vec![0f32; rows * n]);
                // SAFETY: the CPU runs both kernels (asserted above).
                unsafe {
                    b16.product(&x, rows, &bias, &mut biased, &mut Vec::new());
                    for u in 0..n.div_ceil(F16Panels::UNIT) {
                        b16.columns(u, &xb, rows, b_out.as_mut_ptr());
                        h16.columns(u, &xh, rows, h_out.as_mut_ptr());
                    }
                }
                for r in 0..rows {
                    for c in 0..n {
                        for (name, round, got, b) in [
                            (
                                "bf16 + bias",
                                &round_b as &dyn Fn(f32) -> f64,
                                biased[r * n + c],
                                bias[c],
                            ),
                            ("bf16", &round_b, b_out[r * n + c], 0.0),
                            ("f16", &round_h, h_out[r * n + c], 0.0),
                        ] {
                            let (mut want, mut size) = (b as f64, b.abs() as f64);
                            for i in 0..k {
                                let term = round(x[r * k + i]) * round(w[c * k + i]);
                                want += term;
                                size += term.abs();
                            }
                            assert!(
                                (got as f64 - want).abs() <= (k + 1) as f64 * 6e-8 * size,
                                "{name}, {n}x{k}, {rows} rows, row {r} column {c}: {got} against {want}"
                            );
                        }
                    }
                }
                if rows > 1 {
                    let mut one = vec![0f32; n];
                    unsafe {
                        for u in 0..n.div_ceil(F16Panels::UNIT) {
                            h16.columns(u, &xh, 1, one.as_mut_ptr());
                        }
                    }
                    assert_eq!(one[..], h_out[..n], "f16, {rows} rows: the first row moved");
                }
            }
            for j in [0, n - 1] {
                let want_b: Vec<f32> = w[j * k..][..k].iter().map(|&v| round_b(v) as f32).collect();
                let want_h: Vec<f32> = w[j * k..][..k].iter().map(|&v| round_h(v) as f32).collect();
                assert_eq!(b16.row(j).unwrap(), want_b, "bf16 row {j}");
                assert_eq!(h16.row(j).unwrap(), want_h, "f16 row {j}");
            }
        }
        assert!(Bf16Panels::pack(&[0.0; 24], 8, 3).is_none());
        assert!(F16Panels::from_bits(&[0; 48], 16, 3).is_none());
    }
}
