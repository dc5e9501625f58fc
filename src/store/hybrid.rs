//! How the dense (vector) and lexical (BM25) result lists become one:
//! the search modes, and the two fusion rules a search can use.
//!
//! - Reciprocal rank fusion (RRF): `sum over lists of 1 / (k + rank)`;
//!   it reads only ranks, so the lists' score scales do not matter.
//! - Weighted: `w * dense + (1 - w) * lexical`, each score min-max
//!   normalised over its own candidate list (a candidate missing from a
//!   list scores 0 there).
//!
//! Which one hearth uses by default is decided by `hearth eval-retrieval`
//! on the Rust book (see docs/bench/retrieval.md): the config's `fusion`.

pub use crate::config::SearchMode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How hybrid search combines its two lists.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "rule")]
pub enum Fusion {
    /// Reciprocal rank fusion with constant `k`.
    Rrf { k: f32 },
    /// `dense_weight * dense + (1 - dense_weight) * lexical`, min-max
    /// normalised per list.
    Weighted { dense_weight: f32 },
}

/// One candidate's place in each list (1-based ranks) and raw scores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    pub dense: Option<(usize, f32)>,
    pub lexical: Option<(usize, f32)>,
}

/// Which list a single-list search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Dense,
    Lexical,
}

/// One list (best first, `(id, score)`) as search results: each id with
/// its score and its place in that list.
pub fn single(list: &[(i64, f32)], which: List) -> Vec<(i64, f32, Evidence)> {
    list.iter()
        .enumerate()
        .map(|(rank, &(id, score))| {
            let place = Some((rank + 1, score));
            let evidence = match which {
                List::Dense => Evidence {
                    dense: place,
                    lexical: None,
                },
                List::Lexical => Evidence {
                    dense: None,
                    lexical: place,
                },
            };
            (id, score, evidence)
        })
        .collect()
}

/// Fuse two lists (each best first, `(id, score)`) into one, best first:
/// each id with its fused score and its evidence from both lists.
pub fn fuse(
    dense: &[(i64, f32)],
    lexical: &[(i64, f32)],
    fusion: Fusion,
) -> Vec<(i64, f32, Evidence)> {
    let mut found: HashMap<i64, Evidence> = HashMap::new();
    for (rank, &(id, score)) in dense.iter().enumerate() {
        found.entry(id).or_default().dense = Some((rank + 1, score));
    }
    for (rank, &(id, score)) in lexical.iter().enumerate() {
        found.entry(id).or_default().lexical = Some((rank + 1, score));
    }
    let range = |list: &[(i64, f32)]| {
        let lo = list.iter().map(|x| x.1).fold(f32::INFINITY, f32::min);
        let hi = list.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
        (lo, hi)
    };
    let (dense_range, lexical_range) = (range(dense), range(lexical));
    let normalise = |score: f32, (lo, hi): (f32, f32)| {
        if hi > lo {
            (score - lo) / (hi - lo)
        } else {
            1.0
        }
    };
    let mut fused: Vec<(i64, f32, Evidence)> = found
        .into_iter()
        .map(|(id, e)| {
            let score = match fusion {
                Fusion::Rrf { k } => [e.dense, e.lexical]
                    .iter()
                    .flatten()
                    .map(|(rank, _)| 1.0 / (k + *rank as f32))
                    .sum(),
                Fusion::Weighted { dense_weight } => {
                    let d = e.dense.map_or(0.0, |(_, s)| normalise(s, dense_range));
                    let l = e.lexical.map_or(0.0, |(_, s)| normalise(s, lexical_range));
                    dense_weight * d + (1.0 - dense_weight) * l
                }
            };
            (id, score, e)
        })
        .collect();
    // Best first; ties by the better rank in either list, then by id, so
    // the order never depends on hashing.
    let best_rank = |e: &Evidence| {
        [e.dense, e.lexical]
            .iter()
            .flatten()
            .map(|(r, _)| *r)
            .min()
            .unwrap_or(usize::MAX)
    };
    fused.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(best_rank(&a.2).cmp(&best_rank(&b.2)))
            .then(a.0.cmp(&b.0))
    });
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_rewards_agreement_and_reads_only_ranks() {
        let dense = [(1, 0.9), (2, 0.8), (3, 0.7)];
        let lexical = [(3, 40.0), (4, 12.0), (1, 1.0)];
        let fused = fuse(&dense, &lexical, Fusion::Rrf { k: 60.0 });
        let ids: Vec<i64> = fused.iter().map(|f| f.0).collect();
        // 1: 1/61 + 1/63; 3: 1/63 + 1/61 (a tie, broken by best rank: 1
        // is first in dense, 3 first in lexical, so by id); 2: 1/62; 4: 1/62.
        assert_eq!(ids, [1, 3, 2, 4]);
        assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-7);
        assert_eq!(fused[0].2.dense, Some((1, 0.9)));
        assert_eq!(fused[0].2.lexical, Some((3, 1.0)));
        assert_eq!(fused[3].2.dense, None);
        // Scaling one list's scores changes nothing.
        let louder: Vec<(i64, f32)> = lexical.iter().map(|(i, s)| (*i, s * 100.0)).collect();
        let again: Vec<i64> = fuse(&dense, &louder, Fusion::Rrf { k: 60.0 })
            .iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(again, ids);
    }

    #[test]
    fn weighted_fusion_normalises_each_list() {
        let dense = [(1, 0.9), (2, 0.5)];
        let lexical = [(2, 30.0), (3, 10.0)];
        // dense: 1 -> 1.0, 2 -> 0.0; lexical: 2 -> 1.0, 3 -> 0.0.
        let fused = fuse(&dense, &lexical, Fusion::Weighted { dense_weight: 0.7 });
        let got: Vec<(i64, f32)> = fused.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(got[0].0, 1);
        assert!((got[0].1 - 0.7).abs() < 1e-6);
        assert_eq!(got[1].0, 2);
        assert!((got[1].1 - 0.3).abs() < 1e-6);
        assert_eq!(got[2], (3, 0.0));
        // One list alone: its order.
        let only: Vec<i64> = fuse(&dense, &[], Fusion::Weighted { dense_weight: 0.5 })
            .iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(only, [1, 2]);
        assert!(fuse(&[], &[], Fusion::Rrf { k: 60.0 }).is_empty());
    }
}
