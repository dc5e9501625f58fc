//! Latency statistics: HDR histograms (microsecond resolution, 3
//! significant figures) for the percentiles, and the mean with a 95%
//! confidence interval.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles, mean and spread of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    /// Half-width of the 95% confidence interval of the mean (normal
    /// approximation; 0 with fewer than two values).
    pub ci95: f64,
}

impl Summary {
    pub fn of(values_ms: &[f64]) -> Self {
        if values_ms.is_empty() {
            return Self::default();
        }
        let mut h =
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        for &v in values_ms {
            h.saturating_record(((v * 1e3).round() as u64).max(1));
        }
        let at = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        let n = values_ms.len() as f64;
        let mean = values_ms.iter().sum::<f64>() / n;
        let ci95 = if values_ms.len() > 1 {
            let var = values_ms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            1.96 * (var / n).sqrt()
        } else {
            0.0
        };
        Self {
            count: values_ms.len(),
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            max: h.max() as f64 / 1e3,
            mean,
            ci95,
        }
    }
}

/// The median of some values (of a figure across repeats).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_close() {
        let values: Vec<f64> = (1..=1000).map(|i| i as f64).collect();
        let s = Summary::of(&values);
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() <= 1.0, "{s:?}");
        assert!(s.p50 <= s.p90 && s.p90 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max);
        assert!((s.mean - 500.5).abs() < 1e-9);
        assert!(s.ci95 > 0.0);
        assert_eq!(Summary::of(&[]).count, 0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
