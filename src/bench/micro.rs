//! Hearth's side of the peer comparison (`scripts/bench-peers.sh`): one
//! measurement per call, printed as one JSON line, the same quantities the
//! peer scripts (`scripts/peers/*.py`: llama.cpp, sentence-transformers,
//! hnswlib) print, so the script can alternate hearth and peer runs and
//! compare medians.
//!
//! - [`llm`]: prompt processing of an N-token prompt and greedy decode of M
//!   tokens (tokens/s, the prompt excluded from decode).
//! - [`embed`]: texts/s at a batch size over real ~128-token passages, and
//!   one short query's latency.
//! - [`hnsw`]: build time, recall@10 against exact search and single-thread
//!   queries/s per `ef_search`, on embeddings of a real corpus.
//! - [`corpus`]: makes that corpus once (the local Rust documentation,
//!   chunked and embedded) and caches it as `texts.json` + `vectors.f32`.

use crate::error::{Error, Result};
use crate::models::llm::llama::KvType;
use crate::models::llm::sampling::argmax;
use crate::models::{Embedder, Llm};
use crate::store::chunking::Chunker;
use crate::store::extract::{collect_files, read_file};
use crate::store::index::{IndexParams, VectorIndex};
use hearth_kernels::graph::top_k;
use hearth_kernels::simd::dot;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The query whose single-text embedding latency is measured.
pub const QUERY: &str = "How do I borrow a value mutably in Rust?";

/// One greedy run: the first `prompt_tokens` tokens of `text` (repeated
/// four times) processed at once, then `gen_tokens` decode steps, each
/// feeding the argmax of the last.
/// The default schema of `hearth bench grammar`.
pub static PERSON_SCHEMA: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "age": { "type": "integer", "minimum": 0 },
            "languages": { "type": "array", "items": { "type": "string" }, "maxItems": 3 }
        },
        "required": ["name", "age", "languages"],
        "additionalProperties": false
    })
});

