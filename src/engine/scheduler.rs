//! The generation scheduler: what one model's worker thread computes at
//! each step (continuous batching).
//!
//! Every step forms one batch: the next token of every decoding sequence,
//! then chunks of the prompts under way (oldest first, at most
//! `prefill_chunk` tokens each), up to `max_batch_tokens` in all, and runs
//! it as **one forward pass** ([`Llama::forward_batch`]), so the weights are
//! read once per step rather than once per sequence. Each sequence keeps its
//! own KV cache and positions. New requests join between steps (up to
//! `max_running` sequences); finished and cancelled ones leave at once and
//! free their cache. Decoding sequences run every step and prompts advance
//! in arrival order, so a long RAG prompt neither stalls the streams already
//! running nor waits behind later arrivals. A prompt that begins like a
//! recent one starts from a copy of its keys and values ([`PrefixCache`]).
//! Each sequence may carry a LoRA adapter (on its cache: the batch shares
//! the base), an output format's grammar (its mask applied to the logits
//! before sampling) and a request for log-probabilities.
//!
//! With prompt-lookup decoding on (`generation.draft_tokens`), a sequence
//! that decodes alone feeds, after its sampled token, the tokens that followed the
//! same few tokens earlier in its text ([`draft`]); it samples from each
//! row in turn and keeps going while the token sampled is the one drafted,
//! then forgets the cache positions of the drafts it did not keep. Every
//! token is still sampled from the logits plain decoding gives, in the same
//! order, so the output is the same; a step makes several tokens where the
//! drafts hold.
//!
//! [`draft`]: super::draft
//! [`Llama::forward_batch`]: crate::models::llm::llama::Llama::forward_batch

use super::draft::{self, DraftLength};
use super::limits::{GeneratorLimits, GeneratorStats};
use super::prefix::PrefixCache;
use super::request::{Completion, Event, FinishReason, Prepared, Request, Timings, TokenLogprob};
use crate::error::{Error, Result};
use crate::models::llm::grammar::Constraint;
use crate::models::llm::llama::{KvCache, Segment};
use crate::models::llm::sampling::{self, Sampler};
use crate::models::llm::stream::{StopCheck, StopMatcher, TextDecoder};
use crate::models::Llm;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// One model's worker: owns the running sequences and forms each step.
pub(super) struct Scheduler {
    llm: Llm,
    limits: GeneratorLimits,
    requests: mpsc::Receiver<Request>,
    /// In admission order, which is the order prompts advance in.
    running: Vec<Sequence>,
    prefixes: PrefixCache,
    stats: Arc<GeneratorStats>,
}

/// How many tokens of which running sequence go into one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Planned {
    index: usize,
    tokens: usize,
}

/// A step's batch: every decoding sequence's next token (and its drafts),
/// then prompt chunks in arrival order, under the token budget.
/// `pending[i]` is what sequence `i` still has to feed (1 when it decodes,
/// plus its drafts) and `decoding[i]` whether its prompt is done. Decodes
/// are never left out: the limits keep `max_running <= max_batch_tokens`,
/// and drafts are sized to what the budget leaves.
fn plan(pending: &[usize], decoding: &[bool], limits: &GeneratorLimits) -> Vec<Planned> {
    let mut budget = limits.max_batch_tokens.max(1);
    let mut batch = Vec::with_capacity(pending.len());
    for (index, _) in decoding.iter().enumerate().filter(|(_, d)| **d) {
        let tokens = pending[index].max(1);
        batch.push(Planned { index, tokens });
        budget = budget.saturating_sub(tokens);
    }
    for (index, &left) in pending.iter().enumerate() {
        if decoding[index] || left == 0 {
            continue;
        }
        // A prompt always advances when nothing else runs.
        if budget == 0 && !batch.is_empty() {
            break;
        }
        let tokens = left.min(limits.prefill_chunk.max(1)).min(budget.max(1));
        batch.push(Planned { index, tokens });
        budget = budget.saturating_sub(tokens);
    }
    batch
}

/// Count a sequence that stopped before its end: at its deadline (the
/// HTTP layer drops a request at the same instant, so a closed channel
/// past the deadline counts here too), or because its client went away.
fn stopped(stats: &GeneratorStats, request: &Request) {
    if request.within_deadline().is_err() {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::generation_ended("deadline");
    } else {
        stats.cancelled.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::generation_ended("cancelled");
    }
}

