//! Matrix products of f32 activations with f32 or bf16 weights, in bf16,
//! on CPUs with AVX512-BF16: what the BERT embedder's layers run on such
//! CPUs, and an LLM's BF16 matrices ([`crate::quant::QMatrix`]).
//!
//! The weights are rounded to bf16 once, at load, and packed in panels of
//! sixteen output columns: one 512-bit line holds two consecutive inputs
//! (`k`, `k + 1`) of each of the sixteen columns, the pair a `vdpbf16ps`
//! lane takes. The activations are rounded to bf16 pairs once per product.
//! A tile of up to 8 rows by two panels (32 columns) keeps its 16
//! accumulators in registers for the whole row: per input pair, two panel
//! lines are loaded and each row's pair is broadcast into two `vdpbf16ps`,
//! 64 products each, with nothing summed across lanes.
//!
//! bf16 keeps f32's range with 8 bits of mantissa: each product's inputs
//! are rounded (relative error below 2^-9), the sums are f32. On the
//! default embedder the pooled vectors keep a cosine of 0.99997 to
//! sentence-transformers' f32 ones (`tests/embedder.rs`).

/// One 512-bit panel line: sixteen columns' bf16 pairs.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

/// Output columns per panel.
const PANEL: usize = 16;

/// A weight matrix `W` (`[n, k]`, as PyTorch stores a linear layer's)
/// packed for `x W^T`.
pub struct Bf16Panels {
    lines: Vec<Line>,
    n: usize,
    k: usize,
}

/// Whether this CPU runs the products here (AVX-512 F and BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `a` and `b` rounded to bf16 (to nearest, ties to even) as one lane's
/// pair: `a` in the low half.
fn pair(a: f32, b: f32) -> u32 {
    let bits = |v: f32| half::bf16::from_f32(v).to_bits() as u32;
    bits(a) | (bits(b) << 16)
}

