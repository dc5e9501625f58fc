//! SentencePiece-style vocabularies from GGUF metadata
//! (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral 7B, Phi-3, Gemma),
//! tokenized as llama.cpp tokenizes them.
//!
//! The `tokenizers` crate has no model for them: its BPE ranks merges, while
//! these vocabularies carry a score per token and merge, at every step, the
//! adjacent pair whose joined text is the best-scoring token (ties: the
//! leftmost). Text that forms no token falls back to byte tokens (`<0xXX>`).
//! Spaces are written as U+2581, with one added in front of the text when
//! the vocabulary asks (`tokenizer.ggml.add_space_prefix`). Control,
//! user-defined and unknown tokens written in the text are matched first,
//! longest first.

use super::gguf::value_u32;
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF token types (llama.cpp's `llama_token_type`).
const NORMAL: u32 = 1;
const UNKNOWN: u32 = 2;
const CONTROL: u32 = 3;
const USER_DEFINED: u32 = 4;
const BYTE: u32 = 6;

/// The space marker SentencePiece writes for ' '.
const SPACE: &str = "\u{2581}";

/// What defines a SentencePiece-style vocabulary, as the GGUF file says
/// it (and as a `generate` process ships it to the processes that
/// tokenize for it): the rest of [`Spm`] is derived from it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    /// GGUF token types (normal, control, byte...).
    pub types: Vec<u32>,
    pub unknown: Option<u32>,
    pub add_space_prefix: bool,
}

/// A scored vocabulary and the rules to use it.
pub struct Spm {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<u32>,
    ids: HashMap<String, u32>,
    /// Tokens matched in text before tokenizing it, longest first.
    specials: Vec<u32>,
    /// The token of each byte (`<0xXX>`), for text no token covers.
    bytes: [Option<u32>; 256],
    unknown: Option<u32>,
    add_space_prefix: bool,
}

