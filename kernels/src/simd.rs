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
    let mut total = hsum(sum);
    while i < n {
        total += a[i] * b[i];
        i += 1;
    }
    total
}

/// `a · b` where `b` holds IEEE half floats (as bits): the HNSW walk reads
/// its vectors at half the bytes.
pub fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
    dot_f16_for_this_cpu()(a, b)
}

/// The fastest [`dot_f16`] this CPU runs, for loops that call it often
/// (chosen once instead of checking the CPU on every call).
pub fn dot_f16_for_this_cpu() -> fn(&[f32], &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return |a, b| unsafe { dot_f16_avx512(a, b) };
        }
        // SAFETY: as above.
        return |a, b| unsafe { dot_f16_avx2(a, b) };
    }
    dot_f16_lanes
}

fn dot_f16_lanes(a: &[f32], b: &[u16]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, h)| x * half::f16::from_bits(*h).to_f32())
        .sum()
}

/// The half-float dot kernels' one body, at two widths: four accumulators
/// over four vectors of values per step, then one vector at a time, the
/// reduction, and what is left (under one vector) to `$tail`.
#[cfg(target_arch = "x86_64")]
macro_rules! dot_f16_kernel {
    ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal, $zero:ident, $fmadd:ident,
     $load:ident, |$p:ident| $wide:expr, |$acc:ident| $reduce:expr, $tail:expr) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        unsafe fn $name(a: &[f32], b: &[u16]) -> f32 {
            use std::arch::x86_64::*;
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let wide = |$p: *const u16| $wide;
            let mut $acc = [$zero(); 4];
            let mut i = 0;
            while i + 4 * $lanes <= n {
                for (j, acc) in $acc.iter_mut().enumerate() {
                    let o = i + $lanes * j;
                    *acc = $fmadd($load(pa.add(o)), wide(pb.add(o)), *acc);
                }
                i += 4 * $lanes;
            }
            while i + $lanes <= n {
                $acc[0] = $fmadd($load(pa.add(i)), wide(pb.add(i)), $acc[0]);
                i += $lanes;
            }
            $reduce + $tail(&a[i..n], &b[i..n])
        }
    };
}

#[cfg(target_arch = "x86_64")]
dot_f16_kernel!(
    /// [`dot_f16`] sixteen lanes at a time; the tail goes to the AVX2 form.
    dot_f16_avx512, "avx512f,avx2,fma,f16c", 16, _mm512_setzero_ps, _mm512_fmadd_ps,
    _mm512_loadu_ps, |p| _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
    |acc| _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3])
    )),
    |a, b| dot_f16_avx2(a, b)
);

#[cfg(target_arch = "x86_64")]
dot_f16_kernel!(
    /// [`dot_f16`] eight lanes at a time; the tail one value at a time.
    dot_f16_avx2, "avx2,fma,f16c", 8, _mm256_setzero_ps, _mm256_fmadd_ps,
    _mm256_loadu_ps, |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
    |acc| hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3])
    )),
    dot_f16_lanes
);

/// The sum of a vector's eight lanes, as ggml's `hsum_float_8` adds them
/// (high half plus low half, then the upper pair onto the lower, then the
/// two left): the same additions in the same order, so its bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
    _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)))
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

/// [`exp_ggml`] on eight lanes at once, as ggml's AVX2 `ggml_v_expf`
/// computes it: the same operations lane by lane, so the same bits (the
/// out-of-range lanes, `|n| > 126`, blended in only when a lane has one).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_ggml_x8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let shift = c(0x4b40_0000);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), shift);
    let n = _mm256_sub_ps(z, shift);
    // (-n) * c + x is exactly -(n * c) + x: fnmadd.
    let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_set1_epi32(1f32.to_bits() as i32),
    ));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        _mm256_mul_ps(c(0x3f7f_fff6), b),
    );
    let near = _mm256_fmadd_ps(j, k, k);
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let far = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    if _mm256_movemask_ps(far) == 0 {
        return near;
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let farther = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let out_of_range = _mm256_blendv_ps(
        _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1),
        _mm256_mul_ps(s1, s1),
        farther,
    );
    _mm256_blendv_ps(near, out_of_range, far)
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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_lane_exp_is_the_one_lane_exp_bit_for_bit() {
        use std::arch::x86_64::*;
        assert!(has_avx2_fma(), "the eight-lane exp needs AVX2 and FMA");
        let mut xs: Vec<f32> = vec![
            f32::NEG_INFINITY,
            f32::INFINITY,
            -0.0,
            0.0,
            88.7,
            89.0,
            -87.3,
            -103.9,
            -126.5,
            -150.0,
            -180.0,
            -192.5,
            -200.0,
            -1e30,
            1e30,
            130.0,
        ];
        // A sweep over every range the branches split, with odd steps.
        let mut x = -260.0f32;
        while x < 100.0 {
            xs.push(x);
            x += 0.013_7;
        }
        xs.extend((0..4096).map(|i| f32::from_bits(0x3000_0000 + i * 0x0007_3f21)));
        xs.extend((0..4096).map(|i| -f32::from_bits(0x3000_0000 + i * 0x0007_3f21)));
        xs.resize(xs.len().next_multiple_of(8), 0.5);
        for group in xs.chunks_exact(8) {
            let mut got = [0f32; 8];
            // SAFETY: AVX2 and FMA are present (asserted above).
            unsafe {
                _mm256_storeu_ps(
                    got.as_mut_ptr(),
                    exp_ggml_x8(_mm256_loadu_ps(group.as_ptr())),
                )
            };
            for (x, got) in group.iter().zip(got) {
                assert_eq!(got.to_bits(), exp_ggml(*x).to_bits(), "exp({x:e})");
            }
        }
    }

    #[test]
    fn half_float_dots_agree_with_the_plain_sum() {
        for n in [0, 1, 7, 8, 31, 32, 33, 384, 391] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 16.0).collect();
            let halves: Vec<u16> = b
                .iter()
                .map(|x| half::f16::from_f32(*x).to_bits())
                .collect();
            // These values are exact in half floats: the sums agree to rounding.
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_f16(&a, &halves) - want).abs() < 1e-4, "n {n}");
            assert!((dot_f16_lanes(&a, &halves) - want).abs() < 1e-4, "n {n}");
        }
    }

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
