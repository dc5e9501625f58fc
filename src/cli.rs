//! The `hearth` command line: argument definitions and the small amount of
//! glue that turns them into library calls. `main.rs` only parses and calls
//! [`run`].

use crate::bench::runner::Scenario;
use crate::config::{Config, ConfigArgs, LlmSlot, Role};
use crate::engine::{Event, Generator, GeneratorLimits, Prompt};
use crate::models::llm::chat::Message;
use crate::models::llm::sampling::SamplingParams;
use crate::models::{device, Embedder, Llm, ModelSource, DEFAULT_EMBEDDER, DEFAULT_LLM};
use crate::pipelines::ingest::DocumentInput;
use crate::pipelines::DocumentPipeline;
use crate::server::{lock_data_dir, Backends, Server, Spec};
use crate::store::chunking::{collect_files, read_file};
use crate::topology::{self, Topology};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "hearth",
    version,
    about = "Local inference: RAG and fine-tuned LLM pipelines, in every topology"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Compute device: cpu, cuda[:N] or metal[:N] [default: the config's, else cpu].
    #[arg(long, global = true, env = "HEARTH_DEVICE")]
    pub device: Option<String>,
    /// CPU threads for model compute (default: physical cores).
    #[arg(long, global = true, env = "HEARTH_THREADS")]
    pub threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: both pipelines (RAG and fine-tuned) on one port.
    Serve(ServeArgs),
    /// Start a whole topology (its processes, from this binary and config),
    /// supervise it, and stop it cleanly on Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Write an nginx config equivalent to the built-in gateway.
    GatewayConfig(GatewayConfigArgs),
    /// Measure topologies side by side under one workload; write
    /// results.json, report.md and charts. `hearth bench compare A B`
    /// prints the ratios between two runs.
    Bench(BenchArgs),
    /// Add files (.txt, .md, .html; directories are walked) to the document
    /// store, with no server running on it.
    Ingest(IngestArgs),
    /// Measure retrieval on the Rust book: hit@1/5/10 of the index and of
    /// exact search, with each section heading as the query.
    EvalRetrieval(EvalArgs),
    /// Embed texts and print their vectors.
    Embed(EmbedArgs),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Talk to the LLM, turn after turn, with its chat template.
    Chat(ChatArgs),
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Texts to embed; `-` reads one text per line from stdin.
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// Embedding model: a directory or hf:owner/name.
    #[arg(long, env = "HEARTH_EMBEDDER", default_value = DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Print a JSON array of vectors instead of a summary per text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LlmArgs {
    /// LLM: a .gguf file, a directory holding one, or hf:owner/name/file.gguf.
    #[arg(long, env = "HEARTH_LLM", default_value = DEFAULT_LLM)]
    pub llm: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args, Debug)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 turns top-k off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl From<&SamplingArgs> for SamplingParams {
    fn from(a: &SamplingArgs) -> Self {
        SamplingParams {
            max_tokens: a.max_tokens,
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
            stop: a.stop.clone(),
            ..SamplingParams::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as one user message through the chat template.
    #[arg(long)]
    pub chat: bool,
    /// Print {"text", "prompt_tokens", "tokens", "timings"} as JSON instead of streaming.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub llm: LlmArgs,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub llm: LlmArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// What this process runs: `all` is the unified server; the others
    /// are the parts of the split topologies (see `hearth up`).
    #[arg(long, value_enum, default_value = "all", env = "HEARTH_ROLE")]
    pub role: Role,
    /// For `--role generate`: which configured LLM to serve.
    #[arg(long, value_enum, default_value = "rag-generator")]
    pub model: LlmSlot,
    /// For `--role gateway`: the `rag` process's URL.
    #[arg(long)]
    pub rag_url: Option<String>,
    /// For `--role gateway`: the `fine-tuned` process's URL.
    #[arg(long)]
    pub fine_tuned_url: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[arg(long, value_enum, default_value = "unified")]
    pub topology: Topology,
    /// Write the deployment (every process's URL and pid, and which URL
    /// serves each pipeline) as JSON to this file, once more when ready.
    #[arg(long)]
    pub endpoints_file: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct GatewayConfigArgs {
    /// Write nginx's config (the only kind so far).
    #[arg(long, required = true)]
    pub nginx: bool,
    /// Directory for `hearth.conf` and `hearth-route.js`.
    #[arg(long, default_value = "target/nginx")]
    pub out: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    /// Topologies to bring up and measure, in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "unified,separated"
    )]
    pub topology: Vec<Topology>,
    /// The workload file.
    #[arg(long, default_value = "benches/workloads/light.toml")]
    pub workload: PathBuf,
    /// Scenarios to run (steady includes the cost figures).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "steady")]
    pub scenario: Vec<Scenario>,
    /// Runs per load level.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Where results.json, report.md and the charts go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Measure a deployment already running here (loopback only) instead
    /// of bringing topologies up; /fine-tuned goes to --fine-tuned-url if given.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, requires = "url")]
    pub fine_tuned_url: Option<String>,
    /// With --url: ingest the workload's corpus into that deployment first.
    #[arg(long, requires = "url")]
    pub ingest: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Subcommand, Debug)]
