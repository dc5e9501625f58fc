//! The SQLite file that is the source of truth: documents, their chunks,
//! the chunks' embeddings, and the lexical (FTS5) index of their text. Every write is one transaction committed with
//! `synchronous = FULL` in WAL mode, so a write that returned survives a
//! crash or `kill -9`. Nothing here knows about the index built from it.

use super::filter::Filter;
use super::records::{Chunk, CollectionInfo, DocumentInfo, NewDocument, Passage};
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
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
INSERT OR IGNORE INTO collections(name, created_at) VALUES ('default', unixepoch());
-- A document id is unique within its collection: two teams may both
-- have a `readme`, and neither's write can touch the other's.
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    source TEXT,
    title TEXT,
    hash TEXT,
    metadata TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
);
-- AUTOINCREMENT: a chunk id is never reused, so an id in a stale index can
-- only ever mean the chunk it was built from.
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    document_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    embedding BLOB NOT NULL,
    page INTEGER,
    heading TEXT,
    FOREIGN KEY (collection, document_id) REFERENCES documents(collection, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(collection, document_id, seq);
";

/// A store made before collections (documents keyed by id alone) is
/// rewritten into [`SCHEMA`]'s tables in one transaction: every document
/// goes to `default`, every chunk keeps its id (the saved index and the
/// lexical index stay valid), and the chunk id sequence keeps its place.
const MIGRATE_TO_COLLECTIONS: &str = "
DROP TRIGGER IF EXISTS chunks_fts_insert;
DROP TRIGGER IF EXISTS chunks_fts_delete;
ALTER TABLE chunks RENAME TO chunks_v1;
ALTER TABLE documents RENAME TO documents_v1;
";
const MIGRATE_COPY: &str = "
INSERT INTO documents(collection, id, source, metadata, text, created_at)
    SELECT 'default', id, source, metadata, text, created_at FROM documents_v1;
INSERT INTO chunks(id, collection, document_id, seq, start, end, text, embedding)
    SELECT id, 'default', document_id, seq, start, end, text, embedding FROM chunks_v1;
DROP TABLE chunks_v1;
DROP TABLE documents_v1;
";

/// Each collection's lexical index: an FTS5 table over its chunks' text
/// (BM25 ranking), reading the text through a view of the collection's
/// chunks, and kept in step by triggers that fire for that collection's
/// rows alone, so a chunk and its entry are written and removed in the
/// same transaction (a crash cannot part them) and a search reads only
/// its own collection's entries. Words are Unicode letters and digits
/// with `_` (identifiers stay whole), case folded, English suffixes
/// stemmed (Porter). Collection names are checked to be `[a-z0-9_-]`, so
/// they sit safely inside the quoted names and the literal.
fn lexical_schema(collection: &str) -> String {
    let (table, view) = (lexical_table(collection), lexical_view(collection));
    format!(
        "CREATE VIEW IF NOT EXISTS {view} AS SELECT id, text FROM chunks WHERE collection = '{collection}';
CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5(
    text, content = {view}, content_rowid = 'id',
    tokenize = \"porter unicode61 tokenchars '_'\"
);
CREATE TRIGGER IF NOT EXISTS \"fts_insert:{collection}\" AFTER INSERT ON chunks
WHEN new.collection = '{collection}' BEGIN
    INSERT INTO {table}(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS \"fts_delete:{collection}\" AFTER DELETE ON chunks
WHEN old.collection = '{collection}' BEGIN
    INSERT INTO {table}({table}, rowid, text) VALUES ('delete', old.id, old.text);
END;"
    )
}

/// What [`lexical_schema`] made, dropped (before the collection's rows
/// go: their entries go with the table, not one by one).
fn drop_lexical(collection: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS \"fts_insert:{collection}\";
DROP TRIGGER IF EXISTS \"fts_delete:{collection}\";
DROP TABLE IF EXISTS {};
DROP VIEW IF EXISTS {};",
        lexical_table(collection),
        lexical_view(collection)
    )
}

/// The FTS5 table of a collection's chunks, quoted: `"fts:NAME"`.
pub fn lexical_table(collection: &str) -> String {
    format!("\"fts:{collection}\"")
}

fn lexical_view(collection: &str) -> String {
    format!("\"chunks_of:{collection}\"")
}

/// The lexical index as stores made before per-collection indexes had it:
/// one table over every chunk. Dropped at open; each collection's table
/// is then built from its chunks.
const OLD_LEXICAL: &str = "
DROP TRIGGER IF EXISTS chunks_fts_insert;
DROP TRIGGER IF EXISTS chunks_fts_delete;
DROP TABLE IF EXISTS chunks_fts;
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
        migrate_to_collections(&conn)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        ensure_lexical(&conn)?;
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
    /// document with the same id in its collection. `NotFound` when the
    /// collection does not exist.
    pub fn put(&self, doc: &NewDocument<'_>) -> Result<Written> {
        assert_eq!(doc.chunks.len(), doc.embeddings.len());
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if !collection_exists(&tx, doc.collection)? {
            return Err(no_collection(doc.collection));
        }
        let removed: Vec<i64> = {
            let mut stmt =
                tx.prepare("SELECT id FROM chunks WHERE collection = ?1 AND document_id = ?2")?;
            let ids = stmt.query_map([doc.collection, doc.id], |r| r.get(0))?;
            ids.collect::<rusqlite::Result<_>>()?
        };
        let replaced = tx.execute(
            "DELETE FROM documents WHERE collection = ?1 AND id = ?2",
            [doc.collection, doc.id],
        )? > 0;
        tx.execute(
            "INSERT INTO documents(collection, id, source, title, hash, metadata, text, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                doc.collection,
                doc.id,
                doc.source,
                doc.title,
                doc.hash,
                doc.metadata.to_string(),
                doc.text,
                now_unix()
            ],
        )?;
        let mut added = Vec::with_capacity(doc.chunks.len());
        {
            let mut stmt = tx.prepare(
                "INSERT INTO chunks(collection, document_id, seq, start, end, text, embedding, page, heading)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (seq, (chunk, embedding)) in doc.chunks.iter().zip(doc.embeddings).enumerate() {
                stmt.execute(params![
                    doc.collection,
                    doc.id,
                    seq as i64,
                    chunk.start as i64,
                    chunk.end as i64,
                    chunk.text,
                    to_blob(embedding),
                    chunk.page,
                    chunk.heading,
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
    pub fn delete(&self, collection: &str, id: &str) -> Result<Option<Vec<i64>>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let removed: Vec<i64> = {
            let mut stmt =
                tx.prepare("SELECT id FROM chunks WHERE collection = ?1 AND document_id = ?2")?;
            let ids = stmt.query_map([collection, id], |r| r.get(0))?;
            ids.collect::<rusqlite::Result<_>>()?
        };
        let existed = tx.execute(
            "DELETE FROM documents WHERE collection = ?1 AND id = ?2",
            [collection, id],
        )? > 0;
        tx.commit()?;
        Ok(existed.then_some(removed))
    }

    /// Create a collection and its lexical index, in one transaction;
    /// `false` when it existed.
    pub fn create_collection(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO collections(name, created_at) VALUES (?1, ?2)",
            params![name, now_unix()],
        )?;
        tx.execute_batch(&lexical_schema(name))?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Delete a collection with its documents, their chunks and their
    /// lexical entries, in one transaction. Returns how many documents and
    /// which chunk ids went, or `None` when it did not exist.
    pub fn delete_collection(&self, name: &str) -> Result<Option<(usize, Vec<i64>)>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let removed: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT id FROM chunks WHERE collection = ?1")?;
            let ids = stmt.query_map([name], |r| r.get(0))?;
            ids.collect::<rusqlite::Result<_>>()?
        };
        if !collection_exists(&tx, name)? {
            return Ok(None);
        }
        let documents: i64 = tx.query_row(
            "SELECT COUNT(*) FROM documents WHERE collection = ?1",
            [name],
            |r| r.get(0),
        )?;
        tx.execute_batch(&drop_lexical(name))?;
        tx.execute("DELETE FROM collections WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(Some((documents as usize, removed)))
    }

    /// Every collection with its counts, by name.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.name, c.created_at,
                (SELECT COUNT(*) FROM documents d WHERE d.collection = c.name),
                (SELECT COUNT(*) FROM chunks k WHERE k.collection = c.name)
             FROM collections c ORDER BY c.name",
        )?;
        let found = stmt
            .query_map([], |r| {
                Ok(CollectionInfo {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    documents: r.get::<_, i64>(2)? as usize,
                    chunks: r.get::<_, i64>(3)? as usize,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(found)
    }

    /// One document with its text and chunks.
    pub fn get(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<(DocumentInfo, String, Vec<Chunk>)>> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!("{DOCUMENT_COLUMNS} WHERE d.collection = ?1 AND d.id = ?2"),
                [collection, id],
                |r| Ok((document_info(r)?, r.get::<_, String>(DOCUMENT_TEXT)?)),
            )
            .optional()?;
        let Some((info, text)) = found else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT id, start, end, text, page, heading FROM chunks
             WHERE collection = ?1 AND document_id = ?2 ORDER BY seq",
        )?;
        let chunks = stmt
            .query_map([collection, id], |r| {
                Ok(Chunk {
                    id: Some(r.get(0)?),
                    start: r.get::<_, i64>(1)? as usize,
                    end: r.get::<_, i64>(2)? as usize,
                    text: r.get(3)?,
                    page: r.get(4)?,
                    heading: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some((info, text, chunks)))
    }

    /// A collection's documents in id order, and how many there are in all.
    pub fn list(
        &self,
        collection: &str,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<DocumentInfo>, usize)> {
        let conn = self.conn();
        let total: i64 = conn.query_row(
            "SELECT COUNT(*) FROM documents WHERE collection = ?1",
            [collection],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(&format!(
            "{DOCUMENT_COLUMNS} WHERE d.collection = ?1 ORDER BY d.id LIMIT ?2 OFFSET ?3"
        ))?;
        let docs = stmt
            .query_map(
                params![collection, limit as i64, offset as i64],
                document_info,
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok((docs, total as usize))
    }

    /// The chunks with these ids that still exist, with their documents' details.
    pub fn passages(&self, ids: &[i64]) -> Result<HashMap<i64, Passage>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.document_id, c.text, d.source, d.metadata, d.title, c.page,
                c.heading, c.start, c.end
             FROM chunks c JOIN documents d ON d.collection = c.collection AND d.id = c.document_id
             WHERE c.id = ?1",
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
                        title: r.get(5)?,
                        page: r.get(6)?,
                        heading: r.get(7)?,
                        start: r.get::<_, i64>(8)? as usize,
                        end: r.get::<_, i64>(9)? as usize,
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

    /// Every chunk of `collection` with id > `after`, with its embedding,
    /// in id order.
    pub fn embeddings_after(
        &self,
        collection: &str,
        after: i64,
        mut f: impl FnMut(i64, Vec<f32>),
    ) -> Result<()> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, embedding FROM chunks WHERE collection = ?1 AND id > ?2 ORDER BY id",
        )?;
        let mut rows = stmt.query(params![collection, after])?;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(1)?;
            f(r.get(0)?, from_blob(&blob)?);
        }
        Ok(())
    }

    /// The `k` chunks of `collection` that best match `query`'s words by
    /// BM25 (higher is better), among the documents `filter` selects. Any
    /// of the words may match; a query with no words matches nothing.
    pub fn lexical(
        &self,
        collection: &str,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<(i64, f32)>> {
        let Some(expression) = match_expression(query) else {
            return Ok(Vec::new());
        };
        // The collection's own table: its entries alone are read and
        // ranked. The documents are joined in only when a filter needs them.
        let table = lexical_table(collection);
        let (sql, mut params) = match filter {
            None => (
                format!(
                    "SELECT rowid, -rank FROM {table} WHERE {table} MATCH ?1 ORDER BY rank LIMIT ?2"
                ),
                Vec::new(),
            ),
            Some(filter) => {
                let (condition, params) = filter.sql();
                (
                    format!(
                        "SELECT f.rowid, -bm25({table}) FROM {table} f
                         JOIN chunks c ON c.id = f.rowid
                         JOIN documents d ON d.collection = c.collection AND d.id = c.document_id
                         WHERE {table} MATCH ? AND {condition}
                         ORDER BY bm25({table}) LIMIT ?"
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

    /// Ids of the chunks of `collection`'s documents that `filter` selects.
    pub fn chunk_ids_matching(&self, collection: &str, filter: &Filter) -> Result<HashSet<i64>> {
        let (condition, mut params) = filter.sql();
        params.insert(0, SqlValue::Text(collection.to_string()));
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT c.id FROM chunks c
             JOIN documents d ON d.collection = c.collection AND d.id = c.document_id
             WHERE c.collection = ? AND {condition}"
        ))?;
        let ids = stmt
            .query_map(rusqlite::params_from_iter(params), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// How many chunks each collection has.
    pub fn chunk_counts(&self) -> Result<HashMap<String, usize>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.name, (SELECT COUNT(*) FROM chunks k WHERE k.collection = c.name)
             FROM collections c",
        )?;
        let found = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(found)
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
    (SELECT COUNT(*) FROM chunks c WHERE c.collection = d.collection AND c.document_id = d.id),
    d.text, d.collection, d.title, d.hash FROM documents d";
/// The column of [`DOCUMENT_COLUMNS`] holding the text.
const DOCUMENT_TEXT: usize = 6;

fn document_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentInfo> {
    Ok(DocumentInfo {
        id: r.get(0)?,
        source: r.get(1)?,
        metadata: parse_metadata(&r.get::<_, String>(2)?),
        created_at: r.get(3)?,
        chars: r.get::<_, i64>(4)? as usize,
        chunks: r.get::<_, i64>(5)? as usize,
        collection: r.get(7)?,
        title: r.get(8)?,
        hash: r.get(9)?,
    })
}

/// Give every collection its lexical index (built from its chunks when it
/// is new), after dropping the one table of older stores.
fn ensure_lexical(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(OLD_LEXICAL)?;
    let names: Vec<String> = {
        let mut stmt = tx.prepare("SELECT name FROM collections")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        names.collect::<rusqlite::Result<_>>()?
    };
    for name in names {
        let table = lexical_table(&name);
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?1)",
            [format!("fts:{name}")],
            |r| r.get(0),
        )?;
        tx.execute_batch(&lexical_schema(&name))?;
        if !exists {
            tx.execute_batch(&format!("INSERT INTO {table}({table}) VALUES ('rebuild');"))?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn collection_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM collections WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

/// The error for a collection that does not exist (or that the caller may
/// not see: the message is the same).
pub fn no_collection(name: &str) -> Error {
    Error::NotFound(format!("no collection named {name:?}"))
}

fn parse_metadata(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// Rewrite a store made before collections (see [`MIGRATE_TO_COLLECTIONS`]);
/// a store made since, or a new file, is left as it is.
fn migrate_to_collections(conn: &Connection) -> Result<()> {
    let old: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'documents')
         AND NOT EXISTS (SELECT 1 FROM pragma_table_info('documents') WHERE name = 'collection')",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    tracing::info!("moving the store's documents into the `default` collection");
    // Foreign keys are checked by the new tables once the copy is done;
    // SQLite ignores the pragma inside a transaction, so it is set here.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let tx = conn.unchecked_transaction()?;
    let sequence: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'chunks'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute_batch(MIGRATE_TO_COLLECTIONS)?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(MIGRATE_COPY)?;
    tx.execute("DELETE FROM sqlite_sequence WHERE name = 'chunks'", [])?;
    if let Some(seq) = sequence {
        tx.execute(
            "INSERT INTO sqlite_sequence(name, seq) VALUES ('chunks', ?1)",
            [seq],
        )?;
    }
    let broken: Option<String> = tx
        .query_row("SELECT \"table\" FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(table) = broken {
        return Err(Error::Store(format!(
            "moving the store into collections left a broken reference in {table}"
        )));
    }
    tx.commit()?;
    Ok(())
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