impl Spm {
    pub fn from_gguf(gguf: &Content) -> Result<Self> {
        let meta = |key: &str| gguf.metadata.get(key);
        let missing = |key: &str| Error::Model(format!("GGUF metadata lacks {key}"));
        let tokens: Vec<String> = match meta("tokenizer.ggml.tokens") {
            Some(Value::Array(v)) => v
                .iter()
                .map(|t| {
                    t.to_string()
                        .cloned()
                        .map_err(|_| missing("tokenizer.ggml.tokens"))
                })
                .collect::<Result<_>>()?,
            _ => return Err(missing("tokenizer.ggml.tokens")),
        };
        let scores: Vec<f32> = match meta("tokenizer.ggml.scores") {
            Some(Value::Array(v)) => v.iter().map(|s| s.to_f32().unwrap_or(0.0)).collect(),
            _ => return Err(missing("tokenizer.ggml.scores")),
        };
        let types: Vec<u32> = match meta("tokenizer.ggml.token_type") {
            Some(Value::Array(v)) => v.iter().map(|t| value_u32(t).unwrap_or(NORMAL)).collect(),
            _ => vec![NORMAL; tokens.len()],
        };
        let unknown = meta("tokenizer.ggml.unknown_token_id").and_then(value_u32);
        let add_space_prefix = meta("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(true);
        Self::new(SpmVocab {
            tokens,
            scores,
            types,
            unknown,
            add_space_prefix,
        })
    }

    /// The vocabulary with its lookups built: ids by text, the special
    /// tokens matched first (longest first), each byte's token.
    pub fn new(vocab: SpmVocab) -> Result<Self> {
        let SpmVocab {
            tokens,
            scores,
            types,
            unknown,
            add_space_prefix,
        } = vocab;
        if scores.len() != tokens.len() || types.len() != tokens.len() {
            return Err(Error::Model(format!(
                "SentencePiece vocabulary: {} tokens but {} scores and {} types",
                tokens.len(),
                scores.len(),
                types.len()
            )));
        }
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut specials: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&i| {
                matches!(types[i as usize], CONTROL | USER_DEFINED | UNKNOWN)
                    && !tokens[i as usize].is_empty()
            })
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids
                .get(&format!("<0x{b:02X}>"))
                .or_else(|| {
                    std::str::from_utf8(&[b as u8])
                        .ok()
                        .and_then(|s| ids.get(s))
                })
                .copied();
        }
        Ok(Self {
            tokens,
            scores,
            types,
            ids,
            specials,
            bytes,
            unknown,
            add_space_prefix,
        })
    }

    /// What defines this vocabulary ([`Spm::new`] rebuilds it).
    pub fn vocab(&self) -> SpmVocab {
        SpmVocab {
            tokens: self.tokens.clone(),
            scores: self.scores.clone(),
            types: self.types.clone(),
            unknown: self.unknown,
            add_space_prefix: self.add_space_prefix,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokens.get(id as usize).cloned()
    }

    /// The bytes each token stands for, in id order: `<0xXX>` byte tokens
    /// their byte, pieces with U+2581 as a space, and control, user-defined
    /// and unknown tokens as llguidance marks special ones (0xFF, then the
    /// name), so that no text matches them.
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        self.tokens
            .iter()
            .zip(&self.types)
            .map(|(t, &kind)| match kind {
                CONTROL | USER_DEFINED | UNKNOWN => {
                    let mut b = vec![0xFF];
                    b.extend_from_slice(t.as_bytes());
                    b
                }
                BYTE => t
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|b| vec![b])
                    .unwrap_or_default(),
                _ => t.replace('\u{2581}', " ").into_bytes(),
            })
            .collect()
    }

    /// Token ids for `text`, special tokens written in it matched (as
    /// llama.cpp's `tokenize` with `parse_special`); no BOS.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for fragment in self.partition(text) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(raw) => {
                    let mut text = String::with_capacity(raw.len() + 3);
                    if self.add_space_prefix && prev_special {
                        text.push(' ');
                    }
                    text.push_str(raw);
                    self.tokenize(&text.replace(' ', SPACE), &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// The text of `ids`: spaces restored, byte tokens joined into UTF-8
    /// (invalid sequences become U+FFFD), control tokens left out when
    /// `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(text) = self.tokens.get(id as usize) else {
                continue;
            };
            match self.types[id as usize] {
                BYTE => bytes.extend(u8::from_str_radix(&text[3..5], 16).ok()),
                CONTROL | UNKNOWN if skip_special => {}
                NORMAL => bytes.extend(text.replace(SPACE, " ").as_bytes()),
                _ => bytes.extend(text.as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Split `text` at the special tokens written in it, the longest
    /// tokens first (llama.cpp's `tokenizer_st_partition`).
    fn partition<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let special = self.tokens[id as usize].as_str();
            if !text.contains(special) {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut raw) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = raw.find(special) {
                    if at > 0 {
                        next.push(Fragment::Text(&raw[..at]));
                    }
                    next.push(Fragment::Token(id));
                    raw = &raw[at + special.len()..];
                }
                if !raw.is_empty() {
                    next.push(Fragment::Text(raw));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// llama.cpp's SPM session on one fragment (spaces already U+2581).
    fn tokenize(&self, text: &str, out: &mut Vec<u32>) {
        // Symbols start as the characters, linked as a list.
        let mut symbols: Vec<Symbol> = Vec::new();
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (start + c.len_utf8() < text.len()).then_some(i + 1),
            });
        }
        let mut queue = BinaryHeap::new();
        let mut rev_merge: HashMap<&str, (usize, usize)> = HashMap::new();
        for i in 1..symbols.len() {
            self.try_bigram(
                text,
                &symbols,
                Some(i - 1),
                Some(i),
                &mut queue,
                &mut rev_merge,
            );
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (b.left, b.right);
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].len + symbols[r].len != b.size
            {
                continue; // one side was merged since
            }
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            symbols[l].next = symbols[r].next;
            if let Some(n) = symbols[r].next {
                symbols[n].prev = Some(l);
            }
            let (prev, next) = (symbols[l].prev, symbols[l].next);
            self.try_bigram(text, &symbols, prev, Some(l), &mut queue, &mut rev_merge);
            self.try_bigram(text, &symbols, Some(l), next, &mut queue, &mut rev_merge);
        }
        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            self.resegment(text, &symbols, &rev_merge, i, out);
            at = symbols[i].next;
        }
    }

    /// Queue the merge of two adjacent symbols if their joined text is a
    /// token.
    fn try_bigram<'t>(
        &self,
        text: &'t str,
        symbols: &[Symbol],
        left: Option<usize>,
        right: Option<usize>,
        queue: &mut BinaryHeap<Bigram>,
        rev_merge: &mut HashMap<&'t str, (usize, usize)>,
    ) {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let joined = &text[symbols[l].start..symbols[r].start + symbols[r].len];
        let Some(&id) = self.ids.get(joined) else {
            return;
        };
        queue.push(Bigram {
            left: l,
            right: r,
            score: self.scores[id as usize],
            size: joined.len(),
        });
        rev_merge.insert(joined, (l, r));
    }

    /// A final symbol as tokens: itself, or the two it was merged from, or
    /// its bytes.
    fn resegment(
        &self,
        text: &str,
        symbols: &[Symbol],
        rev_merge: &HashMap<&str, (usize, usize)>,
        i: usize,
        out: &mut Vec<u32>,
    ) {
        let piece = &text[symbols[i].start..symbols[i].start + symbols[i].len];
        if let Some(&id) = self.ids.get(piece) {
            out.push(id);
            return;
        }
        if let Some(&(l, r)) = rev_merge.get(piece) {
            self.resegment(text, symbols, rev_merge, l, out);
            self.resegment(text, symbols, rev_merge, r, out);
            return;
        }
        for b in piece.bytes() {
            out.extend(self.bytes[b as usize].or(self.unknown));
        }
    }
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A span of the fragment, linked to its neighbours; `len == 0` once merged
/// into the symbol on its left.
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl Ord for Bigram {
    /// The best-scoring merge first; on a tie, the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}
