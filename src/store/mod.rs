//! Documents and how they are found again. The SQLite [`database`] is the
//! truth (collections, documents, chunks, embeddings, the lexical index);
//! each collection's HNSW [`index`] is derived from it and kept in step by
//! [`DocumentStore`]; [`extract`] reads files into text, and [`chunking`]
//! cuts the text into pieces. Nothing here runs a model: callers bring
//! embeddings.
//!
//! All methods block (disk and CPU work); async callers use
//! `spawn_blocking`.

pub mod chunking;
pub mod database;
pub mod extract;
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
pub use records::{Chunk, CollectionInfo, DocumentInfo, NewDocument, Passage};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
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

/// The collection every store has, which requests without `collection` use.
pub const DEFAULT_COLLECTION: &str = "default";

/// Longest collection name.
pub const MAX_COLLECTION_CHARS: usize = 64;

/// Check a collection name: 1 to 64 of `a-z`, `0-9`, `-` and `_`,
/// starting with a letter or digit (it names a directory and appears in
/// keys' scopes).
pub fn check_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION_CHARS
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "a collection name is 1 to {MAX_COLLECTION_CHARS} of a-z, 0-9, '-' and '_', \
             starting with a letter or digit"
        )))
    }
}

/// The database and its indexes, kept consistent.
pub struct DocumentStore {
    db: Database,
    /// Each collection's vector index. A collection's searches walk only
    /// its own graph, so a small collection beside large ones is searched
    /// as fast as it would be alone.
    indexes: RwLock<HashMap<String, Arc<VectorIndex>>>,
    /// Chunk ids that exist; the indexes may hold more (deleted ones),
    /// which searches skip.
    live: RwLock<HashSet<i64>>,
    /// Serialises writers (put, delete, save, compact); searches never wait on it.
    writer: Mutex<()>,
    /// Collections whose index changed since it was saved.
    dirty: Mutex<HashSet<String>>,
    index_dir: PathBuf,
    params: IndexParams,
    dim: usize,
    origin: IndexOrigin,
}

