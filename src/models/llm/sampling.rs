//! Choosing the next token from logits: repetition penalty, temperature,
//! top-k, top-p, and a seeded random generator so the same seed gives the
//! same output. Temperature 0 is greedy (arg-max).

use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Most alternatives a token's log-probabilities list (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The log-probability of `token` and of the `top` most likely tokens
/// (most likely first), under `logits` (after the repetition penalty and
/// any constraint's mask, at temperature 1: the distribution the sampler
/// drew from before its temperature and truncation).
pub fn logprobs(logits: &[f32], token: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| ((l - max) as f64).exp())
        .sum();
    let log_z = max as f64 + sum.ln();
    let lp = |l: f32| (l as f64 - log_z) as f32;
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if top < ids.len() {
            ids.select_nth_unstable_by(top - 1, by_logit);
            ids.truncate(top);
        }
        ids.sort_by(by_logit);
        best = ids
            .into_iter()
            .map(|i| (i, lp(logits[i as usize])))
            .collect();
    }
    (lp(logits[token as usize]), best)
}

/// How to generate: sampling knobs and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 means greedy; higher is more random.
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens whose mass reaches top_p (1 = off).
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// >1 discourages tokens seen in the last `repeat_last_n` tokens (1 = off).
    pub repetition_penalty: f32,
    pub repeat_last_n: usize,
    /// Same seed, same prompt, same parameters: same output.
    pub seed: Option<u64>,
    /// Generation ends before any of these strings; they are not returned.
    pub stop: Vec<String>,
    /// What the output must be (a JSON schema, a grammar, ...): tokens that
    /// cannot continue it are masked before sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<super::grammar::Format>,
    /// Report each generated token's log-probability and this many most
    /// likely alternatives (0-20); None: no log-probabilities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
    /// The request's deadline, in milliseconds after the worker receives
    /// it: past it the generation stops with a deadline error. Set from the
    /// HTTP request's deadline, not by clients directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            stop: Vec::new(),
            format: None,
            logprobs: None,
            timeout_ms: None,
        }
    }
}

/// Stop strings allowed per request, and the longest one.
pub const MAX_STOP_SEQUENCES: usize = 16;
pub const MAX_STOP_LEN: usize = 256;

impl SamplingParams {
    /// Reject values that make no sense, with a message naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &'static str, message: String| Err(Error::InvalidField { field, message });
        if self.max_tokens == 0 {
            return bad("max_tokens", "max_tokens must be at least 1".into());
        }
        if self.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return bad(
                "top_logprobs",
                format!("at most {MAX_TOP_LOGPROBS} alternatives per token"),
            );
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return bad(
                "temperature",
                format!(
                    "temperature must be between 0 and 2, got {}",
                    self.temperature
                ),
            );
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(
                "top_p",
                format!("top_p must be in (0, 1], got {}", self.top_p),
            );
        }
        if !(self.repetition_penalty.is_finite()
            && (0.01..=100.0).contains(&self.repetition_penalty))
        {
            return bad(
                "repetition_penalty",
                format!(
                    "repetition_penalty must be between 0.01 and 100, got {}",
                    self.repetition_penalty
                ),
            );
        }
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return bad(
                "stop",
                format!("at most {MAX_STOP_SEQUENCES} stop sequences are allowed"),
            );
        }
        if self
            .stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_LEN)
        {
            return bad(
                "stop",
                format!("stop sequences must be non-empty and at most {MAX_STOP_LEN} bytes"),
            );
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// Per-sequence sampler state (its random generator).
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Reused scratch buffer of (token, logit) candidates.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(|| rand::rng().random());
        Self {
            params: params.clone(),
            rng: StdRng::seed_from_u64(seed),
            candidates: Vec::new(),
        }
    }

    /// Pick the next token. `logits` is modified (penalties applied);
    /// `history` is the sequence so far, prompt included.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 && p.repeat_last_n > 0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen: Vec<u32> = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    // llama.cpp's rule: shrink positive logits, grow negative ones.
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.is_greedy() {
            return argmax(logits);
        }

        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if p.top_k > 0 && p.top_k < c.len() {
            // Partial selection: O(vocab), then sort only the k survivors.
            c.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            c.truncate(p.top_k);
        }
        if p.top_p < 1.0 || p.top_k > 0 {
            c.sort_unstable_by(by_logit_desc);
        }
        let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f32;
        for x in c.iter_mut() {
            x.1 = ((x.1 - max) / p.temperature).exp();
            total += x.1;
        }
        if p.top_p < 1.0 {
            let mut mass = 0.0;
            let mut keep = c.len();
            for (i, x) in c.iter().enumerate() {
                mass += x.1 / total;
                if mass >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
            total = c.iter().map(|x| x.1).sum();
        }
        let mut r = self.rng.random::<f32>() * total;
        for x in c.iter() {
            r -= x.1;
            if r <= 0.0 {
                return x.0;
            }
        }
        c.last().map(|x| x.0).unwrap_or(0)
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(&params(0.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
    }

    #[test]
    fn repetition_penalty_can_change_the_winner() {
        let mut p = params(0.0);
        p.repetition_penalty = 2.0;
        let mut s = Sampler::new(&p);
        // Token 1 was just generated: 3.0 / 2 = 1.5 < 2.9.
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[1]), 2);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_limits_choice() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut p = params(1.0);
        p.seed = Some(42);
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p);
            (0..50)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&p), run(&p));
        p.seed = Some(43);
        let other = run(&p);
        p.seed = Some(42);
        assert_ne!(run(&p), other, "different seeds should differ somewhere");
        p.top_k = 1;
        assert!(run(&p).iter().all(|&t| t == argmax(&logits)));
        // top_k = 3 keeps the three largest logits: tokens with i % 7 == 6.
        p.top_k = 3;
        p.temperature = 1.0;
        assert!(run(&p).iter().all(|&t| t % 7 == 6));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let mut p = params(1.0);
        p.top_p = 0.5;
        p.seed = Some(1);
        let mut s = Sampler::new(&p);
        // Token 0 holds nearly all the mass, so the nucleus is just token 0.
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [10.0, 0.0, 0.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = SamplingParams::default();
        assert!(p.validate().is_ok());
        p.temperature = -1.0;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("temperature"));
        p = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        p = SamplingParams {
            max_tokens: 0,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("max_tokens"));
        p = SamplingParams {
            repetition_penalty: f32::NAN,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        p = SamplingParams {
            stop: vec![String::new()],
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
