//! `hearth bench drafts`: what prompt-lookup decoding gives on RAG answers
//! about the Rust book, against plain decoding on the same model.
//!
//! Each question asks about one section of the book; its passages are that
//! section's first paragraphs, cut to the size of the store's chunks, in
//! the RAG pipeline's default system prompt and template, so the prompt is
//! what `/rag` sends when retrieval finds the section. Every question runs
//! greedy on two workers of one model, one plain and one drafting (in
//! alternating order, so the machine's drift falls on both), and the
//! answers must be the same tokens.

use super::retrieval::book_sections;
use crate::config::{DEFAULT_PROMPT_TEMPLATE, DEFAULT_SYSTEM_PROMPT};
use crate::engine::{Completion, Generator, GeneratorLimits, Prompt};
use crate::error::{Error, Result};
use crate::models::llm::message::Message;
use crate::models::llm::sampling::SamplingParams;
use crate::models::Llm;
use serde_json::{json, Value};
use std::path::Path;

/// Characters per passage: about the store's 256-token chunks.
const PASSAGE_CHARS: usize = 1_000;

/// What to run.
pub struct Plan<'a> {
    pub book: &'a Path,
    pub questions: usize,
    pub passages: usize,
    pub max_tokens: usize,
    pub draft_tokens: usize,
}

/// The RAG prompt about one section: its heading as the question, its
/// first paragraphs as up to `passages` passages.
fn prompt(heading: &str, text: &str, passages: usize) -> Result<Prompt> {
    let mut cut: Vec<String> = Vec::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let full = cut.len() == passages;
        match cut.last_mut() {
            Some(last) if last.len() + para.len() < PASSAGE_CHARS => {
                last.push_str("\n\n");
                last.push_str(para);
            }
            _ if full => break,
            _ => cut.push(para.chars().take(2 * PASSAGE_CHARS).collect()),
        }
    }
    let passages: Vec<Value> = cut.iter().map(|t| json!({ "text": t })).collect();
    let env = minijinja::Environment::new();
    let question = format!("What does the Rust book say about {heading}?");
    let user = env
        .render_str(
            DEFAULT_PROMPT_TEMPLATE,
            minijinja::context! { question => question, passages => passages },
        )
        .map_err(|e| Error::Model(format!("the RAG template: {e}")))?;
    Ok(Prompt::chat(vec![
        Message::new("system", DEFAULT_SYSTEM_PROMPT),
        Message::new("user", user),
    ]))
}

fn run(g: &Generator, prompt: Prompt, max_tokens: usize) -> Result<Completion> {
    let params = SamplingParams {
        max_tokens,
        temperature: 0.0,
        ..Default::default()
    };
    let stream = g.submit_blocking(prompt, params)?;
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::Model(format!("a runtime for the benchmark: {e}")))?
        .block_on(stream.finish())
}

/// Decode tokens and milliseconds summed over answers (tokens after the
/// first, over the time after the first, as llama.cpp counts decode).
#[derive(Default)]
struct Decode {
    tokens: usize,
    ms: f64,
}

impl Decode {
    fn add(&mut self, c: &Completion) {
        self.tokens += c.tokens.len().saturating_sub(1);
        self.ms += c.timings.generate_ms;
    }
    fn tok_s(&self) -> f64 {
        self.tokens as f64 * 1e3 / self.ms.max(1e-9)
    }
}

/// The measurement, as one JSON line's fields.
pub fn drafts(llm: &Llm, plan: &Plan) -> Result<Value> {
    let sections: Vec<_> = book_sections(plan.book)?
        .into_iter()
        .filter(|s| s.text.len() > 400)
        .collect();
    if sections.is_empty() || plan.questions == 0 {
        return Err(Error::InvalidInput(format!(
            "no sections with text in {}",
            plan.book.display()
        )));
    }
    // Questions spread evenly over the book.
    let step = (sections.len() / plan.questions).max(1);
    let chosen: Vec<_> = sections.iter().step_by(step).take(plan.questions).collect();
    let limits = |draft_tokens| GeneratorLimits {
        max_running: 1,
        prefix_cache_bytes: 0,
        draft_tokens,
        ..GeneratorLimits::default()
    };
    let plain = Generator::spawn(llm.clone(), limits(0));
    let drafting = Generator::spawn(llm.clone(), limits(plan.draft_tokens));
    let (mut a, mut b) = (Decode::default(), Decode::default());
    let (mut drafted, mut kept, mut same, mut ratios) = (0, 0, 0, Vec::new());
    for (i, section) in chosen.iter().enumerate() {
        let prompt = prompt(&section.heading, &section.text, plan.passages)?;
        let (want, got) = if i % 2 == 0 {
            let want = run(&plain, prompt.clone(), plan.max_tokens)?;
            (want, run(&drafting, prompt, plan.max_tokens)?)
        } else {
            let got = run(&drafting, prompt.clone(), plan.max_tokens)?;
            (run(&plain, prompt, plan.max_tokens)?, got)
        };
        same += usize::from(want.tokens == got.tokens);
        a.add(&want);
        b.add(&got);
        drafted += got.timings.draft_tokens;
        kept += got.timings.draft_tokens_kept;
        if want.timings.tokens_per_s > 0.0 {
            let ratio = got.timings.tokens_per_s / want.timings.tokens_per_s;
            eprintln!(
                "{:>6.3} {:>4} tokens, {:>4} drafted, {:>4} kept: {}",
                ratio,
                got.tokens.len(),
                got.timings.draft_tokens,
                got.timings.draft_tokens_kept,
                section.heading
            );
            ratios.push(ratio);
        }
    }
    ratios.sort_by(f64::total_cmp);
    let quantile = |q: f64| ratios.get(((ratios.len() as f64 - 1.0) * q).round() as usize);
    Ok(json!({
        "model": llm.name,
        "questions": chosen.len(),
        "identical": same,
        "max_tokens": plan.max_tokens,
        "draft_tokens": plan.draft_tokens,
        "answer_tokens_mean": a.tokens as f64 / chosen.len() as f64 + 1.0,
        "plain_tg_tok_s": a.tok_s(),
        "draft_tg_tok_s": b.tok_s(),
        "speedup": b.tok_s() / a.tok_s(),
        "speedup_min": quantile(0.0),
        "speedup_p50": quantile(0.5),
        "drafted": drafted,
        "kept": kept,
        "kept_share": kept as f64 / drafted.max(1) as f64,
        "kept_per_answer_token": kept as f64 / b.tokens.max(1) as f64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sections_passages_are_its_first_paragraphs_in_the_rag_template() {
        let text = format!(
            "{}\n\n{}\n\nshort\n\n{}",
            "a".repeat(900),
            "b".repeat(300),
            "c".repeat(2500)
        );
        let Prompt::Chat { messages, .. } = prompt("Enums", &text, 2).unwrap() else {
            panic!("a chat prompt")
        };
        assert_eq!(messages[0].content, DEFAULT_SYSTEM_PROMPT);
        let user = &messages[1].content;
        assert!(user.starts_with("Context:\n"), "{user}");
        assert!(user.ends_with("Question: What does the Rust book say about Enums?"));
        // "a" alone (with "b" it passes 1,000 characters), then "b" and
        // "short" together; the third passage is left out.
        assert!(user.contains(&format!(
            "{}\n{}\n\nshort\n",
            "a".repeat(900),
            "b".repeat(300)
        )));
        assert!(!user.contains("ccc"));
    }
}
