//! `hearth bench`: topologies measured side by side, `bench compare`, and
//! the micro-benchmarks behind `scripts/bench-peers.sh`.

use super::args::{BenchAction, BenchArgs};
use super::documents::default_book;
use crate::config::{Config, ConfigArgs};
use crate::models::{Embedder, Llm, ModelSource};
use anyhow::{bail, Context, Result};
use candle_core::Device;

pub(super) fn bench(
    args: BenchArgs,
    load_config: &dyn Fn(&ConfigArgs) -> crate::Result<Config>,
    device: &dyn Fn() -> crate::Result<Device>,
) -> Result<()> {
    use crate::bench::{load::Targets, report, runner};
    if let Some(action) = args.action {
        return bench_action(action, device);
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let config = load_config(&args.config)?;
    let plan = runner::Plan {
        topologies: args.topology.clone(),
        workload: crate::bench::workload::Workload::load(&args.workload)?,
        scenarios: args.scenario.clone(),
        repeat: args.repeat,
        running: args.url.as_ref().map(|u| Targets {
            rag: u.trim_end_matches('/').to_string(),
            fine_tuned: args
                .fine_tuned_url
                .as_deref()
                .unwrap_or(u)
                .trim_end_matches('/')
                .to_string(),
        }),
        ingest_running: args.ingest,
        out: args.out.clone(),
    };
    let results = tokio::runtime::Runtime::new()?.block_on(runner::run(&config, &plan))?;
    for path in report::write(&results, &args.out)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `hearth bench compare` and the micro-benchmarks behind
/// `scripts/bench-peers.sh` and `scripts/gpu-check.sh`: each prints one JSON
/// line. The models run on the global `--device`.
fn bench_action(action: BenchAction, device: &dyn Fn() -> crate::Result<Device>) -> Result<()> {
    use crate::bench::{micro, report};
    // Only the model benchmarks open the device (a GPU's start is not free).
    let (kind, mut value) = match action {
        BenchAction::Compare { a, b } => {
            print!(
                "{}",
                report::compare(&report::read(&a)?, &report::read(&b)?)
            );
            return Ok(());
        }
        BenchAction::Llm {
            prompt_tokens,
            gen_tokens,
            streams,
            prompt_file,
            kv_cache_type,
            llm,
        } => {
            let text = std::fs::read_to_string(&prompt_file)
                .with_context(|| format!("reading {}", prompt_file.display()))?;
            let kv = kv_cache_type.parse()?;
            let llm = Llm::load(&ModelSource::parse(&llm)?, &device()?)?;
            let mut line = micro::llm(&llm, &text, prompt_tokens, gen_tokens, kv)?;
            if streams > 1 {
                let batched = micro::llm_streams(
                    &llm,
                    &text,
                    prompt_tokens,
                    gen_tokens,
                    usize::from(streams),
                )?;
                let single = line["tg_tok_s"].as_f64().unwrap_or(f64::NAN);
                let aggregate = batched["tg_tok_s"].as_f64().unwrap_or(f64::NAN);
                line["streams"] = streams.into();
                line["streams_tg_tok_s"] = aggregate.into();
                line["streams_step_ms"] = batched["step_ms"].clone();
                line["streams_vs_single"] = (aggregate / single).into();
            }
            ("llm", line)
        }
        BenchAction::Drafts {
            book,
            questions,
            passages,
            max_tokens,
            draft_tokens,
            llm,
        } => {
            let Some(book) = book.or_else(default_book) else {
                bail!("the local Rust book was not found; name it with --book");
            };
            let llm = Llm::load(&ModelSource::parse(&llm)?, &device()?)?;
            let plan = crate::bench::drafts::Plan {
                book: &book,
                questions,
                passages,
                max_tokens,
                draft_tokens,
            };
            ("drafts", crate::bench::drafts::drafts(&llm, &plan)?)
        }
        BenchAction::Grammar {
            llm,
            schema,
            max_tokens,
        } => {
            let schema = match schema {
                Some(path) => serde_json::from_str(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("{} is not JSON", path.display()))?,
                None => micro::PERSON_SCHEMA.clone(),
            };
            let llm = Llm::load(&ModelSource::parse(&llm)?, &device()?)?;
            ("grammar", micro::grammar(&llm, schema, max_tokens)?)
        }
        BenchAction::Embed {
            corpus,
            batch,
            passages,
            queries,
            embedder,
            precision,
        } => {
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            let precision = crate::models::embedder::precision(&precision)?;
            let embedder =
                Embedder::load_with(&ModelSource::parse(&embedder)?, &device()?, precision)?;
            let mut texts = micro::Corpus::read(&corpus)
                .with_context(|| "run `hearth bench corpus` first".to_string())?
                .texts;
            texts.truncate(passages);
            ("embed", micro::embed(&embedder, &texts, batch, queries)?)
        }
        BenchAction::Corpus {
            out,
            mut sources,
            max_tokens,
            embedder,
        } => {
            if sources.is_empty() {
                let Some(book) = default_book() else {
                    bail!("the local Rust documentation was not found; name the sources");
                };
                let html = book.parent().expect("book has a parent").to_path_buf();
                sources = vec![book, html.join("reference")];
            }
            let embedder = Embedder::load(&ModelSource::parse(&embedder)?, &device()?)?;
            (
                "corpus",
                micro::corpus(&embedder, &sources, max_tokens, &out)?,
            )
        }
        BenchAction::SyntheticCorpus {
            out,
            vectors,
            dim,
            clusters,
            seed,
        } => (
            "synthetic-corpus",
            micro::synthetic_corpus(vectors, dim, clusters, seed, &out)?,
        ),
        BenchAction::RandomLlm {
            shape,
            dtype,
            template,
            out,
        } => {
            let params = crate::bench::shapes::write_random_llm(&template, shape, dtype, &out)?;
            (
                "random-llm",
                serde_json::json!({"out": out, "parameters": params, "shape": format!("{shape:?}"), "dtype": format!("{dtype:?}")}),
            )
        }
        BenchAction::RandomAdapter {
            base,
            rank,
            alpha,
            seed,
            out,
        } => {
            let params =
                crate::bench::shapes::write_random_adapter(&base, rank, alpha, seed, &out)?;
            (
                "random-adapter",
                serde_json::json!({"out": out, "parameters": params, "rank": rank, "alpha": alpha}),
            )
        }
        BenchAction::RandomReranker {
            tokenizer,
            seed,
            out,
        } => {
            crate::models::reranker::write_random(&out, &tokenizer, seed)?;
            ("random-reranker", serde_json::json!({"out": out}))
        }
        BenchAction::Hnsw {
            corpus,
            queries,
            ef,
            m,
            ef_construction,
        } => {
            let corpus = micro::Corpus::read(&corpus)
                .with_context(|| "run `hearth bench corpus` first".to_string())?;
            let params = crate::store::index::IndexParams {
                max_connections: m,
                ef_construction,
            };
            ("hnsw", micro::hnsw(&corpus, queries, params, &ef)?)
        }
    };
    value["peer"] = "hearth".into();
    value["kind"] = kind.into();
    value["threads"] = candle_core::utils::get_num_threads().into();
    println!("{value}");
    Ok(())
}
