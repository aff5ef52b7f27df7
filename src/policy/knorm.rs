//! `knorm:B`: key-norm eviction (Devoto et al. 2024, "A Simple and Effective L2 Norm-Based
//! Strategy for KV Cache Compression"; kvpress's KnormPress).
//!
//! Rule: per head, keep the B tokens whose key has the smallest L2 norm (low-norm keys draw the
//! most attention, the paper finds). The score is minus the squared norm of the rotated key as
//! stored ([`ScoreRule::KeyNorm`]; RoPE rotates pairs and keeps the norm), computed once when the
//! token is written, so victims go largest norm first, then oldest; nothing is protected. It
//! reads no attention at all, so it would work unchanged with fused attention kernels
//! (FlashAttention and the like) that never materialise attention probabilities.
//!
//! The squared norm is rounded to [`NORM_BITS`] significant bits before ranking: the same token
//! at two positions has the same key norm in exact arithmetic (in the first layer its keys differ
//! only by the rotation), and without the rounding float noise in the rotation would break such
//! ties one way in ONNX Runtime and another in the PyTorch reference; rounded, they tie and the
//! older goes, in both.

use super::{select_by_score, Candidates, Policy, ScoreRule};

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

/// Significant bits (the leading one and 11 fraction bits) the squared norm keeps: norms within
/// about 0.02% of each other rank as equal.
pub const NORM_BITS: u32 = 12;

/// The score of a key: minus its squared L2 norm, the squares summed in f32 in element order and
/// rounded to [`NORM_BITS`] significant bits (half away from zero); a larger norm gives a lower
/// score and goes first. export/h2o_export/policies/knorm.py rounds the same way.
pub fn key_score(key: impl IntoIterator<Item = f32>) -> f32 {
    let sq = key.into_iter().fold(0.0f32, |acc, x| acc + x * x);
    let drop = 24 - NORM_BITS; // f32 has 24 significant bits
    let half = 1u32 << (drop - 1);
    // sq >= 0 (or NaN), so adding half a unit cannot reach the sign bit
    -f32::from_bits((sq.to_bits() + half) & !((1u32 << drop) - 1))
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
        select_by_score(cands, self.budget, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::keep_mask;

    #[test]
    fn score_is_minus_the_rounded_squared_norm() {
        assert_eq!(key_score([3.0, 4.0]), -25.0);
        assert_eq!(key_score([]), -0.0);
        assert!(key_score([1.0, 1.0]) > key_score([0.0, 2.0]));
        // 12 significant bits: 4097 rounds to 4098 (half up), 4095 stays, 1 + 2^-13 rounds to 1
        assert_eq!(key_score([4097f32.sqrt()]), key_score([4098f32.sqrt()]));
        assert_eq!(key_score([(4097.0f32).sqrt()]), -4098.0);
        assert_eq!(key_score([1.0, (2.0f32).powi(-7)]), -1.0);
        assert_eq!(
            key_score([1.0, (2.0f32).powi(-5)]),
            -(1.0 + (2.0f32).powi(-10))
        );
    }

    #[test]
    fn largest_norm_goes_first_then_oldest() {
        let p = KnormPolicy::new(2);
        assert_eq!(p.spec(), "knorm:2");
        assert_eq!(p.score_rule(), ScoreRule::KeyNorm);
        let pos = [0, 1, 2, 2, 1, 0];
        // head 0: norms^2 4, 9, 1 -> pos1 goes; head 1: pos2 and pos0 tie at -4 -> pos0 goes
        let sc = [-4.0, -9.0, -1.0, -4.0, -1.0, -4.0];
        assert_eq!(
            keep_mask(&p, 2, &pos, &sc),
            [true, false, true, true, true, false]
        );
    }
}
