//! The models on their own, without a server: `hearth embed`,
//! `hearth generate`, `hearth chat` and `hearth models inspect`.

use super::args::{ChatArgs, EmbedArgs, GenerateArgs, LlmArgs};
use crate::engine::{Event, Generator, GeneratorLimits, Prompt};
use crate::models::llm::message::Message;
use crate::models::llm::sampling::SamplingParams;
use crate::models::{Embedder, Llm, ModelSource};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};

pub(super) fn embed(args: EmbedArgs, device: &candle_core::Device) -> Result<()> {
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

pub(super) fn generate(args: GenerateArgs, device: &candle_core::Device) -> Result<()> {
    let generator = load_llm(&args.llm, device)?;
    let prompt = if args.chat {
        Prompt::chat(vec![Message::new("user", args.prompt)])
    } else {
        Prompt::Text(args.prompt)
    };
    let params = SamplingParams::from(&args.llm.sampling);
    let mut stream = generator.submit_blocking(prompt, params)?;
    let mut out = std::io::stdout().lock();
    while let Some(event) = stream.blocking_next() {
        match event {
            Event::Started { .. } | Event::Logprobs(_) => {}
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

pub(super) fn chat(args: ChatArgs, device: &candle_core::Device) -> Result<()> {
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
        let mut stream =
            generator.submit_blocking(Prompt::chat(messages.clone()), params.clone())?;
        let mut out = std::io::stdout().lock();
        let reply = loop {
            match stream.blocking_next() {
                Some(Event::Text(t)) => {
                    out.write_all(t.as_bytes())?;
                    out.flush()?;
                }
                Some(Event::Started { .. } | Event::Logprobs(_)) => {}
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

pub(super) fn inspect(file: &std::path::Path, json: bool) -> Result<()> {
    let summary = crate::models::llm::inspect::inspect(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(())
}
