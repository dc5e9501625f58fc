//! The LLM's tokenizer: read from a `tokenizer.json` beside the model when
//! there is one, otherwise rebuilt from the GGUF metadata (`tokenizer.ggml.*`).
//!
//! Two kinds of vocabulary are rebuilt: SentencePiece-style ones
//! (`tokenizer.ggml.model = "llama"`, see [`super::spm`]), and byte-level BPE
//! (`"gpt2"`) for the pre-tokenizers we know (`tokenizer.ggml.pre`): an
//! unknown one is an error naming the fix, never a silent fall-back to GPT-2
//! rules that would tokenize digits or whitespace differently from llama.cpp.

use super::gguf::value_u32;
use super::spm::{Spm, SpmVocab};
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::path::Path;
use std::sync::Arc;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: u32 = 3;
const TOKEN_TYPE_USER_DEFINED: u32 = 4;

/// The tokenizer plus the special ids generation needs.
#[derive(Clone)]
pub struct LlmTokenizer {
    inner: Inner,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end a turn: EOS and the template's end-of-turn markers.
    pub end_of_turn: Vec<u32>,
}

/// The tokenizer as one process hands it to another (a `generate` process
/// to the `rag` processes that fit prompts for it, at `GET /generator`), so
/// that they tokenize without asking it: exactly what [`LlmTokenizer`]
/// holds, in serde's form.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenizerWire {
    pub vocabulary: VocabularyWire,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub end_of_turn: Vec<u32>,
}

/// A Hugging Face tokenizer as its `tokenizer.json`, or a
/// SentencePiece-style vocabulary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VocabularyWire {
    HuggingFace(serde_json::Value),
    SentencePiece(SpmVocab),
}

/// A Hugging Face tokenizer (byte-level BPE, or a `tokenizer.json`), or a
/// SentencePiece-style vocabulary ([`Spm`]).
#[derive(Clone)]
enum Inner {
    Hf(Box<Tokenizer>),
    Spm(Arc<Spm>),
}

impl Inner {
    fn token_to_id(&self, text: &str) -> Option<u32> {
        match self {
            Self::Hf(t) => t.token_to_id(text),
            Self::Spm(t) => t.token_to_id(text),
        }
    }
}

