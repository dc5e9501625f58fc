//! LoRA adapters on the default LLM, proven against llama.cpp: a random
//! rank-16 adapter written at test time by `scripts/families/lora_adapter.py`
//! as a PEFT directory and as a GGUF adapter (the same numbers; sha256
//! checked), compared with what llama.cpp computed with `--lora` on the
//! same files (`tests/fixtures/lora.json`, made by
//! `scripts/families/make-fixtures.sh`).

use crate::common;
use hearth::models::llm::lora::Adapter;
use hearth::models::{Llm, ModelSource};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

struct Files {
    _dir: tempfile::TempDir,
    /// The tiny llama the first adapter is for (written by tiny_gguf.py).
    tiny: PathBuf,
    /// Per base ("tiny", "smollm2"): the GGUF adapter and the PEFT directory.
    adapters: std::collections::BTreeMap<String, (PathBuf, PathBuf)>,
}

fn fixture() -> Value {
    let path = common::repo().join("tests/fixtures/lora.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bases' and adapters' files, written once per test run and checked
/// against the bytes llama.cpp ran on.
fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let fixture = fixture();
        let tiny_name = fixture["bases"]["tiny"]["base"].as_str().unwrap();
        let listing = common::family_script(
            "tiny_gguf.py",
            &[
                "--vocab".as_ref(),
                common::llm_path().as_os_str(),
                "--out".as_ref(),
                dir.path().join("tiny").as_os_str(),
                "--only".as_ref(),
                "llama".as_ref(),
            ],
        );
        let tiny = listing
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{tiny_name} ")))
            .map(PathBuf::from)
            .expect("tiny_gguf.py writes the tiny base");
        let mut adapters = std::collections::BTreeMap::new();
        for (name, want) in fixture["bases"].as_object().unwrap() {
            let base = if name == "tiny" {
                tiny.clone()
            } else {
                common::llm_path()
            };
            let out = dir.path().join(format!("lora-{name}"));
            let args: Vec<&str> = want["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let mut argv: Vec<&std::ffi::OsStr> = vec![
                "--base".as_ref(),
                base.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
            ];
            argv.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
            common::family_script("lora_adapter.py", &argv);
            let (gguf, peft) = (out.join("adapter.gguf"), out.join("peft"));
            for (path, key) in [
                (base.clone(), "base"),
                (gguf.clone(), "gguf"),
                (peft.join("adapter_model.safetensors"), "peft"),
            ] {
                assert_eq!(
                    sha256(&path),
                    want["sha256"][key].as_str().unwrap(),
                    "{name}: {} holds other bytes than llama.cpp ran on \
                     (regenerate with scripts/families/make-fixtures.sh)",
                    path.display()
                );
            }
            adapters.insert(name.clone(), (gguf, peft));
        }
        Files {
            _dir: dir,
            tiny,
            adapters,
        }
    })
}

fn base(name: &str) -> &'static Llm {
    static TINY: OnceLock<Llm> = OnceLock::new();
    static SMOLLM2: OnceLock<Llm> = OnceLock::new();
    let (cell, path) = if name == "tiny" {
        (&TINY, files().tiny.clone())
    } else {
        (&SMOLLM2, common::llm_path())
    };
    cell.get_or_init(|| Llm::load(&ModelSource::Local(path), &common::device()).unwrap())
}

fn adapter(base_name: &str, peft: bool) -> Arc<Adapter> {
    let (gguf, dir) = &files().adapters[base_name];
    let path = if peft { dir } else { gguf };
    Arc::new(Adapter::load(path, "test-lora", 1.0, &base(base_name).model.config).unwrap())
}

/// Each prompt of the fixture for `base_name` fed to `llm` with `adapter`
/// (unmerged), then llama.cpp's greedy tokens: the logits at every step.
fn logits(base_name: &str, llm: &Llm, adapter: Option<Arc<Adapter>>) -> Vec<Vec<Vec<f32>>> {
    fixture()["bases"][base_name]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let tokens = llm
                .tokenizer
                .encode_prompt(p["prompt"].as_str().unwrap())
                .unwrap();
            assert_eq!(tokens, ids(&p["tokens"]), "tokens of the prompt");
            let mut cache = llm.model.new_cache_with(64, adapter.clone());
            let mut out = vec![];
            let mut logits = llm.model.forward(&tokens, &mut cache).unwrap();
            for step in p["steps"].as_array().unwrap() {
                out.push(logits.to_vec1::<f32>().unwrap());
                let token = step["token"].as_u64().unwrap() as u32;
                logits = llm.model.forward(&[token], &mut cache).unwrap();
            }
            out
        })
        .collect()
}

use common::ids;

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
}

