//! Vector arithmetic on f32 slices shared by the search index and the
//! model code: AVX2 + FMA where the CPU has them (checked at run time),
//! portable loops otherwise.

/// Dot product of two equally long vectors (AVX2 + FMA where the CPU has
/// them, otherwise 8 independent lanes the compiler vectorises).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four accumulators hide the FMA latency.
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            let o = i + 8 * j;
            *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
    let one = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
    let mut total = _mm_cvtss_f32(one);
    while i < n {
        total += a[i] * b[i];
        i += 1;
    }
    total
}

/// Whether the CPU has AVX2 and FMA, which hearth's own kernels are
/// compiled for (a cached run-time check).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The pieces of ggml's vectorised `ggml_v_expf` (the range-reduced
/// degree-5 polynomial of Arm's optimized-routines `expf`): `n = round(x /
/// ln 2)`, `e` = n's bits in an f32 exponent field, `j ~ exp(x - n ln 2) - 1`.
/// Every `mul_add` is the fused operation ggml uses.
#[inline(always)]
fn exp_parts(x: f32) -> (f32, u32, f32) {
    let c = f32::from_bits;
    let shift = c(0x4b40_0000); // 1.5 * 2^23: rounds to an integer
    let z = x.mul_add(c(0x3fb8_aa3b), shift); // x / ln 2 + shift
    let n = z - shift;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x)); // x - n ln 2
    let e = z.to_bits() << 23;
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    (n, e, j)
}

/// `exp(x)` as ggml's `ggml_v_expf` computes it, one lane at a time, over
/// all of f32's range.
#[inline(always)]
pub fn exp_ggml(x: f32) -> f32 {
    let c = f32::from_bits;
    let (n, e, j) = exp_parts(x);
    if n.abs() <= 126.0 {
        let k = c(e.wrapping_add(1f32.to_bits())); // 2^n
        return j.mul_add(k, k);
    }
    // 2^n out of f32's normal range: split it into two factors.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = c(g.wrapping_add(0x7f00_0000));
    let s2 = c(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `exp(x)` for `x <= 88` by the same polynomial, without branches so that
/// loops over it vectorise; below -87 it gives `exp(-87)` (~1.6e-38), which
/// is as good as zero where it is used (softmax terms, erf's tail).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let (_, e, j) = exp_parts(x.max(-87.0));
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits())); // 2^n
    j.mul_add(k, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_lane_dots_agree() {
        for n in [0, 1, 7, 8, 31, 32, 33, 384, 391] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - exact).abs() < 1e-3, "n = {n}");
            assert!((dot_lanes(&a, &b) as f64 - exact).abs() < 1e-3, "n = {n}");
        }
    }

    #[test]
    fn polynomial_exps_are_close_to_the_library_exp() {
        for i in -1000..=880 {
            let x = i as f32 / 10.0;
            let want = (x as f64).exp();
            let rel = |got: f32| ((got as f64 - want) / want).abs();
            if want > f32::MIN_POSITIVE as f64 {
                assert!(rel(exp_ggml(x)) < 1e-6, "exp_ggml({x}) = {}", exp_ggml(x));
            }
            if x >= -87.0 {
                assert!(rel(exp_fast(x)) < 1e-6, "exp_fast({x}) = {}", exp_fast(x));
            } else {
                assert_eq!(exp_fast(x), exp_fast(-87.0));
            }
        }
    }
}