/// One search: what to look for, how, and what to keep.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The collection searched.
    pub collection: &'a str,
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
    /// Open the store at `db_path` and bring each collection's index up:
    /// load the saved one and insert what it lacks, or rebuild it from the
    /// database.
    pub fn open(db_path: &Path, index_dir: &Path, embedder: &str, dim: usize) -> Result<Self> {
        let db = Database::open(db_path, embedder, dim)?;
        let params = IndexParams::default();
        let live = db.chunk_ids()?;
        let max_id = db.max_chunk_id()?;
        let counts = db.chunk_counts()?;
        let mut origin = IndexOrigin {
            loaded: true,
            caught_up: 0,
            rebuilt_because: None,
        };
        let mut indexes = HashMap::new();
        let mut dirty = HashSet::new();
        for (name, count) in &counts {
            let dir = collection_index_dir(index_dir, name);
            let loaded = VectorIndex::load(&dir, dim, params).and_then(|index| {
                if index.max_id() > max_id {
                    Err(format!(
                        "it covers chunks up to {} but the database ends at {max_id}",
                        index.max_id()
                    ))
                } else {
                    Ok(index)
                }
            });
            let index = match loaded {
                Ok(index) => {
                    let mut missing = Vec::new();
                    db.embeddings_after(name, index.max_id(), |id, v| missing.push((id, v)))?;
                    index.insert(&missing);
                    origin.caught_up += missing.len();
                    if !missing.is_empty() {
                        dirty.insert(name.clone());
                    }
                    index
                }
                Err(why) => {
                    // An empty collection has no saved index: nothing to say.
                    if *count > 0 {
                        origin.loaded = false;
                        origin
                            .rebuilt_because
                            .get_or_insert(format!("{name}: {why}"));
                        dirty.insert(name.clone());
                    }
                    build(&db, name, dim, params, *count)?
                }
            };
            indexes.insert(name.clone(), Arc::new(index));
        }
        remove_unknown_index_dirs(index_dir, &counts);
        let store = Self {
            db,
            indexes: RwLock::new(indexes),
            live: RwLock::new(live),
            writer: Mutex::new(()),
            dirty: Mutex::new(dirty),
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

    /// A collection's index; `NotFound` when there is no such collection.
    fn index(&self, collection: &str) -> Result<Arc<VectorIndex>> {
        self.indexes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
            .cloned()
            .ok_or_else(|| database::no_collection(collection))
    }

    fn mark_dirty(&self, collection: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(collection.to_string());
    }

    /// Store a document (replacing one with the same id in its
    /// collection). Durable when it returns; searchable at once. Returns
    /// whether it replaced one.
    pub fn put(&self, doc: &NewDocument<'_>) -> Result<bool> {
        if doc.embeddings.iter().any(|v| v.len() != self.dim) {
            return Err(Error::InvalidInput(format!(
                "embeddings must have {} dimensions",
                self.dim
            )));
        }
        let _w = self.write_lock();
        let index = self.index(doc.collection)?;
        let written = self.db.put(doc)?;
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            for id in &written.removed {
                live.remove(id);
            }
        }
        index.insert(&written.added);
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            live.extend(written.added.iter().map(|(id, _)| *id));
        }
        self.mark_dirty(doc.collection);
        Ok(written.replaced)
    }

    /// Delete a document; hidden from searches at once. `NotFound` if absent.
    pub fn delete(&self, collection: &str, id: &str) -> Result<usize> {
        let _w = self.write_lock();
        let removed = self
            .db
            .delete(collection, id)?
            .ok_or_else(|| Error::NotFound(format!("no document with id {id:?}")))?;
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        for chunk in &removed {
            live.remove(chunk);
        }
        self.mark_dirty(collection);
        Ok(removed.len())
    }

    pub fn get(&self, collection: &str, id: &str) -> Result<(DocumentInfo, String, Vec<Chunk>)> {
        self.db
            .get(collection, id)?
            .ok_or_else(|| Error::NotFound(format!("no document with id {id:?}")))
    }

    /// A page of a collection's documents in id order, and how many it has.
    pub fn list(
        &self,
        collection: &str,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<DocumentInfo>, usize)> {
        self.index(collection)?;
        self.db.list(collection, limit, offset)
    }

    /// Every collection with its counts.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        self.db.collections()
    }

    /// Create an empty collection; `false` when it already existed.
    pub fn create_collection(&self, name: &str) -> Result<bool> {
        check_collection_name(name)?;
        let _w = self.write_lock();
        let created = self.db.create_collection(name)?;
        if created {
            // A directory left by a collection of this name deleted before
            // its files were (a crash between the two) must not be loaded.
            let dir = collection_index_dir(&self.index_dir, name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            self.indexes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    name.to_string(),
                    Arc::new(VectorIndex::new(self.dim, self.params, 0)),
                );
        }
        Ok(created)
    }

    /// Delete a collection: its documents, chunks and lexical entries go in
    /// one transaction, then its index and the index's files. Returns how
    /// many documents it held; `NotFound` when it does not exist. The
    /// `default` collection cannot be deleted.
    pub fn delete_collection(&self, name: &str) -> Result<usize> {
        if name == DEFAULT_COLLECTION {
            return Err(Error::InvalidInput(
                "the default collection cannot be deleted; delete its documents instead".into(),
            ));
        }
        let _w = self.write_lock();
        let (documents, removed) = self
            .db
            .delete_collection(name)?
            .ok_or_else(|| database::no_collection(name))?;
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            for chunk in &removed {
                live.remove(chunk);
            }
        }
        self.indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let dir = collection_index_dir(&self.index_dir, name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(documents)
    }

    /// Search as `q` asks: the dense list, the lexical list, or both fused;
    /// only chunks of documents `q.filter` selects; at most `q.k`, best
    /// first, each with its scores and ranks.
    pub fn retrieve(&self, q: &Query, settings: &SearchSettings) -> Result<Vec<Passage>> {
        if let Some(v) = q.vector {
            self.check_query(v)?;
        }
        self.index(q.collection)?;
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
            _ => self.dense(
                q.collection,
                vector("a dense search")?,
                n,
                q.filter,
                q.exact,
                settings.ef,
            )?,
        };
        let lexical = match q.mode {
            SearchMode::Dense => Vec::new(),
            _ => self.db.lexical(q.collection, q.text, n, q.filter)?,
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
        collection: &str,
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
                    .embeddings_after(collection, 0, |id, v| scored.push((id, dot(vector, &v))))?;
                top_k(scored, n)
            } else {
                let index = self.index(collection)?;
                let live = self.live.read().unwrap_or_else(|p| p.into_inner());
                index.search(vector, n, ef, &|id| live.contains(&(id as i64)))
            });
        };
        // Few matching chunks: compare with each. Many: walk the graph
        // admitting only them.
        let allowed = self.db.chunk_ids_matching(collection, filter)?;
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
        let index = self.index(collection)?;
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        Ok(index.search_filtered(vector, n, ef, &|id| {
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
        let index_points = self
            .indexes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|i| i.len())
            .sum::<usize>();
        Ok(StoreStats {
            documents: self.db.document_count()?,
            chunks,
            index_points,
            index_deleted: index_points.saturating_sub(chunks),
        })
    }

    /// Rebuild each collection's index without its deleted chunks when
    /// they exceed a quarter of it. Returns whether any was.
    pub fn compact_if_needed(&self) -> Result<bool> {
        let counts = self.db.chunk_counts()?;
        let mut compacted = false;
        for (name, live) in counts {
            let Ok(index) = self.index(&name) else {
                continue;
            };
            let deleted = index.len().saturating_sub(live);
            if deleted >= 64 && deleted * 4 >= index.len() {
                self.compact_collection(&name, live)?;
                compacted = true;
            }
        }
        Ok(compacted)
    }

    /// Rebuild every index from the database now.
    pub fn compact(&self) -> Result<()> {
        for (name, count) in self.db.chunk_counts()? {
            self.compact_collection(&name, count)?;
        }
        Ok(())
    }

    /// Rebuild one collection's index; `count` (its chunks) sizes the graph.
    fn compact_collection(&self, name: &str, count: usize) -> Result<()> {
        let _w = self.write_lock();
        // Deleted since `count` was read: nothing to rebuild.
        if self.index(name).is_err() {
            return Ok(());
        }
        let fresh = build(&self.db, name, self.dim, self.params, count)?;
        self.indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(fresh));
        self.mark_dirty(name);
        Ok(())
    }

    /// Save the indexes that changed since the last save. Returns whether
    /// any was saved.
    pub fn save_index(&self) -> Result<bool> {
        let _w = self.write_lock();
        let dirty: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (i, name) in dirty.iter().enumerate() {
            let Ok(index) = self.index(name) else {
                continue;
            };
            if let Err(e) = index.save(&collection_index_dir(&self.index_dir, name)) {
                self.dirty
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(dirty[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(!dirty.is_empty())
    }

    /// Save the indexes and fold SQLite's log, before the process exits.
    pub fn flush(&self) -> Result<()> {
        self.save_index()?;
        self.db.checkpoint()
    }
}

/// Where a collection's index is saved: `default`'s in `index_dir` (where
/// the one index of a store made before collections was), the others'
/// in `collections/NAME` beside it.
fn collection_index_dir(index_dir: &Path, name: &str) -> PathBuf {
    if name == DEFAULT_COLLECTION {
        index_dir.to_path_buf()
    } else {
        collections_dir(index_dir).join(name)
    }
}

fn collections_dir(index_dir: &Path) -> PathBuf {
    index_dir.with_file_name("collections")
}

/// Remove saved indexes of collections the database no longer has (a
/// crash between a collection's deletion and its files').
fn remove_unknown_index_dirs(index_dir: &Path, known: &HashMap<String, usize>) {
    let Ok(entries) = std::fs::read_dir(collections_dir(index_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `save` writes NAME.tmp and NAME.old beside NAME.
        let base = name.split('.').next().unwrap_or_default();
        if !known.contains_key(base) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!("removing the stale index {}: {e}", entry.path().display());
            }
        }
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

/// A fresh index holding every stored chunk of a collection.
fn build(
    db: &Database,
    collection: &str,
    dim: usize,
    params: IndexParams,
    count: usize,
) -> Result<VectorIndex> {
    let index = VectorIndex::new(dim, params, count);
    let mut batch = Vec::with_capacity(4096);
    let mut failed = None;
    db.embeddings_after(collection, 0, |id, v| {
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

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 8;

    fn vector(seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    fn put(store: &DocumentStore, collection: &str, id: &str, text: &str, seed: u64) {
        let chunk = Chunk {
            id: None,
            start: 0,
            end: text.len(),
            text: text.to_string(),
            page: Some(2),
            heading: Some("Intro".into()),
        };
        store
            .put(&NewDocument {
                collection,
                id,
                source: None,
                title: Some("T"),
                hash: None,
                metadata: &serde_json::json!({}),
                text,
                chunks: &[chunk],
                embeddings: &[vector(seed)],
            })
            .unwrap();
    }

    fn query(
        store: &DocumentStore,
        collection: &str,
        text: &str,
        vector: Option<&[f32]>,
    ) -> Result<Vec<Passage>> {
        let settings = SearchSettings {
            ef: 32,
            candidates: 10,
            fusion: Fusion::Rrf { k: 60.0 },
        };
        let mode = match vector {
            Some(_) => SearchMode::Hybrid,
            None => SearchMode::Lexical,
        };
        store.retrieve(
            &Query {
                collection,
                text,
                vector,
                mode,
                k: 10,
                filter: None,
                exact: false,
                min_score: None,
            },
            &settings,
        )
    }

    fn search(store: &DocumentStore, collection: &str, text: &str, seed: u64) -> Vec<Passage> {
        query(store, collection, text, Some(&vector(seed))).unwrap()
    }

    #[test]
    fn collections_keep_their_documents_apart_and_delete_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (db, index) = (dir.path().join("store.db"), dir.path().join("index"));
        let store = DocumentStore::open(&db, &index, "e", DIM).unwrap();
        assert!(store.create_collection("ops").unwrap());
        assert!(!store.create_collection("ops").unwrap(), "idempotent");
        assert!(store.create_collection("Bad Name").is_err());
        put(&store, "default", "readme", "paris france capital", 1);
        put(&store, "ops", "readme", "restart the pager service", 2);
        put(&store, "ops", "runbook", "pager rotation", 3);
        // The same id in two collections: two documents.
        let found = search(&store, "ops", "pager", 2);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|p| p.text.contains("pager")), "{found:?}");
        assert_eq!(
            (found[0].page, found[0].heading.as_deref()),
            (Some(2), Some("Intro"))
        );
        assert_eq!(found[0].title.as_deref(), Some("T"));
        let found = search(&store, "default", "pager", 2);
        assert_eq!(found.len(), 1, "only default's document: {found:?}");
        assert_eq!(found[0].text, "paris france capital");
        assert!(store.get("default", "runbook").is_err());
        let missing = query(&store, "nope", "x", None).unwrap_err().to_string();
        assert!(
            missing.contains("no collection named \"nope\""),
            "{missing}"
        );
        store.save_index().unwrap();
        drop(store);

        // Reopened: each collection's saved index is loaded.
        let store = DocumentStore::open(&db, &index, "e", DIM).unwrap();
        assert!(store.origin().loaded, "{:?}", store.origin());
        assert_eq!(search(&store, "ops", "pager", 3).len(), 2);
        assert_eq!(store.delete_collection("ops").unwrap(), 2);
        assert!(store.delete_collection("default").is_err());
        assert!(!collections_dir(&index).join("ops").exists());
        let stats = store.stats().unwrap();
        assert_eq!((stats.documents, stats.chunks), (1, 1));
        // Recreated: empty, and nothing of the old one comes back.
        store.create_collection("ops").unwrap();
        assert!(search(&store, "ops", "pager", 2).is_empty());
    }

    #[test]
    fn a_store_made_before_collections_moves_into_default() {
        let dir = tempfile::tempdir().unwrap();
        let (db, index) = (dir.path().join("store.db"), dir.path().join("index"));
        {
            // The schema and lexical index as hearth wrote them before.
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('embedder', 'e'), ('dim', '8');
                 CREATE TABLE documents (id TEXT PRIMARY KEY, source TEXT, metadata TEXT NOT NULL,
                     text TEXT NOT NULL, created_at INTEGER NOT NULL);
                 CREATE TABLE chunks (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
                     seq INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
                     text TEXT NOT NULL, embedding BLOB NOT NULL);
                 CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content = 'chunks',
                     content_rowid = 'id', tokenize = \"porter unicode61 tokenchars '_'\");
                 CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
                     INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END;
                 CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
                     INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END;
                 INSERT INTO documents VALUES ('old', NULL, '{}', 'pager rotation', 1);",
            )
            .unwrap();
            let blob: Vec<u8> = vector(3).iter().flat_map(|x| x.to_le_bytes()).collect();
            for id in [7, 9] {
                conn.execute(
                    "INSERT INTO chunks VALUES (?1, 'old', 0, 0, 14, 'pager rotation', ?2)",
                    rusqlite::params![id, blob],
                )
                .unwrap();
            }
            conn.execute("DELETE FROM chunks WHERE id = 9", []).unwrap();
        }
        let store = DocumentStore::open(&db, &index, "e", DIM).unwrap();
        let found = search(&store, "default", "pager", 3);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].chunk_id, found[0].document_id.as_str()),
            (7, "old")
        );
        // The chunk id sequence kept its place: 9 is never issued again.
        put(&store, "default", "new", "fresh text", 4);
        let (_, _, chunks) = store.get("default", "new").unwrap();
        assert_eq!(chunks[0].id, Some(10));
        // Deleting through the new tables reaches the lexical index.
        store.delete("default", "old").unwrap();
        assert!(search(&store, "default", "pager", 99)
            .iter()
            .all(|p| p.document_id != "old"));
    }
}
