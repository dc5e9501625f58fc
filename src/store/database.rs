//! The SQLite file that is the source of truth: documents, their chunks,
//! the chunks' embeddings, and the lexical (FTS5) index of their text. Every write is one transaction committed with
//! `synchronous = FULL` in WAL mode, so a write that returned survives a
//! crash or `kill -9`. Nothing here knows about the index built from it.

use super::filter::Filter;
use super::records::{Chunk, DocumentInfo, NewDocument, Passage};
use crate::error::{Error, Result};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    source TEXT,
    metadata TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- AUTOINCREMENT: a chunk id is never reused, so an id in a stale index can
-- only ever mean the chunk it was built from.
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id, seq);
";

/// The lexical index: an FTS5 table over the chunks' text (BM25 ranking),
/// kept in step by triggers, so a chunk and its entry are written and
/// removed in the same transaction (a crash cannot part them). Words are
/// Unicode letters and digits with `_` (identifiers stay whole), case
/// folded, English suffixes stemmed (Porter).
const LEXICAL_SCHEMA: &str = "
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content = 'chunks', content_rowid = 'id',
    tokenize = \"porter unicode61 tokenchars '_'\"
);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
-- A store made before the lexical index gets its entries now.
INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild');
";

/// What a write changed, for the index to follow.
pub struct Written {
    pub added: Vec<(i64, Vec<f32>)>,
    pub removed: Vec<i64>,
    pub replaced: bool,
}

pub struct Database {
    conn: Mutex<Connection>,
}