pub enum BenchAction {
    /// Print B's figures as ratios of A's.
    Compare { a: PathBuf, b: PathBuf },
    /// One LLM speed measurement (prompt processing, greedy decode) as a
    /// JSON line; `scripts/bench-peers.sh` compares it with llama.cpp.
    Llm {
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// The prompt's text (repeated four times, cut to --prompt-tokens).
        #[arg(long, default_value = "scripts/peers/prompt.txt")]
        prompt_file: PathBuf,
        #[arg(long, env = "HEARTH_LLM", default_value = DEFAULT_LLM)]
        llm: String,
    },
    /// One embedding speed measurement (texts/s at a batch size over the
    /// cached corpus' passages, single-query latency) as a JSON line.
    Embed {
        #[arg(long, default_value = "target/bench-peers/corpus")]
        corpus: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Passages embedded (the corpus' first ones).
        #[arg(long, default_value_t = 128)]
        passages: usize,
        /// Single-query embeddings timed (the median is reported).
        #[arg(long, default_value_t = 50)]
        queries: usize,
        #[arg(long, env = "HEARTH_EMBEDDER", default_value = DEFAULT_EMBEDDER)]
        embedder: String,
    },
    /// Chunk and embed the local Rust documentation (the book and the
    /// reference by default) once, for `bench embed` and `bench hnsw`.
    Corpus {
        #[arg(long, default_value = "target/bench-peers/corpus")]
        out: PathBuf,
        /// Directories or files [default: the toolchain's book and reference].
        sources: Vec<PathBuf>,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        #[arg(long, env = "HEARTH_EMBEDDER", default_value = DEFAULT_EMBEDDER)]
        embedder: String,
    },
    /// HNSW build time, recall@10 and single-thread queries/s per
    /// ef_search on the cached corpus, as a JSON line.
    Hnsw {
        #[arg(long, default_value = "target/bench-peers/corpus")]
        corpus: PathBuf,
        /// The corpus' last N vectors are the queries, the rest the base.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
        ef: Vec<usize>,
        #[arg(long, default_value_t = 16)]
        m: usize,
        #[arg(long, default_value_t = 200)]
        ef_construction: usize,
    },
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Files and directories to ingest.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Prepended to every document id (ids are paths relative to the
    /// argument's parent directory, or a file argument's name).
    #[arg(long, default_value = "")]
    pub id_prefix: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The Rust book's HTML directory [default: the toolchain's copy].
    #[arg(long)]
    pub book: Option<PathBuf>,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.global.threads {
        // Read by candle when it builds its thread pools, which it has not yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
    let device_name = cli.global.device.as_deref();
    let load_config = |args: &ConfigArgs| Config::load(args, device_name, cli.global.threads);
    let device = || device::open(device_name.unwrap_or("cpu"));
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(&args.config)?;
            serve(config, spec(&args)?)
        }
        Command::Up(args) => {
            let config = load_config(&args.config)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(topology::up(
                    &config,
                    args.topology,
                    args.endpoints_file.as_deref(),
                ))?;
            Ok(())
        }
        Command::GatewayConfig(args) => {
            let config = load_config(&args.config)?;
            let written = topology::nginx::write(&config, &args.out)?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Bench(args) => bench(args, &load_config),
        Command::Ingest(args) => ingest(load_config(&args.config)?, args),
        Command::EvalRetrieval(args) => eval_retrieval(load_config(&args.config)?, args),
        Command::Embed(args) => embed(args, &device()?),
        Command::Generate(args) => generate(args, &device()?),
        Command::Chat(args) => chat(args, &device()?),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn bench(
    args: BenchArgs,
    load_config: &dyn Fn(&ConfigArgs) -> crate::Result<Config>,
) -> Result<()> {
    use crate::bench::{load::Targets, report, runner};
    if let Some(action) = args.action {
        return bench_action(action);
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
    let results = runtime()?.block_on(runner::run(&config, &plan))?;
    for path in report::write(&results, &args.out)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `hearth bench compare` and the micro-benchmarks behind
/// `scripts/bench-peers.sh`: each prints one JSON line.
fn bench_action(action: BenchAction) -> Result<()> {
    use crate::bench::{micro, report};
    let device = device::open("cpu")?;
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
            prompt_file,
            llm,
        } => {
            let text = std::fs::read_to_string(&prompt_file)
                .with_context(|| format!("reading {}", prompt_file.display()))?;
            let llm = Llm::load(&ModelSource::parse(&llm)?, &device)?;
            ("llm", micro::llm(&llm, &text, prompt_tokens, gen_tokens)?)
        }
        BenchAction::Embed {
            corpus,
            batch,
            passages,
            queries,
            embedder,
        } => {
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            let embedder = Embedder::load(&ModelSource::parse(&embedder)?, &device)?;
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
            let embedder = Embedder::load(&ModelSource::parse(&embedder)?, &device)?;
            (
                "corpus",
                micro::corpus(&embedder, &sources, max_tokens, &out)?,
            )
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

fn spec(args: &ServeArgs) -> Result<Spec> {
    let gateway = args.role == Role::Gateway;
    if gateway && args.rag_url.is_none() && args.fine_tuned_url.is_none() {
        bail!("--role gateway needs --rag-url and/or --fine-tuned-url");
    }
    if !gateway && (args.rag_url.is_some() || args.fine_tuned_url.is_some()) {
        bail!("--rag-url and --fine-tuned-url are for --role gateway");
    }
    let url = |u: &Option<String>| u.as_ref().map(|u| u.trim_end_matches('/').to_string());
    Ok(Spec {
        role: args.role,
        model: args.model,
        backends: Backends {
            rag: url(&args.rag_url),
            fine_tuned: url(&args.fine_tuned_url),
        },
    })
}

fn serve(config: Config, spec: Spec) -> Result<()> {
    runtime()?.block_on(async move {
        let server = Server::bind(config, spec).await?;
        // On stdout, for scripts and tests that wait for it.
        println!("hearth listening on http://{}", server.local_addr());
        server.run().await?;
        Ok(())
    })
}

/// The store, for commands that write it directly (no server may be running
/// on it: the data directory is locked).
struct DirectStore {
    docs: DocumentPipeline,
    _lock: std::fs::File,
}

impl DirectStore {
    fn open(config: &Config) -> Result<Self> {
        let lock = lock_data_dir(&config.data_dir)?;
        let device = device::open(&config.device)?;
        let embedder = Embedder::load(&ModelSource::parse(&config.models.embedder)?, &device)?;
        Ok(Self {
            docs: DocumentPipeline::open_local(config, Arc::new(embedder))?,
            _lock: lock,
        })
    }
}

fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
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

fn ingest(config: Config, args: IngestArgs) -> Result<()> {
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
    let direct = DirectStore::open(&config)?;
    let started = std::time::Instant::now();
    let bar = progress_bar(files.len(), "files");
    let chunks = runtime()?.block_on(async {
        use futures_util::TryStreamExt;
        let ingestor = &direct.docs.ingestor;
        let bar = &bar;
        let done = ingestor.ingest_all(files, |(id, path): (String, PathBuf)| {
            let (text, kind) = read_file(&path)?;
            if text.trim().is_empty() {
                bar.println(format!("skipped {} (no text)", path.display()));
                return Ok(None);
            }
            Ok(Some(DocumentInput {
                id: Some(id),
                text,
                source: Some(path.display().to_string()),
                metadata: serde_json::json!({ "path": path.display().to_string() }),
                kind,
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

fn default_book() -> Option<PathBuf> {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let root = String::from_utf8(out.stdout).ok()?;
    let book = Path::new(root.trim()).join("share/doc/rust/html/book");
    book.is_dir().then_some(book)
}

fn eval_retrieval(config: Config, args: EvalArgs) -> Result<()> {
    use crate::bench::retrieval;
    let book = match args.book.or_else(default_book) {
        Some(b) => b,
        None => bail!("the Rust book was not found; give --book DIR"),
    };
    let sections = retrieval::book_sections(&book)?;
    let direct = DirectStore::open(&config)?;
    let rt = runtime()?;
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
    let headings: Vec<String> = sections.iter().map(|s| s.heading.clone()).collect();
    let vectors = rt.block_on(direct.docs.embed.embed(headings))?;
    let queries: Vec<(Vec<f32>, String)> = vectors
        .into_iter()
        .zip(&sections)
        .map(|(v, s)| (v, s.id.clone()))
        .collect();
    let report = retrieval::evaluate(&direct.docs.store, &queries, config.retrieval.ef_search)?;
    println!(
        "retrieval on {}: {} queries (section headings) over {} chunks, ef_search {}",
        book.display(),
        report.queries,
        report.chunks,
        report.ef_search
    );
    println!("| search | hit@1 | hit@5 | hit@10 | ms/query |");
    println!("|---|---|---|---|---|");
    for (name, h, ms) in [
        ("HNSW", &report.hnsw, report.hnsw_query_ms),
        ("exact", &report.exact, report.exact_query_ms),
    ] {
        println!(
            "| {name} | {:.1}% | {:.1}% | {:.1}% | {ms:.2} |",
            h.hit_at_1 * 100.0,
            h.hit_at_5 * 100.0,
            h.hit_at_10 * 100.0
        );
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn embed(args: EmbedArgs, device: &candle_core::Device) -> Result<()> {
    let mut texts = Vec::new();
    for t in args.texts {
        if t == "-" {
            for line in std::io::stdin().lock().lines() {
                texts.push(line.context("reading stdin")?);
            }
        } else {
            texts.push(t);
        }
    }
    let embedder = Embedder::load(&ModelSource::parse(&args.embedder)?, device)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let vectors = embedder.embed(&refs)?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &vectors)?;
        writeln!(out)?;
    } else {
        for (text, v) in texts.iter().zip(&vectors) {
            let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
            writeln!(
                out,
                "[{}, ...] ({} dims)  {}",
                head.join(", "),
                v.len(),
                text
            )?;
        }
    }
    eprintln!(
        "embedded {} texts in {:.1} ms ({:.1} texts/s)",
        texts.len(),
        elapsed * 1e3,
        texts.len() as f64 / elapsed
    );
    Ok(())
}

fn load_llm(args: &LlmArgs, device: &candle_core::Device) -> Result<Generator> {
    let llm = Llm::load(&ModelSource::parse(&args.llm)?, device)?;
    Ok(Generator::spawn(llm, GeneratorLimits::default()))
}

fn generate(args: GenerateArgs, device: &candle_core::Device) -> Result<()> {
    let generator = load_llm(&args.llm, device)?;
    let prompt = if args.chat {
        Prompt::Chat(vec![Message::new("user", args.prompt)])
    } else {
        Prompt::Text(args.prompt)
    };
    let params = SamplingParams::from(&args.llm.sampling);
    let mut stream = generator.submit(prompt, params)?;
    let mut out = std::io::stdout().lock();
    while let Some(event) = stream.blocking_next() {
        match event {
            Event::Started { .. } => {}
            Event::Text(t) if !args.json => {
                out.write_all(t.as_bytes())?;
                out.flush()?;
            }
            Event::Text(_) => {}
            Event::Error(e) => return Err(e.into()),
            Event::Done(c) => {
                if args.json {
                    let json = serde_json::json!({
                        "text": c.text,
                        "prompt_tokens": c.prompt_tokens,
                        "tokens": c.tokens,
                        "finish_reason": c.finish_reason,
                        "timings": c.timings,
                    });
                    writeln!(out, "{json}")?;
                } else {
                    writeln!(out)?;
                    let t = &c.timings;
                    eprintln!(
                        "prompt: {} tokens, {:.1} tokens/s | generated: {} tokens, {:.1} tokens/s | first token after {:.0} ms",
                        c.prompt_tokens.len(),
                        t.prompt_tokens_per_s,
                        c.tokens.len(),
                        t.tokens_per_s,
                        t.ttft_ms
                    );
                }
                return Ok(());
            }
        }
    }
    bail!("the generation worker stopped unexpectedly")
}

fn chat(args: ChatArgs, device: &candle_core::Device) -> Result<()> {
    let generator = load_llm(&args.llm, device)?;
    let params = SamplingParams::from(&args.llm.sampling);
    let mut messages: Vec<Message> = args
        .system
        .into_iter()
        .map(|s| Message::new("system", s))
        .collect();
    eprintln!(
        "hearth chat with {} (empty line or Ctrl-D to quit)",
        generator.llm().name
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(Message::new("user", line.trim_end()));
        let mut stream = generator.submit(Prompt::Chat(messages.clone()), params.clone())?;
        let mut out = std::io::stdout().lock();
        let reply = loop {
            match stream.blocking_next() {
                Some(Event::Text(t)) => {
                    out.write_all(t.as_bytes())?;
                    out.flush()?;
                }
                Some(Event::Started { .. }) => {}
                Some(Event::Done(c)) => break c.text,
                Some(Event::Error(e)) => {
                    // e.g. the conversation outgrew the context: say so, drop the turn.
                    eprintln!("error: {e}");
                    messages.pop();
                    break String::new();
                }
                None => bail!("the generation worker stopped unexpectedly"),
            }
        };
        writeln!(out)?;
        if !reply.is_empty() {
            messages.push(Message::new("assistant", reply));
        }
    }
}
