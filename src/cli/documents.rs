//! The document store without a server: `hearth ingest` and
//! `hearth eval-retrieval`.

use super::args::{EvalArgs, IngestArgs};
use crate::config::Config;
use crate::models::{device, Embedder, ModelSource};
use crate::pipelines::ingest::DocumentInput;
use crate::pipelines::DocumentPipeline;
use crate::store::extract::{collect_files, read_file};
use crate::store::lock_data_dir;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store, for commands that write it directly (no server may be running
/// on it: the data directory is locked).
pub(super) struct DirectStore {
    pub(super) docs: DocumentPipeline,
    _lock: std::fs::File,
}

impl DirectStore {
    pub(super) fn open(config: &Config) -> Result<Self> {
        let lock = lock_data_dir(&config.data_dir)?;
        let device = device::open(&config.device)?;
        let precision = crate::models::embedder::precision(&config.models.embedder_precision)?;
        let embedder = Embedder::load_with(
            &ModelSource::parse(&config.models.embedder)?,
            &device,
            precision,
        )?;
        Ok(Self {
            docs: DocumentPipeline::open_local(config, Arc::new(embedder))?,
            _lock: lock,
        })
    }
}

pub(super) fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Document id for `file`, found under the argument `arg`: a directory's
/// files are named from the directory's own name down, a relative file
/// argument as given, an absolute one by its file name.
fn document_id(prefix: &str, arg: &Path, file: &Path) -> String {
    let rel = if arg.is_dir() {
        file.strip_prefix(arg.parent().unwrap_or(Path::new("")))
            .unwrap_or(file)
    } else if arg.is_relative() {
        arg
    } else {
        Path::new(file.file_name().unwrap_or(file.as_os_str()))
    };
    format!("{prefix}{}", rel.to_string_lossy())
}

pub(super) fn ingest(config: Config, args: IngestArgs) -> Result<()> {
    let mut files = Vec::new();
    for arg in &args.paths {
        for file in collect_files(std::slice::from_ref(arg))? {
            files.push((document_id(&args.id_prefix, arg, &file), file));
        }
    }
    if files.is_empty() {
        bail!("no .txt, .md or .html files under the given paths");
    }
    let mut seen = std::collections::HashMap::new();
    for (id, path) in &files {
        if let Some(other) = seen.insert(id.as_str(), path) {
            bail!(
                "{} and {} would both get the document id {id:?}; ingest them separately with different --id-prefix values",
                other.display(),
                path.display()
            );
        }
    }
    crate::store::check_collection_name(&args.collection)?;
    let direct = DirectStore::open(&config)?;
    direct.docs.store.create_collection(&args.collection)?;
    let collection = args.collection.clone();
    let started = std::time::Instant::now();
    let bar = progress_bar(files.len(), "files");
    let chunks = tokio::runtime::Runtime::new()?.block_on(async {
        use futures_util::TryStreamExt;
        let ingestor = &direct.docs.ingestor;
        let bar = &bar;
        let done = ingestor.ingest_all(files, |(id, path): (String, PathBuf)| {
            let (content, hash) = match read_file(&path) {
                Ok(read) => read,
                Err(crate::error::Error::Unreadable(why)) => {
                    bar.println(format!("skipped {}: {why}", path.display()));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            Ok(Some(DocumentInput {
                collection: collection.clone(),
                id: Some(id),
                source: Some(path.display().to_string()),
                metadata: serde_json::json!({ "path": path.display().to_string() }),
                title: None,
                hash: Some(hash),
                content,
            }))
        });
        let mut done = std::pin::pin!(done);
        let mut chunks = 0;
        while let Some(ingested) = done.try_next().await? {
            chunks += ingested.map_or(0, |d| d.chunks);
            bar.inc(1);
        }
        Ok::<_, anyhow::Error>(chunks)
    })?;
    bar.finish_and_clear();
    direct.docs.store.flush()?;
    let secs = started.elapsed().as_secs_f64();
    let stats = direct.docs.store.stats()?;
    eprintln!(
        "ingested {} files as {chunks} chunks in {secs:.1} s ({:.1} chunks/s); the store now holds {} documents, {} chunks",
        bar.length().unwrap_or(0),
        chunks as f64 / secs,
        stats.documents,
        stats.chunks
    );
    Ok(())
}

pub(super) fn default_book() -> Option<PathBuf> {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let root = String::from_utf8(out.stdout).ok()?;
    let book = Path::new(root.trim()).join("share/doc/rust/html/book");
    book.is_dir().then_some(book)
}

pub(super) fn eval_retrieval(config: Config, args: EvalArgs) -> Result<()> {
    use crate::bench::retrieval::{self, EvalQuery, Method};
    use crate::store::{Fusion, SearchMode, SearchSettings};
    let direct = DirectStore::open(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    // The queries and what answers them: the user's file, or the book's
    // section headings (its sections ingested first, once).
    let (source, queries): (String, Vec<(String, Vec<String>)>) = match &args.queries {
        Some(path) => (path.display().to_string(), retrieval::read_queries(path)?),
        None => {
            let book = match args.book.clone().or_else(default_book) {
                Some(b) => b,
                None => bail!("the Rust book was not found; give --book DIR (or --queries FILE)"),
            };
            let sections = retrieval::book_sections(&book)?;
            let bar = progress_bar(sections.len(), "sections");
            let started = std::time::Instant::now();
            let chunks = rt.block_on(retrieval::ingest_sections(
                &direct.docs.ingestor,
                &direct.docs.store,
                &sections,
                |n| bar.inc(n as u64),
            ))?;
            bar.finish_and_clear();
            if chunks > 0 {
                eprintln!(
                    "ingested {} sections as {chunks} chunks in {:.0} s",
                    sections.len(),
                    started.elapsed().as_secs_f64()
                );
                direct.docs.store.flush()?;
            }
            let queries = sections
                .iter()
                .map(|s| (s.heading.clone(), vec![s.id.clone()]))
                .collect();
            (format!("{} (section headings)", book.display()), queries)
        }
    };
    let texts: Vec<String> = queries.iter().map(|(q, _)| q.clone()).collect();
    let vectors = rt.block_on(direct.docs.embed.embed(texts))?;
    let queries: Vec<EvalQuery> = queries
        .into_iter()
        .zip(vectors)
        .map(|((text, relevant), vector)| EvalQuery {
            text,
            vector,
            relevant,
        })
        .collect();
    let configured = SearchSettings::of(&config.retrieval);
    let with = |fusion| SearchSettings {
        fusion,
        ..configured
    };
    let mut methods = vec![
        (SearchMode::Dense, true, configured),
        (SearchMode::Dense, false, configured),
        (SearchMode::Lexical, false, configured),
        (SearchMode::Hybrid, false, configured),
    ];
    if args.fusions {
        for fusion in [
            Fusion::Rrf { k: 10.0 },
            Fusion::Rrf { k: 60.0 },
            Fusion::Weighted { dense_weight: 0.3 },
            Fusion::Weighted { dense_weight: 0.5 },
            Fusion::Weighted { dense_weight: 0.7 },
        ] {
            if fusion != configured.fusion {
                methods.push((SearchMode::Hybrid, false, with(fusion)));
            }
        }
    }
    let mut methods: Vec<Method> = methods
        .into_iter()
        .map(|(mode, exact, settings)| Method {
            mode,
            exact,
            settings,
            rerank: None,
        })
        .collect();
    let reranker = if config.models.reranker.is_empty() {
        None
    } else {
        let source = crate::models::ModelSource::parse(&config.models.reranker)?;
        let device = crate::models::device::open(&config.device)?;
        methods.push(Method {
            mode: SearchMode::Hybrid,
            exact: false,
            settings: configured,
            rerank: Some(config.retrieval.rerank_candidates),
        });
        Some(crate::models::Reranker::load(&source, &device)?)
    };
    let report = retrieval::evaluate(&direct.docs.store, &queries, &methods, reranker.as_ref())?;
    println!(
        "retrieval on {source}: {} queries over {} chunks (configured: {} search)",
        report.queries,
        report.chunks,
        config.retrieval.mode.name()
    );
    println!("| search | hit@1 | hit@5 | hit@10 | MRR@10 | ms/query |");
    println!("|---|---|---|---|---|---|");
    for m in &report.methods {
        let h = &m.hits;
        println!(
            "| {} | {:.1}% | {:.1}% | {:.1}% | {:.3} | {:.2} |",
            m.method,
            h.hit_at_1 * 100.0,
            h.hit_at_5 * 100.0,
            h.hit_at_10 * 100.0,
            h.mrr_at_10,
            m.ms_per_query
        );
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