impl Scheduler {
    pub fn new(
        llm: Llm,
        mut limits: GeneratorLimits,
        requests: mpsc::Receiver<Request>,
        stats: Arc<GeneratorStats>,
    ) -> Self {
        if limits.draft_tokens > 0 && !llm.model.rows_are_independent() {
            // Drafts verified in a pass of another size could move a
            // near-tie: off where the rows are not computed independently.
            tracing::info!(
                model = %llm.name,
                "prompt-lookup decoding is off: this device's batched products may round differently"
            );
            limits.draft_tokens = 0;
        }
        if !llm.model.supports_kv_type(limits.kv_cache) {
            tracing::warn!(
                model = %llm.name,
                "kv_cache_type {:?} is not supported for this model on this device: keys and values stay f16",
                limits.kv_cache
            );
            limits.kv_cache = Default::default();
        }
        Self {
            prefixes: PrefixCache::new(limits.prefix_cache_bytes),
            llm,
            limits,
            requests,
            running: Vec::new(),
            stats,
        }
    }

    pub fn run(mut self) {
        loop {
            if self.running.is_empty() {
                match self.requests.blocking_recv() {
                    Some(r) => self.admit(r),
                    None => return,
                }
            }
            while self.running.len() < self.limits.max_running.max(1) {
                match self.requests.try_recv() {
                    Ok(r) => self.admit(r),
                    Err(_) => break,
                }
            }
            let batch = self.step();
            self.stats
                .active
                .store(self.running.len(), Ordering::Relaxed);
            crate::telemetry::scheduler_step(
                &self.llm.name,
                batch,
                self.running.len(),
                self.requests.len(),
            );
        }
    }

    /// One forward pass over the planned batch, then sampling for every
    /// sequence whose logits came back; the number of sequences in it.
    fn step(&mut self) -> usize {
        let stats = &self.stats.clone();
        self.running.retain(|s| {
            if let Err(e) = s.request.within_deadline() {
                // Past its deadline: the client hears why, the slot is freed.
                let _ = s.request.events.send(Event::Error(e));
            } else if !s.request.events.is_closed() {
                return true;
            }
            stopped(stats, &s.request);
            false
        });
        let decoding: Vec<bool> = self.running.iter().map(Sequence::decoding).collect();
        let drafted = self.draft();
        let pending: Vec<usize> = self.running.iter().map(Sequence::pending).collect();
        let batch = plan(&pending, &decoding, &self.limits);
        if batch.is_empty() {
            return 0;
        }
        let mut chosen: Vec<Option<usize>> = vec![None; self.running.len()];
        for p in &batch {
            chosen[p.index] = Some(p.tokens);
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(batch.len());
        let mut members = Vec::with_capacity(batch.len());
        for (i, seq) in self.running.iter_mut().enumerate() {
            if let Some(n) = chosen[i] {
                let from = seq.cache.len();
                // A decoding sequence wants every row's logits (one row
                // unless it drafted); a prompt only its last, at its end.
                let logits = match decoding[i] {
                    true => n,
                    false => usize::from(from + n == seq.tokens.len()),
                };
                members.push(i);
                segments.push(Segment {
                    tokens: &seq.tokens[from..from + n],
                    cache: &mut seq.cache,
                    logits,
                });
            }
        }
        let result = self.llm.model.forward_batch(&mut segments);
        drop(segments);
        let mut ended = vec![None; self.running.len()];
        match result {
            Ok(outputs) => {
                for (i, logits) in members.into_iter().zip(outputs) {
                    if let Some(mut logits) = logits {
                        let seq = &mut self.running[i];
                        if !decoding[i] {
                            // The prompt is done: keep it for later prompts
                            // that begin the same way.
                            self.prefixes
                                .insert(&seq.tokens[..seq.prompt_len], &seq.cache);
                        }
                        ended[i] = seq.verify(&self.llm, &mut logits, drafted[i], stats);
                    }
                }
            }
            Err(e) => {
                // A fault in the shared pass ends every sequence in it.
                for i in members {
                    let _ = self.running[i]
                        .request
                        .events
                        .send(Event::Error(Error::Model(format!(
                            "generation failed: {e}"
                        ))));
                    ended[i] = Some(Step::Failed);
                }
            }
        }
        let mut i = 0;
        self.running.retain(|s| {
            let end = ended[i];
            i += 1;
            match end {
                None => true,
                Some(Step::Completed) => {
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Some(Step::Cancelled) => {
                    stopped(stats, &s.request);
                    false
                }
                Some(Step::Failed) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::generation_ended("failed");
                    false
                }
            }
        });
        batch.len()
    }

    /// Append drafted tokens (prompt-lookup decoding) to a sequence that
    /// decodes alone, within its draft length, its `max_tokens` and the
    /// step's token budget; how many each sequence drafted. Beside other
    /// rows a draft costs more than it saves ([`draft`] says why).
    fn draft(&mut self) -> Vec<usize> {
        let mut drafted = vec![0; self.running.len()];
        if let [seq] = self.running.as_mut_slice() {
            if self.limits.draft_tokens > 0 && seq.decoding() {
                let budget = self.limits.max_batch_tokens.saturating_sub(1);
                drafted[0] = seq.push_draft(budget);
            }
        }
        drafted
    }

    /// Take a queued request into the running set: its cache starts from a
    /// cached prefix where one matches. Its prompt was prepared (tokenized,
    /// checked, its grammar compiled) before it was queued.
    fn admit(&mut self, request: Request) {
        let taken = Instant::now();
        if let Err(e) = request.within_deadline() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = request.events.send(Event::Error(e));
            return;
        }
        let prompt = &request.prepared.tokens;
        let started = Event::Started {
            prompt_tokens: prompt.len(),
        };
        if request.events.send(started).is_err() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let capacity = prompt.len() + request.params.max_tokens;
        let cache = match self.prefixes.lookup(prompt, request.adapter.as_ref()) {
            Some(hit) => {
                self.stats
                    .prefix_tokens
                    .fetch_add(hit.len as u64, Ordering::Relaxed);
                crate::telemetry::prefix_reused(hit.len);
                self.llm.model.cache_from_prefix(hit.kv, hit.len, capacity)
            }
            None => self.llm.model.new_cache_typed(
                capacity,
                request.adapter.clone(),
                self.limits.kv_cache,
            ),
        };
        self.running.push(Sequence::new(
            request,
            cache,
            taken,
            DraftLength::new(self.limits.draft_tokens),
        ));
        self.stats
            .active
            .store(self.running.len(), Ordering::Relaxed);
    }
}

