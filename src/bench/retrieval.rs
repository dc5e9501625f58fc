//! Retrieval quality on an mdBook (the Rust book ships with every Rust
//! toolchain): every section (h1-h3) is ingested as a document, its heading
//! becomes a query, and a query scores a hit at k when a chunk of its own
//! section is among the top k results. The same queries run through every
//! search method: dense (the HNSW index, and exact search as its
//! reference), lexical (BM25), and hybrid with each fusion rule. A user's
//! own queries (JSON Lines of `{query, relevant}`) run the same way; with a
//! reranker configured, the hybrid results reranked too.

use crate::error::{Error, Result};
use crate::models::Reranker;
use crate::pipelines::ingest::{DocumentInput, Ingestor};
use crate::store::chunking::TextKind;
use crate::store::extract::{html_to_text, Extracted};
use crate::store::{DocumentStore, Fusion, Query, SearchMode, SearchSettings, DEFAULT_COLLECTION};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One section of a page: its heading (the query) and its text.
#[derive(Debug, Clone)]
pub struct Section {
    pub id: String,
    pub heading: String,
    pub text: String,
}

/// The book's chapter pages: `ch*.html` and `appendix-*.html` (the other
/// files are redirects, the table of contents or the whole book on one page).
pub fn book_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".html") && (name.starts_with("ch") || name.starts_with("appendix-"))
        })
        .collect();
    pages.sort();
    if pages.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} holds no chapter pages (ch*.html); point --book at the Rust book, \
             e.g. $(rustc --print sysroot)/share/doc/rust/html/book",
            dir.display()
        )));
    }
    Ok(pages)
}

/// Split one page into sections at its h1-h3 headings that carry an id.
pub fn sections(page_name: &str, html: &str) -> Result<Vec<Section>> {
    let main = match (html.find("<main"), html.rfind("</main>")) {
        (Some(a), Some(b)) if a < b => &html[a..b],
        _ => html,
    };
    let mut starts = Vec::new();
    let mut at = 0;
    while let Some(pos) = main[at..].find("<h") {
        let p = at + pos;
        let tag = main.as_bytes().get(p + 2).copied();
        if matches!(tag, Some(b'1'..=b'3')) {
            starts.push(p);
        }
        at = p + 2;
    }
    let mut out = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(main.len());
        let piece = &main[start..end];
        let level = &piece[1..3];
        let Some(close) = piece.find(&format!("</{level}>")) else {
            continue;
        };
        let open_end = piece.find('>').unwrap_or(0);
        let anchor = attr(&piece[..open_end], "id");
        let heading = html_to_text(&piece[..close + 5])?
            .trim()
            .trim_start_matches('#')
            .trim()
            .to_string();
        let text = html_to_text(piece)?;
        let Some(anchor) = anchor else { continue };
        if heading.is_empty() || text.trim().len() <= heading.len() + 20 {
            continue;
        }
        out.push(Section {
            id: format!("{page_name}#{anchor}"),
            heading,
            text,
        });
    }
    Ok(out)
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_string())
}

/// Every section of every chapter page of the book in `dir`.
pub fn book_sections(dir: &Path) -> Result<Vec<Section>> {
    let mut all = Vec::new();
    for page in book_pages(dir)? {
        let html = std::fs::read_to_string(&page).map_err(|e| Error::io(&page, e))?;
        let name = page.file_name().and_then(|n| n.to_str()).unwrap_or("page");
        all.extend(sections(name, &html)?);
    }
    Ok(all)
}

/// Ingest sections not yet in the store (so a second run only evaluates).
pub async fn ingest_sections(
    ingestor: &Ingestor,
    store: &DocumentStore,
    sections: &[Section],
    mut progress: impl FnMut(usize),
) -> Result<usize> {
    use futures_util::{StreamExt, TryStreamExt};
    if store.stats()?.documents == sections.len() {
        return Ok(0);
    }
    let docs = sections.iter().map(|s| DocumentInput {
        collection: DEFAULT_COLLECTION.to_string(),
        id: Some(s.id.clone()),
        source: Some(s.id.clone()),
        metadata: serde_json::json!({ "heading": s.heading }),
        title: Some(s.heading.clone()),
        hash: None,
        content: Extracted::from_text(s.text.clone(), TextKind::Plain),
    });
    let mut done = 0;
    let mut results = futures_util::stream::iter(docs)
        .map(|d| ingestor.ingest(d))
        .buffered(4);
    while let Some(r) = results.try_next().await? {
        done += r.chunks;
        progress(1);
    }
    Ok(done)
}

/// hit@1, @5, @10 as fractions of the queries, and the mean reciprocal
/// rank of the first relevant passage within the top 10.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Hits {
    pub hit_at_1: f64,
    pub hit_at_5: f64,
    pub hit_at_10: f64,
    pub mrr_at_10: f64,
}

/// One evaluation query: its text, its embedding, and the ids of the
/// documents that answer it.
#[derive(Debug, Clone)]
pub struct EvalQuery {
    pub text: String,
    pub vector: Vec<f32>,
    pub relevant: Vec<String>,
}

/// One way of searching, as the evaluation runs it.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    pub mode: SearchMode,
    pub exact: bool,
    pub settings: SearchSettings,
    /// Re-score this many candidates with the reranker given to
    /// [`evaluate`], keeping the best 10.
    pub rerank: Option<usize>,
}

impl Method {
    /// Its name in the report: `dense (HNSW, ef 64)`, `lexical (BM25)`,
    /// `hybrid (RRF k=60)`, ...
    pub fn name(&self) -> String {
        let base = self.base_name();
        match self.rerank {
            Some(n) => format!("{base}, reranked ({n} candidates)"),
            None => base,
        }
    }

