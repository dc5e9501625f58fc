//! Matrix products against 16-bit float weights (F16 and BF16) on the CPU,
//! in the order llama.cpp computes them on x86-64 with AVX-512: llamafile's
//! tinyBLAS, after ggml has rounded the activations to the weights' type.
//!
//! - **F16** (`tinyBLAS<16, __m512>`): each output is 16 lane sums of fused
//!   multiply-adds over the row (lane `i` takes positions `i`, `i + 16`,
//!   ...), then the lanes are added as GCC's `_mm512_reduce_add_ps` adds
//!   them ([`reduce16`]).
//! - **BF16** (`tinyBLAS<32, __m512bh>` with `vdpbf16ps`, on CPUs with
//!   AVX512-BF16 such as this project's machines): 32 positions per step;
//!   lane `i` adds the product at `2i + 1`, then the one at `2i`. A product
//!   of two bf16 values is exact in f32, so each addition is a fused
//!   multiply-add, and the f32 FMAs of any x86-64 CPU with AVX-512 give the
//!   instruction's bits (`vdpbf16ps` also flushes subnormal inputs to
//!   zero; weights and activations that small do not occur in models).
//!   Then the same sum of lanes.
//!
//! On CPUs with AVX512-BF16, BF16 matrices whose row count is a multiple
//! of 16 are packed to [`crate::wide_panels`] instead, and F16 ones on
//! CPUs with AVX-512 (the same products of the same rounded operands,
//! summed in another order, 1.7-2x the prompt speed); these kernels keep
//! the rest.
//!
//! Both take rows whose length is a multiple of 32 (every model's widths
//! are); tinyBLAS itself runs when a matrix's row count is a multiple of 4,
//! as every model matrix's is. Weights stay 16-bit in memory (2 bytes per
//! weight, as in the file) and are widened in registers.

/// The 16-bit float formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    F16,
    Bf16,
}

impl Kind {
    /// A value's bits, as ggml converts an activation for a product with
    /// weights of this kind (round to nearest, ties to even).
    pub fn from_f32(self, x: f32) -> u16 {
        match self {
            Kind::F16 => half::f16::from_f32(x).to_bits(),
            Kind::Bf16 => half::bf16::from_f32(x).to_bits(),
        }
    }

    /// The value of `bits`, exactly.
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            Kind::F16 => half::f16::from_bits(bits).to_f32(),
            Kind::Bf16 => f32::from_bits((bits as u32) << 16),
        }
    }
}

/// Rows of activations (a multiple of 32 values) as the F16 kernels take
/// them: f16 bits, as ggml rounds them (half the bytes of f32: a prompt's
/// activations are streamed from cache once per four weight rows, and
/// their bytes bound its speed).
pub fn f16_activations(input: &[f32]) -> Vec<u16> {
    input.iter().map(|&v| Kind::F16.from_f32(v)).collect()
}

/// Rows of activations as the BF16 kernels take them: rounded to bf16,
/// kept in f32, each run of 32 reordered as its 16 odd positions then its
/// 16 even ones, the order of the products (so no kernel converts them).
pub fn bf16_activations(input: &[f32]) -> Vec<f32> {
    let round = |v: f32| Kind::Bf16.to_f32(Kind::Bf16.from_f32(v));
    input
        .chunks_exact(32)
        .flat_map(|c| {
            let odd = (0..16).map(move |i| c[2 * i + 1]);
            let even = (0..16).map(move |i| c[2 * i]);
            odd.chain(even).map(round)
        })
        .collect()
}

/// One weight row against one and against four activation rows; four
/// weight rows against four activation rows (`[weight row][activation row]`).
pub(crate) type Kernels<A> = (
    fn(&[u16], &[A]) -> f32,
    fn(&[u16], [&[A]; 4]) -> [f32; 4],
    fn([&[u16]; 4], [&[A]; 4]) -> [[f32; 4]; 4],
);