/// One generation in progress.
struct Sequence {
    request: Request,
    prompt_len: usize,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    cache: KvCache,
    sampler: Sampler,
    decoder: TextDecoder,
    stops: StopMatcher,
    /// The output format's grammar, when the request gives one.
    constraint: Option<Constraint>,
    /// Log-probabilities of the generated tokens (when the request asks
    /// for them), and how many of them went out with text already.
    logprobs: Vec<TokenLogprob>,
    logprobs_sent: usize,
    text: String,
    taken: Instant,
    first_token: Option<Instant>,
    /// How many tokens to draft next, and the drafts made and kept so far.
    draft_length: DraftLength,
    drafted: usize,
    kept: usize,
}

impl Sequence {
    /// The sequence of an admitted request: its prepared prompt moves in.
    fn new(
        mut request: Request,
        cache: KvCache,
        taken: Instant,
        draft_length: DraftLength,
    ) -> Self {
        let Prepared {
            tokens: prompt,
            constraint,
        } = std::mem::take(&mut request.prepared);
        Self {
            constraint,
            logprobs: Vec::new(),
            logprobs_sent: 0,
            sampler: Sampler::new(&request.params),
            stops: StopMatcher::new(&request.params.stop),
            prompt_len: prompt.len(),
            tokens: prompt,
            cache,
            decoder: TextDecoder::default(),
            text: String::new(),
            request,
            taken,
            first_token: None,
            draft_length,
            drafted: 0,
            kept: 0,
        }
    }

    /// Tokens not yet fed to the model (1 while decoding).
    fn pending(&self) -> usize {
        self.tokens.len() - self.cache.len()
    }

    /// Whether the prompt is done and the sequence produces a token a step.
    fn decoding(&self) -> bool {
        self.cache.len() >= self.prompt_len
    }

    /// Append the tokens drafted from the sequence's own text, at most
    /// `budget`, never more than `max_tokens` could keep; how many.
    fn push_draft(&mut self, budget: usize) -> usize {
        let generated = self.tokens.len() - self.prompt_len;
        let room = self.request.params.max_tokens.saturating_sub(generated + 1);
        let max = self.draft_length.take().min(budget).min(room);
        let draft = draft::lookup(&self.tokens, max).to_vec();
        self.tokens.extend_from_slice(&draft);
        draft.len()
    }

