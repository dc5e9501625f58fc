//! Documents and how they are found again. The SQLite [`database`] is the
//! truth (documents, chunks, embeddings); the HNSW [`index`] is derived from
//! it and kept in step by [`DocumentStore`]; [`chunking`] cuts documents into
//! pieces. Nothing here runs a model: callers bring embeddings.
//!
//! All methods block (disk and CPU work); async callers use
//! `spawn_blocking`.

pub mod chunking;
pub mod database;
pub mod filter;
pub mod hybrid;
pub mod index;
pub mod records;

use crate::error::{Error, Result};
use database::Database;
pub use filter::Filter;
use hearth_kernels::graph::top_k;
use hearth_kernels::simd::dot;
pub use hybrid::{Fusion, SearchMode};
use index::{IndexParams, VectorIndex};
pub use records::{Chunk, DocumentInfo, NewDocument, Passage};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Counts for `/info`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoreStats {
    pub documents: usize,
    pub chunks: usize,
    pub index_points: usize,
    /// Deleted chunks still in the graph, hidden from searches until compaction.
    pub index_deleted: usize,
}

/// Where the index came from at open.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexOrigin {
    pub loaded: bool,
    /// Chunks inserted after loading because the saved index predated them.
    pub caught_up: usize,
    /// Why the saved index could not be used, when it was rebuilt.
    pub rebuilt_because: Option<String>,
}

/// The database and its index, kept consistent.
pub struct DocumentStore {
    db: Database,
    index: RwLock<Arc<VectorIndex>>,
    /// Chunk ids that exist; the index may hold more (deleted ones), which
    /// searches skip.
    live: RwLock<HashSet<i64>>,
    /// Serialises writers (put, delete, save, compact); searches never wait on it.
    writer: Mutex<()>,
    dirty: AtomicBool,
    index_dir: PathBuf,
    params: IndexParams,
    dim: usize,
    origin: IndexOrigin,
}

/// One search: what to look for, how, and what to keep.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub text: &'a str,
    /// The text's embedding: dense and hybrid searches need it, and so does
    /// `min_score`.
    pub vector: Option<&'a [f32]>,
    pub mode: SearchMode,
    pub k: usize,
    pub filter: Option<&'a Filter>,
    /// The dense list by comparing with every chunk, not through the index.
    pub exact: bool,
    /// Drop passages whose cosine similarity to the query is below this.
    pub min_score: Option<f32>,
}

/// How searches run (from the retrieval config).
#[derive(Debug, Clone, Copy)]
pub struct SearchSettings {
    /// HNSW search breadth.
    pub ef: usize,
    /// Candidates each list contributes to a hybrid search.
    pub candidates: usize,
    pub fusion: Fusion,
}

impl SearchSettings {
    pub fn of(config: &crate::config::RetrievalConfig) -> Self {
        use crate::config::FusionRule;
        Self {
            ef: config.ef_search,
            candidates: config.hybrid_candidates,
            fusion: match config.fusion {
                FusionRule::Rrf => Fusion::Rrf { k: config.rrf_k },
                FusionRule::Weighted => Fusion::Weighted {
                    dense_weight: config.dense_weight,
                },
            },
        }
    }
}

/// A filter that keeps at most this many chunks is searched exactly (by
/// comparing with each of them); more are searched by a graph walk that
/// admits only them. Measured on 10,000 chunks: the exact path costs ~8 us
/// per matching chunk (reading its embedding from SQLite), the walk ~2.5 ms
/// at 50% selectivity; below a few hundred chunks the walk would visit far
/// more points than match.
const EXACT_FILTERED: usize = 512;

impl DocumentStore {
    /// Open the store at `db_path` and bring its index up: load the saved
    /// one and insert what it lacks, or rebuild it from the database.
    pub fn open(db_path: &Path, index_dir: &Path, embedder: &str, dim: usize) -> Result<Self> {
        let db = Database::open(db_path, embedder, dim)?;
        let params = IndexParams::default();
        let live = db.chunk_ids()?;
        let max_id = db.max_chunk_id()?;
        let loaded = VectorIndex::load(index_dir, dim, params).and_then(|index| {
            if index.max_id() > max_id {
                Err(format!(
                    "it covers chunks up to {} but the database ends at {max_id}",
                    index.max_id()
                ))
            } else {
                Ok(index)
            }
        });
        let (index, origin) = match loaded {
            Ok(index) => {
                let mut missing = Vec::new();
                db.embeddings_after(index.max_id(), |id, v| missing.push((id, v)))?;
                index.insert(&missing);
                let origin = IndexOrigin {
                    loaded: true,
                    caught_up: missing.len(),
                    rebuilt_because: None,
                };
                (index, origin)
            }
            Err(why) => {
                let index = build(&db, dim, params, live.len())?;
                let origin = IndexOrigin {
                    loaded: false,
                    caught_up: 0,
                    rebuilt_because: Some(why),
                };
                (index, origin)
            }
        };
        let dirty = origin.caught_up > 0 || !origin.loaded;
        let store = Self {
            db,
            index: RwLock::new(Arc::new(index)),
            live: RwLock::new(live),
            writer: Mutex::new(()),
            dirty: AtomicBool::new(dirty),
            index_dir: index_dir.to_path_buf(),
            params,
            dim,
            origin,
        };
        Ok(store)
    }

