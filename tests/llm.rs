//! The default LLM against llama.cpp's own tokenizer and greedy outputs, and
//! generation behaviour through the worker: seeds, stops, UTF-8, bad input.

use crate::common;
use hearth::engine::{Event, FinishReason, Generator, GeneratorLimits, Prompt};
use hearth::models::llm::llama::KvType;
use hearth::models::llm::message::Message;
use hearth::models::llm::sampling::SamplingParams;
use hearth::models::llm::stream::TextDecoder;
use hearth::models::{Llm, ModelSource};
use hearth::Error;
use std::sync::OnceLock;

fn llm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| {
        Llm::load(&ModelSource::Local(common::llm_path()), &common::device())
            .expect("loading the default LLM")
    })
}

fn generator() -> Generator {
    Generator::spawn(llm().clone(), GeneratorLimits::default())
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature: 0.0,
        ..Default::default()
    }
}

fn run(
    g: &Generator,
    prompt: Prompt,
    params: SamplingParams,
) -> hearth::Result<hearth::engine::Completion> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let stream = g.submit_blocking(prompt, params)?;
    rt.block_on(stream.finish())
}

#[test]
fn tokenizer_from_gguf_matches_llama_cpp() {
    let reference = common::reference("tokenizer-reference.json");
    let tok = &llm().tokenizer;
    for item in reference["items"].as_array().unwrap() {
        let text = item["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&item["tokens"]),
            "tokens of {text:?}"
        );
    }
}

/// The largest gap (in hearth's logits) at which hearth's greedy choice
/// may differ from llama.cpp's.
const NEAR_TIE: f32 = 0.25;

#[test]
fn greedy_generation_matches_llama_cpp() {
    agrees_with_llama_cpp(KvType::F16);
}

/// The same check with keys and values cached in Q8_0
/// (`limits.kv_cache_type = "q8_0"`), against the same llama.cpp outputs
/// (made with its default f16 cache): quantizing the cache moves logits a
/// little more, within the same bounds.
#[test]
fn greedy_generation_matches_llama_cpp_with_a_q8_0_cache() {
    agrees_with_llama_cpp(KvType::Q8_0);
}

fn agrees_with_llama_cpp(kind: KvType) {
    let reference = common::reference("llm-reference.json");
    let g = Generator::spawn(
        llm().clone(),
        GeneratorLimits {
            kv_cache: kind,
            ..GeneratorLimits::default()
        },
    );
    assert!(llm().model.supports_kv_type(kind), "{kind:?}");
    // The CPU forward pass follows ggml's CPU arithmetic, so only near-ties
    // may round the other way. Elsewhere (HEARTH_TEST_DEVICE=cuda: candle's
    // CUDA kernels, which sum in their own order) choices drift further:
    // measured on an H200, 123/132 teacher-forced, worst gap 1.75.
    // A Q8_0 cache rounds keys and values to 8 bits where llama.cpp's
    // reference kept f16: measured 108/115 teacher-forced, every other
    // choice a near-tie (worst gap 0.22).
    let ggml_numerics = llm().model.device().is_cpu();
    let (min_agree_pct, max_gap) = match (ggml_numerics, kind) {
        (true, KvType::F16) => (97, 0.5),
        (true, KvType::Q8_0) => (90, 0.5),
        (false, _) => (90, 2.5),
    };
    let (mut matched, mut total, mut forced_agree) = (0, 0, 0);
    let mut report = Vec::new();
    for item in reference["items"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(item["messages"].clone()).unwrap();
        // The chat template renders exactly llama.cpp's prompt, token for token.
        assert_eq!(
            llm().chat.render(&messages).unwrap(),
            item["prompt"].as_str().unwrap()
        );
        let want_prompt = ids(&item["prompt_tokens"]);
        assert_eq!(llm().encode_chat(&messages).unwrap(), want_prompt);

        let want = ids(&item["greedy_tokens"]);
        let got = run(&g, Prompt::chat(messages), greedy(want.len())).unwrap();
        assert_eq!(got.prompt_tokens, want_prompt);

        // Teacher forcing: feed llama.cpp's own tokens and, at every step,
        // measure how far its choice is below our best logit (0 when it is
        // our choice too). Unlike a free-running comparison, which stops at
        // the first near-tie that rounds the other way, this checks every
        // position.
        let model = &llm().model;
        let mut cache = model.new_cache_typed(want_prompt.len() + want.len(), None, kind);
        let mut logits = model.forward(&want_prompt, &mut cache).unwrap();
        let mut gaps = Vec::with_capacity(want.len());
        for &token in &want {
            let v: Vec<f32> = logits.to_vec1().unwrap();
            let best = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            gaps.push(best - v[token as usize]);
            logits = model.forward(&[token], &mut cache).unwrap();
        }
        let agree = gaps.iter().filter(|g| **g == 0.0).count();
        let worst = gaps.iter().copied().fold(0f32, f32::max);
        forced_agree += agree;

        // Free-running through the generator: the same tokens as llama.cpp
        // up to the first disagreement, which must be a near-tie.
        let same = got
            .tokens
            .iter()
            .zip(&want)
            .take_while(|(a, b)| a == b)
            .count();
        matched += same;
        total += want.len();
        report.push(format!(
            "{same}/{} free-running, {agree}/{} forced (worst gap {worst:.3})",
            want.len(),
            want.len()
        ));
        eprintln!(
            "reference answer {}: {}",
            report.len(),
            report[report.len() - 1]
        );
        let leading = gaps.iter().take_while(|g| **g == 0.0).count();
        assert_eq!(
            same,
            leading.min(got.tokens.len()),
            "the generator follows the model"
        );
        // A near-tie: within what llama.cpp's own settings move its logits
        // by on this model (flash attention on or off, the prompt whole or
        // token by token: up to 0.14 between its own runs, measured when the
        // fixture was made) and the 0.25 the K-quant issue allows.
        if let Some(gap) = gaps.get(same).filter(|_| ggml_numerics) {
            assert!(
                *gap < NEAR_TIE,
                "greedy output leaves llama.cpp's after {same} tokens where its choice is {gap} \
                 below ours, not a near-tie, for {:?}\n got  {:?}\n want {:?}",
                item["messages"],
                got.tokens,
                want
            );
        }
        assert!(
            worst < max_gap,
            "llama.cpp's token is {worst} below our best logit somewhere in {:?}: {gaps:?}",
            item["messages"]
        );
    }
    eprintln!(
        "{kind:?} cache: greedy tokens matching llama.cpp: {matched}/{total} free-running, {forced_agree}/{total} teacher-forced ({})",
        report.join("; ")
    );
    // Rounding differences from ggml can flip a near-tie now and then, not
    // more: 97% of the teacher-forced choices must be llama.cpp's (90% off
    // the CPU or with a Q8_0 cache).
    assert!(
        forced_agree * 100 >= total * min_agree_pct,
        "only {forced_agree}/{total} teacher-forced choices are llama.cpp's"
    );
}

