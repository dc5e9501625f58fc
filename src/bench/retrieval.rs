//! Retrieval quality on an mdBook (the Rust book ships with every Rust
//! toolchain): every section (h1-h3) is ingested as a document, its heading
//! becomes a query, and a query scores a hit at k when a chunk of its own
//! section is among the top k results. The same queries run through the
//! HNSW index and through exact search over the same chunks.

use crate::error::{Error, Result};
use crate::pipelines::ingest::{DocumentInput, Ingestor};
use crate::store::chunking::{html_to_text, TextKind};
use crate::store::DocumentStore;
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
        id: Some(s.id.clone()),
        text: s.text.clone(),
        source: Some(s.id.clone()),
        metadata: serde_json::json!({ "heading": s.heading }),
        kind: TextKind::Plain,
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

/// hit@1, @5, @10 as fractions of the queries.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Hits {
    pub hit_at_1: f64,
    pub hit_at_5: f64,
    pub hit_at_10: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub queries: usize,
    pub chunks: usize,
    pub ef_search: usize,
    pub hnsw: Hits,
    pub exact: Hits,
    pub hnsw_query_ms: f64,
    pub exact_query_ms: f64,
}

/// Score the index and exact search on the queries (heading, section id).
pub fn evaluate(
    store: &DocumentStore,
    queries: &[(Vec<f32>, String)],
    ef_search: usize,
) -> Result<Report> {
    let mut ranks_hnsw = Vec::with_capacity(queries.len());
    let mut ranks_exact = Vec::with_capacity(queries.len());
    let (mut t_hnsw, mut t_exact) = (0.0, 0.0);
    for (vector, section) in queries {
        let t = std::time::Instant::now();
        let hnsw = store.search(vector, 10, ef_search)?;
        t_hnsw += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let exact = store.search_exact(vector, 10)?;
        t_exact += t.elapsed().as_secs_f64();
        let rank =
            |found: &[crate::store::Passage]| found.iter().position(|p| &p.document_id == section);
        ranks_hnsw.push(rank(&hnsw));
        ranks_exact.push(rank(&exact));
    }
    let hits = |ranks: &[Option<usize>]| {
        let at = |k: usize| {
            ranks.iter().filter(|r| r.is_some_and(|r| r < k)).count() as f64
                / ranks.len().max(1) as f64
        };
        Hits {
            hit_at_1: at(1),
            hit_at_5: at(5),
            hit_at_10: at(10),
        }
    };
    let n = queries.len().max(1) as f64;
    Ok(Report {
        queries: queries.len(),
        chunks: store.stats()?.chunks,
        ef_search,
        hnsw: hits(&ranks_hnsw),
        exact: hits(&ranks_exact),
        hnsw_query_ms: t_hnsw * 1e3 / n,
        exact_query_ms: t_exact * 1e3 / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
