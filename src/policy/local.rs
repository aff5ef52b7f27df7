//! `local:R`: a sliding window keeping the last R positions (`position > t - R`).

use super::{select_per_head, Candidates, Policy, Rule, ScoreRule};

/// Sliding window of the R newest positions; ignores scores. Victims: padding first, then the
/// oldest positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPolicy {
    pub recent: usize,
}

impl LocalPolicy {
    pub fn new(recent: usize) -> Self {
        LocalPolicy { recent }
    }
}

impl Policy for LocalPolicy {
    fn spec(&self) -> String {
        format!("local:{}", self.recent)
    }

    fn budget(&self) -> usize {
        self.recent
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::None
    }

    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]) {
        let rule = Rule {
            sinks: 0,
            recent: self.recent,
        };
        select_per_head(cands, rule, self.recent, false, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &LocalPolicy, heads: usize, pos: &[i64]) -> Vec<bool> {
        crate::policy::keep_mask(p, heads, pos, &vec![f32::NAN; pos.len()]) // never read
    }

    #[test]
    fn keeps_last_r_with_slot_reuse_order() {
        let p = LocalPolicy::new(3);
        assert_eq!(p.spec(), "local:3");
        assert_eq!(p.budget(), 3);
        assert!(!p.needs_scores());
        // slots hold 5, 3, 4 (reused), new token 6: evict 3
        assert_eq!(run(&p, 1, &[5, 3, 4, 6]), [true, false, true, true]);
        // two heads, different slot orders
        assert_eq!(
            run(&p, 2, &[4, 2, 3, 5, 3, 4, 2, 5]),
            [true, false, true, true, true, true, false, true]
        );
    }

    #[test]
    fn prefill_evicts_many() {
        let p = LocalPolicy::new(2);
        // 0 cached, 5 new tokens
        assert_eq!(
            run(&p, 1, &[0, 1, 2, 3, 4]),
            [false, false, false, true, true]
        );
    }

    #[test]
    fn padding_first() {
        let p = LocalPolicy::new(3);
        assert_eq!(run(&p, 1, &[-1, 0, 1, 2]), [false, true, true, true]);
        assert_eq!(
            run(&p, 1, &[0, -1, -1, 1, 2]),
            [true, false, false, true, true]
        );
        // all padding: keep exactly budget
        assert_eq!(
            run(&p, 1, &[-1, -1, -1, -1]).iter().filter(|&&k| k).count(),
            3
        );
        // padding is kept only after all valid ones
        // ties among padding: lowest index goes
        assert_eq!(run(&p, 1, &[-1, 7, -1, -1]), [false, true, true, true]);
    }

    #[test]
    fn n_not_above_budget_keeps_all() {
        let p = LocalPolicy::new(4);
        assert_eq!(run(&p, 1, &[0, 1, 2]), [true; 3]);
    }
}