impl LlmTokenizer {
    /// `tokenizer.json` wins when present; otherwise GGUF metadata.
    pub fn load(gguf: &Content, tokenizer_json: Option<&Path>) -> Result<Self> {
        let model = vocabulary_kind(gguf);
        let inner = match tokenizer_json {
            Some(path) => Inner::Hf(Box::new(Tokenizer::from_file(path).map_err(|e| {
                Error::Model(format!("cannot read tokenizer {}: {e}", path.display()))
            })?)),
            None if model == "llama" => Inner::Spm(Arc::new(Spm::from_gguf(gguf)?)),
            None => Inner::Hf(Box::new(from_gguf(gguf)?)),
        };
        let bos = meta_u32(gguf, "tokenizer.ggml.bos_token_id");
        let eos = meta_u32(gguf, "tokenizer.ggml.eos_token_id");
        // As llama.cpp: SentencePiece vocabularies start prompts with BOS
        // unless the file says otherwise.
        let add_bos = gguf
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(model == "llama");
        let mut end_of_turn: Vec<u32> = eos.into_iter().collect();
        if let Some(eot) = meta_u32(gguf, "tokenizer.ggml.eot_token_id") {
            end_of_turn.push(eot);
        }
        for marker in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end|>",
            "<end_of_turn>",
            "<|eot|>",
        ] {
            if let Some(id) = inner.token_to_id(marker) {
                end_of_turn.push(id);
            }
        }
        end_of_turn.sort_unstable();
        end_of_turn.dedup();
        Ok(Self {
            inner,
            bos,
            eos,
            add_bos,
            end_of_turn,
        })
    }

    /// This tokenizer in its wire form ([`from_wire`](Self::from_wire)
    /// rebuilds it).
    pub fn to_wire(&self) -> Result<TokenizerWire> {
        let vocabulary = match &self.inner {
            Inner::Hf(t) => VocabularyWire::HuggingFace(tokenizer_json(t)?),
            Inner::Spm(t) => VocabularyWire::SentencePiece(t.vocab()),
        };
        Ok(TokenizerWire {
            vocabulary,
            bos: self.bos,
            eos: self.eos,
            add_bos: self.add_bos,
            end_of_turn: self.end_of_turn.clone(),
        })
    }

    /// The tokenizer another process sent ([`to_wire`](Self::to_wire)).
    pub fn from_wire(wire: TokenizerWire) -> Result<Self> {
        let inner = match wire.vocabulary {
            VocabularyWire::HuggingFace(json) => Inner::Hf(Box::new(
                serde_json::from_value::<Tokenizer>(json).map_err(Error::tokenizer)?,
            )),
            VocabularyWire::SentencePiece(vocab) => Inner::Spm(Arc::new(Spm::new(vocab)?)),
        };
        Ok(Self {
            inner,
            bos: wire.bos,
            eos: wire.eos,
            add_bos: wire.add_bos,
            end_of_turn: wire.end_of_turn,
        })
    }

    /// Token ids for `text`; special tokens written in the text (such as
    /// `<|im_start|>`) become their ids. No BOS is added here.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Hf(t) => {
                let enc = t.encode(text, false).map_err(Error::tokenizer)?;
                Ok(enc.get_ids().to_vec())
            }
            Inner::Spm(t) => Ok(t.encode(text)),
        }
    }

    /// Encode a prompt for generation: BOS first when the model wants one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.inner {
            Inner::Hf(t) => t.decode(ids, true).map_err(Error::tokenizer),
            Inner::Spm(t) => Ok(t.decode(ids, true)),
        }
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        match &self.inner {
            Inner::Hf(t) => t.id_to_token(id),
            Inner::Spm(t) => t.id_to_token(id),
        }
    }

    /// The bytes each token stands for, in id order, special tokens marked
    /// as llguidance expects (constrained decoding's token trie).
    pub fn token_bytes(&self) -> Result<Vec<Vec<u8>>> {
        match &self.inner {
            Inner::Hf(t) => llguidance::token_bytes_from_tokenizer_json(&tokenizer_json(t)?)
                .map_err(|e| Error::Model(format!("tokenizer bytes: {e}"))),
            Inner::Spm(t) => Ok(t.token_bytes()),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Hf(t) => t.get_vocab_size(true),
            Inner::Spm(t) => t.vocab_size(),
        }
    }

    pub fn is_end_of_turn(&self, id: u32) -> bool {
        self.end_of_turn.contains(&id)
    }
}

/// A Hugging Face tokenizer as its `tokenizer.json`.
fn tokenizer_json(t: &Tokenizer) -> Result<serde_json::Value> {
    serde_json::to_value(t).map_err(|e| Error::Model(format!("tokenizer as JSON: {e}")))
}

fn meta_u32(gguf: &Content, key: &str) -> Option<u32> {
    gguf.metadata.get(key).and_then(value_u32)
}

fn meta_strings(gguf: &Content, key: &str) -> Result<Vec<String>> {
    let missing = || Error::Model(format!("GGUF metadata lacks {key}"));
    let values = gguf.metadata.get(key).ok_or_else(missing)?;
    let values = values.to_vec().map_err(|_| missing())?;
    values
        .iter()
        .map(|v| v.to_string().cloned().map_err(|_| missing()))
        .collect()
}

/// `tokenizer.ggml.model`: "gpt2" (byte-level BPE), "llama"
/// (SentencePiece-style), ...
fn vocabulary_kind(gguf: &Content) -> &str {
    gguf.metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("")
}

/// Rebuild a Hugging Face tokenizer from GGUF metadata.
pub fn from_gguf(gguf: &Content) -> Result<Tokenizer> {
    let model = vocabulary_kind(gguf);
    if model != "gpt2" {
        return Err(Error::Model(format!(
            "GGUF tokenizer model {model:?} cannot be rebuilt from metadata (supported: byte-level \
             BPE, \"gpt2\", and SentencePiece-style, \"llama\"): put the model's tokenizer.json \
             beside the .gguf file"
        )));
    }
    let pre = gguf
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("default");
    let pre_tokenizer = pre_tokenizer_for(pre)?;

    let tokens = meta_strings(gguf, "tokenizer.ggml.tokens")?;
    let merges = meta_strings(gguf, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Model(format!("malformed GGUF merge {m:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let types: Vec<u32> = match gguf.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(values)) => values.iter().map(|v| value_u32(v).unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Model(format!("cannot build BPE from GGUF metadata: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let of_type = |wanted: u32, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, &ty)| ty == wanted)
            .map(|(t, _)| AddedToken::from(t.clone(), special))
            .collect()
    };
    // Control tokens (<|im_start|>...) are special: matched in text, skipped
    // when decoding. User-defined tokens are matched but decoded as text.
    tokenizer
        .add_special_tokens(of_type(TOKEN_TYPE_CONTROL, true))
        .map_err(Error::tokenizer)?;
    tokenizer
        .add_tokens(of_type(TOKEN_TYPE_USER_DEFINED, false))
        .map_err(Error::tokenizer)?;
    Ok(tokenizer)
}

