//! Blocking-query bookkeeping, as Consul documents it: which index to send,
//! what an answer's `X-Consul-Index` means, and the jittered `wait`.
//!
//! - The first query (and the one after a reset) sends no index: it answers
//!   at once. `index=0` is never sent.
//! - An index that did not move means nothing changed: nothing is emitted.
//! - An index that went backwards (a restarted or replaced server) resets to
//!   0: the answer is dropped and the next query, without an index, reads the
//!   whole state afresh.
//! - An index of 0 (a server bug Consul warns about) also resets, but its
//!   answer stands.
//! - A query that answered at once without a new index is rate-limited by
//!   the caller ([`Step::rate_limited`]), so that a misbehaving server is not
//!   hammered.

use std::time::Duration;

use rand::Rng;

/// Consul caps `wait` at 10 minutes.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The index state of one watched query.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockingIndex {
    /// The index to send; 0: none.
    query: u64,
    /// The index of the last answer emitted; `None` before the first one and
    /// after a reset.
    last: Option<u64>,
}

/// What an answer's index means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A new index: emit the answer; the next query blocks on it.
    Changed,
    /// The same index: nothing changed; block on it again.
    Same,
    /// The index went backwards: drop the answer, query again without one.
    Backwards,
    /// The index is 0: emit the answer, query again without one.
    Zero,
}

// === impl BlockingIndex ===

impl BlockingIndex {
    /// The `index` parameter of the next query; `None` for a query that
    /// must not block.
    pub(crate) fn query_index(&self) -> Option<u64> {
        (self.query > 0).then_some(self.query)
    }

    /// Takes the `X-Consul-Index` of an answer.
    pub(crate) fn observe(&mut self, index: u64) -> Step {
        if index == 0 {
            self.query = 0;
            self.last = None;
            return Step::Zero;
        }
        match self.last {
            Some(last) if index < last => {
                self.query = 0;
                self.last = None;
                Step::Backwards
            }
            Some(last) if index == last => {
                self.query = index;
                Step::Same
            }
            _ => {
                self.query = index;
                self.last = Some(index);
                Step::Changed
            }
        }
    }

    /// Forgets the index, after an error: the next query reads afresh.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

// === impl Step ===

impl Step {
    /// Whether an answer that came at once must be followed by a pause
    /// before the next query: it brought no new index.
    pub(crate) fn rate_limited(self) -> bool {
        self != Step::Changed
    }

    /// Whether the answer is emitted.
    pub(crate) fn emits(self) -> bool {
        matches!(self, Step::Changed | Step::Zero)
    }
}

/// Reads `X-Consul-Index`; a negative value counts as 0.
pub(crate) fn parse_index(header: &str) -> Option<u64> {
    let h = header.trim();
    match h.parse::<u64>() {
        Ok(i) => Some(i),
        Err(_) => h.parse::<i64>().ok().map(|_| 0),
    }
}

/// The `wait` to send: `wait` plus up to a sixteenth more, at random, so that
/// many watches do not all wake at once; at most Consul's 10 minutes.
pub(crate) fn jittered(wait: Duration) -> Duration {
    let extra = rand::rng().random_range(Duration::ZERO..=wait / 16);
    (wait + extra).min(MAX_WAIT)
}

/// Formats a duration as Consul's `wait` parameter (milliseconds).
pub(crate) fn wait_param(wait: Duration) -> String {
    format!("{}ms", wait.as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_query_sends_no_index_then_blocks_on_the_last() {
        let mut b = BlockingIndex::default();
        assert_eq!(b.query_index(), None);
        assert_eq!(b.observe(12), Step::Changed);
        assert_eq!(b.query_index(), Some(12));
        assert_eq!(b.observe(12), Step::Same);
        assert!(!Step::Same.emits() && Step::Same.rate_limited());
        assert_eq!(b.observe(15), Step::Changed);
        assert_eq!(b.query_index(), Some(15));
        assert!(Step::Changed.emits() && !Step::Changed.rate_limited());
    }

    #[test]
    fn an_index_going_backwards_resets_and_the_fresh_answer_is_emitted() {
        let mut b = BlockingIndex::default();
        b.observe(500);
        assert_eq!(b.observe(13), Step::Backwards);
        assert!(!Step::Backwards.emits() && Step::Backwards.rate_limited());
        assert_eq!(b.query_index(), None, "never index=0, and no stale index");
        // The query after the reset reads the fresh state, even at the same
        // low index.
        assert_eq!(b.observe(13), Step::Changed);
        assert_eq!(b.query_index(), Some(13));
    }

    #[test]
    fn a_zero_index_is_emitted_but_never_blocked_on() {
        let mut b = BlockingIndex::default();
        b.observe(7);
        assert_eq!(b.observe(0), Step::Zero);
        assert!(Step::Zero.emits() && Step::Zero.rate_limited());
        assert_eq!(b.query_index(), None);
        assert_eq!(b.observe(0), Step::Zero);
        assert_eq!(b.observe(3), Step::Changed);
        b.reset();
        assert_eq!(b.query_index(), None);
    }

    #[test]
    fn headers_parse_and_negative_counts_as_zero() {
        assert_eq!(parse_index("42"), Some(42));
        assert_eq!(parse_index(" 7 "), Some(7));
        assert_eq!(parse_index("-5"), Some(0));
        assert_eq!(parse_index("x"), None);
        assert_eq!(parse_index(""), None);
    }

    #[test]
    fn wait_gets_bounded_jitter() {
        let w = Duration::from_secs(160);
        for _ in 0..100 {
            let j = jittered(w);
            assert!(j >= w && j <= w + Duration::from_secs(10), "{j:?}");
        }
        assert_eq!(jittered(Duration::from_secs(900)), MAX_WAIT);
        assert_eq!(wait_param(Duration::from_millis(1500)), "1500ms");
    }
}