/// Greedy generation under `schema` from a chat prompt: the token trie's
/// build time, and per token the mask's time (p50, p95, mean) against the
/// forward pass's, as the worker runs them (one after the other).
pub fn grammar(model: &Llm, schema: Value, max_tokens: usize) -> Result<Value> {
    use crate::models::llm::grammar::Format;
    use crate::models::llm::message::Message;
    let start = Instant::now();
    let env = model.grammar()?;
    let build_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let mut constraint = env.constraint(&Format::JsonSchema { schema })?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let prompt = model.encode_chat(&[Message::new(
        "user",
        "Describe a programmer as JSON.".to_string(),
    )])?;
    let mut cache = model.model.new_cache(prompt.len() + max_tokens);
    let mut logits = model.model.forward(&prompt, &mut cache)?.to_vec1::<f32>()?;
    let (mut masks, mut forwards, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..max_tokens {
        let t = Instant::now();
        constraint.mask(&mut logits)?;
        masks.push(t.elapsed().as_secs_f64() * 1e6);
        let token = argmax(&logits);
        if model.tokenizer.is_end_of_turn(token) {
            break;
        }
        constraint.accept(token)?;
        out.push(token);
        if constraint.is_stopped() {
            break;
        }
        let t = Instant::now();
        logits = model
            .model
            .forward(&[token], &mut cache)?
            .to_vec1::<f32>()?;
        forwards.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let text = model.tokenizer.decode(&out)?;
    let valid = serde_json::from_str::<Value>(&text).is_ok();
    let mut sorted = masks.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(json!({
        "model": model.name,
        "vocabulary": model.model.config.vocab_size,
        "engine": "llguidance",
        "trie_build_ms": build_ms,
        "grammar_compile_ms": compile_ms,
        "tokens": out.len(),
        "valid_json": valid,
        "mask_us_p50": pct(0.5),
        "mask_us_p95": pct(0.95),
        "mask_us_mean": mean(&masks),
        "forward_us_mean": mean(&forwards),
        "mask_share_of_step": mean(&masks) / (mean(&masks) + mean(&forwards)),
        "text": text,
    }))
}

/// The benchmark prompt: `text` four times, cut to `tokens` tokens.
fn bench_prompt(model: &Llm, text: &str, tokens: usize) -> Result<Vec<u32>> {
    let mut prompt = model.tokenizer.encode(&text.repeat(4))?;
    if prompt.len() < tokens {
        return Err(Error::InvalidInput(format!(
            "the benchmark prompt has only {} tokens",
            prompt.len()
        )));
    }
    prompt.truncate(tokens);
    Ok(prompt)
}

/// Prompt processing and greedy decode of one sequence, its cache holding
/// keys and values as `kv`.
pub fn llm(
    model: &Llm,
    text: &str,
    prompt_tokens: usize,
    gen_tokens: usize,
    kv: KvType,
) -> Result<Value> {
    let prompt = bench_prompt(model, text, prompt_tokens)?;
    // Warm up (a GPU loads its kernels on first use), then time.
    let mut warm = model.model.new_cache(16);
    let logits = model
        .model
        .forward(&prompt[..prompt.len().min(8)], &mut warm)?;
    model
        .model
        .forward(&[argmax(&logits.to_vec1::<f32>()?)], &mut warm)?;
    let mut cache = model
        .model
        .new_cache_typed(prompt_tokens + gen_tokens, None, kv);
    let start = Instant::now();
    let logits = model.model.forward(&prompt, &mut cache)?;
    let mut next = argmax(&logits.to_vec1::<f32>()?);
    let pp = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut generated = Vec::with_capacity(gen_tokens);
    for _ in 0..gen_tokens {
        generated.push(next);
        let logits = model.model.forward(&[next], &mut cache)?;
        next = argmax(&logits.to_vec1::<f32>()?);
    }
    let tg = start.elapsed().as_secs_f64();
    let per_1k = cache
        .bytes()
        .map(|b| b as f64 * 1000.0 / cache.len() as f64 / (1 << 20) as f64);
    Ok(json!({
        "model": model.name,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "kv_cache_type": format!("{kv:?}").to_lowercase(),
        "kv_cache_mib_per_1k_tokens": per_1k,
        "pp_tok_s": prompt_tokens as f64 / pp,
        "tg_tok_s": gen_tokens as f64 / tg,
        "prompt_head": &prompt[..prompt.len().min(8)],
        "first_tokens": &generated[..generated.len().min(8)],
    }))
}

/// Aggregate greedy decode over `streams` sequences stepped together, one
/// batched forward pass per step as the scheduler runs them. Each sequence
/// starts from its own cut of the prompt (`prompt_tokens` minus its index,
/// so their outputs differ), prefilled alone and not timed.
pub fn llm_streams(
    model: &Llm,
    text: &str,
    prompt_tokens: usize,
    gen_tokens: usize,
    streams: usize,
) -> Result<Value> {
    use crate::models::llm::llama::Segment;
    if prompt_tokens <= streams {
        return Err(Error::InvalidInput(format!(
            "--prompt-tokens must be above --streams ({streams})"
        )));
    }
    let prompt = bench_prompt(model, text, prompt_tokens)?;
    let mut caches = Vec::with_capacity(streams);
    let mut next = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut cache = model.model.new_cache(prompt_tokens + gen_tokens);
        let logits = model
            .model
            .forward(&prompt[..prompt_tokens - i], &mut cache)?;
        next.push(argmax(&logits.to_vec1::<f32>()?));
        caches.push(cache);
    }
    let start = Instant::now();
    for _ in 0..gen_tokens {
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut segments: Vec<Segment> = caches
            .iter_mut()
            .zip(&tokens)
            .map(|(cache, token)| Segment {
                tokens: token,
                cache,
                logits: 1,
            })
            .collect();
        let logits = model.model.forward_batch(&mut segments)?;
        for (n, l) in next.iter_mut().zip(logits) {
            let l = l.ok_or_else(|| Error::Model("a batched step returned no logits".into()))?;
            *n = argmax(&l);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "streams": streams,
        "tg_tok_s": (streams * gen_tokens) as f64 / secs,
        "step_ms": secs * 1e3 / gen_tokens as f64,
    }))
}

