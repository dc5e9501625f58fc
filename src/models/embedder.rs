//! Sentence embeddings with a BERT-family model (safetensors + tokenizer.json):
//! truncation at the model's maximum length, mean pooling over real tokens,
//! L2 normalisation. Matches sentence-transformers for models such as
//! all-MiniLM-L6-v2. On a CPU with AVX2 and FMA a plain BERT runs on
//! hearth's own buffer forward pass ([`cpu`], no padding); elsewhere on
//! candle's `BertModel`, in padded batches with an attention mask.

use crate::error::{Error, Result};
use crate::models::source::{ModelSource, Wanted};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use hearth_kernels::bert as cpu;
use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The encoder that runs: hearth's buffer version or candle's.
enum Encoder {
    Host(cpu::HostBert),
    Candle(BertModel),
}

/// A loaded embedding model.
pub struct Embedder {
    encoder: Encoder,
    tokenizer: Tokenizer,
    device: Device,
    /// Longest input in tokens; longer texts are truncated.
    pub max_tokens: usize,
    /// Length of each embedding vector.
    pub dim: usize,
    pub path: PathBuf,
    pub name: String,
}

/// `models.embedder_precision`: "auto" (bf16 products where the CPU has
/// AVX512-BF16) or "f32".
pub fn precision(name: &str) -> Result<cpu::Precision> {
    match name {
        "auto" => Ok(cpu::Precision::Auto),
        "f32" => Ok(cpu::Precision::F32),
        other => Err(Error::InvalidInput(format!(
            "embedder_precision must be \"auto\" or \"f32\", not {other:?}"
        ))),
    }
}

impl Embedder {
    /// The model at `source` on `device`, its CPU products in bf16 where
    /// the CPU has AVX512-BF16 ([`Embedder::load_with`] chooses).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        Self::load_with(source, device, cpu::Precision::Auto)
    }

    /// The arithmetic of the matrix products: "bf16" or "f32" (hearth's
    /// CPU encoder), or "candle" (candle's BERT, on a GPU or a CPU without
    /// AVX2).
    pub fn arithmetic(&self) -> &'static str {
        match &self.encoder {
            Encoder::Host(host) if host.bf16() => "bf16",
            Encoder::Host(_) => "f32",
            Encoder::Candle(_) => "candle",
        }
    }

    /// [`Embedder::load`] with the CPU encoder's products in `precision`.
    pub fn load_with(
        source: &ModelSource,
        device: &Device,
        precision: cpu::Precision,
    ) -> Result<Self> {
        let paths = source.resolve(&[
            Wanted::file("config.json"),
            Wanted::file("tokenizer.json"),
            Wanted::file("model.safetensors"),
            Wanted::optional("sentence_bert_config.json"),
        ])?;
        let [config_path, tokenizer_path, weights_path, st_config] =
            [0, 1, 2, 3].map(|i| paths[i].clone());
        let (config_path, tokenizer_path, weights_path) = (
            config_path.expect("required"),
            tokenizer_path.expect("required"),
            weights_path.expect("required"),
        );
        let (config, raw) = read_config(&config_path)?;
        let positions = raw["max_position_embeddings"].as_u64().unwrap_or(512) as usize;
        let dim = raw["hidden_size"].as_u64().unwrap_or(0) as usize;
        // sentence-transformers' limit when present (256 for MiniLM), else the model's.
        let max_tokens = st_config
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|n| n as usize)
            .unwrap_or(if positions == 512 { 256 } else { positions })
            .min(positions);

        let tokenizer = open_tokenizer(
            &tokenizer_path,
            TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            },
            &raw,
        )?;
        let vb = mmap_weights(&weights_path, device)?;
        let host = if device.is_cpu() && cpu::supported() {
            cpu::HostBert::load(&vb, &raw, precision)?
        } else {
            None
        };
        let encoder = match host {
            Some(host) => Encoder::Host(host),
            None => Encoder::Candle(BertModel::load(vb, &config).map_err(|e| {
                Error::Model(format!(
                    "{} is not a BERT model: {e}",
                    weights_path.display()
                ))
            })?),
        };
        let name = weights_path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "embedder".into());
        Ok(Self {
            encoder,
            tokenizer,
            device: device.clone(),
            max_tokens,
            dim,
            path: weights_path,
            name,
        })
    }

    /// Token count of a text after truncation (for chunking and usage).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        count_tokens(&self.tokenizer, text)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embed a batch of texts: one unit-length vector per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_counted(texts)?.0)
    }

    /// [`embed`](Self::embed), and the tokens the model saw of each text
    /// (after truncation): the texts are tokenized once for both.
    pub fn embed_counted(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        if texts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(Error::tokenizer)?;
        let lens: Vec<usize> = encodings.iter().map(real_tokens).collect();
        let model = match &self.encoder {
            Encoder::Host(host) => {
                // Padding is on the right: the real tokens come first.
                let texts: Vec<cpu::Text> = encodings
                    .iter()
                    .zip(&lens)
                    .map(|(e, &len)| cpu::Text {
                        ids: &e.get_ids()[..len],
                        types: &e.get_type_ids()[..len],
                    })
                    .collect();
                return Ok((host.embed(&texts)?, lens));
            }
            Encoder::Candle(model) => model,
        };
        // Texts of similar length run together, in sub-batches each padded
        // only to its own longest text: less padding, and attention matrices
        // that stay in cache (one batch of 32 long texts ran slower per text
        // than batches of 8).
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| lens[i]);
        let mut out = vec![Vec::new(); encodings.len()];
        for group in order.chunks(SUB_BATCH) {
            // Sorted: the group's last text is its longest.
            let width = lens[group[group.len() - 1]].max(1);
            let rows = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor> {
                let data: Vec<Vec<u32>> = group
                    .iter()
                    .map(|&i| f(&encodings[i])[..width].to_vec())
                    .collect();
                Ok(Tensor::new(data, &self.device)?)
            };
            let vectors = pool(
                model,
                &rows(&|e| e.get_ids())?,
                &rows(&|e| e.get_type_ids())?,
                &rows(&|e| e.get_attention_mask())?,
            )?;
            for (&i, v) in group.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok((out, lens))
    }
}

