//! A generation worker's rules and counters: the [`GeneratorLimits`] it is
//! started with, the [`PromptBudget`] every prompt is held to (by the
//! worker's handle, and by the RAG pipeline fitting its passages), and the
//! live [`GeneratorStats`] it keeps.

use crate::error::{Error, Result};
use crate::models::llm::llama::KvType;
use crate::models::Llm;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize};

/// How long a prompt may be: the one rule the worker enforces and the RAG
/// pipeline fits its passages to.
#[derive(Debug, Clone, Copy)]
pub struct PromptBudget {
    /// The model's context window.
    pub context: usize,
    /// The configured longest prompt (`generation.max_prompt_tokens`).
    pub max_prompt_tokens: usize,
}

impl PromptBudget {
    /// The longest prompt accepted, whatever `max_tokens`.
    pub fn max_prompt(&self) -> usize {
        self.max_prompt_tokens.min(self.context - 1)
    }

    /// The longest prompt that also leaves room for `max_tokens`.
    pub fn limit(&self, max_tokens: usize) -> usize {
        self.max_prompt()
            .min(self.context.saturating_sub(max_tokens))
    }

    /// Whether a prompt of `len` tokens fits with `max_tokens` to generate,
    /// as an error that says which bound it passes.
    pub fn check(&self, len: usize, max_tokens: usize) -> Result<()> {
        let (context, max_prompt) = (self.context, self.max_prompt());
        if len > max_prompt {
            return Err(Error::TooLarge(format!(
                "the prompt has {len} tokens; at most {max_prompt} are accepted (context window {context})"
            )));
        }
        if len + max_tokens > context {
            return Err(Error::TooLarge(format!(
                "prompt ({len} tokens) plus max_tokens ({max_tokens}) exceeds the context window of {context} tokens"
            )));
        }
        Ok(())
    }
}

/// Limits the worker enforces on every request, and the size of its steps.
#[derive(Debug, Clone)]
pub struct GeneratorLimits {
    /// Requests waiting beyond the ones running; more are refused.
    pub queue: usize,
    /// Sequences running at once (decoding, or with a prompt under way).
    pub max_running: usize,
    /// Tokens in one step's forward pass: one per decoding sequence, the
    /// rest for prompt chunks.
    pub max_batch_tokens: usize,
    /// Longest piece of one prompt fed in a step, so that a long prompt
    /// does not stall the sequences already decoding.
    pub prefill_chunk: usize,
    /// Bytes of recent prompts' keys and values kept for prompts that
    /// begin the same way (0 keeps none).
    pub prefix_cache_bytes: usize,
    /// Longest prompt accepted (also capped by the context window).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` accepted.
    pub max_tokens: usize,
    /// Most tokens a decoding sequence drafts per step by prompt lookup
    /// (0 turns prompt-lookup decoding off).
    pub draft_tokens: usize,
    /// How sequences' caches hold keys and values.
    pub kv_cache: KvType,
}

impl GeneratorLimits {
    /// The prompt-length rule for `llm` under these limits.
    pub fn budget(&self, llm: &Llm) -> PromptBudget {
        PromptBudget {
            context: llm.context_length(),
            max_prompt_tokens: self.max_prompt_tokens,
        }
    }
}

impl Default for GeneratorLimits {
    fn default() -> Self {
        Self {
            queue: 64,
            max_running: 8,
            max_batch_tokens: 512,
            prefill_chunk: 256,
            prefix_cache_bytes: 256 << 20,
            max_prompt_tokens: 7168,
            max_tokens: 2048,
            draft_tokens: 0,
            kv_cache: KvType::F16,
        }
    }
}

/// Live counters of one worker, for `/info` and metrics.
#[derive(Debug, Default)]
pub struct GeneratorStats {
    /// Sequences being generated now.
    pub active: AtomicUsize,
    pub completed: AtomicU64,
    /// Dropped because the client went away.
    pub cancelled: AtomicU64,
    /// Ended by an error (a refused prompt included).
    pub failed: AtomicU64,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub prefix_tokens: AtomicU64,
    /// Tokens drafted by prompt lookup, and those kept.
    pub drafted: AtomicU64,
    pub draft_kept: AtomicU64,
}

/// A copy of [`GeneratorStats`] at one moment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub active: usize,
    /// Waiting in the queue.
    pub queued: usize,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
    /// Prompt tokens not recomputed thanks to the prefix cache.
    pub prefix_tokens_reused: u64,
    /// Tokens drafted by prompt-lookup decoding, and those kept.
    pub draft_tokens: u64,
    pub draft_tokens_kept: u64,
}
