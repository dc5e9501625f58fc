//! The `hearth` command line: argument definitions and the small amount of
//! glue that turns them into library calls. `main.rs` only parses and calls
//! [`run`].

use crate::engine::{Event, Generator, GeneratorLimits, Prompt};
use crate::models::llm::chat::Message;
use crate::models::llm::sampling::SamplingParams;
use crate::models::{device, Embedder, Llm, ModelSource, DEFAULT_EMBEDDER, DEFAULT_LLM};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::{BufRead, Write};

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
    /// Compute device: cpu, cuda[:N] or metal[:N].
    #[arg(long, global = true, env = "HEARTH_DEVICE", default_value = "cpu")]
    pub device: String,
    /// CPU threads for model compute (default: physical cores).
    #[arg(long, global = true, env = "HEARTH_THREADS")]
    pub threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.global.threads {
        // Read by candle when it builds its thread pools, which it has not yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
    let device = device::open(&cli.global.device)?;
    match cli.command {
        Command::Embed(args) => embed(args, &device),
        Command::Generate(args) => generate(args, &device),
        Command::Chat(args) => chat(args, &device),
    }
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
