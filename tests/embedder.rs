//! The default embedder against sentence-transformers' own outputs.

use crate::common;
use hearth::models::{embedder, Embedder, ModelSource};

fn load() -> Embedder {
    load_in("auto")
}

/// The default embedder with its CPU products in `precision` ("auto" or
/// "f32").
fn load_in(precision: &str) -> Embedder {
    Embedder::load_with(
        &ModelSource::Local(common::embedder_path()),
        &common::device(),
        embedder::precision(precision).unwrap(),
    )
    .expect("loading the default embedder")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Every reference text's vector, batched and alone, against
/// sentence-transformers' (f32 PyTorch): a cosine of at least 0.9999 with
/// f32 products and with bf16 ones (`auto` on a CPU with AVX512-BF16, as
/// this project's machines have; measured 0.9999997 and 0.99997).
#[test]
fn embeddings_match_sentence_transformers() {
    for (precision, floor) in [("f32", 0.9999f32), ("auto", 0.9999)] {
        let embedder = load_in(precision);
        let arithmetic = embedder.arithmetic();
        let worst = match_reference(&embedder, floor);
        eprintln!("{arithmetic}: lowest cosine to sentence-transformers {worst}");
    }
}

/// The lowest cosine of `embedder`'s vectors to the reference ones, each
/// at least `floor`.
fn match_reference(embedder: &Embedder, floor: f32) -> f32 {
    let reference = common::reference("embed-reference.json");
    let items = reference["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    assert_eq!(embedder.max_tokens, 256);
    assert_eq!(embedder.dim, 384);
    // One padded batch of all texts, and each text alone: both must match.
    let batched = embedder.embed(&texts).unwrap();
    let mut worst = 1f32;
    for (i, item) in items.iter().enumerate() {
        let want: Vec<f32> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let alone = embedder.embed(&[texts[i]]).unwrap().remove(0);
        for (how, got) in [("batched", &batched[i]), ("alone", &alone)] {
            let cos = cosine(got, &want);
            worst = worst.min(cos);
            assert!(
                cos >= floor,
                "text {i} ({how}, {}) {:?}: cosine {cos} < {floor}",
                embedder.arithmetic(),
                texts[i].chars().take(40).collect::<String>()
            );
            let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        }
    }
    worst
}

#[test]
fn long_texts_are_truncated_not_rejected() {
    let embedder = load();
    let long = "word ".repeat(5000);
    assert_eq!(embedder.count_tokens(&long).unwrap(), 256);
    assert_eq!(embedder.embed(&[&long]).unwrap()[0].len(), 384);
    assert!(embedder.embed(&[]).unwrap().is_empty());
}

#[test]
fn missing_model_is_a_clear_error() {
    let err = Embedder::load(
        &ModelSource::Local("/nonexistent/model".into()),
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("fetch-models.sh"), "{err}");
}
