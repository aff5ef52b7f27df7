//! `scissor:B` (`scissor:B@window=W@recent=R`): Scissorhands (Liu et al. 2023, "Scissorhands:
//! Exploiting the Persistence of Importance Hypothesis for LLM KV Cache Compression at Test
//! Time").
//!
//! Rule: importance persists, so count for every cached token in how many of the last W steps
//! (its history window) its attention fell below the step's mean share ([`below_mean`]: for one
//! new query, below `1/n` with n the tokens it attends to, the uniform share); protect the R most
//! recent positions; among the rest evict the most often unimportant, then the oldest. The score
//! is minus that count ([`ScoreRule::Unimportance`]); the store keeps the W steps per slot. The
//! paper drops a batch of tokens whenever the cache fills; here, as for every policy of this
//! tool, a step evicts exactly down to B so that every policy holds the same budget at every
//! step. Defaults W = [`DEFAULT_WINDOW`], R = [`DEFAULT_RECENT`].
//!
//! Two variants of published code, each opt-in (issue 32): `@sinks=S` also protects the first S
//! positions (always-kept first tokens, as StreamingLLM's sinks; S + R within B), and
//! `@normalized` divides a token's count by the steps it has been seen (its entry step included,
//! at most W), so a young token is not favoured for having had fewer steps to be unimportant in:
//! the score is minus the share of its seen steps in which it was unimportant.

use super::{select_per_head, Candidates, Policy, Rule, ScoreRule};

/// History window W when the spec does not give one.
pub const DEFAULT_WINDOW: usize = 400;
/// Recent window R when the spec does not give one.
pub const DEFAULT_RECENT: usize = 10;

/// B tokens per head: the R most recent and the least often unimportant of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScissorPolicy {
    pub budget: usize,
    /// Steps of attention history counted.
    pub window: usize,
    /// Most recent positions always kept.
    pub recent: usize,
    /// First positions always kept (`@sinks=S`; 0 by default).
    pub sinks: usize,
    /// The count divided by the steps seen (`@normalized`; off by default).
    pub normalized: bool,
}

impl ScissorPolicy {
    pub fn new(budget: usize, window: usize, recent: usize) -> Self {
        ScissorPolicy {
            budget,
            window,
            recent,
            sinks: 0,
            normalized: false,
        }
    }

    /// The same policy keeping the first `sinks` positions too.
    pub fn with_sinks(self, sinks: usize) -> Self {
        ScissorPolicy { sinks, ..self }
    }

    /// The same policy with the count divided by the steps seen (`true`) or not.
    pub fn with_normalized(self, normalized: bool) -> Self {
        ScissorPolicy { normalized, ..self }
    }
}

/// The mean share of a step's attention row: `queries / attended` (the attention of the row sums
/// to one per query), rounded to f32 from f64 as the reference rounds `1/n`; 0 for an empty row.
pub fn mean_share(queries: usize, attended: usize) -> f32 {
    if attended == 0 {
        return 0.0;
    }
    (queries as f64 / attended as f64) as f32
}

/// Whether a token's attention in one step counts as unimportant: below the mean share.
#[inline]
pub fn below_mean(attention: f32, share: f32) -> bool {
    attention < share
}

impl Policy for ScissorPolicy {
    fn spec(&self) -> String {
        let mut s = format!("scissor:{}", self.budget);
        if self.window != DEFAULT_WINDOW {
            s += &format!("@window={}", self.window);
        }
        if self.recent != DEFAULT_RECENT {
            s += &format!("@recent={}", self.recent);
        }
        if self.sinks != 0 {
            s += &format!("@sinks={}", self.sinks);
        }
        if self.normalized {
            s += "@normalized";
        }
        s
    }

    fn budget(&self) -> usize {
        self.budget
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::Unimportance {
            window: self.window,
            normalized: self.normalized,
        }
    }

    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]) {
        let rule = Rule {
            sinks: self.sinks,
            recent: self.recent,
        };
        select_per_head(cands, rule, self.budget, true, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::keep_mask;

    #[test]
    fn spec_and_rule() {
        let p = ScissorPolicy::new(256, DEFAULT_WINDOW, DEFAULT_RECENT);
        assert_eq!(p.spec(), "scissor:256");
        assert_eq!(
            ScissorPolicy::new(8, 16, 2).spec(),
            "scissor:8@window=16@recent=2"
        );
        assert_eq!(ScissorPolicy::new(8, 400, 2).spec(), "scissor:8@recent=2");
        assert_eq!(
            p.score_rule(),
            ScoreRule::Unimportance {
                window: 400,
                normalized: false
            }
        );
        let v = ScissorPolicy::new(8, 400, 2)
            .with_sinks(3)
            .with_normalized(true);
        assert_eq!(v.spec(), "scissor:8@recent=2@sinks=3@normalized");
        assert_eq!(
            v.score_rule(),
            ScoreRule::Unimportance {
                window: 400,
                normalized: true
            }
        );
    }

    #[test]
    fn mean_share_is_one_over_n_for_one_query() {
        assert_eq!(mean_share(1, 4), 0.25);
        assert_eq!(mean_share(1, 3), (1.0f64 / 3.0) as f32);
        assert_eq!(mean_share(3, 6), 0.5);
        assert_eq!(mean_share(0, 5), 0.0);
        assert_eq!(mean_share(0, 0), 0.0);
        assert!(below_mean(0.2, 0.25) && !below_mean(0.25, 0.25));
    }

    #[test]
    fn most_often_unimportant_goes_and_the_window_is_protected() {
        let p = ScissorPolicy::new(3, 8, 1);
        // scores = -count: pos0 -3, pos1 -5, pos2 -5, pos3 (newest, protected) -1
        // pos1 and pos2 tie at 5 unimportant steps: the older goes
        assert_eq!(
            keep_mask(&p, 1, &[0, 1, 2, 3], &[-3.0, -5.0, -5.0, -1.0]),
            [true, false, true, true]
        );
    }

    #[test]
    fn sinks_are_kept_whatever_their_count() {
        // pos0 is the most often unimportant (-4) but a sink; pos1 (-3) goes instead
        let pos = [0, 1, 2, 3, 4];
        let sc = [-4.0, -3.0, -1.0, -2.0, 0.0];
        let plain = ScissorPolicy::new(4, 8, 1);
        assert_eq!(
            keep_mask(&plain, 1, &pos, &sc),
            [false, true, true, true, true]
        );
        let sinks = plain.with_sinks(1);
        assert_eq!(
            keep_mask(&sinks, 1, &pos, &sc),
            [true, false, true, true, true]
        );
        // two victims: the sinks 0, 1 and the window (pos4) stay, so pos2 and pos3 go
        let two = ScissorPolicy::new(3, 8, 1).with_sinks(2);
        assert_eq!(
            keep_mask(&two, 1, &pos, &sc),
            [true, true, false, false, true]
        );
    }
}
