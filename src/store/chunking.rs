//! Turning documents into chunks the embedder can read whole: token-aware
//! splitting with overlap (text-splitter over the embedder's own tokenizer,
//! Markdown-aware for Markdown).

use super::records::Chunk;
use crate::error::{Error, Result};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

/// How a text is structured, which decides where it may be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextKind {
    #[default]
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
            page: None,
            heading: None,
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