    fn base_name(&self) -> String {
        match self.mode {
            SearchMode::Dense if self.exact => "dense (exact)".into(),
            SearchMode::Dense => format!("dense (HNSW, ef {})", self.settings.ef),
            SearchMode::Lexical => "lexical (BM25)".into(),
            SearchMode::Hybrid => match self.settings.fusion {
                Fusion::Rrf { k } => {
                    format!("hybrid (RRF k={k}, {} each)", self.settings.candidates)
                }
                Fusion::Weighted { dense_weight } => format!(
                    "hybrid (weighted, dense {dense_weight}, {} each)",
                    self.settings.candidates
                ),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    pub method: String,
    pub hits: Hits,
    pub ms_per_query: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub queries: usize,
    pub chunks: usize,
    pub methods: Vec<MethodReport>,
}

/// Score each method on the queries: a query is a hit at k when a chunk of
/// a relevant document is among the first k results.
pub fn evaluate(
    store: &DocumentStore,
    queries: &[EvalQuery],
    methods: &[Method],
    reranker: Option<&Reranker>,
) -> Result<Report> {
    let n = queries.len().max(1) as f64;
    let mut reports = Vec::with_capacity(methods.len());
    for method in methods {
        let mut ranks = Vec::with_capacity(queries.len());
        let started = std::time::Instant::now();
        for q in queries {
            let mut found = store.retrieve(
                &Query {
                    collection: DEFAULT_COLLECTION,
                    text: &q.text,
                    vector: Some(&q.vector),
                    mode: method.mode,
                    k: method.rerank.unwrap_or(10).max(10),
                    filter: None,
                    exact: method.exact,
                    min_score: None,
                },
                &method.settings,
            )?;
            if let (Some(_), Some(reranker)) = (method.rerank, reranker) {
                let texts: Vec<&str> = found.iter().map(|p| p.text.as_str()).collect();
                let scores = reranker.score(&q.text, &texts)?;
                let mut scored: Vec<_> = scores.into_iter().zip(found).collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                found = scored.into_iter().map(|(_, p)| p).collect();
            }
            found.truncate(10);
            ranks.push(
                found
                    .iter()
                    .position(|p| q.relevant.contains(&p.document_id)),
            );
        }
        let at = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r < k)).count() as f64 / n;
        reports.push(MethodReport {
            method: method.name(),
            hits: Hits {
                hit_at_1: at(1),
                hit_at_5: at(5),
                hit_at_10: at(10),
                mrr_at_10: ranks
                    .iter()
                    .flatten()
                    .map(|r| 1.0 / (*r as f64 + 1.0))
                    .sum::<f64>()
                    / n,
            },
            ms_per_query: started.elapsed().as_secs_f64() * 1e3 / n,
        });
    }
    Ok(Report {
        queries: queries.len(),
        chunks: store.stats()?.chunks,
        methods: reports,
    })
}

/// Queries from a JSON Lines file, one `{"query": "...", "relevant":
/// ["document id", ...]}` per line (`relevant` may be one id).
pub fn read_queries(path: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad =
            |why: &str| Error::InvalidInput(format!("{} line {}: {why}", path.display(), i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let query = v["query"]
            .as_str()
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| bad("needs a non-empty string \"query\""))?;
        let relevant: Vec<String> = match &v["relevant"] {
            serde_json::Value::String(id) => vec![id.clone()],
            serde_json::Value::Array(ids) => ids
                .iter()
                .map(|id| id.as_str().map(String::from))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("\"relevant\" must hold document ids (strings)"))?,
            _ => return Err(bad("needs \"relevant\": a document id or a list of them")),
        };
        if relevant.is_empty() {
            return Err(bad("\"relevant\" is empty"));
        }
        out.push((query.to_string(), relevant));
    }
    if out.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} holds no queries",
            path.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_files_are_read_or_refused_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(
            &path,
            "{\"query\": \"restart billing\", \"relevant\": \"rb-1\"}\n\n{\"query\": \"tides\", \"relevant\": [\"a\", \"b\"]}\n",
        )
        .unwrap();
        let q = read_queries(&path).unwrap();
        assert_eq!(
            q[0],
            ("restart billing".to_string(), vec!["rb-1".to_string()])
        );
        assert_eq!(q[1].1, ["a", "b"]);
        for (text, words) in [
            ("{\"query\": \"x\"}", "line 1: needs \"relevant\""),
            (
                "{\"relevant\": \"a\"}",
                "line 1: needs a non-empty string \"query\"",
            ),
            ("{\"query\": \"x\", \"relevant\": []}", "is empty"),
            ("{\"query\": \"x\", \"relevant\": [1]}", "document ids"),
            ("not json", "not JSON"),
            ("", "holds no queries"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_queries(&path).unwrap_err().to_string();
            assert!(err.contains(words), "{text}: {err}");
        }
    }

    #[test]
    fn splits_a_page_at_its_headings() {
        let html = r##"<nav><h2>Menu</h2></nav><main>
<h1 id="intro"><a class="header" href="#intro">Introduction</a></h1>
<p>Rust is a language empowering everyone to build reliable software.</p>
<h2 id="the-string-type"><a class="header" href="#the-string-type">The <code>String</code> Type</a></h2>
<p>A String is growable, heap-allocated text owned by its variable.</p>
</main>"##;
        let s = sections("ch01.html", html).unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].id, "ch01.html#intro");
        assert_eq!(s[0].heading, "Introduction");
        assert_eq!(s[1].heading, "The String Type");
        assert!(s[1].text.contains("heap-allocated"));
        assert!(!s[0].text.contains("heap-allocated"));
    }
}
