//! Constrained decoding: output that follows a JSON schema, any JSON
//! object, a Lark grammar or a regular expression, by masking at every
//! step the tokens that cannot continue it. The engine is `llguidance`
//! (the library behind llama.cpp's and vLLM's structured outputs): an
//! Earley parser over lexemes with a token trie, which computes a step's
//! mask over the whole vocabulary in well under a millisecond on this
//! model (`hearth bench grammar` measures it).
//!
//! A model's token trie (the bytes of every token; special tokens marked
//! so that no text matches them) is built once, on the first constrained
//! request ([`GrammarEnv`]); each sequence then owns a [`Constraint`].

use super::tokenizer::LlmTokenizer;
use crate::error::{Error, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// What the output must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Format {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema { schema: Value },
    /// Text in the language of a Lark grammar (llguidance's dialect: rules
    /// and `/regex/` terminals, `start` first).
    Lark { grammar: String },
    /// Text matching this regular expression, whole.
    Regex { pattern: String },
}

/// Whitespace allowed between JSON tokens: up to 16 characters, enough for
/// pretty-printing, but not the endless run a sampled model can fall into
/// when any amount is allowed.
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,16}";

/// A JSON schema with hearth's whitespace rule, unless the schema sets
/// llguidance's options itself (`x-guidance`).
fn json_grammar(schema: &Value) -> TopLevelGrammar {
    let mut schema = schema.clone();
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }));
    }
    TopLevelGrammar::from_json_schema(schema)
}

impl Format {
    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Format::JsonObject => json_grammar(&serde_json::json!({ "type": "object" })),
            Format::JsonSchema { schema } => json_grammar(schema),
            Format::Lark { grammar } => TopLevelGrammar::from_lark(grammar.clone()),
            Format::Regex { pattern } => TopLevelGrammar::from_regex(pattern),
        }
    }
}

/// A model's vocabulary as llguidance sees it.
struct Vocabulary {
    trie: TokTrie,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// One model's parser factory: its token trie and llguidance's caches.
pub struct GrammarEnv {
    factory: ParserFactory,
}

impl GrammarEnv {
    /// Build the trie of `tokenizer`'s tokens for a model of `vocab_size`
    /// logits (ids past the tokenizer's are never allowed), ending turns
    /// with `eos`.
    pub fn new(tokenizer: &LlmTokenizer, vocab_size: usize, eos: u32) -> Result<Self> {
        let mut words = tokenizer.token_bytes()?;
        words.resize(vocab_size.max(words.len()), Vec::new());
        let info = TokRxInfo::new(words.len() as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Vocabulary { trie });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Model(format!("constrained decoding: {e}")))?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// A constraint for one sequence; a grammar that does not compile (a
    /// schema it cannot read, a Lark syntax error) is the client's mistake.
    /// The error names the request field at fault: `grammar` for a Lark
    /// grammar, `format` otherwise (the OpenAI routes call it
    /// `response_format`).
    pub fn constraint(&self, format: &Format) -> Result<Constraint> {
        let field = match format {
            Format::Lark { .. } => "grammar",
            _ => "format",
        };
        let bad = |e: String| Error::InvalidField {
            field,
            message: format!("the output format does not compile: {e}"),
        };
        let parser = self
            .factory
            .create_parser(format.grammar())
            .map_err(|e| bad(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad(e));
        }
        Ok(Constraint { matcher })
    }
}

/// One sequence's place in its grammar.
pub struct Constraint {
    matcher: Matcher,
}

impl Constraint {
    /// Set every token that cannot come next to -inf (once the grammar is
    /// complete, only the end-of-sequence token is left).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| Error::Model(format!("constrained decoding: {e}")))?;
        for (id, logit) in logits.iter_mut().enumerate() {
            if !mask.is_allowed(id as TokenId) {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Move past `token`, which [`mask`](Self::mask) allowed.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| Error::Model(format!("constrained decoding: {e}")))
    }

    /// Whether nothing but the end can follow.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }
}
