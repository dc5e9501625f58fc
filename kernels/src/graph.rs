//! Vector search: cosine distance for hnsw_rs ([`CosineDistance`]), exact
//! top-k, and the search side of the HNSW index: a read-only snapshot of hnsw_rs's
//! graph flattened into arrays (vectors in one block, neighbour lists as
//! compressed rows of `u32`), and the layered best-first search over it.
//!
//! hnsw_rs builds and saves the graph; its own search allocates per query (a
//! hash set of visited points, heaps of reference-counted points, a lock per
//! neighbour list), which made hearth ~3x slower than hnswlib. This snapshot
//! searches with a reusable visited array, plain heaps of `(distance, u32)`
//! and a SIMD dot product, and holds the points it was made from: points
//! inserted later are searched once the snapshot is renewed.

use crate::simd::dot;
use hnsw_rs::prelude::{Distance, Hnsw, PointId};
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// Cosine distance for L2-normalised vectors: `1 - dot`, clamped at 0
/// (anndists' `DistDot` asserts on the tiny negative values that rounding
/// produces for near-identical vectors).
#[derive(Debug, Default, Clone, Copy)]
pub struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// The `k` highest-scored items, best first (all of them when fewer).
pub fn top_k<T>(mut scored: Vec<(T, f32)>, k: usize) -> Vec<(T, f32)> {
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

/// Cache lines of a vector to prefetch: the first two; the hardware
/// prefetcher follows on (measured: one or two lines beat all 24 and none).
const PREFETCH_LINES: usize = 2;

/// Neighbour lists of one layer as compressed rows: the neighbours of
/// point `i` are `links[offsets[i]..offsets[i + 1]]`.
struct Layer {
    offsets: Vec<u32>,
    links: Vec<u32>,
}

impl Layer {
    fn neighbours(&self, i: u32) -> &[u32] {
        let i = i as usize;
        &self.links[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// A flattened copy of an hnsw_rs graph, searched without locks.
pub struct FlatGraph {
    dim: usize,
    /// Caller's id of each point.
    ids: Vec<usize>,
    /// Point `i`'s vector is `vectors[i * dim..(i + 1) * dim]`.
    vectors: Vec<f32>,
    /// Layer 0 (every point) first.
    layers: Vec<Layer>,
    entry: u32,
}

/// A point and its distance to the query, ordered by distance.
#[derive(Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Which points one search has seen: a stamp per point, so a new search
/// only bumps the stamp instead of clearing the array.
struct Visited {
    marks: Vec<u32>,
    stamp: u32,
}

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { marks: Vec::new(), stamp: 0 }) };
}

impl FlatGraph {
    /// Copy `hnsw`'s points and links as they are now. Links to points
    /// inserted while the copy is made are left out (those points are not
    /// in the copy either).
    pub fn from_hnsw<D: Distance<f32> + Send + Sync>(hnsw: &Hnsw<'_, f32, D>) -> Option<Self> {
        // Layer by layer, each layer's lock held only while it is listed:
        // hnsw_rs's whole-graph iterator takes the lock again while holding
        // it (a deadlock once an insert waits to write) and panics on a
        // graph whose entry point is not set yet (empty, or mid-insert).
        let indexation = hnsw.get_point_indexation();
        let points: Vec<_> = (0..hnsw.get_max_level())
            .filter(|&layer| indexation.get_layer_nb_point(layer) > 0)
            .flat_map(|layer| indexation.get_layer_iterator(layer).collect::<Vec<_>>())
            .collect();
        let first = points.first()?;
        let dim = first.get_v().len();
        let index: HashMap<PointId, u32> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (p.get_point_id(), i as u32))
            .collect();
        let top = points.iter().map(|p| p.get_point_id().0).max()? as usize;
        let mut layers: Vec<Layer> = (0..=top)
            .map(|_| Layer {
                offsets: Vec::with_capacity(points.len() + 1),
                links: Vec::new(),
            })
            .collect();
        for layer in &mut layers {
            layer.offsets.push(0);
        }
        let mut vectors = Vec::with_capacity(points.len() * dim);
        let mut ids = Vec::with_capacity(points.len());
        for p in &points {
            vectors.extend_from_slice(p.get_v());
            ids.push(p.get_origin_id());
            let neighbourhood = p.get_neighborhood_id();
            for (l, layer) in layers.iter_mut().enumerate() {
                if let Some(list) = neighbourhood.get(l) {
                    layer
                        .links
                        .extend(list.iter().filter_map(|n| index.get(&n.p_id).copied()));
                }
                layer.offsets.push(layer.links.len() as u32);
            }
        }
        // hnsw_rs enters at a point of its highest layer; points are listed
        // layer by layer, so the last one is such a point.
        let entry = (points.len() - 1) as u32;
        Some(Self {
            dim,
            ids,
            vectors,
            layers,
            entry,
        })
    }

    /// Points in the snapshot.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn vector(&self, i: u32) -> &[f32] {
        let start = i as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    fn distance(&self, query: &[f32], i: u32) -> f32 {
        1.0 - dot(query, self.vector(i))
    }

    /// The `ef` points nearest to `query` that the search finds, nearest
    /// first, as (caller's id, cosine similarity).
    pub fn search(&self, query: &[f32], ef: usize) -> Vec<(usize, f32)> {
        self.search_where(query, ef, None)
    }

    /// [`search`](Self::search) for the `ef` nearest points whose ids pass
    /// `keep`, filtered during the walk (as hnswlib filters): every point
    /// is a stepping stone, only kept ones are results, so a selective
    /// filter still finds `ef` results when that many are reachable.
    pub fn search_filtered(
        &self,
        query: &[f32],
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        self.search_where(query, ef, Some(keep))
    }

    fn search_where(
        &self,
        query: &[f32],
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
        if self.is_empty() || query.len() != self.dim || ef == 0 {
            return Vec::new();
        }
        // Greedy descent through the upper layers.
        let mut cur = self.entry;
        let mut best = self.distance(query, cur);
        for layer in self.layers[1..].iter().rev() {
            loop {
                let mut moved = false;
                for &n in layer.neighbours(cur) {
                    let d = self.distance(query, n);
                    if d < best {
                        (best, cur, moved) = (d, n, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let found = VISITED.with(|visited| {
            let mut visited = visited.borrow_mut();
            self.search_layer0(query, Scored(best, cur), ef, keep, &mut visited)
        });
        found
            .into_iter()
            .map(|Scored(d, i)| (self.ids[i as usize], 1.0 - d))
            .collect()
    }

    /// Best-first search of layer 0 from `start`, keeping the `ef` nearest
    /// (of those that pass `keep`, when given).
    fn search_layer0(
        &self,
        query: &[f32],
        start: Scored,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let kept = |i: u32| keep.is_none_or(|keep| keep(self.ids[i as usize]));
        if visited.marks.len() < self.len() {
            visited.marks.resize(self.len(), 0);
        }
        visited.stamp = visited.stamp.wrapping_add(1);
        if visited.stamp == 0 {
            visited.marks.fill(0);
            visited.stamp = 1;
        }
        let stamp = visited.stamp;
        visited.marks[start.1 as usize] = stamp;
        // Nearest candidate first; the farthest kept result on top.
        let mut candidates = BinaryHeap::with_capacity(ef * 4);
        let mut results = BinaryHeap::with_capacity(ef + 1);
        candidates.push(Reverse(start));
        if kept(start.1) {
            results.push(start);
        }
        let layer = &self.layers[0];
        while let Some(Reverse(c)) = candidates.pop() {
            let worst = results.peek().map_or(f32::INFINITY, |s: &Scored| s.0);
            if c.0 > worst && results.len() >= ef {
                break;
            }
            // Gather unseen neighbours and start loading their vectors
            // before computing any distance, so the loads overlap.
            for group in layer.neighbours(c.1).chunks(64) {
                let mut fresh = [0u32; 64];
                let mut count = 0;
                for &n in group {
                    let mark = &mut visited.marks[n as usize];
                    if *mark != stamp {
                        *mark = stamp;
                        fresh[count] = n;
                        count += 1;
                        self.prefetch(n);
                    }
                }
                for &n in &fresh[..count] {
                    let d = self.distance(query, n);
                    let worst = results.peek().map_or(f32::INFINITY, |s: &Scored| s.0);
                    if results.len() < ef || d < worst {
                        candidates.push(Reverse(Scored(d, n)));
                        if kept(n) {
                            results.push(Scored(d, n));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
        }
        results.into_sorted_vec()
    }

    /// Ask the CPU to start loading the head of point `i`'s vector.
    #[inline]
    fn prefetch(&self, i: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let start = i as usize * self.dim;
            if let Some(v) = self.vectors.get(start..start + self.dim) {
                // SAFETY: prefetching has no effect on program state; the
                // addresses are inside the vector block.
                unsafe {
                    for line in (0..v.len()).step_by(16).take(PREFETCH_LINES) {
                        _mm_prefetch(v.as_ptr().add(line) as *const i8, _MM_HINT_T0);
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` random unit vectors of `dim` values, and the flattened graph of
    /// an HNSW index holding them, vector `i` as point `i + first_id`.
    fn random_graph(
        n: usize,
        dim: usize,
        seed: u64,
        first_id: usize,
    ) -> (Vec<Vec<f32>>, FlatGraph) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let vectors: Vec<Vec<f32>> = (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
                let norm = dot(&v, &v).sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect();
        let hnsw = Hnsw::new(16, n, 16, 200, CosineDistance);
        for (i, v) in vectors.iter().enumerate() {
            hnsw.insert((v.as_slice(), i + first_id));
        }
        let graph = FlatGraph::from_hnsw(&hnsw).unwrap();
        (vectors, graph)
    }

    #[test]
    fn snapshot_search_finds_the_exact_neighbours() {
        let n = 2000;
        let (vectors, graph) = random_graph(n, 24, 3, 100);
        assert_eq!(graph.len(), n);
        let mut hits = 0;
        for q in vectors.iter().step_by(20) {
            let found = graph.search(q, 64);
            assert_eq!(found.len(), 64);
            assert!(found.windows(2).all(|w| w[0].1 >= w[1].1), "nearest first");
            let scored: Vec<(usize, f32)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i + 100, dot(q, v)))
                .collect();
            let truth: Vec<usize> = top_k(scored, 10).into_iter().map(|(i, _)| i).collect();
            assert_eq!(found[0].0, truth[0], "a point is its own nearest");
            hits += found[..10]
                .iter()
                .filter(|(i, _)| truth.contains(i))
                .count();
        }
        let recall = hits as f64 / (10 * n / 20) as f64;
        assert!(recall > 0.95, "recall@10 {recall}");
        // Wrong dimension or ef 0: nothing, not a panic.
        assert!(graph.search(&[1.0], 10).is_empty());
        assert!(graph.search(&vectors[0], 0).is_empty());
    }

    #[test]
    fn filtered_search_finds_kept_points_a_post_filter_would_miss() {
        let (vectors, graph) = random_graph(3000, 16, 5, 0);
        // Keep one point in 50: the nearest 32 overall rarely hold 10 of them.
        let keep = |id: usize| id % 50 == 7;
        let (mut hits, mut post_filtered) = (0, 0);
        let queries: Vec<&Vec<f32>> = vectors.iter().step_by(37).collect();
        for q in &queries {
            let found = graph.search_filtered(q, 32, &keep);
            assert!(found.iter().all(|(id, _)| keep(*id)), "only kept points");
            assert!(found.len() >= 10, "{} kept points found", found.len());
            assert!(found.windows(2).all(|w| w[0].1 >= w[1].1), "nearest first");
            let scored: Vec<(usize, f32)> = vectors
                .iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(i, v)| (i, dot(q, v)))
                .collect();
            let truth: Vec<usize> = top_k(scored, 10).into_iter().map(|(i, _)| i).collect();
            hits += found[..10]
                .iter()
                .filter(|(i, _)| truth.contains(i))
                .count();
            post_filtered += graph
                .search(q, 32)
                .iter()
                .filter(|(i, _)| keep(*i))
                .count()
                .min(10);
        }
        let recall = hits as f64 / (10 * queries.len()) as f64;
        assert!(recall > 0.95, "filtered recall@10 {recall}");
        // What filtering afterwards would have returned: far fewer than k.
        assert!(post_filtered < 2 * queries.len(), "{post_filtered}");
    }
}