impl Bf16Panels {
    /// `w` (`n` rows of `k`) packed, or `None` where the shape does not
    /// fit the panels (`n` a multiple of 16, `k` even; BERT's are).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Option<Self> {
        (w.len() == n * k).then_some(())?;
        Self::packed(n, k, |j, i| pair(w[j * k + i], w[j * k + i + 1]))
    }

    /// A bf16 matrix (`n` rows of `k` values' bits, as a GGUF file holds
    /// it) packed, or `None` where the shape does not fit the panels.
    pub fn from_bits(bits: &[u16], n: usize, k: usize) -> Option<Self> {
        (bits.len() == n * k).then_some(())?;
        Self::packed(n, k, |j, i| {
            bits[j * k + i] as u32 | ((bits[j * k + i + 1] as u32) << 16)
        })
    }

    /// The panels of an `[n, k]` matrix whose row `j`, inputs `i` and
    /// `i + 1` (`i` even), make the pair `pair_at(j, i)`; `None` where the
    /// shape does not fit (`n` a multiple of 16, `k` even).
    fn packed(n: usize, k: usize, pair_at: impl Fn(usize, usize) -> u32) -> Option<Self> {
        if n == 0 || !n.is_multiple_of(PANEL) || k == 0 || !k.is_multiple_of(2) {
            return None;
        }
        let pairs = k / 2;
        let mut lines = Vec::with_capacity(n / PANEL * pairs);
        for panel in 0..n / PANEL {
            for q in 0..pairs {
                lines.push(Line(std::array::from_fn(|c| {
                    pair_at(panel * PANEL + c, 2 * q)
                })));
            }
        }
        Some(Self { lines, n, k })
    }

    /// The output width `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The input width `k`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `j` of `W` (its bf16 values, exactly), or `None` past the end.
    pub fn row(&self, j: usize) -> Option<Vec<f32>> {
        if j >= self.n {
            return None;
        }
        let pairs = self.k / 2;
        let (panel, c) = (j / PANEL, j % PANEL);
        let value = |bits: u32| half::bf16::from_bits(bits as u16).to_f32();
        Some(
            self.lines[panel * pairs..][..pairs]
                .iter()
                .flat_map(|line| [value(line.0[c]), value(line.0[c] >> 16)])
                .collect(),
        )
    }

    /// The rows of `x` (`k` values each) rounded to bf16 pairs, as
    /// [`Bf16Panels::columns`] takes them.
    pub fn activations(x: &[f32]) -> Vec<u32> {
        x.chunks_exact(2).map(|two| pair(two[0], two[1])).collect()
    }

    /// Columns `16 p..16 p + 16` of `x W^T` for the `m` rows of `pairs`
    /// ([`Bf16Panels::activations`]), written to `out[r * n + j]`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16 ([`available`]); `out` holds `m * n`
    /// values, of which this call writes only its panel's columns.
    pub unsafe fn columns(&self, p: usize, pairs: &[u32], m: usize, out: *mut f32) {
        let per = self.k / 2;
        assert!(p < self.n / PANEL && pairs.len() >= m * per);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller promises; the panel holds `per` lines.
        unsafe {
            simd::columns(
                self.lines.as_ptr().add(p * per),
                per,
                pairs,
                m,
                out.add(p * PANEL),
                self.n,
            )
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = out;
            unreachable!("bf16 panels are made only where available() holds")
        }
    }

    /// `out = x W^T + bias` for `rows` rows of `x` (`k` values each); `out`
    /// holds `n` values per row. `scratch` holds the rounded activations.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16 ([`available`]).
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
                .map(|two| pair(two[0], two[1])),
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's CPU has AVX-512 F and BF16; the lengths are
        // asserted above and the panels hold n / 16 panels of `pairs` lines.
        unsafe {
            simd::product(&self.lines, (n, pairs), scratch, rows, bias, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (pairs, bias, out);
            unreachable!("bf16 panels are made only where available() holds")
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Line, PANEL};
    use std::arch::x86_64::*;

    /// Rows go this many at a time: 8 x 2 accumulators, 2 panel lines and
    /// a broadcast pair, 19 of the 32 registers.
    const ROWS: usize = 8;

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn product(
        lines: &[Line],
        (n, pairs): (usize, usize),
        x: &[u32],
        rows: usize,
        bias: &[f32],
        out: &mut [f32],
    ) {
        let panels = n / PANEL;
        let mut panel = 0;
        while panel < panels {
            let two = panels - panel >= 2;
            let w = lines.as_ptr().add(panel * pairs);
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(ROWS);
                let (xs, dst) = (x.as_ptr().add(r * pairs), out.as_mut_ptr().add(r * n));
                let at = panel * PANEL;
                macro_rules! tile {
                    ($($m:literal)*) => {
                        match (take, two) {
                            $(($m, true) => tile::<$m, 2>(w, pairs, xs, bias.as_ptr().add(at), dst.add(at), n),
                              ($m, false) => tile::<$m, 1>(w, pairs, xs, bias.as_ptr().add(at), dst.add(at), n),)*
                            _ => unreachable!(),
                        }
                    };
                }
                tile!(1 2 3 4 5 6 7 8);
                r += take;
            }
            panel += if two { 2 } else { 1 };
        }
    }

    /// No bias: [`columns`]' tiles add zeros.
    static ZERO: [f32; 2 * PANEL] = [0.0; 2 * PANEL];

    /// One panel's columns for `m` rows, eight rows at a time.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn columns(
        w: *const Line,
        pairs: usize,
        x: &[u32],
        m: usize,
        dst: *mut f32,
        n: usize,
    ) {
        let mut r = 0;
        while r < m {
            let take = (m - r).min(ROWS);
            let (xs, out) = (x.as_ptr().add(r * pairs), dst.add(r * n));
            let zero = ZERO.as_ptr();
            match take {
                1 => tile::<1, 1>(w, pairs, xs, zero, out, n),
                2 => tile::<2, 1>(w, pairs, xs, zero, out, n),
                3 => tile::<3, 1>(w, pairs, xs, zero, out, n),
                4 => tile::<4, 1>(w, pairs, xs, zero, out, n),
                5 => tile::<5, 1>(w, pairs, xs, zero, out, n),
                6 => tile::<6, 1>(w, pairs, xs, zero, out, n),
                7 => tile::<7, 1>(w, pairs, xs, zero, out, n),
                _ => tile::<8, 1>(w, pairs, xs, zero, out, n),
            }
            r += take;
        }
    }

    /// Rows `0..R` of `xs` (bf16 pairs, `pairs` per row) times `P` panels
    /// at `w` (each `pairs` lines, one after the other), plus `bias`, into
    /// `dst` (row stride `n`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize, const P: usize>(
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
        for (r, acc) in acc.iter().enumerate() {
            for (p, acc) in acc.iter().enumerate() {
                let b = _mm512_loadu_ps(bias.add(p * PANEL));
                _mm512_storeu_ps(dst.add(r * n + p * PANEL), _mm512_add_ps(*acc, b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The products against plain f64 sums of the same bf16-rounded
    /// operands: every shape of tile (1 to 8 rows, one and two panels),
    /// within f32 summation error.
    #[test]
    fn panel_products_are_the_rounded_operands_products() {
        assert!(
            available(),
            "this test needs a CPU with AVX-512 BF16 (this project's machines have it)"
        );
        let mut seed = 0x9e37_79b9_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        };
        let round = |v: f32| half::bf16::from_f32(v).to_f32() as f64;
        for (n, k) in [(16, 2), (48, 384), (64, 100), (384, 1536)] {
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let panels = Bf16Panels::pack(&w, n, k).unwrap();
            for rows in [1, 3, 8, 9, 17] {
                let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
                let mut out = vec![0f32; rows * n];
                // SAFETY: available() holds (asserted above).
                unsafe { panels.product(&x, rows, &bias, &mut out, &mut Vec::new()) };
                for r in 0..rows {
                    for c in 0..n {
                        let (mut want, mut size) = (bias[c] as f64, bias[c].abs() as f64);
                        for i in 0..k {
                            let term = round(x[r * k + i]) * round(w[c * k + i]);
                            want += term;
                            size += term.abs();
                        }
                        let got = out[r * n + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * size,
                            "{n}x{k}, {rows} rows, row {r} column {c}: {got} against {want}"
                        );
                    }
                }
            }
        }
        assert!(Bf16Panels::pack(&[0.0; 24], 8, 3).is_none());
        assert!(Bf16Panels::pack(&[0.0; 48], 16, 3).is_none());
    }
}
