//! `tova:B` / `tova-head:B`: TOVA, Token Omission Via Attention (Oren et al. 2024, "Transformers
//! are Multi-State RNNs").
//!
//! Rule: when a layer holds more than B candidates, drop the one that the current query attends
//! to least, with the attention averaged over the layer's heads (the paper's default: every head
//! of a layer keeps the same tokens); nothing accumulates across steps and nothing is protected,
//! so the new token itself may go. `tova-head:B` ranks each head by its own attention (the
//! paper's per-head variant). The score is this step's attention ([`ScoreRule::Current`]; for a
//! step of several new tokens, their attention summed); the mean over heads is ranked as the sum
//! over heads (the same order). Ties: lowest score, then the oldest position.

use super::{select_by_score, select_layer_scope, Candidates, Policy, Rule, Scope, ScoreRule};

/// The B tokens with the most attention from the current query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TovaPolicy {
    pub budget: usize,
    /// [`Scope::Layer`]: attention averaged over heads (TOVA's default); [`Scope::Head`]: per head.
    pub scope: Scope,
}

impl TovaPolicy {
    pub fn new(budget: usize, scope: Scope) -> Self {
        TovaPolicy { budget, scope }
    }
}

impl Policy for TovaPolicy {
    fn spec(&self) -> String {
        let name = match self.scope {
            Scope::Layer => "tova",
            Scope::Head => "tova-head",
        };
        format!("{name}:{}", self.budget)
    }

    fn budget(&self) -> usize {
        self.budget
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::Current
    }

    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]) {
        let rule = Rule {
            sinks: 0,
            recent: 0,
        };
        match self.scope {
            Scope::Layer => select_layer_scope(cands, rule, self.budget, keep),
            Scope::Head => select_by_score(cands, self.budget, keep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::keep_mask as run;

    #[test]
    fn spec_budget_and_rule() {
        let p = TovaPolicy::new(256, Scope::Layer);
        assert_eq!(p.spec(), "tova:256");
        assert_eq!(TovaPolicy::new(8, Scope::Head).spec(), "tova-head:8");
        assert_eq!(p.budget(), 256);
        assert_eq!(p.score_rule(), ScoreRule::Current);
        assert!(p.needs_scores());
    }

    #[test]
    fn head_average_decides_for_every_head() {
        let p = TovaPolicy::new(2, Scope::Layer);
        let pos = [0, 1, 2, 0, 1, 2];
        // sums over heads: pos0 0.5, pos1 0.6, pos2 (new) 0.4 -> the new token goes everywhere,
        // although head 1 alone would drop pos0
        let sc = [0.5, 0.1, 0.3, 0.0, 0.5, 0.1];
        assert_eq!(
            run(&p, 2, &pos, &sc),
            [true, true, false, true, true, false]
        );
    }

    #[test]
    fn per_head_form_and_ties_go_oldest() {
        let p = TovaPolicy::new(2, Scope::Head);
        let pos = [0, 1, 2, 2, 0, 1];
        let sc = [0.5, 0.1, 0.3, 0.2, 0.2, 0.6];
        // head 0 drops pos1 (0.1); head 1: pos2 and pos0 tie at 0.2 -> pos0 (older) goes
        assert_eq!(
            run(&p, 2, &pos, &sc),
            [true, false, true, true, false, true]
        );
    }

    #[test]
    fn nothing_is_protected() {
        let p = TovaPolicy::new(3, Scope::Head);
        // prefill of 5 into budget 3: the two least attended go, the newest among them
        assert_eq!(
            run(&p, 1, &[0, 1, 2, 3, 4], &[0.9, 0.0, 0.5, 0.4, 0.1]),
            [true, false, true, true, false]
        );
    }
}
