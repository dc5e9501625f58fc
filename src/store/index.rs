//! The HNSW index (hnsw_rs) over chunk embeddings: derived data, rebuilt from
//! the database whenever it is missing, stale in a way that cannot be caught
//! up, or corrupt. Saved as a directory holding hnsw_rs' two dump files and
//! a manifest with their checksums, replaced whole by a rename.

use crate::error::{Error, Result};
use hearth_kernels::graph::CosineDistance;
use hearth_kernels::graph::FlatGraph;
use hnsw_rs::prelude::{FilterT, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// hnsw_rs's neighbours as `(id, cosine similarity)`.
fn similarities(found: Vec<hnsw_rs::prelude::Neighbour>) -> Vec<(usize, f32)> {
    found
        .into_iter()
        .map(|n| (n.d_id, 1.0 - n.distance))
        .collect()
}

/// The first `k` of `(id, similarity)` pairs, with ids as chunk ids.
fn first_k(found: impl Iterator<Item = (usize, f32)>, k: usize) -> Vec<(i64, f32)> {
    found.take(k).map(|(id, s)| (id as i64, s)).collect()
}

const MAX_LAYERS: usize = 16;
const BASENAME: &str = "hnsw";
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
    data_crc: u32,
}

/// An HNSW graph over chunk ids, safe to search and insert into from many
/// threads at once. hnsw_rs builds, saves and loads the graph; searches run
/// on a flattened snapshot of it ([`FlatGraph`]), renewed by the first
/// search after an insert.
pub struct VectorIndex {
    hnsw: Hnsw<'static, f32, CosineDistance>,
    params: IndexParams,
    dim: usize,
    max_id: AtomicI64,
    snapshot: Snapshot,
}

/// The flattened copy searches run on, and what tells whether it is current.
#[derive(Default)]
struct Snapshot {
    /// Inserts finished so far.
    generation: AtomicU64,
    /// The copy and the generation it was begun at.
    graph: RwLock<Option<(u64, Arc<FlatGraph>)>>,
    /// Held while a copy is made, so only one search makes it.
    making: Mutex<()>,
}

impl VectorIndex {
    pub fn new(dim: usize, params: IndexParams, capacity: usize) -> Self {
        Self {
            hnsw: Hnsw::new(
                params.max_connections,
                capacity.max(1024),
                MAX_LAYERS,
                params.ef_construction,
                CosineDistance,
            ),
            params,
            dim,
            max_id: AtomicI64::new(0),
            snapshot: Snapshot::default(),
        }
    }

