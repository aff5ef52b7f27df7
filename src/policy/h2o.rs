//! `h2o:H+R` / `h2o-layer:H+R`: Heavy-Hitter Oracle, the last R positions plus the H heaviest.
//!
//! Among candidates outside the recent window (`position > t - R`) the ones with the largest
//! accumulated attention score survive; victims go lowest score first, then oldest position
//! (padding, position -1, before anything). Scope [`Scope::Head`] ranks every head by its own
//! scores (the H2O paper); [`Scope::Layer`] ranks by the scores summed over the layer's heads at
//! the same candidate index, so every head keeps the same positions (the seed's variant). In layer
//! scope all heads hold the same positions in the same slots, so head 0's positions stand for all.

use super::{select_layer_scope, select_per_head, Candidates, Policy, Rule, ScoreRule};

/// How scores are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Per (layer, head): each head keeps its own heavy hitters (the H2O paper).
    Head,
    /// Per layer: scores summed over heads, every head keeps the same positions.
    Layer,
}

/// H heavy hitters plus an R-token recent window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2oPolicy {
    pub heavy: usize,
    pub recent: usize,
    pub scope: Scope,
}

impl H2oPolicy {
    pub fn new(heavy: usize, recent: usize, scope: Scope) -> Self {
        H2oPolicy {
            heavy,
            recent,
            scope,
        }
    }
}

impl Policy for H2oPolicy {
    fn spec(&self) -> String {
        let name = match self.scope {
            Scope::Head => "h2o",
            Scope::Layer => "h2o-layer",
        };
        format!("{name}:{}+{}", self.heavy, self.recent)
    }

    fn budget(&self) -> usize {
        self.heavy.saturating_add(self.recent)
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::Accumulated
    }

    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]) {
        let rule = Rule {
            sinks: 0,
            recent: self.recent,
        };
        let budget = self.budget();
        match self.scope {
            Scope::Head => select_per_head(cands, rule, budget, true, keep),
            Scope::Layer => select_layer_scope(cands, rule, budget, keep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::keep_mask as run;

    #[test]
    fn spec_and_budget() {
        let p = H2oPolicy::new(192, 64, Scope::Head);
        assert_eq!(p.spec(), "h2o:192+64");
        assert_eq!(p.budget(), 256);
        assert!(p.needs_scores());
        assert_eq!(H2oPolicy::new(3, 1, Scope::Layer).spec(), "h2o-layer:3+1");
    }

    #[test]
    fn evicts_lowest_score_outside_window() {
        let p = H2oPolicy::new(2, 1, Scope::Head);
        // t = 3: window {3}; heavy candidates 0,1,2 with scores .5 .1 .3 -> evict 1
        assert_eq!(
            run(&p, 1, &[0, 1, 2, 3], &[0.5, 0.1, 0.3, 0.0]),
            [true, false, true, true]
        );
        // the new token (lowest score) is protected by the window
        assert_eq!(
            run(&p, 1, &[2, 0, 1, 3], &[0.3, 0.5, 0.9, 0.01]),
            [false, true, true, true]
        );
    }

    #[test]
    fn ties_evict_oldest() {
        let p = H2oPolicy::new(2, 1, Scope::Head);
        // 0, 1, 2 tie at 0.25: oldest (0) goes, wherever its slot is
        assert_eq!(
            run(&p, 1, &[2, 1, 0, 3], &[0.25, 0.25, 0.25, 1.0]),
            [true, true, false, true]
        );
        // -0.0 == 0.0 ties too
        assert_eq!(
            run(&p, 1, &[1, 0, 2, 3], &[0.0, -0.0, 0.0, 1.0]),
            [true, false, true, true]
        );
    }

    #[test]
    fn per_head_ranking() {
        let p = H2oPolicy::new(1, 1, Scope::Head);
        let pos = [0, 1, 2, 0, 1, 2];
        let sc = [0.9, 0.1, 0.0, 0.1, 0.9, 0.0];
        assert_eq!(
            run(&p, 2, &pos, &sc),
            [true, false, true, false, true, true]
        );
    }

    #[test]
    fn layer_scope_sums_heads() {
        let p = H2oPolicy::new(1, 1, Scope::Layer);
        let pos = [0, 1, 2, 0, 1, 2];
        // sums: 0 -> 1.0, 1 -> 1.1: evict 0 on every head although head 0 prefers 0
        let sc = [0.9, 0.1, 0.0, 0.1, 1.0, 0.0];
        assert_eq!(
            run(&p, 2, &pos, &sc),
            [false, true, true, false, true, true]
        );
        // tie of sums: oldest goes
        let sc = [0.5, 0.0, 0.0, 0.0, 0.5, 0.0];
        assert_eq!(
            run(&p, 2, &pos, &sc),
            [false, true, true, false, true, true]
        );
    }

    #[test]
    fn padding_first_and_nan_is_heaviest() {
        let p = H2oPolicy::new(2, 1, Scope::Head);
        assert_eq!(
            run(&p, 1, &[0, -1, 1, 2], &[0.0, 9.0, 0.0, 0.0]),
            [true, false, true, true]
        );
        assert_eq!(
            run(&p, 1, &[0, 1, 2, 3], &[f32::NAN, 0.1, 0.2, 0.0]),
            [true, false, true, true]
        );
    }

    #[test]
    fn only_nan_evictable_falls_back_to_oldest() {
        let p = H2oPolicy::new(1, 1, Scope::Head);
        assert_eq!(
            run(&p, 1, &[1, 0, 2], &[f32::NAN, f32::NAN, 0.0]),
            [true, false, true]
        );
        // padding ignores scores: oldest/lowest index padding goes
        assert_eq!(
            run(&p, 1, &[-1, 0, -1], &[5.0, 1.0, 0.0]),
            [false, true, true]
        );
    }

    #[test]
    fn prefill_many_victims() {
        let p = H2oPolicy::new(2, 2, Scope::Head);
        // 8 candidates, budget 4: window {6, 7}; heaviest two of 0..=5 are 4 (0.8) and 1 (0.7)
        let pos = [0, 1, 2, 3, 4, 5, 6, 7];
        let sc = [0.1, 0.7, 0.2, 0.2, 0.8, 0.0, 0.0, 0.0];
        assert_eq!(
            run(&p, 1, &pos, &sc),
            [false, true, false, false, true, false, true, true]
        );
        // ties among the heavy: 2 and 3 both 0.2 and one must stay -> 3 (younger) stays
        let sc = [0.1, 0.7, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(
            run(&p, 1, &pos, &sc),
            [false, true, false, true, false, false, true, true]
        );
    }

    #[test]
    fn zero_recent_may_evict_new_token() {
        let p = H2oPolicy::new(2, 0, Scope::Head);
        assert_eq!(
            run(&p, 1, &[0, 1, 2], &[0.5, 0.6, 0.1]),
            [true, true, false]
        );
    }

    #[test]
    fn large_n_uses_heap_scratch() {
        let n = 3000;
        let p = H2oPolicy::new(100, 50, Scope::Layer);
        let pos: Vec<i64> = (0..n as i64).chain(0..n as i64).collect();
        let sc: Vec<f32> = (0..2 * n).map(|i| ((i * 7919) % 1000) as f32).collect();
        let keep = run(&p, 2, &pos, &sc);
        assert_eq!(keep[..n].iter().filter(|&&k| k).count(), 150);
        assert_eq!(keep[..n], keep[n..]);
    }
}