impl Database {
    /// Open or create the store. `embedder` and `dim` are recorded on
    /// creation; opening with another embedder is refused, since its vectors
    /// would not be comparable.
    pub fn open(path: &Path, embedder: &str, dim: usize) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        let lexical: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'chunks_fts')",
            [],
            |r| r.get(0),
        )?;
        if !lexical {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(LEXICAL_SCHEMA)?;
            tx.commit()?;
        }
        let dim_text = dim.to_string();
        for (key, want) in [("embedder", embedder), ("dim", dim_text.as_str())] {
            let have: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?;
            match have {
                None => {
                    conn.execute("INSERT INTO meta(key, value) VALUES (?1, ?2)", [key, want])?;
                }
                Some(have) if have != want => {
                    return Err(Error::InvalidInput(format!(
                        "the store {} was built with {key} {have:?}, but {want:?} is configured; \
                         use another data_dir or configure the same embedder",
                        path.display()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the
        // transaction rolls back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write a document and its chunks in one transaction, replacing any
    /// document with the same id.
    pub fn put(&self, doc: &NewDocument<'_>) -> Result<Written> {
        assert_eq!(doc.chunks.len(), doc.embeddings.len());
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let removed: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT id FROM chunks WHERE document_id = ?1")?;
            let ids = stmt.query_map([doc.id], |r| r.get(0))?;
            ids.collect::<rusqlite::Result<_>>()?
        };
        let replaced = tx.execute("DELETE FROM documents WHERE id = ?1", [doc.id])? > 0;
        tx.execute(
            "INSERT INTO documents(id, source, metadata, text, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![doc.id, doc.source, doc.metadata.to_string(), doc.text, now_unix()],
        )?;
        let mut added = Vec::with_capacity(doc.chunks.len());
        {
            let mut stmt = tx.prepare(
                "INSERT INTO chunks(document_id, seq, start, end, text, embedding) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (seq, (chunk, embedding)) in doc.chunks.iter().zip(doc.embeddings).enumerate() {
                stmt.execute(params![
                    doc.id,
                    seq as i64,
                    chunk.start as i64,
                    chunk.end as i64,
                    chunk.text,
                    to_blob(embedding)
                ])?;
                added.push((tx.last_insert_rowid(), embedding.clone()));
            }
        }
        tx.commit()?;
        Ok(Written {
            added,
            removed,
            replaced,
        })
    }

    /// Delete a document; returns its chunk ids, or `None` if it did not exist.
    pub fn delete(&self, id: &str) -> Result<Option<Vec<i64>>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let removed: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT id FROM chunks WHERE document_id = ?1")?;
            let ids = stmt.query_map([id], |r| r.get(0))?;
            ids.collect::<rusqlite::Result<_>>()?
        };
        let existed = tx.execute("DELETE FROM documents WHERE id = ?1", [id])? > 0;
        tx.commit()?;
        Ok(existed.then_some(removed))
    }

    /// One document with its text and chunks.
    pub fn get(&self, id: &str) -> Result<Option<(DocumentInfo, String, Vec<Chunk>)>> {
        let conn = self.conn();
        let found = conn
            .query_row(&format!("{DOCUMENT_COLUMNS} WHERE d.id = ?1"), [id], |r| {
                Ok((document_info(r)?, r.get::<_, String>(6)?))
            })
            .optional()?;
        let Some((info, text)) = found else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT id, start, end, text FROM chunks WHERE document_id = ?1 ORDER BY seq",
        )?;
        let chunks = stmt
            .query_map([id], |r| {
                Ok(Chunk {
                    id: Some(r.get(0)?),
                    start: r.get::<_, i64>(1)? as usize,
                    end: r.get::<_, i64>(2)? as usize,
                    text: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some((info, text, chunks)))
    }

    /// Documents in id order, and how many there are in all.
    pub fn list(&self, limit: usize, offset: usize) -> Result<(Vec<DocumentInfo>, usize)> {
        let conn = self.conn();
        let total: i64 = conn.query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))?;
        let mut stmt = conn.prepare(&format!(
            "{DOCUMENT_COLUMNS} ORDER BY d.id LIMIT ?1 OFFSET ?2"
        ))?;
        let docs = stmt
            .query_map(params![limit as i64, offset as i64], document_info)?
            .collect::<rusqlite::Result<_>>()?;
        Ok((docs, total as usize))
    }

    /// The chunks with these ids that still exist, with their documents' details.
    pub fn passages(&self, ids: &[i64]) -> Result<HashMap<i64, Passage>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.document_id, c.text, d.source, d.metadata
             FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ?1",
        )?;
        let mut out = HashMap::with_capacity(ids.len());
        for &id in ids {
            let row = stmt
                .query_row([id], |r| {
                    Ok(Passage {
                        chunk_id: r.get(0)?,
                        document_id: r.get(1)?,
                        text: r.get(2)?,
                        source: r.get(3)?,
                        metadata: parse_metadata(&r.get::<_, String>(4)?),
                        score: 0.0,
                        dense_score: None,
                        lexical_score: None,
                        dense_rank: None,
                        lexical_rank: None,
                        rerank_score: None,
                    })
                })
                .optional()?;
            if let Some(p) = row {
                out.insert(id, p);
            }
        }
        Ok(out)
    }

    /// Every chunk id with id > `after`, with its embedding, in id order.
    pub fn embeddings_after(&self, after: i64, mut f: impl FnMut(i64, Vec<f32>)) -> Result<()> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, embedding FROM chunks WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query([after])?;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(1)?;
            f(r.get(0)?, from_blob(&blob)?);
        }
        Ok(())
    }

    /// The `k` chunks that best match `query`'s words by BM25 (higher is
    /// better), among the documents `filter` selects. Any of the words may
    /// match; a query with no words matches nothing.
    pub fn lexical(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<(i64, f32)>> {
        let Some(expression) = match_expression(query) else {
            return Ok(Vec::new());
        };
        // FTS5 orders by `rank` (BM25 here) itself; the documents are
        // joined in only when a filter needs them.
        let (sql, mut params) = match filter {
            None => (
                "SELECT rowid, -rank FROM chunks_fts WHERE chunks_fts MATCH ?
                 ORDER BY rank LIMIT ?"
                    .to_string(),
                Vec::new(),
            ),
            Some(filter) => {
                let (condition, params) = filter.sql();
                (
                    format!(
                        "SELECT f.rowid, -bm25(chunks_fts) FROM chunks_fts f
                         JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.document_id
                         WHERE chunks_fts MATCH ? AND {condition} ORDER BY bm25(chunks_fts) LIMIT ?"
                    ),
                    params,
                )
            }
        };
        params.insert(0, SqlValue::Text(expression));
        params.push(SqlValue::Integer(k as i64));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)? as f32))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Ids of the chunks of the documents `filter` selects.
    pub fn chunk_ids_matching(&self, filter: &Filter) -> Result<HashSet<i64>> {
        let (condition, params) = filter.sql();
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {condition}"
        ))?;
        let ids = stmt
            .query_map(rusqlite::params_from_iter(params), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// The embeddings of these chunks (those that still exist).
    pub fn embeddings_of(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<f32>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT embedding FROM chunks WHERE id = ?1")?;
        let mut out = HashMap::with_capacity(ids.len());
        for &id in ids {
            let blob: Option<Vec<u8>> = stmt.query_row([id], |r| r.get(0)).optional()?;
            if let Some(blob) = blob {
                out.insert(id, from_blob(&blob)?);
            }
        }
        Ok(out)
    }

    /// Ids of every chunk that exists.
    pub fn chunk_ids(&self) -> Result<HashSet<i64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM chunks")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// The largest chunk id ever issued (deleted ones included).
    pub fn max_chunk_id(&self) -> Result<i64> {
        let conn = self.conn();
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'chunks'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0))
    }

    pub fn document_count(&self) -> Result<usize> {
        let conn = self.conn();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Fold the write-ahead log into the main file (on shutdown; durability
    /// does not depend on it).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}

const DOCUMENT_COLUMNS: &str = "SELECT d.id, d.source, d.metadata, d.created_at, length(d.text),
    (SELECT COUNT(*) FROM chunks c WHERE c.document_id = d.id), d.text FROM documents d";

fn document_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentInfo> {
    Ok(DocumentInfo {
        id: r.get(0)?,
        source: r.get(1)?,
        metadata: parse_metadata(&r.get::<_, String>(2)?),
        created_at: r.get(3)?,
        chars: r.get::<_, i64>(4)? as usize,
        chunks: r.get::<_, i64>(5)? as usize,
    })
}

fn parse_metadata(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An FTS5 query matching any of `query`'s words (as the index splits
/// them: letters, digits and `_`), each quoted so that nothing in it is
/// read as FTS5 syntax; `None` when it has no words.
fn match_expression(query: &str) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    for word in query.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let word = word.to_lowercase();
        if !word.is_empty() && !words.contains(&word) {
            words.push(word);
        }
    }
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(Error::Store(format!(
            "an embedding blob has {} bytes, not a multiple of 4",
            b.len()
        )));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
