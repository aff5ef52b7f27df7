//! `full`: keeps every token (no eviction; the store grows its capacity instead).

use super::{Candidates, Policy, ScoreRule};

/// The full cache: budget `usize::MAX`, never evicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FullPolicy;

impl FullPolicy {
    pub fn new() -> Self {
        FullPolicy
    }
}

impl Policy for FullPolicy {
    fn spec(&self) -> String {
        "full".to_string()
    }

    fn budget(&self) -> usize {
        usize::MAX
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::None
    }

    /// Keeps everything (`min(usize::MAX, n) = n`).
    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]) {
        keep[..cands.heads * cands.n].fill(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything() {
        let p = FullPolicy::new();
        assert_eq!(p.spec(), "full");
        assert_eq!(p.budget(), usize::MAX);
        assert!(!p.needs_scores());
        let pos = [0, 1, -1, 3, 4, 5];
        let sc = [0.0; 6];
        let c = Candidates {
            heads: 2,
            n: 3,
            positions: &pos,
            scores: &sc,
        };
        let mut keep = [false; 6];
        p.select(&c, &mut keep);
        assert_eq!(keep, [true; 6]);
    }
}