/// Texts/s embedding `passages` in batches of `batch` (every passage once),
/// and the median latency of embedding [`QUERY`] alone over `queries` calls.
pub fn embed(
    embedder: &Embedder,
    passages: &[String],
    batch: usize,
    queries: usize,
) -> Result<Value> {
    let texts: Vec<&str> = passages.iter().map(String::as_str).collect();
    embedder.embed(&texts[..batch.min(texts.len())])?; // warm-up
    let start = Instant::now();
    for group in texts.chunks(batch) {
        embedder.embed(group)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(queries);
    for _ in 0..queries {
        let t = Instant::now();
        embedder.embed(&[QUERY])?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    Ok(json!({
        "batch": batch,
        "arithmetic": embedder.arithmetic(),
        "texts": texts.len(),
        "texts_per_s": texts.len() as f64 / secs,
        "query_ms": lat.get(lat.len() / 2).copied(),
    }))
}

/// The cached corpus: chunk texts and their unit-length embeddings.
pub struct Corpus {
    pub texts: Vec<String>,
    pub dim: usize,
    pub vectors: Vec<f32>,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// Write `texts` and their vectors (`vectors`: little-endian f32 rows)
    /// into `dir`, as [`read`](Self::read) reads them.
    fn write(dir: &Path, texts: &[impl Serialize], vectors: &[u8]) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let texts_path = dir.join("texts.json");
        std::fs::write(
            &texts_path,
            serde_json::to_vec(texts).expect("strings serialise"),
        )
        .map_err(|e| Error::io(&texts_path, e))?;
        let vec_path = dir.join("vectors.f32");
        std::fs::write(&vec_path, vectors).map_err(|e| Error::io(&vec_path, e))
    }

    /// Read `dir/texts.json` and `dir/vectors.f32` (little-endian f32 rows).
    pub fn read(dir: &Path) -> Result<Self> {
        let texts_path = dir.join("texts.json");
        let texts: Vec<String> = serde_json::from_slice(
            &std::fs::read(&texts_path).map_err(|e| Error::io(&texts_path, e))?,
        )
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", texts_path.display())))?;
        let vec_path = dir.join("vectors.f32");
        let bytes = std::fs::read(&vec_path).map_err(|e| Error::io(&vec_path, e))?;
        let vectors: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if texts.is_empty() || !vectors.len().is_multiple_of(texts.len()) {
            return Err(Error::InvalidInput(format!(
                "{} does not hold one vector per text",
                dir.display()
            )));
        }
        let dim = vectors.len() / texts.len();
        Ok(Self {
            texts,
            dim,
            vectors,
        })
    }
}

/// Chunk every HTML/Markdown/text file under `sources` (but mdBook's
/// `print.html`) into passages of at
/// most `max_tokens` embedder tokens, embed them, and write the corpus to
/// `out` (unless it is already there).
pub fn corpus(
    embedder: &Embedder,
    sources: &[PathBuf],
    max_tokens: usize,
    out: &Path,
) -> Result<Value> {
    if out.join("vectors.f32").exists() && out.join("texts.json").exists() {
        let c = Corpus::read(out)?;
        return Ok(json!({"cached": true, "texts": c.len(), "dim": c.dim}));
    }
    let chunker = Chunker::new(embedder.tokenizer(), max_tokens, 0)?;
    let mut texts = Vec::new();
    // mdBook's print.html is every page again on one page: skip it, or
    // every passage would be in the corpus twice.
    let files = collect_files(sources)?
        .into_iter()
        .filter(|f| f.file_name().is_none_or(|n| n != "print.html"));
    for file in files {
        let (content, _) = read_file(&file)?;
        texts.extend(
            chunker
                .split(&content.text, content.kind)
                .into_iter()
                .map(|c| c.text)
                .filter(|t| t.split_whitespace().count() >= 8),
        );
    }
    if texts.is_empty() {
        return Err(Error::InvalidInput(
            "the corpus sources hold no text".into(),
        ));
    }
    let start = Instant::now();
    let mut bytes = Vec::with_capacity(texts.len() * embedder.dim * 4);
    for (i, group) in texts.chunks(32).enumerate() {
        if i % 20 == 0 {
            eprintln!("bench corpus: embedding {}/{} chunks", i * 32, texts.len());
        }
        let refs: Vec<&str> = group.iter().map(String::as_str).collect();
        for v in embedder.embed(&refs)? {
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
    }
    Corpus::write(out, &texts, &bytes)?;
    Ok(json!({
        "cached": false,
        "texts": texts.len(),
        "dim": embedder.dim,
        "embed_s": start.elapsed().as_secs_f64(),
    }))
}

/// A corpus of `n` synthetic unit vectors of `dim` values: each is a
/// random one of `clusters` random unit centres plus Gaussian noise, then
/// normalised. The noise (0.6 / sqrt(dim) per value) puts a point at cosine
/// ~0.85 from its centre and ~0.7 from its cluster's other points, which
/// are at ~0 from the rest: the shape of sentence embeddings grouped by
/// topic. Written as [`Corpus::read`] reads it (texts are empty strings);
/// deterministic for a seed.
pub fn synthetic_corpus(
    n: usize,
    dim: usize,
    clusters: usize,
    seed: u64,
    out: &Path,
) -> Result<Value> {
    use rand::{Rng, SeedableRng};
    if n == 0 || dim == 0 || clusters == 0 {
        return Err(Error::InvalidInput(
            "vectors, dim and clusters must be at least 1".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Box-Muller: standard normal values.
    let mut normal = move || {
        let (u, v): (f32, f32) = (rng.random::<f32>().max(f32::MIN_POSITIVE), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let unit = |v: &mut [f32]| {
        let norm = dot(v, v).sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    };
    let mut centres = vec![0f32; clusters * dim];
    centres.iter_mut().for_each(|x| *x = normal());
    centres.chunks_exact_mut(dim).for_each(unit);
    let noise = 0.6 / (dim as f32).sqrt();
    let mut bytes = Vec::with_capacity(n * dim * 4);
    let mut v = vec![0f32; dim];
    let mut pick = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    for _ in 0..n {
        let c = pick.random_range(0..clusters);
        for (x, centre) in v.iter_mut().zip(&centres[c * dim..(c + 1) * dim]) {
            *x = centre + noise * normal();
        }
        unit(&mut v);
        bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    Corpus::write(out, &vec![""; n], &bytes)?;
    Ok(json!({"texts": n, "dim": dim, "clusters": clusters, "seed": seed}))
}

/// How the corpus is split for the HNSW comparison: the last `queries`
/// vectors are the queries, the rest the indexed base.
pub fn split(corpus: &Corpus, queries: usize) -> Result<usize> {
    if corpus.len() <= queries * 2 {
        return Err(Error::InvalidInput(format!(
            "the corpus has {} vectors, too few for {queries} queries",
            corpus.len()
        )));
    }
    Ok(corpus.len() - queries)
}

/// Exact top-`k` base ids of every query, by brute force.
pub fn exact_neighbours(corpus: &Corpus, base: usize, k: usize) -> Vec<Vec<usize>> {
    (base..corpus.len())
        .map(|q| {
            let query = corpus.vector(q);
            let scored = (0..base)
                .map(|i| (i, dot(query, corpus.vector(i))))
                .collect();
            top_k(scored, k).into_iter().map(|(i, _)| i).collect()
        })
        .collect()
}

#[derive(Serialize)]
struct EfPoint {
    ef: usize,
    recall_at_10: f64,
    queries_per_s: f64,
}

/// How long each ef_search setting is timed for, at least.
const MIN_QUERY_TIME: Duration = Duration::from_secs(1);

/// Build hearth's index (the server's [`VectorIndex`], M and
/// ef_construction from `params`) over the base, then for each `ef` run
/// every query on one thread and score recall@10 against exact search.
pub fn hnsw(corpus: &Corpus, queries: usize, params: IndexParams, efs: &[usize]) -> Result<Value> {
    let base = split(corpus, queries)?;
    let truth = exact_neighbours(corpus, base, 10);
    let points: Vec<(i64, Vec<f32>)> = (0..base)
        .map(|i| (i as i64 + 1, corpus.vector(i).to_vec()))
        .collect();
    let rss_before = crate::telemetry::rss_bytes();
    let start = Instant::now();
    let index = VectorIndex::new(corpus.dim, params, base);
    index.insert(&points);
    let build_s = start.elapsed().as_secs_f64();
    // What the index holds per vector: by its own count, and as the
    // process's resident memory grew (the peer reports the latter too).
    let rss_per_vector =
        crate::telemetry::rss_bytes().saturating_sub(rss_before) as f64 / base as f64;
    let keep = |_: usize| true;
    let mut curve = Vec::new();
    for &ef in efs {
        // Whole passes over the query set until a second has gone, so
        // fast settings are timed over more than a few milliseconds.
        let start = Instant::now();
        let mut passes = 0;
        let mut found: Vec<Vec<i64>> = Vec::new();
        while passes == 0 || start.elapsed() < MIN_QUERY_TIME {
            found = (base..corpus.len())
                .map(|q| {
                    index
                        .search(corpus.vector(q), 10, ef, &keep)
                        .into_iter()
                        .map(|(id, _)| id - 1)
                        .collect()
                })
                .collect();
            passes += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let hits: usize = found
            .iter()
            .zip(&truth)
            .map(|(f, t)| f.iter().filter(|id| t.contains(&(**id as usize))).count())
            .sum();
        curve.push(EfPoint {
            ef,
            recall_at_10: hits as f64 / (10 * truth.len()) as f64,
            queries_per_s: (passes * truth.len()) as f64 / secs,
        });
    }
    Ok(json!({
        "base": base,
        "queries": queries,
        "dim": corpus.dim,
        "m": params.max_connections,
        "ef_construction": params.ef_construction,
        "build_s": build_s,
        "bytes_per_vector": index.bytes_per_point(),
        "rss_bytes_per_vector": rss_per_vector,
        "curve": curve,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_corpora_are_unit_clustered_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        synthetic_corpus(300, 64, 3, 9, &a).unwrap();
        synthetic_corpus(300, 64, 3, 9, &b).unwrap();
        let (ca, cb) = (Corpus::read(&a).unwrap(), Corpus::read(&b).unwrap());
        assert_eq!((ca.len(), ca.dim), (300, 64));
        assert_eq!(ca.vectors, cb.vectors, "same seed, same corpus");
        for i in 0..ca.len() {
            assert!((dot(ca.vector(i), ca.vector(i)) - 1.0).abs() < 1e-5);
        }
        // Three clusters: each point's nearest other point is far closer
        // than the average pair.
        let nearest: f32 = (0..30)
            .map(|i| {
                (0..ca.len())
                    .filter(|&j| j != i)
                    .map(|j| dot(ca.vector(i), ca.vector(j)))
                    .fold(f32::MIN, f32::max)
            })
            .sum::<f32>()
            / 30.0;
        assert!(nearest > 0.6, "{nearest}");
        assert!(synthetic_corpus(0, 64, 3, 9, &a).is_err());
    }

    #[test]
    fn exact_neighbours_rank_by_dot_product() {
        // Four unit vectors on a circle; the query is the last one.
        let angles = [0.0f32, 0.3, 1.5, 3.0, 0.25];
        let corpus = Corpus {
            texts: vec![String::new(); angles.len()],
            dim: 2,
            vectors: angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect(),
        };
        let base = split(&corpus, 1).unwrap();
        assert_eq!(base, 4);
        let truth = exact_neighbours(&corpus, base, 3);
        assert_eq!(truth, vec![vec![1, 0, 2]]);
    }
}