/// llama.cpp's pre-tokenizer rules (`llama-vocab.cpp`), as HF pre-tokenizers.
fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper> {
    // Regexes as in llama.cpp for each `tokenizer.ggml.pre` value.
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let split = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Model(format!("bad pre-tokenizer regex: {e}")))?;
        Ok(split.into())
    };
    // GPT-2's own regex, applied by ByteLevel when use_regex is true.
    let gpt2 = || ByteLevel::new(false, true, true);
    let bytes_only = || ByteLevel::new(false, true, false);
    let seq = |parts: Vec<PreTokenizerWrapper>| Sequence::new(parts).into();
    Ok(match pre {
        "gpt2" | "gpt-2" => gpt2().into(),
        // llama.cpp's rules when a BPE file names no known pre-tokenizer:
        // four regexes, each splitting the pieces of the one before.
        "default" => seq(vec![
            split(r"[\p{P}\$\+<=>\^~\|]+")?,
            split(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)")?,
            split(r"\p{N}+")?,
            split(r"[0-9][0-9][0-9]")?,
            bytes_only().into(),
        ]),
        // SmolLM: every digit is its own piece, then GPT-2 rules.
        "smollm" => seq(vec![Digits::new(true).into(), gpt2().into()]),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" => {
            seq(vec![split(LLAMA3)?, bytes_only().into()])
        }
        "qwen2" | "deepseek-r1-qwen" => seq(vec![split(QWEN2)?, bytes_only().into()]),
        other => {
            return Err(Error::Model(format!(
                "GGUF pre-tokenizer {other:?} is not supported for rebuilding the tokenizer from \
                 metadata: put the model's tokenizer.json beside the .gguf file"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tiny byte-level vocabulary in GGUF form, made in the test.
    fn tiny_gguf(pre: &str) -> Content {
        let mut tokens: Vec<String> = vec!["<|im_start|>".into(), "<|im_end|>".into()];
        let mut types = vec![TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
        for t in ["a", "b", "Ġ", "1", "2", "Ġa", "ab", "12"] {
            tokens.push(t.into());
            types.push(1);
        }
        let merges = ["Ġ a", "a b", "1 2"];
        let mut metadata = HashMap::new();
        let strs =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
        metadata.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        metadata.insert("tokenizer.ggml.pre".into(), Value::String(pre.into()));
        metadata.insert("tokenizer.ggml.tokens".into(), strs(&tokens));
        metadata.insert(
            "tokenizer.ggml.merges".into(),
            strs(&merges.map(String::from)),
        );
        metadata.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(|t| Value::I32(t as i32)).collect()),
        );
        metadata.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(1));
        Content {
            magic: candle_core::quantized::gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    #[test]
    fn rebuilds_bpe_with_specials_and_digit_splitting() {
        let smol = LlmTokenizer::load(&tiny_gguf("smollm"), None).unwrap();
        // "ab" merges; " a" merges; digits stay apart under smollm rules.
        let ids = smol.encode("<|im_start|>ab a12<|im_end|>").unwrap();
        let text: Vec<String> = ids.iter().map(|&i| smol.token_text(i).unwrap()).collect();
        assert_eq!(text, ["<|im_start|>", "ab", "Ġa", "1", "2", "<|im_end|>"]);
        assert_eq!(smol.decode(&ids).unwrap(), "ab a12");
        assert!(smol.is_end_of_turn(1));

        // Plain GPT-2 rules keep digit runs together, so "12" merges.
        let gpt2 = LlmTokenizer::load(&tiny_gguf("gpt2"), None).unwrap();
        let ids = gpt2.encode("12").unwrap();
        assert_eq!(gpt2.token_text(ids[0]).unwrap(), "12");
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error_not_a_fallback() {
        let err = LlmTokenizer::load(&tiny_gguf("mystery"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("mystery") && err.contains("tokenizer.json"),
            "{err}"
        );
    }
}
