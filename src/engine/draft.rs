//! Prompt-lookup decoding: drafting a sequence's next tokens from its own
//! text, with no draft model.
//!
//! A RAG answer copies spans of its passages, and many answers repeat
//! their own phrases: when the last few tokens of a sequence occurred
//! before in it (prompt or output), the tokens that followed then are a
//! likely continuation now. The scheduler feeds them after the sampled
//! token in one forward pass and samples from each row in turn; a drafted
//! token is kept only where it is the token sampling chose, so the output
//! is exactly what plain decoding gives (the CPU's rows compute the same
//! bits whatever else is in the batch). This module finds the drafts and
//! sizes them ([`DraftLength`]); the scheduler verifies them.
//!
//! Drafts run only for a sequence that decodes alone (no other sequence,
//! no prompt in the step). A step's time is a fixed part plus a part per
//! row (SmolLM2 at 2 threads: about 6 ms plus 1.7 ms a row), so a draft
//! pays when the share of its tokens kept beats `rows x per-row / step`:
//! about a fifth for a sequence alone, a third with two decoding, two
//! thirds with eight, nearly all beside a prompt chunk. And in a shared
//! step one sequence's missed drafts lengthen every other sequence's step.
//! Measured (`docs/bench/prompt-lookup.md`): with drafts in every step,
//! eight chat clients lost up to 22% of their requests/s; with drafts
//! while up to two sequences decoded, a fine-tuned request beside
//! saturating RAG clients took 14-28% longer.

/// Longest and shortest run of tokens looked up. Single tokens matched too
/// often by chance: on SmolLM2 answering the Rust book's questions, drafts
/// from one-token matches were kept at a quarter of the rate of two-token
/// ones (see `docs/bench/prompt-lookup.md`).
const MAX_NGRAM: usize = 4;
const MIN_NGRAM: usize = 2;

/// The tokens that followed the latest earlier occurrence of the longest
/// run of `tokens`' last tokens (4 down to 2) found earlier in `tokens`,
/// at most `max`; empty when none occurs.
pub fn lookup(tokens: &[u32], max: usize) -> &[u32] {
    if max == 0 {
        return &[];
    }
    let len = tokens.len();
    for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
        if len <= n {
            continue;
        }
        let tail = &tokens[len - n..];
        // The latest occurrence that ends before the sequence does.
        let found = (0..len - n)
            .rev()
            .find(|&start| &tokens[start..start + n] == tail);
        if let Some(start) = found {
            let from = start + n;
            return &tokens[from..(from + max).min(len)];
        }
    }
    &[]
}

/// How many tokens one sequence drafts next. A drafted token that is not
/// kept costs a row of the step (on SmolLM2 at 2 threads a row is about a
/// sixth of a one-token step), so a sequence earns its drafts: it starts
/// with one, doubles them (up to the configured most) while every draft is
/// kept, drafts one more than it kept last time after a partial miss, and
/// after a draft of which nothing was kept waits 1, 2, 4 ... 16 steps
/// before it drafts again.
#[derive(Debug, Clone, Copy)]
pub struct DraftLength {
    most: usize,
    next: usize,
    /// Steps to wait before the next draft, and the wait after the next
    /// miss.
    wait: usize,
    backoff: usize,
}

/// The longest wait after drafts that missed, in steps.
const MAX_BACKOFF: usize = 16;

impl DraftLength {
    pub fn new(most: usize) -> Self {
        Self {
            most,
            next: most.min(1),
            wait: 0,
            backoff: 1,
        }
    }

    /// Drafted tokens allowed in this step (0 while waiting after misses).
    pub fn take(&mut self) -> usize {
        if self.wait > 0 {
            self.wait -= 1;
            return 0;
        }
        self.next
    }

    /// Learn from a step that drafted `drafted` tokens and kept `kept`.
    pub fn update(&mut self, drafted: usize, kept: usize) {
        if drafted == 0 {
            return;
        }
        if kept == 0 {
            self.next = self.most.min(1);
            self.wait = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            return;
        }
        self.backoff = 1;
        self.next = if kept == drafted {
            (self.next * 2).min(self.most)
        } else {
            (kept + 1).min(self.most)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_follow_the_latest_earlier_occurrence_of_the_longest_tail() {
        //           0  1  2  3  4  5  6  7  8  9 10 11
        let tokens = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 6, 7];
        // The tail [6, 7] occurs at 1 and 6; the latest is followed by 2, 3.
        assert_eq!(lookup(&tokens, 8), &[2, 3, 6, 7]);
        assert_eq!(lookup(&tokens, 1), &[2]);
        assert_eq!(lookup(&tokens, 0), &[] as &[u32]);
        // A longer tail wins over a later shorter match: [9, 1, 6, 7]
        // occurs once, earlier, and [1, 6, 7] too.
        let tokens = [9, 1, 6, 7, 4, 4, 8, 6, 7, 5, 9, 1, 6, 7];
        assert_eq!(lookup(&tokens, 3), &[4, 4, 8]);
        // Nothing of two tokens or more repeats: no draft, even though
        // the last token alone occurred before.
        assert_eq!(lookup(&[1, 2, 3, 4, 3], 4), &[] as &[u32]);
        assert_eq!(lookup(&[1, 2], 4), &[] as &[u32]);
        assert_eq!(lookup(&[], 4), &[] as &[u32]);
        // A draft runs up to the end of the sequence, no further.
        assert_eq!(lookup(&[4, 4, 4], 5), &[4]);
    }

    #[test]
    fn draft_length_grows_while_drafts_are_kept_and_waits_after_misses() {
        let mut d = DraftLength::new(8);
        assert_eq!(d.take(), 1);
        d.update(1, 1);
        assert_eq!(d.take(), 2);
        d.update(2, 2);
        d.update(4, 4);
        d.update(8, 8);
        assert_eq!(d.take(), 8);
        // A partial miss: one more than was kept.
        d.update(8, 2);
        assert_eq!(d.take(), 3);
        // A step without a draft teaches nothing.
        d.update(0, 0);
        assert_eq!(d.take(), 3);
        // Misses: back to one token, after waits of 1, then 2 steps.
        d.update(3, 0);
        assert_eq!([d.take(), d.take()], [0, 1]);
        d.update(1, 0);
        assert_eq!([d.take(), d.take(), d.take()], [0, 0, 1]);
        // A kept draft ends the waiting.
        d.update(1, 1);
        d.update(2, 0);
        assert_eq!([d.take(), d.take()], [0, 1]);
        for _ in 0..10 {
            d.update(1, 0);
        }
        assert_eq!((0..17).map(|_| d.take()).filter(|&n| n == 0).count(), 16);
        // Off stays off.
        let mut off = DraftLength::new(0);
        assert_eq!(off.take(), 0);
    }
}
