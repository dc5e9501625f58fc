//! Turning documents into chunks the embedder can read whole: token-aware
//! splitting with overlap (text-splitter over the embedder's own tokenizer,
//! Markdown-aware for Markdown), and reading `.txt`, `.md` and `.html` files.

use super::records::Chunk;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

/// How a text is structured, which decides where it may be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Plain,
    Markdown,
}

pub struct Chunker {
    /// The embedder's tokenizer without truncation or padding, so that
    /// counts are true counts.
    tokenizer: Tokenizer,
    max_tokens: usize,
    overlap: usize,
}

impl Chunker {
    pub fn new(tokenizer: &Tokenizer, max_tokens: usize, overlap: usize) -> Result<Self> {
        let mut tokenizer = tokenizer.clone();
        tokenizer
            .with_truncation(None)
            .map_err(Error::tokenizer)?
            .with_padding(None);
        if overlap >= max_tokens {
            return Err(Error::InvalidInput(
                "chunk overlap must be smaller than the chunk size".into(),
            ));
        }
        Ok(Self {
            tokenizer,
            max_tokens,
            overlap,
        })
    }

    /// Cut `text` into chunks of at most `max_tokens` tokens, on the largest
    /// boundaries that fit (sections, paragraphs, sentences, words).
    pub fn split(&self, text: &str, kind: TextKind) -> Vec<Chunk> {
        let config = ChunkConfig::new(self.max_tokens)
            .with_sizer(&self.tokenizer)
            .with_overlap(self.overlap)
            .expect("overlap was checked to be below the chunk size");
        let to_chunk = |(start, piece): (usize, &str)| Chunk {
            id: None,
            start,
            end: start + piece.len(),
            text: piece.to_string(),
        };
        match kind {
            TextKind::Plain => TextSplitter::new(config)
                .chunk_indices(text)
                .map(to_chunk)
                .collect(),
            TextKind::Markdown => MarkdownSplitter::new(config)
                .chunk_indices(text)
                .map(to_chunk)
                .collect(),
        }
    }
}

/// The file extensions `hearth ingest` reads.
pub const EXTENSIONS: &[&str] = &["txt", "md", "markdown", "html", "htm"];

/// Read a file as text: Markdown and plain text as they are, HTML reduced to
/// text (only its `<main>` element when it has one, which drops the
/// navigation that documentation sites repeat on every page).
pub fn read_file(path: &Path) -> Result<(String, TextKind)> {
    let ext = extension(path);
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    match ext.as_str() {
        "md" | "markdown" => Ok((text.into_owned(), TextKind::Markdown)),
        "html" | "htm" => Ok((html_to_text(&text)?, TextKind::Plain)),
        _ => Ok((text.into_owned(), TextKind::Plain)),
    }
}

/// Reduce HTML to plain text (no link or emphasis markup, which would
/// only add noise to embeddings).
pub fn html_to_text(html: &str) -> Result<String> {
    let body = main_element(html).unwrap_or(html);
    html2text::config::with_decorator(html2text::render::TrivialDecorator::new())
        .string_from_read(body.as_bytes(), 100_000)
        .map_err(|e| Error::InvalidInput(format!("unreadable HTML: {e}")))
}

fn main_element(html: &str) -> Option<&str> {
    let start = html.find("<main")?;
    let end = html[start..].rfind("</main>")? + start + "</main>".len();
    Some(&html[start..end])
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The readable files under `paths` (files as given, directories walked),
/// sorted, so that runs are repeatable.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            walk(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if EXTENSIONS.contains(&extension(&path).as_str()) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_main_and_drops_navigation() {
        let html = "<html><nav>Table of contents</nav><main><h1>Ownership</h1><p>Each value has an <b>owner</b>.</p></main></html>";
        let text = html_to_text(html).unwrap();
        assert!(
            text.contains("Ownership") && text.contains("owner"),
            "{text}"
        );
        assert!(!text.contains("Table of contents"), "{text}");
    }
}
