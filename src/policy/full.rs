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
    use crate::policy::keep_mask;

    #[test]
    fn keeps_everything() {
        let p = FullPolicy::new();
        assert_eq!(p.spec(), "full");
        assert_eq!(p.budget(), usize::MAX);
        assert!(!p.needs_scores());
        let pos = [0, 1, -1, 3, 4, 5];
        assert_eq!(keep_mask(&p, 2, &pos, &[0.0; 6]), [true; 6]);
    }
}
