//! Tokens to text, as they arrive: UTF-8 that is correct across token
//! boundaries, and stop sequences that are never half-emitted.

use super::tokenizer::LlmTokenizer;
use crate::error::Result;

/// Incremental detokenizer. A character split over several byte tokens is
/// held back until it is complete; decoding a window of recent tokens keeps
/// the tokenizer's spacing rules intact.
#[derive(Default)]
pub struct TextDecoder {
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl TextDecoder {
    /// Add a token; return the new text it completes, if any.
    pub fn push(&mut self, tokenizer: &LlmTokenizer, token: u32) -> Result<Option<String>> {
        self.tokens.push(token);
        let prefix = tokenizer.decode(&self.tokens[self.prefix_offset..self.read_offset])?;
        let text = tokenizer.decode(&self.tokens[self.prefix_offset..])?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') {
            if let Some(new) = text.get(prefix.len()..) {
                let new = new.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.tokens.len();
                return Ok(Some(new));
            }
        }
        Ok(None)
    }
}

/// Watches streamed text for stop sequences. Text that might be the start
/// of a stop sequence is held until it is clear either way.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    /// The stop sequence that ended the text, once one has.
    matched: Option<String>,
}

/// What the matcher lets through for one chunk of text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopCheck {
    /// Safe to emit; keep generating.
    Continue(String),
    /// A stop sequence was found: emit this text (before it) and end.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
            matched: None,
        }
    }

    pub fn push(&mut self, chunk: &str) -> StopCheck {
        self.pending.push_str(chunk);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = first_stop {
            self.matched = Some(stop.clone());
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopCheck::Stopped(out);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let hold = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.pending, s))
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopCheck::Continue(out)
    }

    /// The stop sequence that ended the text, if one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// Text still held back when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = (stop.len() - 1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for c in chunks {
            match m.push(c) {
                StopCheck::Continue(t) => out.push_str(&t),
                StopCheck::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_sequences_split_across_chunks_are_caught_and_not_emitted() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "b"]), ("a\nb".into(), false));
        assert_eq!(run(&["xyz"], &["abc"]), ("abc".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn the_stop_that_matched_first_is_reported() {
        let stops = ["world".to_string(), "lo w".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.matched(), None);
        assert_eq!(m.push("hello world"), StopCheck::Stopped("hel".into()));
        assert_eq!(m.matched(), Some("lo w"));
    }

    #[test]
    fn held_text_is_released_once_it_cannot_be_a_stop() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        assert_eq!(m.push("ab ST"), StopCheck::Continue("ab ".into()));
        assert_eq!(m.push("x"), StopCheck::Continue("STx".into()));
    }
}
