//! `knorm:B`: key-norm eviction (Devoto et al. 2024, "A Simple and Effective L2 Norm-Based
//! Strategy for KV Cache Compression"; kvpress's KnormPress).
//!
//! Rule: per head, keep the B tokens whose key has the smallest L2 norm (low-norm keys draw the
//! most attention, the paper finds). The score is minus the squared norm of the rotated key as
//! stored ([`ScoreRule::KeyNorm`], RoPE rotates pairs and keeps the norm), computed once when the
//! token is written, so victims go largest norm first, then oldest; nothing is protected. It
//! reads no attention at all, so it would work unchanged with fused attention kernels
//! (FlashAttention and the like) that never materialise attention probabilities.

use super::{select_per_head, Candidates, Policy, Rule, ScoreRule};

/// The B smallest-norm keys per head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnormPolicy {
    pub budget: usize,
}

impl KnormPolicy {
    pub fn new(budget: usize) -> Self {
        KnormPolicy { budget }
    }
}

/// The score of a key: minus its squared L2 norm, the squares summed in f32 in element order
/// (a larger norm gives a lower score and goes first).
pub fn key_score(key: impl IntoIterator<Item = f32>) -> f32 {
    -key.into_iter().fold(0.0f32, |acc, x| acc + x * x)
}

impl Policy for KnormPolicy {
    fn spec(&self) -> String {
        format!("knorm:{}", self.budget)
    }

    fn budget(&self) -> usize {
        self.budget
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::KeyNorm
    }

    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]) {
        let rule = Rule {
            sinks: 0,
            recent: 0,
        };
        select_per_head(cands, rule, self.budget, true, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_minus_the_squared_norm() {
        assert_eq!(key_score([3.0, 4.0]), -25.0);
        assert_eq!(key_score([]), -0.0);
        assert!(key_score([1.0, 1.0]) > key_score([0.0, 2.0]));
    }

    #[test]
    fn largest_norm_goes_first_then_oldest() {
        let p = KnormPolicy::new(2);
        assert_eq!(p.spec(), "knorm:2");
        assert_eq!(p.score_rule(), ScoreRule::KeyNorm);
        let pos = [0, 1, 2, 2, 1, 0];
        // head 0: norms^2 4, 9, 1 -> pos1 goes; head 1: pos2 and pos0 tie at -4 -> pos0 goes
        let sc = [-4.0, -9.0, -1.0, -4.0, -1.0, -4.0];
        let c = Candidates {
            heads: 2,
            n: 3,
            positions: &pos,
            scores: &sc,
        };
        let mut keep = [false; 6];
        p.select(&c, &mut keep);
        assert_eq!(keep, [true, false, true, true, true, false]);
    }
}
