//! `sink:S+R`: StreamingLLM's attention sinks, keeping the first S positions and the last R.

use super::{select_per_head, Candidates, Policy, Rule, ScoreRule};

/// Sinks (`position < S`) plus the recent window (`position > t - R`); ignores scores. Victims:
/// padding first, then the oldest positions outside sinks and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkPolicy {
    pub sinks: usize,
    pub recent: usize,
}

impl SinkPolicy {
    pub fn new(sinks: usize, recent: usize) -> Self {
        SinkPolicy { sinks, recent }
    }
}

impl Policy for SinkPolicy {
    fn spec(&self) -> String {
        format!("sink:{}+{}", self.sinks, self.recent)
    }

    fn budget(&self) -> usize {
        self.sinks.saturating_add(self.recent)
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::None
    }

    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]) {
        let rule = Rule {
            sinks: self.sinks,
            recent: self.recent,
        };
        select_per_head(cands, rule, self.budget(), false, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &SinkPolicy, heads: usize, pos: &[i64]) -> Vec<bool> {
        crate::policy::keep_mask(p, heads, pos, &vec![0.0; pos.len()])
    }

    #[test]
    fn keeps_sinks_and_window() {
        let p = SinkPolicy::new(2, 2);
        assert_eq!(p.spec(), "sink:2+2");
        assert_eq!(p.budget(), 4);
        assert!(!p.needs_scores());
        // t = 5: sinks 0,1; window 4,5; evict 3 (2 was evicted before)
        assert_eq!(
            run(&p, 1, &[0, 1, 4, 3, 5]),
            [true, true, true, false, true]
        );
        // slot-reused order
        assert_eq!(
            run(&p, 1, &[7, 1, 0, 6, 8]),
            [true, true, true, false, true]
        );
    }

    #[test]
    fn prefill_and_padding() {
        let p = SinkPolicy::new(1, 2);
        assert_eq!(
            run(&p, 1, &[0, 1, 2, 3, 4]),
            [true, false, false, true, true]
        );
        // -1 is never a sink (even though -1 < S) and goes first
        assert_eq!(run(&p, 1, &[-1, 0, 1, 2]), [false, true, true, true]);
        assert_eq!(
            run(&p, 2, &[0, -1, 5, 6, 0, 4, 5, 6]),
            [true, false, true, true, true, false, true, true]
        );
    }

    #[test]
    fn zero_recent_keeps_sinks_then_newest() {
        let p = SinkPolicy::new(2, 0);
        // no window: sinks 0,1 protected, oldest of the rest evicted
        assert_eq!(run(&p, 1, &[0, 1, 2]), [true, true, false]);
    }
}
