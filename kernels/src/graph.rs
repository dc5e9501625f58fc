//! Vector search: exact top-k, and hearth's HNSW index (Malkov and
//! Yashunin's hierarchical navigable small world graph): built, searched,
//! written and read here.
//!
//! Layout. Vectors sit in one block. Layer 0's neighbour lists are fixed
//! slots of `2M` links behind a count, one slot per point, in one block;
//! the upper layers' lists (`M` links each) are kept per point, for the few
//! points that reach them. Links are atomics: a search (the server's, or the
//! one each insertion runs) reads a list without a lock while another thread
//! rewrites it, and may see it half old, half new, which is harmless since
//! every entry names a real point either way. A mutex per point orders the
//! writers of its lists; no thread ever holds two.
//!
//! Insertion has two steps: [`Hnsw::place`] appends points (vectors,
//! levels, empty lists) with exclusive access, then [`Hnsw::link`] connects
//! them from many threads at once with shared access, each thread taking
//! the next unlinked point in order (hnswlib's parallel build). Neighbours
//! are chosen with the diversity heuristic (a candidate joins only if it is
//! nearer the new point than every neighbour already chosen), and a full
//! list is re-chosen the same way when a new back-link arrives.
//!
//! Distance is `1 - dot`: the cosine distance of unit-length vectors (the
//! embedder normalises its output). The walks (searches and the build's)
//! read a half-float copy of the vectors, half the bytes per distance; a
//! search's best results are scored again on the full-precision vectors,
//! so the similarities returned are exact.

use crate::simd::{dot, dot_f16_for_this_cpu};
use half::f16;
use std::cell::RefCell;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// Cache lines of a neighbour's half-float vector to prefetch before its
/// distance is taken (a 384-dim vector spans 12): 8 measured best on both
/// index sizes of `scripts/bench-peers.sh --only hnsw`, against 2, 4 and 12
/// (fewer leave the 100k walk waiting on memory; all of them cost the 6k
/// walk, whose vectors sit in cache, more than they save).
const PREFETCH_LINES: usize = 8;

/// Levels above layer 0 a point may reach (a level is drawn with
/// probability `M^-level`, so 15 is beyond any real index).
pub const MAX_LEVEL: usize = 15;

/// No entry point yet (the index is empty).
const NO_ENTRY: u64 = u64::MAX;

/// Below this many points, linking runs on the calling thread.
const PARALLEL_FROM: usize = 64;

/// Graph shape: links per point on the upper layers (`2m` on layer 0) and
/// the breadth of the search that finds a new point's neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub m: usize,
    pub ef_construction: usize,
}

/// An HNSW index over unit vectors, each carrying the caller's id.
pub struct Hnsw {
    dim: usize,
    shape: Shape,
    /// Caller's id of each point.
    ids: Vec<usize>,
    /// Point `i`'s vector is `vectors[i * dim..(i + 1) * dim]`.
    vectors: Vec<f32>,
    /// The same vectors as half floats (bits), which the walks read: half
    /// the bytes from memory per distance. Results are scored again on
    /// `vectors` before they are returned.
    halves: Vec<u16>,
    /// Highest layer of each point.
    levels: Vec<u8>,
    /// Point `i`'s layer-0 list: `layer0[i * stride0]` is its length, the
    /// links follow (`stride0 = 1 + 2m`).
    layer0: Vec<AtomicU32>,
    /// Point `i`'s lists on layers `1..=levels[i]`, each a length and `m`
    /// links; empty for points of level 0.
    upper: Vec<Box<[AtomicU32]>>,
    /// Held while a point's lists are written.
    locks: Vec<Mutex<()>>,
    /// The point searches start from and its level, packed
    /// (`level << 32 | point`), or [`NO_ENTRY`].
    entry: AtomicU64,
    /// Held by an insertion that may raise the entry point's level.
    entry_lock: Mutex<()>,
    /// Level draws so far (the random stream is reproducible).
    draws: u64,
    /// The walks' dot product, chosen for this CPU once.
    dot16: fn(&[f32], &[u16]) -> f32,
}

/// A point and its distance to the query, ordered by distance.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Which points one search has seen: a stamp per point, so a new search
/// only bumps the stamp instead of clearing the array.
struct Visited {
    marks: Vec<u32>,
    stamp: u32,
}

