//! How a slot table keeps each [`ScoreRule`]'s score per (batch, head, slot): the cached slots'
//! update after a step, and the new tokens' first score (needed by the plan before they are
//! written). The rules' meanings are stated in `policy`; this is where they meet the slot layout.

use super::history::History;
use super::store::NewTokens;
use super::NewKv;
use crate::policy::knorm::key_score;
use crate::policy::random;
use crate::policy::scissor::{below_mean, mean_share};
use crate::policy::ScoreRule;

/// The shape of one layer's slots, and each row's entries before the step.
pub(crate) struct Slots<'a> {
    pub heads: usize,
    pub capacity: usize,
    /// Per batch row: slots `0..used` hold tokens (every head).
    pub used: &'a [usize],
}

impl Slots<'_> {
    /// Per batch row: the step's mean attention share, real new queries over the tokens attended
    /// (cached + real new).
    fn shares(&self, new: &NewTokens<'_>, out: &mut Vec<f32>) {
        out.clear();
        for (b, &used) in self.used.iter().enumerate() {
            let q = new.mask[b * new.seq..(b + 1) * new.seq]
                .iter()
                .filter(|&&m| m != 0)
                .count();
            out.push(mean_share(q, used + q));
        }
    }
}

/// The cached slots' scores `[batch, heads, capacity]` after the step `new` (its attention
/// covers the `new.past` slots the graph ran with; empty slots received exactly 0).
pub(crate) fn step_scores(
    rule: ScoreRule,
    slots: &Slots<'_>,
    new: &NewTokens<'_>,
    score: &mut [f32],
    history: Option<&mut History>,
    shares: &mut Vec<f32>,
) {
    let (c, cols, past) = (slots.capacity, new.past + new.seq, new.past);
    let rows = slots.used.len() * slots.heads;
    let att = |r: usize| &new.attention[r * cols..r * cols + past];
    match rule {
        ScoreRule::None | ScoreRule::KeyNorm | ScoreRule::RandomKey { .. } => {}
        ScoreRule::Accumulated => {
            for r in 0..rows {
                for (d, s) in score[r * c..r * c + past].iter_mut().zip(att(r)) {
                    *d += *s;
                }
            }
        }
        ScoreRule::Current => {
            for r in 0..rows {
                score[r * c..r * c + past].copy_from_slice(att(r));
            }
        }
        ScoreRule::Unimportance { .. } => {
            let h = history.expect("the table keeps a history for this rule");
            slots.shares(new, shares);
            for r in 0..rows {
                let b = r / slots.heads;
                let used = slots.used[b];
                h.step_row(r, att(r), used, shares[b], &mut score[r * c..(r + 1) * c]);
            }
        }
    }
}

/// The new tokens' first scores, `[batch, heads, seq]` into `out` (padding gets 0; it is never
/// stored): their own attention (also kept, unread, for [`ScoreRule::None`]), minus their first
/// unimportant step for scissor, minus their key's squared norm, or their random key from
/// `(rng, layer, head, position)`.
pub(crate) fn entry_scores(
    rule: ScoreRule,
    layer: usize,
    slots: &Slots<'_>,
    new: &NewTokens<'_>,
    out: &mut Vec<f32>,
    shares: &mut Vec<f32>,
) {
    let (heads, seq, cols) = (slots.heads, new.seq, new.past + new.seq);
    let batch = slots.used.len();
    out.clear();
    out.resize(batch * heads * seq, 0.0);
    slots.shares(new, shares);
    let head_dim = new_len(&new.k) / (batch * heads * seq).max(1);
    for b in 0..batch {
        for h in 0..heads {
            let r = b * heads + h;
            for j in (0..seq).filter(|&j| new.mask[b * seq + j] != 0) {
                let own = new.attention[r * cols + new.past + j];
                out[r * seq + j] = match rule {
                    ScoreRule::None | ScoreRule::Accumulated | ScoreRule::Current => own,
                    ScoreRule::Unimportance { .. } => -f32::from(u8::from(below_mean(own, shares[b]))),
                    ScoreRule::KeyNorm => key_norm(&new.k, (r * seq + j) * head_dim, head_dim),
                    ScoreRule::RandomKey { rng } => {
                        random::key(rng, layer, h, new.positions[b * seq + j])
                    }
                };
            }
        }
    }
}

fn new_len(kv: &NewKv<'_>) -> usize {
    match kv {
        NewKv::F32(s) => s.len(),
        NewKv::F16(s) => s.len(),
    }
}

/// The key-norm score of the `len` elements of `k` from `at`, in f32 (0 if `k` is too short: the
/// K/V write refuses such a step before anything is stored).
fn key_norm(k: &NewKv<'_>, at: usize, len: usize) -> f32 {
    match k {
        NewKv::F32(s) => s
            .get(at..at + len)
            .map_or(0.0, |x| key_score(x.iter().copied())),
        NewKv::F16(s) => s
            .get(at..at + len)
            .map_or(0.0, |x| key_score(x.iter().map(|v| v.to_f32()))),
    }
}