/// candle's model on one padded batch: mean over real tokens, unit length.
fn pool(
    model: &BertModel,
    ids: &Tensor,
    type_ids: &Tensor,
    mask: &Tensor,
) -> Result<Vec<Vec<f32>>> {
    let hidden = model.forward(ids, type_ids, Some(mask))?;
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(mean.broadcast_div(&norm)?.to_vec2()?)
}

/// A BERT `config.json`: candle's config, and the raw JSON for the keys it
/// does not keep.
pub(crate) fn read_config(path: &Path) -> Result<(Config, serde_json::Value)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| Error::Model(format!("{} is not a BERT config: {e}", path.display())))?;
    Ok((config, serde_json::from_str(&text).unwrap_or_default()))
}

/// A BERT tokenizer truncating as asked and padding batches to their
/// longest input with the model's pad token.
pub(crate) fn open_tokenizer(
    path: &Path,
    truncation: TruncationParams,
    config: &serde_json::Value,
) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| Error::Model(format!("cannot read tokenizer {}: {e}", path.display())))?;
    tokenizer
        .with_truncation(Some(truncation))
        .map_err(Error::tokenizer)?;
    let pad_id = config["pad_token_id"].as_u64().unwrap_or(0) as u32;
    let pad_token = tokenizer
        .id_to_token(pad_id)
        .unwrap_or_else(|| "[PAD]".into());
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id,
        pad_token,
        ..Default::default()
    }));
    Ok(tokenizer)
}

/// The safetensors weights, memory-mapped, as f32 on `device`.
pub(crate) fn mmap_weights(path: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    // SAFETY: the file is memory-mapped read-only and not modified while hearth runs.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
        .map_err(|e| Error::Model(format!("cannot read {}: {e}", path.display())))
}

/// Texts per forward pass: larger batches are split (see [`Embedder::embed`]).
const SUB_BATCH: usize = 8;

/// Tokens an embedder with this tokenizer sees of `text` (after truncation).
pub fn count_tokens(tokenizer: &Tokenizer, text: &str) -> Result<usize> {
    let enc = tokenizer.encode(text, true).map_err(Error::tokenizer)?;
    Ok(real_tokens(&enc))
}

/// Tokens of an encoding that are not padding.
fn real_tokens(enc: &tokenizers::Encoding) -> usize {
    enc.get_attention_mask().iter().filter(|&&m| m == 1).count()
}