    /// Insert points (in parallel when there are many).
    pub fn insert(&self, points: &[(i64, Vec<f32>)]) {
        if points.is_empty() {
            return;
        }
        if points.len() >= 64 {
            let batch: Vec<(&Vec<f32>, usize)> =
                points.iter().map(|(id, v)| (v, *id as usize)).collect();
            self.hnsw.parallel_insert(&batch);
        } else {
            for (id, v) in points {
                self.hnsw.insert((v.as_slice(), *id as usize));
            }
        }
        let top = points.iter().map(|p| p.0).max().unwrap_or(0);
        self.max_id.fetch_max(top, Ordering::SeqCst);
        self.snapshot.generation.fetch_add(1, Ordering::SeqCst);
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
        let ef = ef.max(k);
        // The plain search, its candidate list filtered afterwards: `keep`
        // here is "not deleted", which most points pass. When too few
        // candidates pass, the search that filters during the walk.
        let nearest: Vec<(usize, f32)> = match self.current_snapshot() {
            Some(graph) => graph.search(query, ef),
            None => similarities(self.hnsw.search(query, ef, ef)),
        };
        let hits = first_k(nearest.into_iter().filter(|(id, _)| keep(*id)), k);
        if hits.len() == k.min(self.len()) {
            return hits;
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
        let ef = ef.max(k);
        let found = match self.current_snapshot() {
            Some(graph) => graph.search_filtered(query, ef, keep),
            None => {
                let filter = |id: &usize| keep(*id);
                let filter: &dyn FilterT = &filter;
                similarities(self.hnsw.search_filter(query, k, ef, Some(filter)))
            }
        };
        first_k(found.into_iter(), k)
    }

    /// Make the search snapshot now if it lags the graph (searches would
    /// otherwise make it on first use).
    pub fn refresh(&self) {
        let _ = self.current_snapshot();
    }

    /// A snapshot of the graph after the last finished insert, made now if
    /// the current one is older; `None` while another thread makes it (the
    /// caller then searches hnsw_rs's graph directly).
    fn current_snapshot(&self) -> Option<Arc<FlatGraph>> {
        let snapshot = &self.snapshot;
        let current = || {
            let generation = snapshot.generation.load(Ordering::SeqCst);
            let graph = snapshot.graph.read().unwrap_or_else(|p| p.into_inner());
            match &*graph {
                Some((made_at, graph)) if *made_at == generation => Some(graph.clone()),
                _ => None,
            }
        };
        if let Some(graph) = current() {
            return Some(graph);
        }
        let _making = snapshot.making.try_lock().ok()?;
        if let Some(graph) = current() {
            return Some(graph);
        }
        // Read before copying: an insert finishing meanwhile makes the copy
        // stale at once, and the next search copies again.
        let generation = snapshot.generation.load(Ordering::SeqCst);
        let graph = Arc::new(FlatGraph::from_hnsw(&self.hnsw)?);
        *snapshot.graph.write().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, graph.clone()));
        Some(graph)
    }

    /// Points in the graph, deleted ones included.
    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every chunk id up to this one has been inserted.
    pub fn max_id(&self) -> i64 {
        self.max_id.load(Ordering::SeqCst)
    }

    /// Write the index to `dir`, replacing what was there only once the new
    /// copy is complete.
    /// An empty index is saved as no index (hnsw_rs cannot dump an empty
    /// graph), which the next start rebuilds from the empty database.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = sibling(dir, "tmp");
        let old = sibling(dir, "old");
        let mut stale: Vec<&Path> = vec![&tmp, &old];
        if self.is_empty() {
            stale.push(dir);
        }
        for d in stale {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
        }
        if self.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let max_id = self.max_id();
        let points = self.len();
        use hnsw_rs::api::AnnT;
        let name = self
            .hnsw
            .file_dump(&tmp, BASENAME)
            .map_err(|e| Error::Store(format!("saving the index: {e}")))?;
        if name != BASENAME {
            return Err(Error::Store(format!(
                "hnsw_rs wrote the index as {name:?} instead of {BASENAME:?}"
            )));
        }
        let manifest = Manifest {
            format: 1,
            dim: self.dim,
            params: self.params,
            max_id,
            points,
            graph_crc: crc(&tmp.join(format!("{BASENAME}.hnsw.graph")))?,
            data_crc: crc(&tmp.join(format!("{BASENAME}.hnsw.data")))?,
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
        if m.format != 1 || m.dim != dim || m.params != params {
            return Err(format!(
                "saved with other settings (dim {}, {:?})",
                m.dim, m.params
            ));
        }
        let graph = dir.join(format!("{BASENAME}.hnsw.graph"));
        let data = dir.join(format!("{BASENAME}.hnsw.data"));
        if crc(&graph).ok() != Some(m.graph_crc) || crc(&data).ok() != Some(m.data_crc) {
            return Err("checksum mismatch (corrupt or partly written)".into());
        }
        let dir = dir.to_path_buf();
        // hnsw_rs asserts on malformed files; checksums make that unlikely,
        // and a panic here still only means "rebuild".
        let hnsw = std::panic::catch_unwind(move || {
            // The loaded graph borrows its loader for its whole life: keep
            // the (small) loader alive for the process.
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir, BASENAME)));
            io.load_hnsw::<f32, CosineDistance>()
                .map_err(|e| format!("unreadable ({e})"))
        })
        .map_err(|_| "unreadable (the loader panicked)".to_string())??;
        if hnsw.get_nb_point() != m.points {
            return Err(format!(
                "holds {} points, the manifest says {}",
                hnsw.get_nb_point(),
                m.points
            ));
        }
        Ok(Self {
            hnsw,
            params,
            dim,
            max_id: AtomicI64::new(m.max_id),
            snapshot: Snapshot::default(),
        })
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn crc(path: &Path) -> Result<u32> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(crc32fast::hash(&bytes))
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
        index.refresh();
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
        let graph = path.join("hnsw.hnsw.graph");
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