/// The lanes of a 16-lane accumulator added as GCC's `_mm512_reduce_add_ps`
/// adds them: upper 8 onto lower 8, upper 4 onto lower 4, then lanes
/// `(0 + 2) + (1 + 3)`.
#[inline(always)]
pub(crate) fn reduce16(a: [f32; 16]) -> f32 {
    let t8: [f32; 8] = std::array::from_fn(|i| a[8 + i] + a[i]);
    let t4: [f32; 4] = std::array::from_fn(|i| t8[4 + i] + t8[i]);
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

/// The portable kernels, written for the orders above; the AVX-512 ones
/// give the same bits.
fn f16_body<const R: usize>(w: &[u16], xs: [&[u16]; R]) -> [f32; R] {
    let value = |bits: u16| Kind::F16.to_f32(bits);
    let mut acc = [[0f32; 16]; R];
    for (c, wc) in w.chunks_exact(32).enumerate() {
        for (a, x) in acc.iter_mut().zip(xs) {
            for at in 0..32 {
                a[at % 16] = value(wc[at]).mul_add(value(x[c * 32 + at]), a[at % 16]);
            }
        }
    }
    acc.map(reduce16)
}

fn bf16_body<const R: usize>(w: &[u16], xs: [&[f32]; R]) -> [f32; R] {
    let value = |bits: u16| Kind::Bf16.to_f32(bits);
    let mut acc = [[0f32; 16]; R];
    for (c, wc) in w.chunks_exact(32).enumerate() {
        for (a, x) in acc.iter_mut().zip(xs) {
            let xc = &x[c * 32..(c + 1) * 32];
            for i in 0..16 {
                a[i] = value(wc[2 * i + 1]).mul_add(xc[i], a[i]);
                a[i] = value(wc[2 * i]).mul_add(xc[16 + i], a[i]);
            }
        }
    }
    acc.map(reduce16)
}

/// The F16 kernels for this CPU.
pub(crate) fn f16_kernels() -> Kernels<u16> {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512 F and FMA (checked above).
        return (
            |w, x| unsafe { avx512::f16::<1>(w, [x])[0] },
            |w, xs| unsafe { avx512::f16::<4>(w, xs) },
            |ws, xs| unsafe { avx512::f16_tile(ws, xs) },
        );
    }
    (
        |w, x| f16_body::<1>(w, [x])[0],
        f16_body::<4>,
        |ws, xs| ws.map(|w| f16_body::<4>(w, xs)),
    )
}

/// The BF16 kernels for this CPU.
pub(crate) fn bf16_kernels() -> Kernels<f32> {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512 F and FMA (checked above).
        return (
            |w, x| unsafe { avx512::bf16::<1>(w, [x])[0] },
            |w, xs| unsafe { avx512::bf16::<4>(w, xs) },
            |ws, xs| unsafe { avx512::bf16_tile(ws, xs) },
        );
    }
    (
        |w, x| bf16_body::<1>(w, [x])[0],
        bf16_body::<4>,
        |ws, xs| ws.map(|w| bf16_body::<4>(w, xs)),
    )
}

/// `w . x` over f32 values in `tinyBLAS<16>`'s order (ggml's product of f32
/// matrices whose rows are a multiple of 16 long, LoRA adapters' on
/// x86-64 with AVX-512): lane `i` fuses the products at `i`, `i + 16`, ...,
/// then [`reduce16`]. Rows of other lengths keep the same lanes (ggml
/// would take its plain dot product there).
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512 F and FMA (checked above).
        return unsafe { avx512::dot_f32(w, x) };
    }
    dot_f32_body(w, x)
}