    pub fn origin(&self) -> &IndexOrigin {
        &self.origin
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> Arc<VectorIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Store a document (replacing one with the same id). Durable when it
    /// returns; searchable at once. Returns whether it replaced one.
    pub fn put(&self, doc: &NewDocument<'_>) -> Result<bool> {
        if doc.embeddings.iter().any(|v| v.len() != self.dim) {
            return Err(Error::InvalidInput(format!(
                "embeddings must have {} dimensions",
                self.dim
            )));
        }
        let _w = self.write_lock();
        let written = self.db.put(doc)?;
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            for id in &written.removed {
                live.remove(id);
            }
        }
        self.index().insert(&written.added);
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            live.extend(written.added.iter().map(|(id, _)| *id));
        }
        self.dirty.store(true, Ordering::SeqCst);
        Ok(written.replaced)
    }

    /// Delete a document; hidden from searches at once. `NotFound` if absent.
    pub fn delete(&self, id: &str) -> Result<usize> {
        let _w = self.write_lock();
        let removed = self
            .db
            .delete(id)?
            .ok_or_else(|| Error::NotFound(format!("no document with id {id:?}")))?;
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        for chunk in &removed {
            live.remove(chunk);
        }
        self.dirty.store(true, Ordering::SeqCst);
        Ok(removed.len())
    }

    pub fn get(&self, id: &str) -> Result<(DocumentInfo, String, Vec<Chunk>)> {
        self.db
            .get(id)?
            .ok_or_else(|| Error::NotFound(format!("no document with id {id:?}")))
    }

    pub fn list(&self, limit: usize, offset: usize) -> Result<(Vec<DocumentInfo>, usize)> {
        self.db.list(limit, offset)
    }

    /// Search as `q` asks: the dense list, the lexical list, or both fused;
    /// only chunks of documents `q.filter` selects; at most `q.k`, best
    /// first, each with its scores and ranks.
    pub fn retrieve(&self, q: &Query, settings: &SearchSettings) -> Result<Vec<Passage>> {
        if let Some(v) = q.vector {
            self.check_query(v)?;
        }
        let vector = |why: &str| {
            q.vector
                .ok_or_else(|| Error::InvalidInput(format!("{why} needs the query's embedding")))
        };
        let n = match q.mode {
            SearchMode::Hybrid => settings.candidates.max(q.k),
            _ => q.k,
        };
        let dense = match q.mode {
            SearchMode::Lexical => Vec::new(),
            _ => self.dense(vector("a dense search")?, n, q.filter, q.exact, settings.ef)?,
        };
        let lexical = match q.mode {
            SearchMode::Dense => Vec::new(),
            _ => self.db.lexical(q.text, n, q.filter)?,
        };
        let (ranked, similarity) = match (q.mode, q.vector) {
            (SearchMode::Hybrid, Some(v)) => {
                let all = self.with_lexical_candidates(v, dense, &lexical)?;
                let similarity = all.iter().copied().collect();
                let dense = top_k(all, n);
                (hybrid::fuse(&dense, &lexical, settings.fusion), similarity)
            }
            (SearchMode::Lexical, v) => {
                let ranked = hybrid::single(&lexical, hybrid::List::Lexical);
                let similarity = match v {
                    Some(v) => self.similarities(v, &ranked)?,
                    None => HashMap::new(),
                };
                (ranked, similarity)
            }
            _ => (
                hybrid::single(&dense, hybrid::List::Dense),
                dense.iter().copied().collect(),
            ),
        };
        if q.min_score.is_some() {
            vector("min_score")?;
        }
        let kept: Vec<(i64, f32, hybrid::Evidence)> = ranked
            .into_iter()
            .filter(|(id, ..)| {
                q.min_score
                    .is_none_or(|min| similarity.get(id).is_some_and(|s| *s >= min))
            })
            .take(q.k)
            .collect();
        let ids: Vec<i64> = kept.iter().map(|k| k.0).collect();
        let mut found = self.db.passages(&ids)?;
        Ok(kept
            .into_iter()
            .filter_map(|(id, score, e)| {
                let mut p = found.remove(&id)?;
                p.score = score;
                p.dense_score = similarity.get(&id).copied();
                p.lexical_score = e.lexical.map(|(_, s)| s);
                p.dense_rank = e.dense.map(|(r, _)| r);
                p.lexical_rank = e.lexical.map(|(r, _)| r);
                Some(p)
            })
            .collect())
    }

    /// The dense list followed by the lexical candidates it lacks, each
    /// with its exact similarity: so a passage the graph walk missed (an
    /// outlier far from its neighbours) still takes its true dense rank.
    fn with_lexical_candidates(
        &self,
        vector: &[f32],
        mut dense: Vec<(i64, f32)>,
        lexical: &[(i64, f32)],
    ) -> Result<Vec<(i64, f32)>> {
        let missing: Vec<i64> = lexical
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !dense.iter().any(|(d, _)| d == id))
            .collect();
        let mut found = self.db.embeddings_of(&missing)?;
        dense.extend(
            missing
                .iter()
                .filter_map(|id| found.remove(id).map(|e| (*id, dot(vector, &e)))),
        );
        Ok(dense)
    }

    /// The cosine similarity of each `(id, ..)` candidate, from its stored
    /// embedding.
    fn similarities(
        &self,
        vector: &[f32],
        ranked: &[(i64, f32, hybrid::Evidence)],
    ) -> Result<HashMap<i64, f32>> {
        let ids: Vec<i64> = ranked.iter().map(|(id, ..)| *id).collect();
        Ok(self
            .db
            .embeddings_of(&ids)?
            .into_iter()
            .map(|(id, e)| (id, dot(vector, &e)))
            .collect())
    }

    /// The dense list: the `n` chunks nearest to `vector` (of those the
    /// filter selects), through the index, or exactly when asked or when
    /// the filter keeps few chunks.
    fn dense(
        &self,
        vector: &[f32],
        n: usize,
        filter: Option<&Filter>,
        exact: bool,
        ef: usize,
    ) -> Result<Vec<(i64, f32)>> {
        let Some(filter) = filter else {
            return Ok(if exact {
                let mut scored = Vec::new();
                self.db
                    .embeddings_after(0, |id, v| scored.push((id, dot(vector, &v))))?;
                top_k(scored, n)
            } else {
                let live = self.live.read().unwrap_or_else(|p| p.into_inner());
                self.index()
                    .search(vector, n, ef, &|id| live.contains(&(id as i64)))
            });
        };
        // Few matching chunks: compare with each. Many: walk the graph
        // admitting only them.
        let allowed = self.db.chunk_ids_matching(filter)?;
        if exact || allowed.len() <= EXACT_FILTERED {
            let ids: Vec<i64> = allowed.into_iter().collect();
            let scored = self
                .db
                .embeddings_of(&ids)?
                .into_iter()
                .map(|(id, v)| (id, dot(vector, &v)))
                .collect();
            return Ok(top_k(scored, n));
        }
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        Ok(self.index().search_filtered(vector, n, ef, &|id| {
            let id = id as i64;
            allowed.contains(&id) && live.contains(&id)
        }))
    }

    fn check_query(&self, query: &[f32]) -> Result<()> {
        if query.len() != self.dim {
            return Err(Error::InvalidInput(format!(
                "the query vector has {} dimensions, the store {}",
                query.len(),
                self.dim
            )));
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<StoreStats> {
        let chunks = self.live.read().unwrap_or_else(|p| p.into_inner()).len();
        let index_points = self.index().len();
        Ok(StoreStats {
            documents: self.db.document_count()?,
            chunks,
            index_points,
            index_deleted: index_points.saturating_sub(chunks),
        })
    }

    /// Rebuild the index without deleted chunks when they exceed a quarter
    /// of it. Returns whether it did.
    pub fn compact_if_needed(&self) -> Result<bool> {
        let stats = self.stats()?;
        if stats.index_deleted < 64 || stats.index_deleted * 4 < stats.index_points {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }

    /// Rebuild the index from the database now.
    pub fn compact(&self) -> Result<()> {
        let _w = self.write_lock();
        let live = self.live.read().unwrap_or_else(|p| p.into_inner()).len();
        let fresh = build(&self.db, self.dim, self.params, live)?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        self.dirty.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Save the index if it changed since the last save. Returns whether it saved.
    pub fn save_index(&self) -> Result<bool> {
        let _w = self.write_lock();
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(false);
        }
        if let Err(e) = self.index().save(&self.index_dir) {
            self.dirty.store(true, Ordering::SeqCst);
            return Err(e);
        }
        Ok(true)
    }

    /// Save the index and fold SQLite's log, before the process exits.
    pub fn flush(&self) -> Result<()> {
        self.save_index()?;
        self.db.checkpoint()
    }
}

/// Lock `dir/lock` so that no two processes write one store.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable(format!(
            "{} is in use by another hearth process (a running server?); \
             stop it, use another data_dir, or ingest through its POST /documents",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// A fresh index holding every stored chunk.
fn build(db: &Database, dim: usize, params: IndexParams, count: usize) -> Result<VectorIndex> {
    let index = VectorIndex::new(dim, params, count);
    let mut batch = Vec::with_capacity(4096);
    let mut failed = None;
    db.embeddings_after(0, |id, v| {
        if failed.is_some() {
            return;
        }
        if v.len() != dim {
            failed = Some(Error::Store(format!(
                "chunk {id} has a {}-dimensional embedding, expected {dim}",
                v.len()
            )));
            return;
        }
        batch.push((id, v));
        if batch.len() == 4096 {
            index.insert(&batch);
            batch.clear();
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    index.insert(&batch);
    Ok(index)
}