impl Visited {
    /// Start a search over `n` points; returns its stamp.
    fn begin(&mut self, n: usize) -> u32 {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.fill(0);
            self.stamp = 1;
        }
        self.stamp
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { marks: Vec::new(), stamp: 0 }) };
}

/// A reproducible uniform draw in (0, 1] from a counter (splitmix64).
fn uniform(counter: u64) -> f64 {
    let mut z = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

impl Hnsw {
    pub fn new(dim: usize, shape: Shape) -> Self {
        let shape = Shape {
            m: shape.m.clamp(2, 1024),
            ef_construction: shape.ef_construction.max(1),
        };
        Self {
            dim,
            shape,
            ids: Vec::new(),
            vectors: Vec::new(),
            halves: Vec::new(),
            levels: Vec::new(),
            layer0: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            draws: 0,
            dot16: dot_f16_for_this_cpu(),
        }
    }

    /// Points in the index.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Bytes held per point: its vector, id, level, lists and lock.
    pub fn bytes_per_point(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let upper: usize = self.upper.iter().map(|u| u.len() * 4 + 16).sum();
        let fixed = self.vectors.len() * 4
            + self.halves.len() * 2
            + self.ids.len() * 8
            + self.levels.len()
            + self.layer0.len() * 4
            + self.locks.len() * std::mem::size_of::<Mutex<()>>();
        (fixed + upper) as f64 / self.len() as f64
    }

    /// Reserve room for `more` points beyond those held.
    pub fn reserve(&mut self, more: usize) {
        self.ids.reserve(more);
        self.vectors.reserve(more * self.dim);
        self.halves.reserve(more * self.dim);
        self.levels.reserve(more);
        self.layer0.reserve(more * self.stride0());
        self.upper.reserve(more);
        self.locks.reserve(more);
    }

    /// Insert points: [`place`](Self::place) then [`link`](Self::link) on
    /// up to `threads` threads.
    pub fn insert(&mut self, points: &[(usize, &[f32])], threads: usize) {
        let placed = self.place(points);
        self.link(placed, threads);
    }

    /// Append points unlinked (searches cannot reach them until
    /// [`link`](Self::link)); returns their positions.
    ///
    /// # Panics
    /// When a vector's length is not the index's dimension.
    pub fn place(&mut self, points: &[(usize, &[f32])]) -> Range<usize> {
        let first = self.len();
        self.reserve(points.len());
        let mult = 1.0 / (self.shape.m as f64).ln();
        let stride0 = self.stride0();
        let per_level = self.shape.m + 1;
        for (id, v) in points {
            assert_eq!(v.len(), self.dim, "vector of the wrong dimension");
            self.draws += 1;
            let level = ((-uniform(self.draws).ln() * mult) as usize).min(MAX_LEVEL);
            self.ids.push(*id);
            self.vectors.extend_from_slice(v);
            self.halves
                .extend(v.iter().map(|x| f16::from_f32(*x).to_bits()));
            self.levels.push(level as u8);
            self.layer0.extend((0..stride0).map(|_| AtomicU32::new(0)));
            self.upper
                .push((0..level * per_level).map(|_| AtomicU32::new(0)).collect());
            self.locks.push(Mutex::new(()));
        }
        first..self.len()
    }

    /// Connect placed points into the graph, in order, on up to `threads`
    /// threads (rayon's pool).
    pub fn link(&self, placed: Range<usize>, threads: usize) {
        let threads = threads.clamp(1, rayon::current_num_threads().max(1));
        if placed.len() < PARALLEL_FROM || threads == 1 {
            for point in placed {
                self.link_one(point as u32);
            }
            return;
        }
        let next = AtomicUsize::new(placed.start);
        rayon::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|_| loop {
                    let point = next.fetch_add(1, Ordering::Relaxed);
                    if point >= placed.end {
                        break;
                    }
                    self.link_one(point as u32);
                });
            }
        });
    }

    fn stride0(&self) -> usize {
        1 + 2 * self.shape.m
    }

    /// Links a list may hold on `layer`.
    fn capacity(&self, layer: usize) -> usize {
        if layer == 0 {
            2 * self.shape.m
        } else {
            self.shape.m
        }
    }

    /// Point `i`'s list on `layer`: its length, then its link slots.
    fn list(&self, i: u32, layer: usize) -> &[AtomicU32] {
        let i = i as usize;
        if layer == 0 {
            let s = self.stride0();
            &self.layer0[i * s..(i + 1) * s]
        } else {
            let per = self.shape.m + 1;
            &self.upper[i][(layer - 1) * per..layer * per]
        }
    }

    /// Point `i`'s neighbours on `layer`, read as they are now.
    fn neighbours(&self, i: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        out.extend(self.links(i, layer));
    }

    /// Point `i`'s neighbours on `layer`, read one by one as they are now.
    fn links(&self, i: u32, layer: usize) -> impl Iterator<Item = u32> + '_ {
        let list = self.list(i, layer);
        let n = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
        list[1..=n].iter().map(|l| l.load(Ordering::Relaxed))
    }

    /// Replace point `i`'s list on `layer` (its lock held by the caller).
    fn write_list(&self, i: u32, layer: usize, links: &[u32]) {
        let list = self.list(i, layer);
        for (slot, &l) in list[1..].iter().zip(links) {
            slot.store(l, Ordering::Relaxed);
        }
        list[0].store(links.len() as u32, Ordering::Release);
    }

    fn vector(&self, i: u32) -> &[f32] {
        let start = i as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    fn half_vector(&self, i: u32) -> &[u16] {
        let start = i as usize * self.dim;
        &self.halves[start..start + self.dim]
    }

    /// The walks' distance, on the half-float copy.
    fn distance(&self, query: &[f32], i: u32) -> f32 {
        1.0 - (self.dot16)(query, self.half_vector(i))
    }

    fn entry(&self) -> Option<(u32, usize)> {
        let packed = self.entry.load(Ordering::Acquire);
        (packed != NO_ENTRY).then_some((packed as u32, (packed >> 32) as usize))
    }

    /// Connect placed point `q`: find its neighbours layer by layer from
    /// the top, choose among them, and link both ways.
    fn link_one(&self, q: u32) {
        let level = self.levels[q as usize] as usize;
        // An insertion that may become the new top holds the entry lock
        // throughout, so the entry point only ever rises.
        let mut top_guard = None;
        let mut entry = self.entry();
        if entry.is_none_or(|(_, top)| level > top) {
            top_guard = Some(self.entry_lock.lock().unwrap_or_else(|p| p.into_inner()));
            entry = self.entry();
        }
        let Some((mut cur, top)) = entry else {
            self.entry
                .store(((level as u64) << 32) | q as u64, Ordering::Release);
            return;
        };
        let query = self.vector(q);
        let mut scratch = Vec::new();
        let mut best = self.distance(query, cur);
        for layer in (level + 1..=top).rev() {
            (cur, best) = self.greedy(query, cur, best, layer, &mut scratch);
        }
        // Choose every layer's neighbours first, then write the point's
        // lists, then the links to it. Until those last links exist no
        // search can reach the point, so whoever reaches it later finds
        // its lists whole (were a list still empty, a search entering
        // there would stop at once), and none of those lists is written
        // over after another thread has added a link to it.
        let mut start = Scored(best, cur);
        let mut chosen: Vec<(usize, Vec<Scored>)> = Vec::with_capacity(level.min(top) + 1);
        for layer in (0..=level.min(top)).rev() {
            let found = VISITED.with(|v| {
                let mut visited = v.borrow_mut();
                self.search_layer(
                    query,
                    start,
                    self.shape.ef_construction,
                    layer,
                    None,
                    &mut visited,
                )
            });
            let found: Vec<Scored> = found.into_iter().filter(|s| s.1 != q).collect();
            if let Some(&nearest) = found.first() {
                start = nearest;
                chosen.push((layer, self.choose(&found, self.shape.m)));
            }
        }
        {
            let _lock = self.locks[q as usize]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (layer, neighbours) in &chosen {
                let links: Vec<u32> = neighbours.iter().map(|s| s.1).collect();
                self.write_list(q, *layer, &links);
            }
        }
        for (layer, neighbours) in &chosen {
            for s in neighbours {
                self.add_link(s.1, q, s.0, *layer, &mut scratch);
            }
        }
        if level > top {
            self.entry
                .store(((level as u64) << 32) | q as u64, Ordering::Release);
        }
        drop(top_guard);
    }

    /// Add `q` (at distance `dq`) to point `n`'s list on `layer`, choosing
    /// the list again when it is full.
    fn add_link(&self, n: u32, q: u32, dq: f32, layer: usize, scratch: &mut Vec<u32>) {
        let _lock = self.locks[n as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.neighbours(n, layer, scratch);
        if scratch.contains(&q) {
            return;
        }
        let cap = self.capacity(layer);
        if scratch.len() < cap {
            let list = self.list(n, layer);
            list[1 + scratch.len()].store(q, Ordering::Relaxed);
            list[0].store(scratch.len() as u32 + 1, Ordering::Release);
            return;
        }
        let base = self.vector(n);
        let mut candidates: Vec<Scored> = scratch
            .iter()
            .map(|&l| Scored(self.distance(base, l), l))
            .collect();
        candidates.push(Scored(dq, q));
        candidates.sort_unstable();
        let chosen: Vec<u32> = self
            .choose(&candidates, cap)
            .into_iter()
            .map(|s| s.1)
            .collect();
        self.write_list(n, layer, &chosen);
    }

    /// The diversity heuristic: walk `candidates` nearest first and keep
    /// one only if it is nearer the base point than to every one kept
    /// before it, up to `m`.
    fn choose(&self, candidates: &[Scored], m: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        for &c in candidates {
            if kept.len() == m {
                break;
            }
            let v = self.vector(c.1);
            if kept.iter().all(|k| self.distance(v, k.1) >= c.0) {
                kept.push(c);
            }
        }
        kept
    }

    /// Greedy walk on one upper layer: move to a nearer neighbour until
    /// none is nearer.
    fn greedy(
        &self,
        query: &[f32],
        mut cur: u32,
        mut best: f32,
        layer: usize,
        scratch: &mut Vec<u32>,
    ) -> (u32, f32) {
        loop {
            let mut moved = false;
            self.neighbours(cur, layer, scratch);
            for &n in scratch.iter() {
                let d = self.distance(query, n);
                if d < best {
                    (best, cur, moved) = (d, n, true);
                }
            }
            if !moved {
                return (cur, best);
            }
        }
    }

    /// The `k` nearest points to `query` whose ids pass `keep`, nearest
    /// first, as (caller's id, cosine similarity): the walk keeps the `ef`
    /// nearest it meets (at least `k`), and `keep` is applied to those
    /// afterwards, which suits a filter that most points pass (not
    /// deleted). Fewer than `k` come back when it drops too many.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        let found = self.walk(query, ef.max(k), None);
        let kept = found.into_iter().filter(|s| keep(self.ids[s.1 as usize]));
        self.rescore(query, kept, k)
    }

    /// [`search`](Self::search) with `keep` applied during the walk (as
    /// hnswlib filters): every point is a stepping stone, only kept ones
    /// are results, so a selective filter still finds `k` results when
    /// that many are reachable.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        let found = self.walk(query, ef.max(k), Some(keep));
        self.rescore(query, found.into_iter(), k)
    }

    /// The best `k` of the walk's results (nearest first by its
    /// half-float distance), scored again at full precision and ordered by
    /// that score. Results past the `k`-th are rescored too while their
    /// walk distance is within the half floats' error of the `k`-th's, so
    /// a near tie that rounding misordered is settled exactly: a half
    /// float is within 2^-11 of its value relatively, so `q·v` is off by
    /// at most 2^-11 |q| |v| (|v| = 1).
    fn rescore(
        &self,
        query: &[f32],
        found: impl Iterator<Item = Scored>,
        k: usize,
    ) -> Vec<(usize, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let margin = 2.0 * dot(query, query).sqrt() / 2048.0 + 1e-6;
        let mut bound = f32::INFINITY;
        let mut scored: Vec<(usize, f32)> = found
            .enumerate()
            .take_while(|&(n, Scored(d, _))| {
                if n + 1 == k {
                    bound = d + margin;
                }
                n < k || d <= bound
            })
            .map(|(_, Scored(_, i))| (self.ids[i as usize], dot(query, self.vector(i))))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }

    /// The walk from the entry point: greedy through the upper layers,
    /// then the `ef` nearest on layer 0, nearest first by the walk's
    /// distance.
    fn walk(&self, query: &[f32], ef: usize, keep: Option<&dyn Fn(usize) -> bool>) -> Vec<Scored> {
        if query.len() != self.dim || ef == 0 {
            return Vec::new();
        }
        let Some((mut cur, top)) = self.entry() else {
            return Vec::new();
        };
        let mut best = self.distance(query, cur);
        let mut scratch = Vec::with_capacity(2 * self.shape.m);
        for layer in (1..=top).rev() {
            (cur, best) = self.greedy(query, cur, best, layer, &mut scratch);
        }
        VISITED.with(|visited| {
            let mut visited = visited.borrow_mut();
            self.search_layer(query, Scored(best, cur), ef, 0, keep, &mut visited)
        })
    }

    /// Best-first search of one layer from `start`, keeping the `ef`
    /// nearest (of those whose ids pass `keep`, when given), nearest first.
    fn search_layer(
        &self,
        query: &[f32],
        start: Scored,
        ef: usize,
        layer: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let kept = |i: u32| keep.is_none_or(|keep| keep(self.ids[i as usize]));
        let stamp = visited.begin(self.len());
        visited.marks[start.1 as usize] = stamp;
        // Nearest candidate first; the farthest kept result on top.
        let mut candidates = BinaryHeap::with_capacity(ef * 4);
        let mut results = BinaryHeap::with_capacity(ef + 1);
        candidates.push(Reverse(start));
        if kept(start.1) {
            results.push(start);
        }
        let mut fresh = Vec::with_capacity(self.capacity(layer));
        while let Some(Reverse(c)) = candidates.pop() {
            let worst = results.peek().map_or(f32::INFINITY, |s: &Scored| s.0);
            if c.0 > worst && results.len() >= ef {
                break;
            }
            // Gather unseen neighbours and start loading their vectors
            // before computing any distance, so the loads overlap.
            fresh.clear();
            for l in self.links(c.1, layer) {
                let mark = &mut visited.marks[l as usize];
                if *mark != stamp {
                    *mark = stamp;
                    fresh.push(l);
                    self.prefetch(l);
                }
            }
            for &l in &fresh {
                let d = self.distance(query, l);
                let worst = results.peek().map_or(f32::INFINITY, |s: &Scored| s.0);
                if results.len() < ef || d < worst {
                    candidates.push(Reverse(Scored(d, l)));
                    if kept(l) {
                        results.push(Scored(d, l));
                        if results.len() > ef {
                            results.pop();
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
            if let Some(v) = self.halves.get(start..start + self.dim) {
                // SAFETY: prefetching has no effect on program state; the
                // addresses are inside the vector block.
                unsafe {
                    for line in (0..v.len()).step_by(32).take(PREFETCH_LINES) {
                        _mm_prefetch(v.as_ptr().add(line) as *const i8, _MM_HINT_T0);
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }
}

/// The file form: a header, then ids, levels, vectors, layer-0 lists and
/// upper lists, all little-endian.
const MAGIC: &[u8; 8] = b"HEARTHGR";
const FORMAT: u32 = 1;

impl Hnsw {
    /// Write the index (call between insertions; wrap `w` in a buffer).
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        for v in [
            FORMAT as u64,
            self.dim as u64,
            self.shape.m as u64,
            self.shape.ef_construction as u64,
            self.len() as u64,
            self.entry.load(Ordering::Acquire),
            self.draws,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        for &id in &self.ids {
            w.write_all(&(id as u64).to_le_bytes())?;
        }
        w.write_all(&self.levels)?;
        for x in &self.vectors {
            w.write_all(&x.to_le_bytes())?;
        }
        for l in self
            .layer0
            .iter()
            .chain(self.upper.iter().flat_map(|u| u.iter()))
        {
            w.write_all(&l.load(Ordering::Acquire).to_le_bytes())?;
        }
        Ok(())
    }

    /// Read an index written by [`write_to`](Self::write_to), checking
    /// every count, level and link against the bytes present before
    /// trusting it.
    pub fn read_from(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err("not a hearth index file".into());
        }
        let format = r.u64()?;
        if format != FORMAT as u64 {
            return Err(format!("index format {format}, expected {FORMAT}"));
        }
        let (dim, m, ef_construction, n) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let (entry, draws) = (r.u64()?, r.u64()?);
        if dim == 0 || dim > 65_536 || !(2..=1024).contains(&m) || ef_construction == 0 {
            return Err(format!("implausible shape (dim {dim}, m {m})"));
        }
        let (dim, m, n) = (dim as usize, m as usize, n as usize);
        let stride0 = 1 + 2 * m;
        // The fixed parts' size, checked against the file before any of
        // it is allocated.
        let fixed = n.checked_mul(8 + 1 + 4 * dim + 4 * stride0);
        if fixed.is_none_or(|bytes| bytes > r.left()) {
            return Err("shorter than the point count it claims".into());
        }
        let ids: Vec<usize> = r
            .take(n * 8)?
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .collect();
        let levels = r.take(n)?.to_vec();
        if levels.iter().any(|&l| l as usize > MAX_LEVEL) {
            return Err("a point's level is out of range".into());
        }
        let vectors: Vec<f32> = r
            .take(n * dim * 4)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let halves = vectors
            .iter()
            .map(|x| f16::from_f32(*x).to_bits())
            .collect();
        let mut links = |count: usize, cap: usize| -> Result<Vec<AtomicU32>, String> {
            let raw = r.take(count * 4)?;
            let words: Vec<u32> = raw
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            for list in words.chunks_exact(cap + 1) {
                let len = list[0] as usize;
                if len > cap || list[1..=len].iter().any(|&l| l as usize >= n) {
                    return Err("a neighbour list is out of range".into());
                }
            }
            Ok(words.into_iter().map(AtomicU32::new).collect())
        };
        let layer0 = links(n * stride0, 2 * m)?;
        let mut upper = Vec::with_capacity(n);
        for &level in &levels {
            upper.push(links(level as usize * (m + 1), m)?.into_boxed_slice());
        }
        if r.left() != 0 {
            return Err("trailing bytes after the index".into());
        }
        if entry != NO_ENTRY {
            let (point, level) = (entry as u32 as usize, (entry >> 32) as usize);
            if point >= n || levels[point] as usize != level {
                return Err("the entry point is out of range".into());
            }
        } else if n > 0 {
            return Err("points but no entry point".into());
        }
        Ok(Self {
            dim,
            shape: Shape {
                m,
                ef_construction: ef_construction as usize,
            },
            ids,
            vectors,
            halves,
            levels,
            layer0,
            upper,
            locks: (0..n).map(|_| Mutex::new(())).collect(),
            entry: AtomicU64::new(entry),
            entry_lock: Mutex::new(()),
            draws,
            dot16: dot_f16_for_this_cpu(),
        })
    }
}

/// A cursor over a byte slice that refuses to read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err("the index file ends early".into());
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
                let norm = dot(&v, &v).sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    /// An index holding `vectors`, vector `i` as id `i + first_id`.
    fn index(vectors: &[Vec<f32>], first_id: usize, threads: usize) -> Hnsw {
        let mut graph = Hnsw::new(
            vectors[0].len(),
            Shape {
                m: 16,
                ef_construction: 200,
            },
        );
        let points: Vec<(usize, &[f32])> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i + first_id, v.as_slice()))
            .collect();
        graph.insert(&points, threads);
        graph
    }

    fn recall(graph: &Hnsw, vectors: &[Vec<f32>], first_id: usize, ef: usize) -> f64 {
        let mut hits = 0;
        let queries: Vec<&Vec<f32>> = vectors.iter().step_by(20).collect();
        for q in &queries {
            let found = graph.search(q, 10, ef, &|_| true);
            assert_eq!(found.len(), 10);
            assert!(found.windows(2).all(|w| w[0].1 >= w[1].1), "nearest first");
            let scored: Vec<(usize, f32)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i + first_id, dot(q, v)))
                .collect();
            let truth: Vec<usize> = top_k(scored, 10).into_iter().map(|(i, _)| i).collect();
            assert_eq!(found[0].0, truth[0], "a point is its own nearest");
            hits += found[..10]
                .iter()
                .filter(|(i, _)| truth.contains(i))
                .count();
        }
        hits as f64 / (10 * queries.len()) as f64
    }

    #[test]
    fn search_finds_the_exact_neighbours_built_on_one_thread_or_several() {
        let vectors = unit_vectors(2000, 24, 3);
        for threads in [1, 4] {
            let graph = index(&vectors, 100, threads);
            assert_eq!(graph.len(), 2000);
            let r = recall(&graph, &vectors, 100, 64);
            assert!(r > 0.95, "recall@10 {r} with {threads} threads");
            // Every list holds real points, within its capacity.
            let mut scratch = Vec::new();
            for i in 0..graph.len() as u32 {
                graph.neighbours(i, 0, &mut scratch);
                assert!(!scratch.is_empty() && scratch.len() <= 32);
                assert!(scratch
                    .iter()
                    .all(|&l| (l as usize) < graph.len() && l != i));
            }
        }
        let graph = index(&vectors, 100, 1);
        // Wrong dimension or ef 0: nothing, not a panic.
        let all = |_: usize| true;
        assert!(graph.search(&[1.0], 10, 10, &all).is_empty());
        assert!(graph.search(&vectors[0], 0, 0, &all).is_empty());
        let empty = Hnsw::new(24, graph.shape());
        assert!(empty.search(&vectors[0], 10, 10, &all).is_empty());
    }

    #[test]
    fn points_added_in_later_batches_are_found() {
        let vectors = unit_vectors(1500, 16, 11);
        let mut graph = index(&vectors[..1], 0, 1);
        for batch in vectors[1..].chunks(300) {
            let first = graph.len();
            let points: Vec<(usize, &[f32])> = batch
                .iter()
                .enumerate()
                .map(|(i, v)| (first + i, v.as_slice()))
                .collect();
            graph.insert(&points, 2);
        }
        let r = recall(&graph, &vectors, 0, 64);
        assert!(r > 0.95, "recall@10 {r}");
    }

    #[test]
    fn written_and_read_back_the_index_searches_the_same_and_bad_files_are_refused() {
        let vectors = unit_vectors(800, 16, 5);
        let graph = index(&vectors, 7, 2);
        let mut bytes = Vec::new();
        graph.write_to(&mut bytes).unwrap();
        let read = Hnsw::read_from(&bytes).unwrap();
        for q in vectors.iter().step_by(40) {
            assert_eq!(
                graph.search(q, 20, 20, &|_| true),
                read.search(q, 20, 20, &|_| true)
            );
        }
        assert!(read.bytes_per_point() > 16.0 * 4.0);
        let empty = Hnsw::new(16, graph.shape());
        let mut none = Vec::new();
        empty.write_to(&mut none).unwrap();
        assert!(Hnsw::read_from(&none).unwrap().is_empty());

        // Cut short, a link past the end, a huge count, a wrong magic.
        assert!(Hnsw::read_from(&bytes[..bytes.len() - 3]).is_err());
        let mut far = bytes.clone();
        let layer0_at = bytes.len()
            - graph.upper.iter().map(|u| u.len() * 4).sum::<usize>()
            - graph.layer0.len() * 4;
        far[layer0_at + 4..layer0_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Hnsw::read_from(&far).is_err());
        let mut huge = bytes.clone();
        huge[8 + 32..8 + 40].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(Hnsw::read_from(&huge).is_err());
        let mut magic = bytes;
        magic[0] = b'X';
        assert!(Hnsw::read_from(&magic).is_err());
    }

    #[test]
    fn filtered_search_finds_kept_points_a_post_filter_would_miss() {
        let vectors = unit_vectors(3000, 16, 5);
        let graph = index(&vectors, 0, 2);
        // Keep one point in 50: the nearest 32 overall rarely hold 10 of them.
        let keep = |id: usize| id % 50 == 7;
        let (mut hits, mut post_filtered) = (0, 0);
        let queries: Vec<&Vec<f32>> = vectors.iter().step_by(37).collect();
        for q in &queries {
            let found = graph.search_filtered(q, 32, 32, &keep);
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
            post_filtered += graph.search(q, 10, 32, &keep).len();
        }
        let recall = hits as f64 / (10 * queries.len()) as f64;
        assert!(recall > 0.95, "filtered recall@10 {recall}");
        // What filtering afterwards would have returned: far fewer than k.
        assert!(post_filtered < 2 * queries.len(), "{post_filtered}");
    }
}
