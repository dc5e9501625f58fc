//! A cross-encoder reranker: a BERT-family model that reads a query and a
//! passage together (`[CLS] query [SEP] passage [SEP]`, the passage in
//! segment 1) and scores how well the passage answers the query. The layout is
//! Hugging Face's `BertForSequenceClassification` with one label, as
//! sentence-transformers' `CrossEncoder` models ship it (e.g.
//! `cross-encoder/ms-marco-MiniLM-L-6-v2`): the encoder, a pooler
//! (`tanh(W h_cls + b)`) and a classifier (`w . pooled + b`); the score is
//! the raw logit (higher is better). It runs on candle's `BertModel`, in
//! padded batches with an attention mask, on any device.

use crate::error::{Error, Result};
use crate::models::embedder::{mmap_weights, open_tokenizer, read_config};
use crate::models::source::{ModelSource, Wanted};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use candle_transformers::models::bert::BertModel;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

/// A loaded cross-encoder.
pub struct Reranker {
    model: BertModel,
    pooler: Linear,
    classifier: Linear,
    tokenizer: Tokenizer,
    device: Device,
    pub path: PathBuf,
    pub name: String,
}

/// Pairs per forward pass.
const SUB_BATCH: usize = 8;

impl Reranker {
    /// Load `config.json`, `tokenizer.json` and `model.safetensors` (weights
    /// under `bert.` with `classifier.`, as Hugging Face saves them, or at
    /// the root).
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let paths = source.resolve(&[
            Wanted::file("config.json"),
            Wanted::file("tokenizer.json"),
            Wanted::file("model.safetensors"),
        ])?;
        let [config_path, tokenizer_path, weights_path] =
            [0, 1, 2].map(|i| paths[i].clone().expect("required"));
        let (config, raw) = read_config(&config_path)?;
        let hidden = raw["hidden_size"].as_u64().unwrap_or(0) as usize;
        let positions = raw["max_position_embeddings"].as_u64().unwrap_or(512) as usize;
        // The passage gives way first when a pair is too long.
        let tokenizer = open_tokenizer(
            &tokenizer_path,
            TruncationParams {
                max_length: positions.min(512),
                strategy: TruncationStrategy::OnlySecond,
                ..Default::default()
            },
            &raw,
        )?;
        let vb = mmap_weights(&weights_path, device)?;
        let bad = |e: candle_core::Error| {
            Error::Model(format!(
                "{} is not a BERT cross-encoder with one label (bert.*, bert.pooler.dense, classifier): {e}",
                weights_path.display()
            ))
        };
        let encoder = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb.clone()
        };
        let model = BertModel::load(encoder.clone(), &config).map_err(bad)?;
        let pooler = candle_nn::linear(hidden, hidden, encoder.pp("pooler.dense")).map_err(bad)?;
        let classifier = candle_nn::linear(hidden, 1, vb.pp("classifier")).map_err(bad)?;
        let name = weights_path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "reranker".into());
        Ok(Self {
            model,
            pooler,
            classifier,
            tokenizer,
            device: device.clone(),
            path: weights_path,
            name,
        })
    }

    /// How well each passage answers `query`: one score per passage, in
    /// order (the classifier's logit; higher is better). [`encode`] then
    /// [`score_pairs`].
    ///
    /// [`encode`]: Self::encode
    /// [`score_pairs`]: Self::score_pairs
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        self.score_pairs(&self.encode(query, passages)?)
    }

    /// `query` paired with each passage and tokenized, in groups of one
    /// forward pass each: the CPU work a reranking worker's callers do
    /// before they queue, so that the model's thread only runs the model.
    pub fn encode(&self, query: &str, passages: &[&str]) -> Result<Pairs> {
        let groups = passages
            .chunks(SUB_BATCH)
            .map(|group| {
                let pairs: Vec<(&str, &str)> = group.iter().map(|p| (query, *p)).collect();
                self.tokenizer
                    .encode_batch(pairs, true)
                    .map_err(Error::tokenizer)
            })
            .collect::<Result<_>>()?;
        Ok(Pairs { groups })
    }

    /// The scores of tokenized pairs: the forward passes alone.
    pub fn score_pairs(&self, pairs: &Pairs) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for encodings in &pairs.groups {
            let rows = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor> {
                let data: Vec<Vec<u32>> = encodings.iter().map(|e| f(e).to_vec()).collect();
                Ok(Tensor::new(data, &self.device)?)
            };
            let hidden = self.model.forward(
                &rows(&|e| e.get_ids())?,
                &rows(&|e| e.get_type_ids())?,
                Some(&rows(&|e| e.get_attention_mask())?),
            )?;
            let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
            let pooled = self.pooler.forward(&cls)?.tanh()?;
            let logits = self.classifier.forward(&pooled)?.squeeze(1)?;
            out.extend(logits.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

/// A query's pairs with its passages, tokenized ([`Reranker::encode`]),
/// in the groups the model reads them in.
pub struct Pairs {
    groups: Vec<Vec<tokenizers::Encoding>>,
}

/// Write a random-weight cross-encoder into `dir` (config, weights, and the
/// tokenizer copied from `tokenizer_json`, whose vocabulary it takes): for
/// tests and for trying the reranking stage without a trained model.
pub fn write_random(dir: &Path, tokenizer_json: &Path, seed: u64) -> Result<()> {
    let tokenizer = Tokenizer::from_file(tokenizer_json)
        .map_err(|e| Error::Model(format!("cannot read {}: {e}", tokenizer_json.display())))?;
    let vocab = tokenizer
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |m| *m as usize + 1);
    let (hidden, layers, heads, inter, positions) = (32, 2, 4, 64, 512);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = serde_json::json!({
        "architectures": ["BertForSequenceClassification"], "model_type": "bert",
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": inter, "max_position_embeddings": positions, "vocab_size": vocab,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "position_embedding_type": "absolute", "pad_token_id": 0,
        "initializer_range": 0.02, "id2label": {"0": "LABEL_0"},
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).map_err(|e| Error::io(&config_path, e))?;
    let tokenizer_path = dir.join("tokenizer.json");
    std::fs::copy(tokenizer_json, &tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
    // Deterministic pseudo-random weights (a linear congruential stream).
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut tensor = |shape: &[usize], scale: f32| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
    };
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu);
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu);
    let mut weights: Vec<(String, Tensor)> = vec![
        (
            "bert.embeddings.word_embeddings.weight".into(),
            tensor(&[vocab, hidden], 0.5)?,
        ),
        (
            "bert.embeddings.position_embeddings.weight".into(),
            tensor(&[positions, hidden], 0.1)?,
        ),
        (
            "bert.embeddings.token_type_embeddings.weight".into(),
            tensor(&[2, hidden], 0.5)?,
        ),
        ("bert.embeddings.LayerNorm.weight".into(), ones(hidden)?),
        ("bert.embeddings.LayerNorm.bias".into(), zeros(hidden)?),
        (
            "bert.pooler.dense.weight".into(),
            tensor(&[hidden, hidden], 0.3)?,
        ),
        ("bert.pooler.dense.bias".into(), tensor(&[hidden], 0.1)?),
        ("classifier.weight".into(), tensor(&[1, hidden], 1.0)?),
        ("classifier.bias".into(), tensor(&[1], 0.1)?),
    ];
    for l in 0..layers {
        let p = format!("bert.encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query", [hidden, hidden]),
            ("attention.self.key", [hidden, hidden]),
            ("attention.self.value", [hidden, hidden]),
            ("attention.output.dense", [hidden, hidden]),
            ("intermediate.dense", [inter, hidden]),
            ("output.dense", [hidden, inter]),
        ] {
            weights.push((format!("{p}.{name}.weight"), tensor(&shape, 0.3)?));
            weights.push((format!("{p}.{name}.bias"), tensor(&[shape[0]], 0.05)?));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            weights.push((format!("{p}.{norm}.weight"), ones(hidden)?));
            weights.push((format!("{p}.{norm}.bias"), zeros(hidden)?));
        }
    }
    let weights_path = dir.join("model.safetensors");
    candle_core::safetensors::save(&weights.into_iter().collect(), &weights_path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (tempfile::TempDir, Reranker) {
        let dir = tempfile::tempdir().unwrap();
        // A small WordPiece vocabulary written here, so the unit test needs
        // no model files.
        let vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .map(|s| s.to_string())
            .chain("abcdefghijklmnopqrstuvwxyz".chars().map(|c| c.to_string()))
            .chain(
                [
                    "restart", "the", "billing", "service", "bread", "bake", "how", "do",
                ]
                .map(String::from),
            )
            .collect();
        let vocab_path = dir.path().join("vocab.txt");
        std::fs::write(&vocab_path, vocab.join("\n")).unwrap();
        let wordpiece =
            tokenizers::models::wordpiece::WordPiece::from_file(vocab_path.to_str().unwrap())
                .build()
                .unwrap();
        let mut tokenizer = Tokenizer::new(wordpiece);
        tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::bert::BertPreTokenizer));
        tokenizer.with_post_processor(Some(tokenizers::processors::bert::BertProcessing::new(
            ("[SEP]".into(), 3),
            ("[CLS]".into(), 2),
        )));
        let tokenizer_path = dir.path().join("source-tokenizer.json");
        tokenizer.save(&tokenizer_path, false).unwrap();
        let model_dir = dir.path().join("reranker");
        write_random(&model_dir, &tokenizer_path, 7).unwrap();
        let source = ModelSource::parse(model_dir.to_str().unwrap()).unwrap();
        let reranker = Reranker::load(&source, &Device::Cpu).unwrap();
        (dir, reranker)
    }

    #[test]
    fn scores_are_per_pair_whatever_the_batch_and_read_the_order() {
        let (_dir, r) = tiny();
        let query = "how do i restart the billing service";
        let passages = [
            "restart the billing service",
            "bake the bread",
            "the service",
            "how do i bake the bread restart the billing service the service",
        ];
        let together = r.score(query, &passages).unwrap();
        assert_eq!(together.len(), 4);
        // Alone or padded next to a longer pair: the same score (the mask
        // hides the padding).
        for (p, want) in passages.iter().zip(&together) {
            let alone = r.score(query, &[p]).unwrap()[0];
            assert!((alone - want).abs() < 1e-4, "{p}: {alone} vs {want}");
        }
        // Query and passage are read as a pair, not as one text.
        let swapped = r.score(passages[0], &[query]).unwrap()[0];
        assert!((swapped - together[0]).abs() > 1e-6);
        assert!(together.iter().all(|s| s.is_finite()));
        assert!(r.score(query, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_model_without_a_classifier_is_a_clear_error() {
        let (dir, _) = tiny();
        let model_dir = dir.path().join("reranker");
        let weights =
            candle_core::safetensors::load(model_dir.join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let kept: std::collections::HashMap<String, Tensor> = weights
            .into_iter()
            .filter(|(k, _)| !k.starts_with("classifier"))
            .collect();
        candle_core::safetensors::save(&kept, model_dir.join("model.safetensors")).unwrap();
        let source = ModelSource::parse(model_dir.to_str().unwrap()).unwrap();
        let err = Reranker::load(&source, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cross-encoder with one label"), "{err}");
    }
}
