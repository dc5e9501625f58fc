//! The HNSW index over chunk embeddings: derived data, rebuilt from the
//! database whenever it is missing, stale in a way that cannot be caught
//! up, or corrupt. The graph itself is `hearth_kernels::graph::Hnsw`; this
//! module owns its life in the store: concurrent inserts and searches, and
//! saving it as a directory holding the graph file and a manifest with its
//! checksum, replaced whole by a rename.

use crate::error::{Error, Result};
use hearth_kernels::graph::{Hnsw, Shape};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};

/// Graph shape: links per node and construction breadth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexParams {
    pub max_connections: usize,
    pub ef_construction: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            max_connections: 16,
            ef_construction: 200,
        }
    }
}

impl IndexParams {
    fn shape(self) -> Shape {
        Shape {
            m: self.max_connections,
            ef_construction: self.ef_construction,
        }
    }
}

/// `(id, similarity)` pairs with ids as chunk ids.
fn as_chunk_ids(found: Vec<(usize, f32)>) -> Vec<(i64, f32)> {
    found.into_iter().map(|(id, s)| (id as i64, s)).collect()
}

/// The saved form's version: 2 is hearth's own graph file (1 was
/// hnsw_rs's dump, which is rebuilt on first open).
const FORMAT: u32 = 2;
const GRAPH: &str = "graph.bin";
const MANIFEST: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    format: u32,
    dim: usize,
    params: IndexParams,
    /// Every chunk with an id up to this one was inserted.
    max_id: i64,
    points: usize,
    graph_crc: u32,
}

/// An HNSW graph over chunk ids, safe to search and insert into from many
/// threads at once: an insert appends its points under the write lock (a
/// short copy), then links them under the read lock, in parallel, while
/// searches go on.
pub struct VectorIndex {
    graph: RwLock<Hnsw>,
    /// Held by an insert from start to end, and by a save: a saved graph
    /// never holds points appended but not yet linked.
    inserting: Mutex<()>,
    params: IndexParams,
    max_id: AtomicI64,
}

impl VectorIndex {
    pub fn new(dim: usize, params: IndexParams, capacity: usize) -> Self {
        let mut graph = Hnsw::new(dim, params.shape());
        graph.reserve(capacity);
        Self::with_graph(graph, params, 0)
    }