/// hearth with the GGUF adapter against llama.cpp with `--lora`, on each
/// base: the logits with the adapter, and how far the adapter moved them
/// (against each program's own logits without it), within `tolerance`;
/// greedy tokens identical where llama.cpp's two best logits are more than
/// `near_tie` apart.
fn check_against_llama_cpp(name: &str, tolerance: f32, near_tie: f32, check_moved: bool) {
    let fixture = fixture();
    let want = &fixture["bases"][name];
    let llm = base(name);
    let with = logits(name, llm, Some(adapter(name, false)));
    let without = logits(name, llm, None);
    let (mut worst, mut worst_moved, mut moved, mut worst_bare) = (0f32, 0f32, 0f32, 0f32);
    let prompts = want["prompts"].as_array().unwrap();
    let bare = want["without"].as_array().unwrap();
    for (p, (prompt, bare)) in prompts.iter().zip(bare).enumerate() {
        let steps = prompt["steps"].as_array().unwrap();
        for (i, (step, bare)) in steps
            .iter()
            .zip(bare["steps"].as_array().unwrap())
            .enumerate()
        {
            let (got, got_bare) = (&with[p][i], &without[p][i]);
            for (pair, bare) in step["top"]
                .as_array()
                .unwrap()
                .iter()
                .zip(bare["top"].as_array().unwrap())
            {
                let id = pair[0].as_u64().unwrap() as usize;
                let (value, value_bare) = (
                    pair[1].as_f64().unwrap() as f32,
                    bare[1].as_f64().unwrap() as f32,
                );
                let diff = (got[id] - value).abs();
                let moved_diff = ((got[id] - got_bare[id]) - (value - value_bare)).abs();
                worst = worst.max(diff);
                worst_moved = worst_moved.max(moved_diff);
                worst_bare = worst_bare.max((got_bare[id] - value_bare).abs());
                moved = moved.max((value - value_bare).abs());
                assert!(
                    diff <= tolerance && (moved_diff <= tolerance || !check_moved),
                    "{name}, prompt {p} step {i}: logit of token {id} is {} (moved {} by the adapter) \
                     where llama.cpp has {value} (moved {})",
                    got[id],
                    got[id] - got_bare[id],
                    value - value_bare
                );
            }
            let top = step["top"].as_array().unwrap();
            let margin = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
            if margin as f32 > near_tie {
                assert_eq!(
                    argmax(got),
                    step["token"].as_u64().unwrap() as usize,
                    "{name}, prompt {p}: greedy token at step {i}"
                );
            }
        }
    }
    // The adapter does something.
    assert!(
        moved > 0.5,
        "{name}: the adapter moved no logit by more than {moved}"
    );
    eprintln!(
        "{name} + GGUF adapter: greedy tokens identical to llama.cpp's (but at near-ties), logits \
         within {worst:.5} of its logits and {worst_moved:.5} of its adapter's effect (which reaches {moved:.2}); \
         without the adapter within {worst_bare:.5}"
    );
}

/// The tiny llama's logits are ggml's bit for bit (tests/families.rs), so
/// the adapter's arithmetic is checked to rounding: measured 0.0000x.
#[test]
fn gguf_adapter_matches_llama_cpp_on_the_tiny_llama() {
    check_against_llama_cpp("tiny", 1e-3, 0.0, true);
}

/// On the default LLM hearth's logits sit apart from llama.cpp's with or
/// without an adapter (measured: within 0.45 without, 0.63 with; llama.cpp's
/// own move by 0.05 with how a prompt is batched), so the bound is that of
/// the real-model checks (tests/families.rs), and the adapter's arithmetic
/// is what the tiny llama checks exactly.
#[test]
fn gguf_adapter_matches_llama_cpp_on_the_default_llm() {
    check_against_llama_cpp("smollm2", 1.0, 0.5, false);
}

#[test]
fn peft_adapter_computes_what_its_gguf_conversion_computes() {
    let peft = adapter("smollm2", true);
    assert_eq!(peft.rank, 16);
    let info = peft.info();
    assert_eq!(info.targets.len(), 7, "{info:?}");
    // The same numbers (q's and k's B rows permuted as the converter
    // permutes them), so the same logits, bit for bit.
    let llm = base("smollm2");
    assert_eq!(
        logits("smollm2", llm, Some(peft)),
        logits("smollm2", llm, Some(adapter("smollm2", false)))
    );
}

