//! Hugging Face checkpoints straight from training: a random-weight llama
//! checkpoint (f16 safetensors in two shards, config.json, tokenizer.json,
//! tokenizer_config.json) written at test time by
//! `scripts/families/hf_checkpoint.py`, beside the GGUF file llama.cpp's
//! converter makes of the same weights. hearth must compute the same
//! logits from both, quantize the checkpoint at load when asked, and serve
//! it as the fine-tuned model.

use crate::common;
use hearth::models::llm::LoadOptions;
use hearth::models::{Llm, ModelSource};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Files {
    _dir: tempfile::TempDir,
    checkpoint: PathBuf,
    gguf: PathBuf,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = common::embedder_path().join("tokenizer.json");
        common::family_script(
            "hf_checkpoint.py",
            &[
                "--tokenizer".as_ref(),
                tokenizer.as_os_str(),
                "--out".as_ref(),
                dir.path().as_os_str(),
            ],
        );
        Files {
            checkpoint: dir.path().join("checkpoint"),
            gguf: dir.path().join("gguf/model.gguf"),
            _dir: dir,
        }
    })
}

fn load(path: &std::path::Path, quantize: Option<&str>) -> hearth::Result<Llm> {
    let quantize = hearth::models::llm::hf::quantize_type(quantize.unwrap_or(""))?;
    let opts = LoadOptions {
        adapter: None,
        quantize,
    };
    Llm::load_with(
        &ModelSource::Local(path.to_path_buf()),
        &common::device(),
        &opts,
    )
}

/// Logits after each token of a fixed sequence, fed one at a time.
fn logits(llm: &Llm) -> Vec<Vec<f32>> {
    let tokens = [101u32, 2054, 2003, 1037, 3899, 1999, 10722, 1029, 102];
    let mut cache = llm.model.new_cache(16);
    tokens
        .iter()
        .map(|&t| {
            llm.model
                .forward(&[t], &mut cache)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn checkpoint_computes_what_its_gguf_conversion_computes() {
    let files = files();
    let hf = load(&files.checkpoint, None).unwrap();
    let gguf = load(&files.gguf, None).unwrap();
    assert_eq!(hf.name, "checkpoint");
    assert!(
        hf.summary.fast_cpu_path,
        "f16 matrices run on hearth's kernels"
    );
    // Same weights, same layout (q and k permuted as the converter does),
    // same kernels: the same bits.
    assert_eq!(logits(&hf), logits(&gguf));
    // The chat template came from tokenizer_config.json.
    let messages = [hearth::models::llm::message::Message::new("user", "hello")];
    assert_eq!(
        hf.encode_chat(&messages).unwrap(),
        gguf.encode_chat(&messages).unwrap()
    );
}

#[test]
fn checkpoint_quantized_at_load_runs_near_its_f16_self() {
    let files = files();
    let f16 = logits(&load(&files.checkpoint, None).unwrap());
    let q8 = load(&files.checkpoint, Some("q8_0")).unwrap();
    assert!(
        q8.summary.tensor_types.iter().any(|t| t.0 == "Q8_0"),
        "{:?}",
        q8.summary.tensor_types
    );
    let q8 = logits(&q8);
    let worst = f16
        .iter()
        .flatten()
        .zip(q8.iter().flatten())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = f16.iter().flatten().fold(0f32, |m, a| m.max(a.abs()));
    assert!(
        worst < 0.05 * scale,
        "Q8_0 logits sit {worst} from f16 ones (max {scale})"
    );
    eprintln!(
        "checkpoint quantized to Q8_0 at load: logits within {worst:.4} of f16 (max {scale:.2})"
    );
    // Q4_K blocks are 256 wide; this model's rows are 64: a clear error.
    let e = load(&files.checkpoint, Some("q4_k"))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("model.embed_tokens.weight"), "{e}");
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let files = files();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ckpt");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&files.checkpoint).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let config = std::fs::read_to_string(copy.join("config.json")).unwrap();
    // Another architecture.
    std::fs::write(
        copy.join("config.json"),
        config.replace("\"llama\"", "\"gpt2\""),
    )
    .unwrap();
    let e = load(&copy, None).err().expect("refused").to_string();
    assert!(
        e.contains("model_type \"gpt2\"") && e.contains("qwen2"),
        "{e}"
    );
    // A shard missing.
    std::fs::write(copy.join("config.json"), &config).unwrap();
    std::fs::remove_file(copy.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load(&copy, None).err().expect("refused").to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
    // An unknown quantization.
    let e = load(&files.checkpoint, Some("q3")).err().expect("refused");
    assert!(e.to_string().contains("q8_0 or q4_k"), "{e}");
}

/// `--fine-tuned DIR` serves the checkpoint as the fine-tuned model.
#[tokio::test]
async fn server_serves_a_checkpoint_as_the_fine_tuned_model() {
    let files = files();
    let data = tempfile::tempdir().unwrap();
    let server = common::TestServer::start(
        data.path(),
        &["--fine-tuned", files.checkpoint.to_str().unwrap()],
    )
    .await;
    let r = reqwest::Client::new()
        .post(server.at("/fine-tuned"))
        .json(&serde_json::json!({ "prompt": "hello world", "max_tokens": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["model"], "checkpoint", "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{body}"
    );
    server.stop();
}