    /// Sample from the logits rows of a step that fed the sampled token and
    /// `drafted` drafts after it (one row each): row after row while the
    /// token sampled is the draft fed after it, so each token kept was
    /// sampled from the logits of the true text before it. The cache then
    /// forgets the drafts not kept. `Some` when the sequence ends.
    fn verify(
        &mut self,
        llm: &Llm,
        logits: &mut [f32],
        drafted: usize,
        stats: &GeneratorStats,
    ) -> Option<Step> {
        if drafted == 0 {
            return self.accept(llm, logits);
        }
        let draft = self.tokens.split_off(self.tokens.len() - drafted);
        let vocab = logits.len() / (drafted + 1);
        let mut kept = 0;
        for row in logits.chunks_exact_mut(vocab) {
            if let Some(end) = self.accept(llm, row) {
                return Some(end);
            }
            match draft.get(kept) {
                Some(d) if self.tokens.last() == Some(d) => kept += 1,
                _ => break,
            }
        }
        self.draft_length.update(drafted, kept);
        self.drafted += drafted;
        self.kept += kept;
        stats.drafted.fetch_add(drafted as u64, Ordering::Relaxed);
        stats.draft_kept.fetch_add(kept as u64, Ordering::Relaxed);
        crate::telemetry::drafted(drafted, kept);
        // Every token but the last sampled one has been fed.
        if let Err(e) = self.cache.truncate(self.tokens.len() - 1) {
            let _ = self.request.events.send(Event::Error(e));
            return Some(Step::Failed);
        }
        None
    }

    /// Sample the next token from the logits after the last fed one, and
    /// pass on its text; `Some` when the sequence ends.
    fn accept(&mut self, llm: &Llm, logits: &mut [f32]) -> Option<Step> {
        match self.try_accept(llm, logits) {
            Ok(Some(reason)) => Some(match self.finish(reason) {
                true => Step::Completed,
                false => Step::Cancelled,
            }),
            Ok(None) => None,
            Err(StepEnd::Cancelled) => Some(Step::Cancelled),
            Err(StepEnd::Failed(e)) => {
                let _ = self.request.events.send(Event::Error(e));
                Some(Step::Failed)
            }
        }
    }

