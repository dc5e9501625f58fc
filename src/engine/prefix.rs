//! The prefix cache: keys and values of recent prompts, so that a new
//! sequence whose prompt begins the same way (the chat template's system
//! message, the RAG template's instructions, a conversation's earlier
//! turns) starts from a copy instead of recomputing them.
//!
//! Bounded by bytes; the least recently used prompt goes first. Copying a
//! prefix gives the same logits as computing it, since a position's keys and
//! values depend only on the tokens before it.

use crate::models::llm::llama::{KvCache, KvPrefix};
use crate::models::llm::lora::Adapter;
use std::sync::Arc;

/// Shared prefixes shorter than this are recomputed: copying them would
/// save less than it costs.
pub const MIN_PREFIX: usize = 8;

struct Entry {
    tokens: Vec<u32>,
    kv: KvPrefix,
    last_used: u64,
}

/// Recent prompts' keys and values, up to a byte budget.
pub struct PrefixCache {
    entries: Vec<Entry>,
    budget: usize,
    clock: u64,
}

/// A prefix found for a prompt: its keys and values, and how many of its
/// tokens the prompt shares.
pub struct Hit<'a> {
    pub kv: &'a KvPrefix,
    pub len: usize,
}

impl PrefixCache {
    /// A cache of at most `budget` bytes (0 keeps nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            entries: Vec::new(),
            budget,
            clock: 0,
        }
    }

    /// The longest cached prefix of `prompt` computed with `adapter` (keys
    /// and values differ per adapter), leaving at least its last token to
    /// compute (the logits come from it).
    pub fn lookup(&mut self, prompt: &[u32], adapter: Option<&Arc<Adapter>>) -> Option<Hit<'_>> {
        let limit = prompt.len().saturating_sub(1);
        let (best, len) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kv.serves(adapter))
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(limit)))
            .max_by_key(|&(_, len)| len)?;
        if len < MIN_PREFIX {
            return None;
        }
        self.clock += 1;
        let entry = &mut self.entries[best];
        entry.last_used = self.clock;
        Some(Hit { kv: &entry.kv, len })
    }

    /// Keep `prompt`'s keys and values from `cache`, which holds at least
    /// the prompt. A prompt already covered by a cached one is not kept
    /// twice; cached prompts that this one extends are replaced.
    pub fn insert(&mut self, prompt: &[u32], cache: &KvCache) {
        if self.budget == 0 || prompt.len() < MIN_PREFIX {
            return;
        }
        let adapter = cache.adapter();
        if self
            .entries
            .iter()
            .any(|e| e.kv.serves(adapter) && e.tokens.starts_with(prompt))
        {
            return;
        }
        let Some(kv) = cache.prefix(prompt.len()) else {
            return;
        };
        if kv.bytes() > self.budget {
            return;
        }
        self.entries
            .retain(|e| !(e.kv.serves(adapter) && prompt.starts_with(&e.tokens)));
        self.clock += 1;
        self.entries.push(Entry {
            tokens: prompt.to_vec(),
            kv,
            last_used: self.clock,
        });
        while self.bytes() > self.budget {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
                .expect("over budget means not empty");
            self.entries.swap_remove(oldest);
        }
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.kv.bytes()).sum()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