#[test]
fn merged_adapter_follows_the_unmerged_one() {
    let opts = hearth::models::llm::LoadOptions {
        adapter: Some((&files().adapters["smollm2"].0, "merged", 1.0)),
        quantize: None,
    };
    let merged = Llm::load_with(
        &ModelSource::Local(common::llm_path()),
        &common::device(),
        &opts,
    )
    .unwrap();
    assert_eq!(merged.name, "merged");
    let unmerged = logits("smollm2", base("smollm2"), Some(adapter("smollm2", false)));
    let got = logits("smollm2", &merged, None);
    // Merging re-quantizes each changed Q4_1 matrix to its 4-bit grid,
    // which moves the weights by up to half a step (about as much as this
    // adapter does), so the logits move by that rounding; greedy choices
    // stay where they are not near-ties.
    let (mut worst, mut agree, mut steps) = (0f32, 0, 0);
    for (p, prompt) in unmerged.iter().enumerate() {
        for (i, want) in prompt.iter().enumerate() {
            let mut order: Vec<usize> = (0..want.len()).collect();
            order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
            for &id in &order[..8] {
                worst = worst.max((want[id] - got[p][i][id]).abs());
            }
            steps += 1;
            if argmax(&got[p][i]) == order[0] {
                agree += 1;
            } else {
                assert!(
                    want[order[0]] - want[order[1]] < 1.0,
                    "prompt {p} step {i}: merged picks another token where the unmerged margin is {}",
                    want[order[0]] - want[order[1]]
                );
            }
        }
    }
    assert!(
        worst < 2.5,
        "merged top logits sit {worst} from unmerged ones"
    );
    eprintln!(
        "merged adapter: {agree}/{steps} greedy tokens as unmerged, top logits within {worst:.3}"
    );
}

/// A batch that mixes a sequence with the adapter and one without gives
/// each what it gets alone (one copy of the base serves both).
#[test]
fn adapter_and_base_share_one_batch() {
    use hearth::models::llm::llama::Segment;
    let llm = base("smollm2");
    let lora = adapter("smollm2", false);
    let prompt = llm.tokenizer.encode_prompt("Rust ownership means").unwrap();
    let alone = |a: Option<Arc<Adapter>>| {
        let mut cache = llm.model.new_cache_with(32, a);
        llm.model
            .forward(&prompt, &mut cache)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (want_lora, want_base) = (alone(Some(lora.clone())), alone(None));
    let mut c1 = llm.model.new_cache_with(32, Some(lora));
    let mut c2 = llm.model.new_cache_with(32, None);
    let mut batch = [
        Segment {
            tokens: &prompt,
            cache: &mut c1,
            logits: 1,
        },
        Segment {
            tokens: &prompt,
            cache: &mut c2,
            logits: 1,
        },
    ];
    let out = llm.model.forward_batch(&mut batch).unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &want_lora);
    assert_eq!(out[1].as_ref().unwrap(), &want_base);
    assert_ne!(want_lora, want_base);
}

#[test]
fn bad_adapters_are_clear_errors() {
    let files = files();
    let cfg = &base("smollm2").model.config;
    let err = |path: &Path| match Adapter::load(path, "bad", 1.0, cfg) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };
    let dir = tempfile::tempdir().unwrap();
    // Missing files.
    let e = err(&dir.path().join("nothing"));
    assert!(e.contains("adapter_config.json"), "{e}");
    // A model file, not an adapter.
    let e = err(&common::llm_path());
    assert!(e.contains("not a LoRA adapter"), "{e}");
    // An adapter for another base: the shapes disagree.
    let tiny = dir.path().join("tiny.gguf");
    let status = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "bench",
            "random-llm",
            "--shape",
            "tiny",
            "--dtype",
            "q8-0",
            "--out",
        ])
        .arg(&tiny)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let other = dir.path().join("other");
    common::family_script(
        "lora_adapter.py",
        &[
            "--base".as_ref(),
            tiny.as_os_str(),
            "--out".as_ref(),
            other.as_os_str(),
        ],
    );
    let e = err(&other.join("adapter.gguf"));
    assert!(e.contains("another base"), "{e}");
    let e = err(&other.join("peft"));
    assert!(e.contains("another base"), "{e}");
    // Rank 0 in the PEFT config.
    let zero = dir.path().join("zero");
    std::fs::create_dir(&zero).unwrap();
    std::fs::copy(
        files.adapters["smollm2"]
            .1
            .join("adapter_model.safetensors"),
        zero.join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        zero.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 0, "lora_alpha": 8}"#,
    )
    .unwrap();
    let e = err(&zero);
    assert!(e.contains("rank (r) 0"), "{e}");
    // A config that is not JSON.
    std::fs::write(zero.join("adapter_config.json"), "{").unwrap();
    let e = err(&zero);
    assert!(e.contains("not a PEFT LoRA config"), "{e}");
}