/// `out[j] += scale * (B t)[j]` for `B` given transposed (`bt`: row `i`
/// holds column `i` of B, `out.len()` values), each `(B t)[j]` summed as
/// [`dot_f32`] sums row `j` of B against `t` (lane `i % 16`, then
/// [`reduce16`]), but 16 outputs at once: the lanes of one output are 16
/// vectors, the outputs their lanes. A LoRA adapter's second product,
/// whose rows (the rank) are too short for a dot product to pay.
pub fn add_scaled_product_t(bt: &[f32], t: &[f32], scale: f32, out: &mut [f32]) {
    let n = out.len();
    #[cfg(target_arch = "x86_64")]
    if avx512::available() && n >= 16 {
        // SAFETY: the CPU has AVX-512 F and FMA (checked above).
        let done = unsafe { avx512::add_scaled_product_t(bt, t, scale, out) };
        for j in done..n {
            let column: Vec<f32> = (0..t.len()).map(|i| bt[i * n + j]).collect();
            out[j] += dot_f32_body(&column, t) * scale;
        }
        return;
    }
    for j in 0..n {
        let column: Vec<f32> = (0..t.len()).map(|i| bt[i * n + j]).collect();
        out[j] += dot_f32_body(&column, t) * scale;
    }
}

#[inline(always)]
fn dot_f32_body(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (at, (w, x)) in w.iter().zip(x).enumerate() {
        acc[at % 16] = w.mul_add(*x, acc[at % 16]);
    }
    reduce16(acc)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::reduce16;
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
    }

    /// [`super::dot_f32`]: whole steps of 16 in a register, the rest in
    /// the same lanes.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let mut acc = _mm512_setzero_ps();
        for s in 0..n / 16 {
            let (a, b) = (w.as_ptr().add(s * 16), x.as_ptr().add(s * 16));
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b), acc);
        }
        let mut lanes = lanes(acc);
        for at in n / 16 * 16..n {
            lanes[at % 16] = w[at].mul_add(x[at], lanes[at % 16]);
        }
        reduce16(lanes)
    }

    /// [`super::add_scaled_product_t`] for whole blocks of 16 outputs;
    /// returns how many outputs it did.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn add_scaled_product_t(
        bt: &[f32],
        t: &[f32],
        scale: f32,
        out: &mut [f32],
    ) -> usize {
        let n = out.len();
        let blocks = n / 16;
        for b in 0..blocks {
            let mut acc = [_mm512_setzero_ps(); 16];
            for (i, &ti) in t.iter().enumerate() {
                let column = _mm512_loadu_ps(bt.as_ptr().add(i * n + b * 16));
                acc[i % 16] = _mm512_fmadd_ps(column, _mm512_set1_ps(ti), acc[i % 16]);
            }
            // reduce16's tree, lane-wise.
            let t8: [__m512; 8] = std::array::from_fn(|l| _mm512_add_ps(acc[8 + l], acc[l]));
            let t4: [__m512; 4] = std::array::from_fn(|l| _mm512_add_ps(t8[4 + l], t8[l]));
            let sum = _mm512_add_ps(_mm512_add_ps(t4[0], t4[2]), _mm512_add_ps(t4[1], t4[3]));
            let o = out.as_mut_ptr().add(b * 16);
            let scaled = _mm512_mul_ps(sum, _mm512_set1_ps(scale));
            _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), scaled));
        }
        blocks * 16
    }

    /// 16 f16 values from `v[16 s..]`, widened.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn load(v: &[u16], s: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(v.as_ptr().add(s * 16) as *const __m256i))
    }

    #[target_feature(enable = "avx512f,fma")]
    unsafe fn lanes(v: __m512) -> [f32; 16] {
        let mut out = [0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), v);
        out
    }

    /// F16: 16 positions per FMA, widened with `vcvtph2ps`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn f16<const R: usize>(w: &[u16], xs: [&[u16]; R]) -> [f32; R] {
        let mut acc = [_mm512_setzero_ps(); R];
        let steps = w.len() / 16;
        for s in 0..steps {
            let wv = load(w, s);
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(wv, load(xs[r], s), acc[r]);
            }
        }
        acc.map(|a| reduce16(lanes(a)))
    }

    /// BF16: 32 positions per step. Each 32-bit lane of the weights holds
    /// positions `2i` (low half) and `2i + 1` (high half); masking the low
    /// half off gives the odd position as f32, shifting it up the even one.
    /// The activations come split already (odd 16, then even 16).
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn bf16<const R: usize>(w: &[u16], xs: [&[f32]; R]) -> [f32; R] {
        let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        let mut acc = [_mm512_setzero_ps(); R];
        let steps = w.len() / 32;
        for s in 0..steps {
            let v = _mm512_loadu_si512(w.as_ptr().add(s * 32) as *const _);
            let w_odd = _mm512_castsi512_ps(_mm512_and_si512(v, high));
            let w_even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            for r in 0..R {
                let x = xs[r].as_ptr().add(s * 32);
                acc[r] = _mm512_fmadd_ps(w_odd, _mm512_loadu_ps(x), acc[r]);
                acc[r] = _mm512_fmadd_ps(w_even, _mm512_loadu_ps(x.add(16)), acc[r]);
            }
        }
        acc.map(|a| reduce16(lanes(a)))
    }

    /// [`f16`] for four weight rows at once: 16 accumulators, each
    /// activation load serving four rows.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn f16_tile(ws: [&[u16]; 4], xs: [&[u16]; 4]) -> [[f32; 4]; 4] {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let steps = ws[0].len() / 16;
        for s in 0..steps {
            let wv: [__m512; 4] = std::array::from_fn(|i| load(ws[i], s));
            for r in 0..4 {
                let x = load(xs[r], s);
                for i in 0..4 {
                    acc[i][r] = _mm512_fmadd_ps(wv[i], x, acc[i][r]);
                }
            }
        }
        acc.map(|row| row.map(|a| reduce16(lanes(a))))
    }

    /// [`bf16`] for four weight rows at once.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn bf16_tile(ws: [&[u16]; 4], xs: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let steps = ws[0].len() / 32;
        for s in 0..steps {
            let v: [__m512i; 4] =
                std::array::from_fn(|i| _mm512_loadu_si512(ws[i].as_ptr().add(s * 32) as *const _));
            let odd = v.map(|v| _mm512_castsi512_ps(_mm512_and_si512(v, high)));
            let even = v.map(|v| _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
            for r in 0..4 {
                let x = xs[r].as_ptr().add(s * 32);
                let (x_odd, x_even) = (_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16)));
                for i in 0..4 {
                    acc[i][r] = _mm512_fmadd_ps(odd[i], x_odd, acc[i][r]);
                    acc[i][r] = _mm512_fmadd_ps(even[i], x_even, acc[i][r]);
                }
            }
        }
        acc.map(|row| row.map(|a| reduce16(lanes(a))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: Kind, n: usize, seed: u32) -> Vec<u16> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                kind.from_f32((state >> 8) as f32 / (1 << 24) as f32 - 0.5)
            })
            .collect()
    }

    #[test]
    fn simd_kernels_give_the_portable_bits() {
        let values = |kind: Kind, s: u32| -> Vec<f32> {
            row(kind, 256, s)
                .into_iter()
                .map(|b| kind.to_f32(b))
                .collect()
        };
        // F16.
        let ws: Vec<Vec<u16>> = (1..5).map(|s| row(Kind::F16, 256, s)).collect();
        let xs: Vec<Vec<u16>> = (5..9)
            .map(|s| f16_activations(&values(Kind::F16, s)))
            .collect();
        let (w4, x4) = (
            [&ws[0][..], &ws[1], &ws[2], &ws[3]],
            [&xs[0][..], &xs[1], &xs[2], &xs[3]],
        );
        let (one, four, tile) = f16_kernels();
        let tiled = tile(w4, x4);
        for (i, w) in w4.iter().enumerate() {
            let want = f16_body::<4>(w, x4).map(f32::to_bits);
            assert_eq!(four(w, x4).map(f32::to_bits), want);
            assert_eq!(tiled[i].map(f32::to_bits), want);
            assert_eq!(one(w, x4[1]).to_bits(), want[1]);
        }
        // BF16.
        let ws: Vec<Vec<u16>> = (1..5).map(|s| row(Kind::Bf16, 256, s)).collect();
        let raw: Vec<Vec<f32>> = (5..9).map(|s| values(Kind::Bf16, s)).collect();
        let xs: Vec<Vec<f32>> = raw.iter().map(|x| bf16_activations(x)).collect();
        let (w4, x4) = (
            [&ws[0][..], &ws[1], &ws[2], &ws[3]],
            [&xs[0][..], &xs[1], &xs[2], &xs[3]],
        );
        let (one, four, tile) = bf16_kernels();
        let tiled = tile(w4, x4);
        for (i, w) in w4.iter().enumerate() {
            let want = bf16_body::<4>(w, x4).map(f32::to_bits);
            assert_eq!(four(w, x4).map(f32::to_bits), want);
            assert_eq!(tiled[i].map(f32::to_bits), want);
            assert_eq!(one(w, x4[1]).to_bits(), want[1]);
        }
        // And close to the exact sum of the products.
        let exact: f64 = ws[0]
            .iter()
            .zip(&raw[0])
            .map(|(a, b)| Kind::Bf16.to_f32(*a) as f64 * *b as f64)
            .sum();
        let got = bf16_body::<1>(&ws[0], [&xs[0]])[0] as f64;
        assert!((got - exact).abs() < 1e-4, "{got} vs {exact}");
    }

    #[test]
    fn f32_dots_give_the_portable_bits() {
        for n in [16, 48, 40, 7] {
            let w: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos()).collect();
            assert_eq!(dot_f32(&w, &x).to_bits(), dot_f32_body(&w, &x).to_bits());
            let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((dot_f32(&w, &x) as f64 - exact).abs() < 1e-5);
        }
    }

    #[test]
    fn transposed_products_are_row_dots() {
        for (rank, n) in [(16, 40), (8, 16), (32, 7)] {
            let b: Vec<f32> = (0..n * rank).map(|i| (i as f32 * 0.37).sin()).collect();
            let t: Vec<f32> = (0..rank).map(|i| (i as f32 * 1.3).cos()).collect();
            let bt: Vec<f32> = (0..rank * n).map(|x| b[(x % n) * rank + x / n]).collect();
            let mut out = vec![1f32; n];
            add_scaled_product_t(&bt, &t, 0.5, &mut out);
            for j in 0..n {
                let want = 1.0 + dot_f32(&b[j * rank..(j + 1) * rank], &t) * 0.5;
                assert_eq!(out[j].to_bits(), want.to_bits(), "rank {rank} n {n} j {j}");
            }
        }
    }

    #[test]
    fn bf16_lanes_take_the_odd_position_first() {
        // Lane 0 holds 1 after the first step; the second adds 2^-24 at
        // the odd position and -1 at the even one. Odd first: 1 + 2^-24
        // rounds to 1, minus 1 is 0. Even first would leave 2^-24.
        let kind = Kind::Bf16;
        let (mut w, mut x) = (vec![0u16; 64], vec![0f32; 64]);
        let mut set = |at: usize, a: f32, b: f32| {
            w[at] = kind.from_f32(a);
            x[at] = b;
        };
        set(1, 1.0, 1.0);
        set(33, 2f32.powi(-12), 2f32.powi(-12));
        set(32, 1.0, -1.0);
        let x = bf16_activations(&x);
        assert_eq!(bf16_body::<1>(&w, [&x])[0], 0.0);
        assert_eq!(bf16_kernels().0(&w, &x), 0.0);
    }
}