    fn with_graph(graph: Hnsw, params: IndexParams, max_id: i64) -> Self {
        Self {
            graph: RwLock::new(graph),
            inserting: Mutex::new(()),
            params,
            max_id: AtomicI64::new(max_id),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Hnsw> {
        self.graph.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Insert points, linking them on every thread of the compute pool
    /// when there are many.
    pub fn insert(&self, points: &[(i64, Vec<f32>)]) {
        if points.is_empty() {
            return;
        }
        let _inserting = self.inserting.lock().unwrap_or_else(|p| p.into_inner());
        let placed = {
            let mut graph = self.graph.write().unwrap_or_else(|p| p.into_inner());
            let points: Vec<(usize, &[f32])> = points
                .iter()
                .map(|(id, v)| (*id as usize, v.as_slice()))
                .collect();
            graph.place(&points)
        };
        self.read().link(placed, usize::MAX);
        let top = points.iter().map(|p| p.0).max().unwrap_or(0);
        self.max_id.fetch_max(top, Ordering::SeqCst);
    }

    /// The `k` nearest ids accepted by `keep`, nearest first, with their
    /// cosine similarity.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(i64, f32)> {
        // The plain search, its candidate list filtered afterwards: `keep`
        // here is "not deleted", which most points pass. When too few
        // candidates pass, the search that filters during the walk.
        let (hits, len) = {
            let graph = self.read();
            (graph.search(query, k, ef, keep), graph.len())
        };
        if hits.len() == k.min(len) {
            return as_chunk_ids(hits);
        }
        self.search_filtered(query, k, ef, keep)
    }

    /// The `k` nearest points among those that pass `keep`, filtered during
    /// the walk of the graph rather than after it: for filters that keep a
    /// small part of the index (metadata filters), where the nearest `ef`
    /// points overall may hold none of them.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(i64, f32)> {
        as_chunk_ids(self.read().search_filtered(query, k, ef, keep))
    }

    /// Points in the graph, deleted ones included.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the graph holds per point (vector, links, bookkeeping).
    pub fn bytes_per_point(&self) -> f64 {
        self.read().bytes_per_point()
    }

    /// Every chunk id up to this one has been inserted.
    pub fn max_id(&self) -> i64 {
        self.max_id.load(Ordering::SeqCst)
    }

    /// Write the index to `dir`, replacing what was there only once the new
    /// copy is complete. An empty index is saved as no index, which the
    /// next start rebuilds from the empty database.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = sibling(dir, "tmp");
        let old = sibling(dir, "old");
        let empty = self.is_empty();
        let mut stale: Vec<&Path> = vec![&tmp, &old];
        if empty {
            stale.push(dir);
        }
        for d in stale {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
        }
        if empty {
            return Ok(());
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        // Inserts wait while the graph is written, so the file and the
        // manifest's counts agree; searches go on.
        let _inserting = self.inserting.lock().unwrap_or_else(|p| p.into_inner());
        let graph = self.read();
        let max_id = self.max_id();
        let (points, dim) = (graph.len(), graph.dim());
        let path = tmp.join(GRAPH);
        let graph_crc = {
            let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut w = Crc32Writer {
                inner: std::io::BufWriter::with_capacity(1 << 20, file),
                hasher: crc32fast::Hasher::new(),
            };
            graph.write_to(&mut w).map_err(|e| Error::io(&path, e))?;
            let file = w
                .inner
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
            w.hasher.finalize()
        };
        drop((graph, _inserting));
        let manifest = Manifest {
            format: FORMAT,
            dim,
            params: self.params,
            max_id,
            points,
            graph_crc,
        };
        let path = tmp.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        write_synced(&path, &json)?;
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(())
    }

    /// Load an index saved by [`save`](Self::save). `Err` says why it cannot
    /// be used (missing, other parameters, checksum mismatch, unreadable);
    /// the caller then rebuilds.
    pub fn load(dir: &Path, dim: usize, params: IndexParams) -> std::result::Result<Self, String> {
        if !dir.exists() {
            return Err("no saved index".into());
        }
        let text = std::fs::read(dir.join(MANIFEST)).map_err(|e| format!("no manifest ({e})"))?;
        let m: Manifest =
            serde_json::from_slice(&text).map_err(|e| format!("unreadable manifest ({e})"))?;
        if m.format != FORMAT || m.dim != dim || m.params != params {
            return Err(format!(
                "saved in another form or with other settings (format {}, dim {}, {:?})",
                m.format, m.dim, m.params
            ));
        }
        let bytes = std::fs::read(dir.join(GRAPH)).map_err(|e| format!("unreadable ({e})"))?;
        if crc32fast::hash(&bytes) != m.graph_crc {
            return Err("checksum mismatch (corrupt or partly written)".into());
        }
        let graph = Hnsw::read_from(&bytes).map_err(|e| format!("unreadable ({e})"))?;
        if graph.len() != m.points || graph.dim() != dim || graph.shape() != params.shape() {
            return Err(format!(
                "holds {} points of dimension {}, the manifest says {} of {dim}",
                graph.len(),
                graph.dim(),
                m.points
            ));
        }
        Ok(Self::with_graph(graph, params, m.max_id))
    }
}

/// A writer that checksums what passes through it.
struct Crc32Writer<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: std::io::Write> std::io::Write for Crc32Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_kernels::simd::dot;
    use rand::{Rng, SeedableRng};

    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<(i64, Vec<f32>)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (1..=n as i64)
            .map(|id| {
                let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
                let norm = dot(&v, &v).sqrt();
                (id, v.into_iter().map(|x| x / norm).collect())
            })
            .collect()
    }

    #[test]
    fn an_empty_index_searches_to_nothing() {
        let index = VectorIndex::new(8, IndexParams::default(), 10);
        assert!(index.search(&[0.5; 8], 3, 16, &|_| true).is_empty());
        index.insert(&unit_vectors(1, 8, 1));
        assert_eq!(
            index.search(&unit_vectors(1, 8, 1)[0].1, 3, 16, &|_| true)[0].0,
            1
        );
    }

    #[test]
    fn finds_each_point_as_its_own_nearest_and_survives_save_and_load() {
        let points = unit_vectors(500, 32, 7);
        let index = VectorIndex::new(32, IndexParams::default(), 500);
        index.insert(&points);
        assert_eq!((index.len(), index.max_id()), (500, 500));
        let all = |_: usize| true;
        for (id, v) in points.iter().step_by(50) {
            let hits = index.search(v, 3, 64, &all);
            assert_eq!(hits[0].0, *id);
            assert!((hits[0].1 - 1.0).abs() < 1e-4);
        }
        // A filter hides ids at once.
        let hidden = |id: usize| id != 1;
        assert_ne!(index.search(&points[0].1, 1, 64, &hidden)[0].0, 1);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        index.save(&path).unwrap();
        index.save(&path).unwrap(); // replacing works too
        let loaded = VectorIndex::load(&path, 32, IndexParams::default()).unwrap();
        assert_eq!((loaded.len(), loaded.max_id()), (500, 500));
        assert_eq!(loaded.search(&points[42].1, 1, 64, &all)[0].0, 43);
        // Points inserted after a search are found by the next one.
        let more = unit_vectors(3, 32, 8);
        let more: Vec<(i64, Vec<f32>)> = more.into_iter().map(|(id, v)| (id + 1000, v)).collect();
        loaded.insert(&more);
        for (id, v) in &more {
            assert_eq!(loaded.search(v, 1, 64, &all)[0].0, *id);
        }

        // Wrong settings and corruption are refused, never trusted.
        assert!(VectorIndex::load(&path, 16, IndexParams::default()).is_err());
        let graph = path.join(GRAPH);
        let mut bytes = std::fs::read(&graph).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&graph, bytes).unwrap();
        let err = VectorIndex::load(&path, 32, IndexParams::default())
            .err()
            .unwrap();
        assert!(err.contains("checksum"), "{err}");
    }
}
