//! `random:B` (`random:B@rng=N`): random eviction, the baseline the H2O paper reports against
//! (Zhang et al. 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs").
//!
//! Rule: every token gets a random key in `[0, 1)` when it is written ([`key`] of the generator
//! number `rng`, the layer, the head and the position; [`ScoreRule::RandomKey`]); per head the B
//! largest keys stay, so the kept set is a uniform random sample of the tokens seen so far
//! (reservoir sampling) and is the same on every run and in the PyTorch reference. Victims: the
//! lowest key, then the oldest; nothing is protected. The generator number is `rng`, not "seed":
//! in this project "seed" names the PyTorch project the tool grew from.

use super::{select_by_score, Candidates, Policy, ScoreRule};

/// B tokens per head kept at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomPolicy {
    pub budget: usize,
    /// Generator number (`@rng=N`, default 0).
    pub rng: u64,
}

impl RandomPolicy {
    pub fn new(budget: usize, rng: u64) -> Self {
        RandomPolicy { budget, rng }
    }
}

/// splitmix64's finaliser (Steele, Lea and Flood 2014): a bijection of 64 bits that mixes well.
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random key of a token: 24 bits of `mix(mix(mix(mix(rng + φ) ^ layer) ^ head) ^ position)`
/// (φ = 0x9E3779B97F4A7C15, positions as two's-complement u64) as `k / 2^24`, exact in f32.
/// export/h2o_export/policies/random.py computes the same numbers.
pub fn key(rng: u64, layer: usize, head: usize, position: i64) -> f32 {
    let mut h = mix(rng.wrapping_add(0x9E37_79B9_7F4A_7C15));
    h = mix(h ^ layer as u64);
    h = mix(h ^ head as u64);
    h = mix(h ^ position as u64);
    (h >> 40) as f32 / (1u64 << 24) as f32
}

impl Policy for RandomPolicy {
    fn spec(&self) -> String {
        if self.rng == 0 {
            format!("random:{}", self.budget)
        } else {
            format!("random:{}@rng={}", self.budget, self.rng)
        }
    }

    fn budget(&self) -> usize {
        self.budget
    }

    fn score_rule(&self) -> ScoreRule {
        ScoreRule::RandomKey { rng: self.rng }
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
    fn keys_are_fixed_numbers() {
        // the same values export/tests/test_policies_new.py checks in Python
        assert_eq!(key(0, 0, 0, 0), 0.09899372);
        assert_eq!(key(7, 3, 2, 1000), 0.6370028);
        assert_eq!(key(0, 0, 0, 0), key(0, 0, 0, 0));
        assert_ne!(key(0, 0, 0, 1), key(0, 0, 0, 0));
        assert_ne!(key(1, 0, 0, 0), key(0, 0, 0, 0));
        assert_ne!(key(0, 1, 0, 0), key(0, 0, 0, 0));
        assert_ne!(key(0, 0, 1, 0), key(0, 0, 0, 0));
    }

    #[test]
    fn keys_are_uniform_in_the_unit_interval() {
        let n = 100_000;
        let keys: Vec<f32> = (0..n).map(|p| key(3, 1, 2, p)).collect();
        assert!(keys.iter().all(|&k| (0.0..1.0).contains(&k)));
        let mean = keys.iter().map(|&k| k as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        // every tenth of the interval gets about a tenth of the keys
        let mut bins = [0usize; 10];
        for k in keys {
            bins[(k * 10.0) as usize] += 1;
        }
        assert!(
            bins.iter().all(|&b| (9_500..10_500).contains(&b)),
            "{bins:?}"
        );
    }

    #[test]
    fn spec_and_selection() {
        assert_eq!(RandomPolicy::new(4, 0).spec(), "random:4");
        assert_eq!(RandomPolicy::new(4, 7).spec(), "random:4@rng=7");
        let p = RandomPolicy::new(2, 7);
        assert_eq!(p.score_rule(), ScoreRule::RandomKey { rng: 7 });
        assert_eq!(
            keep_mask(&p, 1, &[0, 1, 2], &[0.3, 0.2, 0.9]),
            [true, false, true]
        );
    }
}
