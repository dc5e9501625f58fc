//! Micro-benchmarks of the hot paths: embedding a batch, prompt processing
//! of 128 tokens and one decode step on the real default models, and an
//! HNSW search at the default settings. Run with `cargo bench --bench
//! models` (needs scripts/fetch-models.sh).

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hearth::models::{Embedder, Llm, ModelSource, DEFAULT_EMBEDDER, DEFAULT_LLM};

fn source(rel: &str) -> ModelSource {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    ModelSource::Local(path)
}

const PASSAGE: &str = "Ownership is a set of rules that govern how a Rust program manages memory. \
All programs have to manage the way they use a computer's memory while running. Some languages \
have garbage collection that regularly looks for no-longer-used memory as the program runs; in \
other languages, the programmer must explicitly allocate and free the memory.";

fn embeddings(c: &mut Criterion) {
    let embedder = Embedder::load(&source(DEFAULT_EMBEDDER), &Device::Cpu).unwrap();
    let mut group = c.benchmark_group("embed");
    for batch in [1usize, 32] {
        let texts = vec![PASSAGE; batch];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &texts, |b, texts| {
            b.iter(|| embedder.embed(texts).unwrap())
        });
    }
    group.finish();
}

fn llm(c: &mut Criterion) {
    let llm = Llm::load(&source(DEFAULT_LLM), &Device::Cpu).unwrap();
    let mut prompt = llm.tokenizer.encode(&PASSAGE.repeat(4)).unwrap();
    prompt.truncate(128);
    let mut group = c.benchmark_group("llm");
    group.sample_size(10);
    group.throughput(Throughput::Elements(prompt.len() as u64));
    group.bench_function("prefill_128", |b| {
        b.iter(|| {
            let mut cache = llm.model.new_cache(prompt.len());
            llm.model.forward(&prompt, &mut cache).unwrap()
        })
    });
    // One decode step after a 16-token prompt (kept short: the setup runs
    // once per iteration).
    let context = &prompt[..16];
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_step_at_16", |b| {
        b.iter_batched(
            || {
                let mut c = llm.model.new_cache(context.len() + 1);
                llm.model.forward(context, &mut c).unwrap();
                c
            },
            |mut c| llm.model.forward(&[42], &mut c).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// One search (k = 4, ef_search = 64, M = 16, ef_construction = 200) in an
/// index of 10,000 random unit vectors of MiniLM's 384 dimensions (1,000
/// in unoptimised builds, where `cargo test --all-targets` runs it once).
fn hnsw(c: &mut Criterion) {
    use hearth::store::index::{IndexParams, VectorIndex};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut unit = || {
        let v: Vec<f32> = (0..384).map(|_| rng.random::<f32>() - 0.5).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let n = if cfg!(debug_assertions) {
        1_000
    } else {
        10_000
    };
    let points: Vec<(i64, Vec<f32>)> = (1..=n).map(|i| (i, unit())).collect();
    let index = VectorIndex::new(384, IndexParams::default(), points.len());
    index.insert(&points);
    let queries: Vec<Vec<f32>> = (0..100).map(|_| unit()).collect();
    let mut i = 0;
    c.bench_function(&format!("hnsw_search_{n}_k4_ef64"), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index.search(&queries[i], 4, 64, &|_| true)
        })
    });
}

criterion_group!(benches, embeddings, llm, hnsw);
criterion_main!(benches);