#[test]
fn same_seed_same_text_and_concurrent_sequences_all_finish() {
    let g = generator();
    let params = SamplingParams {
        max_tokens: 24,
        temperature: 0.9,
        top_p: 0.95,
        top_k: 40,
        seed: Some(7),
        ..Default::default()
    };
    let prompt = || Prompt::chat(vec![Message::new("user", "Tell me about rivers.")]);
    // Three at once: the worker interleaves them, each with its own cache.
    let streams: Vec<_> = (0..3)
        .map(|_| g.submit_blocking(prompt(), params.clone()).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outs: Vec<_> = streams
        .into_iter()
        .map(|s| rt.block_on(s.finish()).unwrap())
        .collect();
    assert!(!outs[0].tokens.is_empty());
    assert!(
        outs.iter().all(|c| c.tokens == outs[0].tokens),
        "same seed, different output"
    );
    // And interleaving does not change a greedy answer.
    let alone = run(&g, prompt(), greedy(16)).unwrap();
    let again = run(&g, prompt(), greedy(16)).unwrap();
    assert_eq!(alone.tokens, again.tokens);
}

#[test]
fn stop_sequences_end_generation_without_emitting_the_stop() {
    let g = generator();
    let messages = vec![Message::new(
        "user",
        "Count from 1 to 20, separated by commas.",
    )];
    let full = run(&g, Prompt::chat(messages.clone()), greedy(40)).unwrap();
    assert!(full.text.contains('5'), "{}", full.text);
    let mut params = greedy(40);
    params.stop = vec!["5".into()];
    let cut = run(&g, Prompt::chat(messages), params).unwrap();
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert!(!cut.text.contains('5'), "{}", cut.text);
    assert!(
        full.text.starts_with(&cut.text),
        "{:?} vs {:?}",
        cut.text,
        full.text
    );

    let short = run(&g, Prompt::Text("Once upon a time".into()), greedy(3)).unwrap();
    assert_eq!(short.finish_reason, FinishReason::Length);
    assert_eq!(short.tokens.len(), 3);
}

#[test]
fn streamed_text_is_valid_utf8_across_byte_tokens() {
    let tok = &llm().tokenizer;
    let text = "naïve café, Zürich, 東京, emoji 🚀🔥";
    let ids = tok.encode(text).unwrap();
    let mut decoder = TextDecoder::default();
    let mut out = String::new();
    for id in ids {
        if let Some(chunk) = decoder.push(tok, id).unwrap() {
            assert!(
                !chunk.contains('\u{FFFD}'),
                "half a character streamed: {chunk:?}"
            );
            out.push_str(&chunk);
        }
    }
    assert_eq!(out, text);

    // And through the worker: streamed chunks add up to the final text.
    let g = generator();
    let mut stream = g
        .submit_blocking(
            Prompt::chat(vec![Message::new("user", "Say hello in Japanese.")]),
            greedy(24),
        )
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (mut streamed, mut started) = (String::new(), false);
    let done = rt.block_on(async {
        loop {
            match stream.next().await.unwrap() {
                Event::Started { prompt_tokens } => {
                    assert!(prompt_tokens > 0);
                    started = true;
                }
                Event::Text(t) => streamed.push_str(&t),
                Event::Logprobs(_) => panic!("log-probabilities nobody asked for"),
                Event::Done(c) => break c,
                Event::Error(e) => panic!("{e}"),
            }
        }
    });
    assert!(started);
    assert_eq!(streamed, done.text);
    assert_eq!(done.text, llm().tokenizer.decode(&done.tokens).unwrap());
}

#[test]
fn bad_input_gives_clear_errors() {
    let g = generator();
    let err = |prompt: Prompt, params: SamplingParams| run(&g, prompt, params).unwrap_err();

    assert!(matches!(
        err(Prompt::Text(String::new()), greedy(4)),
        Error::InvalidInput(_)
    ));
    let e = err(
        Prompt::Text("hi".into()),
        SamplingParams {
            temperature: 5.0,
            ..greedy(4)
        },
    );
    assert!(e.to_string().contains("temperature"), "{e}");
    let e = err(
        Prompt::Text("hi".into()),
        SamplingParams {
            top_p: 1.5,
            ..greedy(4)
        },
    );
    assert!(e.to_string().contains("top_p"), "{e}");
    let e = err(Prompt::Text("hi".into()), greedy(0));
    assert!(e.to_string().contains("max_tokens"), "{e}");
    let e = err(Prompt::Text("hi".into()), greedy(1_000_000));
    assert!(e.to_string().contains("max_tokens"), "{e}");

    // Longer than the context window: refused before any compute.
    let long = Prompt::Tokens(vec![100; llm().context_length() + 10]);
    assert!(matches!(err(long, greedy(4)), Error::TooLarge(_)));
    let e = err(Prompt::Tokens(vec![u32::MAX]), greedy(4));
    assert!(e.to_string().contains("vocabulary"), "{e}");
    let e = err(Prompt::chat(vec![Message::new("wizard", "hi")]), greedy(4));
    assert!(e.to_string().contains("role"), "{e}");

    // Missing and corrupt model files.
    let dir = tempfile::tempdir().unwrap();
    let e = Llm::load(
        &ModelSource::Local(dir.path().join("none.gguf")),
        &candle_core::Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("fetch-models.sh"), "{e}");
    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"this is not a gguf file at all").unwrap();
    let e = Llm::load(&ModelSource::Local(corrupt), &candle_core::Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a readable GGUF"), "{e}");
    // A truncated copy of the real model: header fine, tensors missing.
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(common::llm_path()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(Llm::load(&ModelSource::Local(truncated), &candle_core::Device::Cpu).is_err());
}

#[test]
fn random_weight_models_of_real_shapes_load_and_generate() {
    use hearth::bench::shapes::{write_random_llm, Shape, WeightType};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.gguf");
    let params =
        write_random_llm(&common::llm_path(), Shape::Tiny, WeightType::Q8_0, &out).unwrap();
    // 49,152 x 64 tied embeddings plus 2 layers.
    assert!(params > 49_152 * 64, "{params}");
    let model = Llm::load(&ModelSource::Local(out), &common::device()).unwrap();
    // The real tokenizer and chat template came along.
    assert_eq!(
        model.tokenizer.encode("Hello world").unwrap(),
        llm().tokenizer.encode("Hello world").unwrap()
    );
    let g = Generator::spawn(model, GeneratorLimits::default());
    let done = run(&g, Prompt::Text("Hello".into()), greedy(4)).unwrap();
    assert_eq!(done.tokens.len(), 4);
    assert_eq!(done.finish_reason, FinishReason::Length);

    // K-quants need rows of 256: the tiny shape's 64 cannot be written as Q4_K.
    let k = dir.path().join("k.gguf");
    let e = write_random_llm(&common::llm_path(), Shape::Tiny, WeightType::Q4k, &k).unwrap_err();
    assert!(e.to_string().contains("whole blocks"), "{e}");
    // A template without a tokenizer is refused.
    let bare = dir.path().join("bare.gguf");
    let arch = candle_core::quantized::gguf_file::Value::String("llama".into());
    let mut f = std::fs::File::create(&bare).unwrap();
    candle_core::quantized::gguf_file::write(&mut f, &[("general.architecture", &arch)], &[])
        .unwrap();
    let e = write_random_llm(&bare, Shape::Tiny, WeightType::Q8_0, &k).unwrap_err();
    assert!(e.to_string().contains("no tokenizer"), "{e}");
}

fn scheduled(max_running: usize, prefill_chunk: usize) -> Generator {
    Generator::spawn(
        llm().clone(),
        GeneratorLimits {
            max_running,
            prefill_chunk,
            ..GeneratorLimits::default()
        },
    )
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn batched_greedy_output_is_the_same_as_alone() {
    let questions = [
        "Name three rivers.",
        "What is a borrow checker?",
        "Write a haiku about rain.",
        "How do magnets work?",
        "List two prime numbers.",
        "What is the capital of Peru?",
        "Describe a cat in one sentence.",
        "Why is the sky blue?",
    ];
    let prompt = |q: &str| Prompt::chat(vec![Message::new("user", q)]);
    let g = scheduled(8, 16);
    let alone: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| run(&g, prompt(q), greedy(24)).unwrap().tokens)
        .collect();
    // All eight at once: one forward pass per step for the whole batch,
    // prompts fed 16 tokens at a time beside the sequences already decoding.
    let streams: Vec<_> = questions
        .iter()
        .map(|q| g.submit_blocking(prompt(q), greedy(24)).unwrap())
        .collect();
    let batched: Vec<Vec<u32>> = streams
        .into_iter()
        .map(|s| block_on(s.finish()).unwrap().tokens)
        .collect();
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert_eq!(
            a, b,
            "sequence {i} ({:?}) changed when batched",
            questions[i]
        );
    }
}

#[test]
fn a_long_prompt_is_fed_in_chunks_while_others_keep_decoding() {
    use std::time::Instant;
    let g = scheduled(4, 32);
    // A: a raw-text count that greedy decoding carries on for a long time.
    let mut a = g
        .submit_blocking(Prompt::Text("1, 2, 3, 4, 5, 6, 7,".into()), greedy(150))
        .unwrap();
    let a_events = std::thread::spawn(move || {
        let mut stamps = Vec::new();
        while let Some(e) = a.blocking_next() {
            match e {
                Event::Text(_) => stamps.push(Instant::now()),
                Event::Done(c) => return (stamps, c),
                Event::Error(e) => panic!("{e}"),
                Event::Started { .. } | Event::Logprobs(_) => {}
            }
        }
        panic!("the worker went away")
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    // B: a prompt of ~600 tokens, which takes ~19 steps of 32.
    let long = "The river runs past the old mill and under the stone bridge. ".repeat(45);
    let submitted = Instant::now();
    let b = block_on(
        g.submit_blocking(Prompt::Text(long), greedy(1))
            .unwrap()
            .finish(),
    )
    .unwrap();
    let b_done = Instant::now();
    assert!(b.prompt_tokens.len() > 500, "{}", b.prompt_tokens.len());
    let (stamps, a_done) = a_events.join().unwrap();
    assert_eq!(
        a_done.finish_reason,
        FinishReason::Length,
        "{:?}",
        a_done.text
    );
    let during = stamps
        .iter()
        .filter(|t| **t > submitted && **t < b_done)
        .count();
    assert!(
        during >= 8,
        "A produced only {during} tokens while B's prompt was fed: the prompt stalled it"
    );
}

#[test]
fn cancelling_a_sequence_frees_its_slot() {
    // One slot: B can only run once A has left it.
    let g = scheduled(1, 256);
    let mut a = g
        .submit_blocking(Prompt::Text("1, 2, 3, 4, 5, 6, 7,".into()), greedy(2000))
        .unwrap();
    assert!(matches!(a.blocking_next(), Some(Event::Started { .. })));
    assert!(matches!(a.blocking_next(), Some(Event::Text(_))));
    drop(a); // the client goes away mid-generation
    let b = run(&g, Prompt::Text("Hello".into()), greedy(4)).unwrap();
    assert_eq!(b.tokens.len(), 4);
    // The counters move just after B's last event: wait for them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut stats = g.stats();
    while stats.completed == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        stats = g.stats();
    }
    // Had A kept its slot, B would have waited for its 2,000 tokens and A
    // would count as completed, not cancelled.
    assert_eq!((stats.cancelled, stats.completed, stats.active), (1, 1, 0));
}

#[test]
fn prompts_that_begin_alike_reuse_the_cached_prefix_with_the_same_output() {
    let with = scheduled(4, 256);
    let without = Generator::spawn(
        llm().clone(),
        GeneratorLimits {
            prefix_cache_bytes: 0,
            ..GeneratorLimits::default()
        },
    );
    // A long shared document, then different questions: a conversation's
    // earlier turns, or RAG passages asked about twice.
    let doc = "The river runs past the old mill and under the stone bridge. ".repeat(20);
    let ask = |q: &str| Prompt::chat(vec![Message::new("user", format!("{doc}\n\n{q}"))]);
    let questions = [
        "Where does the river run?",
        "What is under the bridge?",
        "Name the mill.",
    ];
    let mut ttft = Vec::new();
    for q in questions {
        let a = run(&with, ask(q), greedy(12)).unwrap();
        let b = run(&without, ask(q), greedy(12)).unwrap();
        assert_eq!(
            a.tokens, b.tokens,
            "the cached prefix changed the answer to {q:?}"
        );
        ttft.push((a.timings.prompt_ms, b.timings.prompt_ms));
    }
    let reused = with.stats().prefix_tokens_reused;
    assert_eq!(without.stats().prefix_tokens_reused, 0);
    // The second and third prompts share the chat template's start and the
    // document (~260 tokens) with the first.
    assert!(reused > 2 * 200, "only {reused} prompt tokens reused");
    eprintln!("prompt ms with / without the prefix cache: {ttft:?}");
}

#[test]
fn prompt_lookup_decoding_gives_the_same_output_and_keeps_drafts() {
    let plain = scheduled(4, 256);
    // Two running at once: a sequence drafts only while it runs alone.
    let drafting = Generator::spawn(
        llm().clone(),
        GeneratorLimits {
            max_running: 2,
            draft_tokens: 8,
            ..GeneratorLimits::default()
        },
    );
    // A passage the answers copy from, as RAG answers do.
    let passage = "Ownership is a set of rules that govern how a Rust program manages memory. \
        Each value in Rust has an owner. There can only be one owner at a time. \
        When the owner goes out of scope, the value will be dropped.";
    let ask = |q: &str| {
        Prompt::chat(vec![Message::new(
            "user",
            format!("Context: {passage}\n\nQuestion: {q}"),
        )])
    };
    let sampled = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        seed: Some(7),
        ..greedy(48)
    };
    let stopped = SamplingParams {
        stop: vec!["owner".into()],
        ..greedy(48)
    };
    let formatted = SamplingParams {
        format: Some(hearth::models::llm::grammar::Format::Regex {
            pattern: "[A-Za-z ,.]{1,120}".into(),
        }),
        ..greedy(40)
    };
    let cases = [
        (
            ask("Repeat the rules of ownership word for word."),
            greedy(64),
        ),
        (
            ask("What happens when the owner goes out of scope?"),
            sampled,
        ),
        (ask("Quote the context."), stopped),
        (ask("Quote the first sentence."), formatted),
        (
            Prompt::Text("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,".into()),
            greedy(40),
        ),
    ];
    for (prompt, params) in &cases {
        let want = run(&plain, prompt.clone(), params.clone()).unwrap();
        let got = run(&drafting, prompt.clone(), params.clone()).unwrap();
        assert_eq!(
            (&got.tokens, &got.text, got.finish_reason),
            (&want.tokens, &want.text, want.finish_reason),
            "drafts changed the output of {prompt:?}"
        );
        assert_eq!(want.timings.draft_tokens, 0);
        eprintln!(
            "{} tokens: {} drafted, {} kept",
            got.tokens.len(),
            got.timings.draft_tokens,
            got.timings.draft_tokens_kept
        );
    }
    // All five queued at once: two run at a time (no drafts), then the
    // last one alone drafts again; the same output either way.
    let streams: Vec<_> = cases
        .iter()
        .map(|(p, params)| drafting.submit_blocking(p.clone(), params.clone()).unwrap())
        .collect();
    for ((prompt, params), s) in cases.iter().zip(streams) {
        let got = block_on(s.finish()).unwrap();
        let want = run(&plain, prompt.clone(), params.clone()).unwrap();
        assert_eq!(got.tokens, want.tokens, "batched drafts changed {prompt:?}");
    }
    let stats = drafting.stats();
    assert!(
        stats.draft_tokens_kept > 40 && stats.draft_tokens_kept <= stats.draft_tokens,
        "{stats:?}"
    );
}