    fn try_accept(
        &mut self,
        llm: &Llm,
        logits: &mut [f32],
    ) -> Result<Option<FinishReason>, StepEnd> {
        if let Some(c) = &mut self.constraint {
            c.mask(logits).map_err(StepEnd::Failed)?;
        }
        let token = self.sampler.sample(logits, &self.tokens);
        // The sampler left the penalised (and masked) logits in place.
        if let Some(top) = self.request.params.logprobs {
            if !llm.tokenizer.is_end_of_turn(token) {
                let (logprob, best) = sampling::logprobs(logits, token, top);
                let text = |id: u32| llm.tokenizer.decode(&[id]).unwrap_or_default();
                self.logprobs.push(TokenLogprob {
                    token: text(token),
                    logprob,
                    top: best.into_iter().map(|(id, lp)| (text(id), lp)).collect(),
                });
            }
        }
        if let Some(c) = &mut self.constraint {
            // The end of the turn is allowed once the output is complete;
            // it ends the sequence rather than moving the grammar on.
            if !llm.tokenizer.is_end_of_turn(token) {
                c.accept(token).map_err(StepEnd::Failed)?;
            }
        }
        self.first_token.get_or_insert_with(Instant::now);
        self.tokens.push(token);
        let generated = self.tokens.len() - self.prompt_len;

        if llm.tokenizer.is_end_of_turn(token) {
            self.tokens.pop(); // the end-of-turn marker is not part of the answer
            return Ok(Some(FinishReason::Stop));
        }
        if let Some(chunk) = self.decoder.push(&llm.tokenizer, token)? {
            match self.stops.push(&chunk) {
                StopCheck::Continue(text) => self.emit(text)?,
                StopCheck::Stopped(text) => {
                    self.emit(text)?;
                    return Ok(Some(FinishReason::Stop));
                }
            }
        }
        // A grammar that admits nothing more: done, without a step for the
        // end-of-turn token it would force.
        if self.constraint.as_ref().is_some_and(Constraint::is_stopped) {
            return Ok(Some(FinishReason::Stop));
        }
        if generated >= self.request.params.max_tokens {
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }
    fn emit(&mut self, text: String) -> Result<(), StepEnd> {
        if text.is_empty() {
            return Ok(());
        }
        self.send_logprobs()?;
        self.text.push_str(&text);
        self.request
            .events
            .send(Event::Text(text))
            .map_err(|_| StepEnd::Cancelled)
    }

    /// The log-probabilities of the tokens behind the text about to go.
    fn send_logprobs(&mut self) -> Result<(), StepEnd> {
        if self.logprobs_sent == self.logprobs.len() {
            return Ok(());
        }
        let batch = self.logprobs[self.logprobs_sent..].to_vec();
        self.logprobs_sent = self.logprobs.len();
        self.request
            .events
            .send(Event::Logprobs(batch))
            .map_err(|_| StepEnd::Cancelled)
    }

    /// Send the completion; false if the client is gone.
    fn finish(&mut self, reason: FinishReason) -> bool {
        let rest = self.stops.flush();
        if self.emit(rest).is_err() || self.send_logprobs().is_err() {
            return false;
        }
        let now = Instant::now();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let first = self.first_token.unwrap_or(now);
        let generated = self.tokens.len() - self.prompt_len;
        let prompt_ms = ms(first - self.taken);
        let generate_ms = ms(now - first);
        let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        let timings = Timings {
            queue_ms: ms(self.taken - self.request.submitted),
            prompt_ms,
            generate_ms,
            ttft_ms: ms(first - self.request.submitted),
            total_ms: ms(now - self.request.submitted),
            prompt_tokens_per_s: per_s(self.prompt_len, prompt_ms),
            tokens_per_s: per_s(generated.saturating_sub(1), generate_ms),
            draft_tokens: self.drafted,
            draft_tokens_kept: self.kept,
        };
        crate::telemetry::generation(
            self.prompt_len,
            generated,
            timings.ttft_ms / 1e3,
            timings.total_ms / 1e3,
        );
        let completion = Completion {
            text: std::mem::take(&mut self.text),
            prompt_tokens: self.tokens[..self.prompt_len].to_vec(),
            tokens: self.tokens[self.prompt_len..].to_vec(),
            finish_reason: reason,
            timings,
            logprobs: std::mem::take(&mut self.logprobs),
            stop_sequence: self.stops.matched().map(String::from),
        };
        self.request.events.send(Event::Done(completion)).is_ok()
    }
}

/// How a sequence ended.
#[derive(Debug, Clone, Copy)]
enum Step {
    Completed,
    Cancelled,
    Failed,
}

enum StepEnd {
    Cancelled,
    Failed(Error),
}

impl From<Error> for StepEnd {
    fn from(e: Error) -> Self {
        StepEnd::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_batch_tokens: usize, prefill_chunk: usize) -> GeneratorLimits {
        GeneratorLimits {
            max_batch_tokens,
            prefill_chunk,
            ..GeneratorLimits::default()
        }
    }

    fn planned(batch: &[Planned]) -> Vec<(usize, usize)> {
        batch.iter().map(|p| (p.index, p.tokens)).collect()
    }

    #[test]
    fn decodes_always_run_and_prompts_advance_in_order_under_the_budget() {
        // Sequences 0 and 2 decode; 1 and 3 have prompts of 300 and 50 left.
        let pending = [1, 300, 1, 50];
        let decoding = [true, false, true, false];
        let b = plan(&pending, &decoding, &limits(512, 256));
        assert_eq!(planned(&b), [(0, 1), (2, 1), (1, 256), (3, 50)]);
        // A tight budget: the older prompt takes what is left, the younger waits.
        let b = plan(&pending, &decoding, &limits(100, 256));
        assert_eq!(planned(&b), [(0, 1), (2, 1), (1, 98)]);
        // Decodes fill the budget: prompts wait for the next step.
        let b = plan(&[1, 1, 40], &[true, true, false], &limits(2, 16));
        assert_eq!(planned(&b), [(0, 1), (1, 1)]);
        // A decoding sequence with drafts feeds them all, before prompts.
        let b = plan(&[4, 1, 300], &[true, true, false], &limits(100, 256));
        assert_eq!(planned(&b), [(0, 4), (1, 1), (2, 95)]);
        // Alone, a prompt always advances, in chunks.
        let b = plan(&[700], &[false], &limits(512, 256));
        assert_eq!(planned(&b), [(0, 256)]);
        assert!(plan(&[], &[], &limits(512, 256)).is_empty());
    }
}
