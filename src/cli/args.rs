//! The command line's arguments: every subcommand and flag (clap).

use crate::bench::results::Scenario;
use crate::config::{ConfigArgs, LlmSlot, Role};
use crate::models::llm::sampling::SamplingParams;
use crate::models::{DEFAULT_EMBEDDER, DEFAULT_LLM};
use crate::topology::Topology;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Log lines as `text` (for people) or `json` (one object per line,
    /// for log shippers: time, level, message, fields, and the request's
    /// span with its id).
    #[arg(long, global = true, env = "HEARTH_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Render a topology for a cluster: `hearth deploy kubernetes`.
    #[command(subcommand)]
    Deploy(DeployCommand),
    /// Measure topologies side by side under one workload; write
    /// results.json, report.md and charts. `hearth bench compare A B`
    /// prints the ratios between two runs.
    Bench(BenchArgs),
    /// Add files (PDF, DOCX, PPTX, HTML, Markdown, text; directories are
    /// walked) to the document store, with no server running on it.
    Ingest(IngestArgs),
    /// Keep a collection in step with a folder: `hearth documents sync DIR
    /// --collection NAME [--url URL] [--watch]`.
    #[command(subcommand)]
    Documents(DocumentsCommand),
    /// API keys with scopes, in the config file: `hearth keys add NAME
    /// --read ops --write ops`, `list`, `remove NAME`.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measure retrieval: hit@1/5/10 and MRR of dense (index and exact),
    /// lexical and hybrid search, on the Rust book's section headings or on
    /// your own queries (--queries).
    EvalRetrieval(EvalArgs),
    /// Embed texts and print their vectors.
    Embed(EmbedArgs),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Talk to the LLM, turn after turn, with its chat template.
    Chat(ChatArgs),
    /// Look at model files: `hearth models inspect FILE.gguf`.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(Subcommand, Debug)]
pub enum DocumentsCommand {
    /// Make a collection hold what a folder holds: new and changed files
    /// are (re)ingested, unchanged ones (same SHA-256) skipped, and
    /// documents whose files are gone deleted. Through a running server
    /// with --url, else straight into the store.
    Sync(SyncArgs),
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The folder (walked for .pdf, .docx, .pptx, .html, .md, .txt).
    pub dir: PathBuf,
    /// The collection it fills (created when missing).
    #[arg(long, default_value = "default")]
    pub collection: String,
    /// A running hearth to sync through (`http://127.0.0.1:8080`): its
    /// queries go on while the folder is ingested.
    #[arg(long)]
    pub url: Option<String>,
    /// The API key for --url.
    #[arg(long, env = "HEARTH_KEY")]
    pub key: Option<String>,
    /// Keep going: sync again whenever a file is added, changed or removed.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch looks at the folder, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new key: it is printed once, and only its SHA-256 is written
    /// to the config file (`[[keys]]`).
    Add {
        /// What the key is called (in `list`, and in the server's logs).
        name: String,
        /// Collections it may search and read (comma-separated; `*`: all).
        #[arg(long, value_delimiter = ',')]
        read: Vec<String>,
        /// Collections it may add documents to and delete from (these it
        /// may read too).
        #[arg(long, value_delimiter = ',')]
        write: Vec<String>,
        /// It may also create and delete collections, load and unload
        /// adapters, and read /info, /metrics and /topology.
        #[arg(long)]
        manage: bool,
        /// The config file to write [default: ./hearth.toml].
        #[arg(long, env = "HEARTH_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
    /// The keys and their scopes (never the keys themselves).
    List {
        #[arg(long, env = "HEARTH_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
    /// Remove a key: requests with it are refused once the server restarts
    /// on the config.
    Remove {
        name: String,
        #[arg(long, env = "HEARTH_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// What a GGUF file holds: architecture, parameters, quantization mix,
    /// context length, RoPE, tokenizer, chat template, and whether hearth
    /// runs it (and on its fast CPU kernels).
    Inspect {
        /// The .gguf file.
        file: std::path::PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
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

#[derive(Subcommand, Debug)]
pub enum DeployCommand {
    /// Kubernetes YAML and a kustomization.yaml for a topology, from the
    /// same plan `hearth up` starts: a Deployment and Service per process,
    /// the config as a ConfigMap, the API keys as a Secret, the store's
    /// claim, probes, autoscalers and a NetworkPolicy (docs/scaling.md).
    Kubernetes(KubernetesArgs),
}

#[derive(Args, Debug)]
pub struct KubernetesArgs {
    #[arg(long, value_enum)]
    pub topology: Topology,
    /// A new or empty directory (or one this command wrote before).
    #[arg(long)]
    pub out: PathBuf,
    /// The image the containers run (scripts/build-image.sh builds it).
    #[arg(long, default_value = concat!("localhost/hearth:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Replicas of a process, by its name or role (`generate=2`,
    /// `rag-generator=3`); repeatable. The `rag` (and `unified`) process
    /// stays at 1: it writes the store.
    #[arg(long, value_parser = name_count)]
    pub replicas: Vec<(String, u32)>,
    /// The autoscalers' ceiling per process.
    #[arg(long, default_value_t = 4)]
    pub max_replicas: u32,
    /// CPUs (and compute threads) of a process, by name or role
    /// (`generate=4`); default 2 for a model process, 1 otherwise.
    #[arg(long, value_parser = name_count)]
    pub cpus: Vec<(String, u32)>,
    /// The local directory the containers see at /models: every model the
    /// config names must lie under it.
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Where /models comes from: a ReadOnlyMany claim of this name...
    #[arg(long, default_value = "hearth-models", conflicts_with_all = ["models_host_path", "models_in_image"])]
    pub models_claim: String,
    /// ...or this directory on the node (single-node clusters, `podman
    /// kube play`)...
    #[arg(long)]
    pub models_host_path: Option<PathBuf>,
    /// ...or the image (the `-models` tag, with the default models inside).
    #[arg(long)]
    pub models_in_image: bool,
    /// Scale with KEDA ScaledObjects querying this Prometheus instead of
    /// HorizontalPodAutoscalers (needs KEDA's CRDs in the cluster).
    #[arg(long, value_name = "PROMETHEUS_URL")]
    pub keda: Option<String>,
    /// The namespace Prometheus scrapes from: let through the NetworkPolicy.
    #[arg(long, default_value = "monitoring")]
    pub metrics_namespace: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn name_count(text: &str) -> Result<(String, u32), String> {
    let (name, count) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=COUNT"))?;
    let count = count
        .parse()
        .map_err(|_| format!("{count:?} in {text:?} is not a count"))?;
    Ok((name.to_string(), count))
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
        /// Also decode this many sequences at once, one batched forward
        /// pass per step (as the scheduler runs them), and report the
        /// aggregate tokens/s and its ratio to the single stream's.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        streams: u16,
        /// The prompt's text (repeated four times, cut to --prompt-tokens).
        #[arg(long, default_value = "scripts/peers/prompt.txt")]
        prompt_file: PathBuf,
        /// How the single stream's cache holds keys and values: f16 or q8_0.
        #[arg(long, default_value = "f16")]
        kv_cache_type: String,
        #[arg(long, env = "HEARTH_LLM", default_value = DEFAULT_LLM)]
        llm: String,
    },
    /// Prompt-lookup decoding against plain decoding on RAG answers about
    /// the Rust book's sections, as a JSON line: decode tokens/s of each,
    /// the speedup, drafts kept, and whether every answer is the same.
    Drafts {
        /// The Rust book's HTML [default: the toolchain's].
        #[arg(long)]
        book: Option<PathBuf>,
        #[arg(long, default_value_t = 24)]
        questions: usize,
        /// Passages per prompt (the RAG pipeline's top_k).
        #[arg(long, default_value_t = 4)]
        passages: usize,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Most tokens drafted per step.
        #[arg(long, default_value_t = 8)]
        draft_tokens: usize,
        #[arg(long, env = "HEARTH_LLM", default_value = DEFAULT_LLM)]
        llm: String,
    },
    /// Constrained decoding's cost on an LLM's vocabulary, as a JSON line:
    /// the token trie's build time, and per generated token the mask's
    /// time against the forward pass's, greedy under a JSON schema (a
    /// person: name, age, languages) or the schema in --schema.
    Grammar {
        #[arg(long, env = "HEARTH_LLM", default_value = DEFAULT_LLM)]
        llm: String,
        /// A JSON schema file.
        #[arg(long)]
        schema: Option<PathBuf>,
        #[arg(long, default_value_t = 96)]
        max_tokens: usize,
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
        /// The CPU encoder's products: auto (bf16 where the CPU has
        /// AVX512-BF16) or f32.
        #[arg(long, default_value = "auto")]
        precision: String,
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
    /// Write a synthetic vector corpus for `bench hnsw` at sizes no local
    /// text reaches quickly: unit vectors clustered around random centres
    /// (as sentence embeddings cluster by topic).
    SyntheticCorpus {
        #[arg(long, default_value = "target/bench-peers/corpus-100k")]
        out: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        vectors: usize,
        /// MiniLM's width by default.
        #[arg(long, default_value_t = 384)]
        dim: usize,
        #[arg(long, default_value_t = 1000)]
        clusters: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write a random-weight llama GGUF of a real model's shape (speed does
    /// not depend on the weights' values), with the template's tokenizer.
    RandomLlm {
        #[arg(long, value_enum)]
        shape: crate::bench::shapes::Shape,
        #[arg(long, value_enum, default_value = "q4-1")]
        dtype: crate::bench::shapes::WeightType,
        /// The GGUF whose tokenizer and chat template are copied.
        #[arg(long, env = "HEARTH_LLM", default_value = DEFAULT_LLM)]
        template: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a random LoRA adapter (a GGUF adapter, as llama.cpp's
    /// convert_lora_to_gguf.py writes them) for a llama-layout base: every
    /// attention and feed-forward matrix of every layer, in f32. For speed
    /// and memory runs (`benches/workloads/adapters.toml`); its answers
    /// mean nothing.
    RandomAdapter {
        /// The base model it is for.
        #[arg(long, env = "HEARTH_LLM", default_value = DEFAULT_LLM)]
        base: PathBuf,
        #[arg(long, default_value_t = 16)]
        rank: usize,
        #[arg(long, default_value_t = 32.0)]
        alpha: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a random-weight cross-encoder (a tiny BERT with one label) to
    /// try the reranking stage with (`--reranker DIR`); its scores mean
    /// nothing.
    RandomReranker {
        /// The tokenizer.json whose vocabulary it takes.
        #[arg(long, default_value = "models/minilm-l6-v2/tokenizer.json")]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
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
    /// The collection the documents go to (created if it does not exist).
    #[arg(long, default_value = "default")]
    pub collection: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The Rust book's HTML directory [default: the toolchain's copy].
    #[arg(long, conflicts_with = "queries")]
    pub book: Option<PathBuf>,
    /// Your own queries instead of the book's, against the documents in the
    /// configured store: JSON Lines of `{"query": "...", "relevant":
    /// ["document id", ...]}`.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Also run hybrid search with other fusion rules (RRF k=10 and 60,
    /// weighted 0.3/0.5/0.7), to choose one.
    #[arg(long)]
    pub fusions: bool,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}