/// The server with a base + adapter fine-tuned pipeline and one more
/// adapter from the config, one loaded at run time: each a model id, each
/// giving its own answer, the base beside them; bad adapters refused with
/// nothing changed.
#[tokio::test]
async fn server_serves_adapters_by_model_id() {
    use serde_json::json;
    let files = files();
    let (gguf, peft) = &files.adapters["smollm2"];
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("hearth.toml");
    std::fs::write(
        &config,
        format!(
            "[models]\nfine_tuned = {{ base = {:?}, adapter = {:?}, name = \"peft-lora\", scale = 4.0 }}\n\
             [[models.adapters]]\nname = \"gguf-lora\"\npath = {:?}\nscale = 4.0\n",
            common::llm_path(),
            peft,
            gguf
        ),
    )
    .unwrap();
    // (Scale 4: this random adapter's update, four times over, changes
    // the first words of the answer.)
    let server =
        common::TestServer::start(data.path(), &["--config", config.to_str().unwrap()]).await;
    let client = reqwest::Client::new();
    let base_name = base("smollm2").name.clone();

    let get = |path: &str| {
        let request = client.get(server.at(path)).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    };
    let models = get("/v1/models").await;
    let entry = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is not in {models}"))
    };
    assert_eq!(entry("peft-lora")["adapter"]["base"], base_name.as_str());
    assert_eq!(entry("gguf-lora")["adapter"]["lora"]["rank"], 16);
    entry(&base_name);

    // Greedy chat completions by model id.
    let chat = |model: String| {
        let client = client.clone();
        let url = server.at("/v1/chat/completions");
        async move {
            let r = client
                .post(url)
                .json(&json!({
                    "model": model,
                    "messages": [{ "role": "user", "content": "What is ownership in Rust?" }],
                    "max_tokens": 12,
                    "temperature": 0.0,
                }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }
    };
    let text = |(status, body): (u16, Value)| {
        assert_eq!(status, 200, "{body}");
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let bare = text(chat(base_name.clone()).await);
    let peft_text = text(chat("peft-lora".into()).await);
    let gguf_text = text(chat("gguf-lora".into()).await);
    assert_ne!(bare, peft_text, "the adapter changes the answer");
    assert_eq!(peft_text, gguf_text, "the same adapter in both formats");

    // Interleaved: the base and the adapter at once, each its own answer.
    let (a, b, c, d) = tokio::join!(
        chat(base_name.clone()),
        chat("peft-lora".into()),
        chat(base_name.clone()),
        chat("gguf-lora".into())
    );
    assert_eq!((text(a), text(c)), (bare.clone(), bare.clone()));
    assert_eq!((text(b), text(d)), (peft_text.clone(), peft_text.clone()));

    // /fine-tuned runs the configured adapter, or the one named.
    let fine_tuned = |adapter: Option<&str>| {
        let mut body = json!({
            "messages": [{ "role": "user", "content": "What is ownership in Rust?" }],
            "max_tokens": 12,
            "temperature": 0.0,
        });
        if let Some(a) = adapter {
            body["adapter"] = json!(a);
        }
        let request = client.post(server.at("/fine-tuned")).json(&body).send();
        async move {
            let r = request.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = fine_tuned(None).await;
    assert_eq!(
        (status, body["model"].as_str()),
        (200, Some("peft-lora")),
        "{body}"
    );
    assert_eq!(body["text"].as_str().unwrap(), peft_text);
    let (status, body) = fine_tuned(Some("gguf-lora")).await;
    assert_eq!(
        (status, body["model"].as_str()),
        (200, Some("gguf-lora")),
        "{body}"
    );
    let (status, body) = fine_tuned(Some("nope")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gguf-lora"),
        "{body}"
    );
    let (status, body) = chat("nope".into()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    // Load one at run time, use it, unload it.
    let post = |body: Value| client.post(server.at("/adapters")).json(&body).send();
    let r = post(json!({ "name": "late", "path": gguf, "scale": 4.0 }))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(text(chat("late".into()).await), gguf_text);
    // Refused, and nothing changes: an adapter for another base, missing
    // files, a bad name, an unknown field.
    let tiny_adapter = files.adapters["tiny"].0.clone();
    for (body, status) in [
        (json!({ "name": "other", "path": tiny_adapter }), 400),
        (json!({ "name": "gone", "path": "/no/such/adapter" }), 400),
        (json!({ "name": "bad name!", "path": gguf }), 400),
        (json!({ "name": "x", "path": gguf, "rank": 3 }), 422),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    let list = get("/adapters").await;
    let names: Vec<&str> = list["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gguf-lora", "late", "peft-lora"], "{list}");
    let r = client
        .delete(server.at("/adapters/late"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(chat("late".into()).await.0, 404);
    let r = client
        .delete(server.at("/adapters/peft-lora"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "the configured adapter stays");
    // The base still answers as before.
    assert_eq!(text(chat(base_name).await), bare);
    server.stop();
}
