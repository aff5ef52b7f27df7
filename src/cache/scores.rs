//! How a slot table keeps each [`ScoreRule`]'s score per (batch, head, slot): the cached slots'
//! update after a step, and the new tokens' first score (needed by the plan before they are
//! written). The rules' meanings are stated in `policy`; this is where they meet the slot layout.

use super::history::History;
use super::new_tokens::{NewKv, NewTokens};
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
    /// Query heads summed into each attention row: 1, or G = query heads / KV heads after the
    /// grouped-query fold (cache::fold), whose rows each hold G queries' probabilities.
    pub queries_per_row: usize,
}

impl Slots<'_> {
    /// Per batch row: the step's mean attention share, the queries in a row (real new tokens x
    /// query heads per row) over the tokens attended (cached + real new).
    fn shares(&self, new: &NewTokens<'_>, out: &mut Vec<f32>) {
        out.clear();
        for (b, &used) in self.used.iter().enumerate() {
            let q = new.mask[b * new.seq..(b + 1) * new.seq]
                .iter()
                .filter(|&&m| m != 0)
                .count();
            out.push(mean_share(q * self.queries_per_row, used + q));
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
            h.begin_step();
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
    for (b, &share) in shares.iter().enumerate() {
        for h in 0..heads {
            let r = b * heads + h;
            for j in (0..seq).filter(|&j| new.mask[b * seq + j] != 0) {
                let own = new.attention[r * cols + new.past + j];
                out[r * seq + j] = match rule {
                    ScoreRule::None | ScoreRule::Accumulated | ScoreRule::Current => own,
                    ScoreRule::Unimportance { .. } => -f32::from(u8::from(below_mean(own, share))),
                    ScoreRule::KeyNorm => key_norm(&new.k, (r * seq + j) * head_dim, head_dim),
                    ScoreRule::RandomKey { rng } => {
                        random::key(rng, layer, h, new.positions[b * seq + j])
                    }
                };
            }
        }
    }
}

/// Elements of the new K/V on the host (0 when they stayed on the device).
fn new_len(kv: &NewKv<'_>) -> usize {
    match kv {
        NewKv::F32(s) => s.len(),
        NewKv::F16(s) => s.len(),
        NewKv::Device => 0,
    }
}

/// The key-norm score of the `len` elements of `k` from `at`, in f32 (0 if `k` is too short: the
/// K/V write refuses such a step before anything is stored; keys left on the device never get here,
/// `decoder::layer_limits` refuses key-norm policies with device K/V).
fn key_norm(k: &NewKv<'_>, at: usize, len: usize) -> f32 {
    match k {
        NewKv::Device => 0.0,
        NewKv::F32(s) => s
            .get(at..at + len)
            .map_or(0.0, |x| key_score(x.iter().copied())),
        NewKv::F16(s) => s
            .get(at..at + len)
            .map_or(0.0, |x| key_score(x.iter().map(|v| v.to_f32()))),
    }
}

#[cfg(test)]
mod tests {
    use crate::cache::{KvStore, NewKv, NewTokens};
    use crate::dtype::KvDtype;
    use crate::policy::knorm::key_score;
    use crate::policy::{
        random, KnormPolicy, LocalPolicy, Policy, RandomPolicy, ScissorPolicy, Scope, TovaPolicy,
    };

    const HEADS: usize = 2;

    /// One batch-1 update of `layer` with one new token at `pos` (K = V = `[pos, head]`),
    /// attention `att` `[HEADS, past + 1]`.
    fn step(s: &mut KvStore, layer: usize, pol: &dyn Policy, pos: i64, att: &[f32]) {
        let kv: Vec<f32> = (0..HEADS).flat_map(|h| [pos as f32, h as f32]).collect();
        let new = NewTokens {
            k: NewKv::of(&kv),
            v: NewKv::of(&kv),
            attention: att,
            past: att.len() / HEADS - 1,
            positions: &[pos],
            mask: &[1],
            seq: 1,
        };
        s.update(layer, &new, pol).unwrap();
    }

    fn store(layers: usize, limit: usize) -> KvStore {
        KvStore::new(layers, 1, HEADS, 2, KvDtype::Float32, limit, 4).unwrap()
    }

    #[test]
    fn tova_scores_are_this_steps_attention_only() {
        let mut s = store(1, 3);
        let pol = TovaPolicy::new(3, Scope::Head);
        step(&mut s, 0, &pol, 0, &[0.5, 0.25]);
        // capacity 3 after the first step: [slot0, slots 1-2 empty, new]
        step(
            &mut s,
            0,
            &pol,
            1,
            &[0.75, 0.0, 0.0, 0.25, 0.5, 0.0, 0.0, 0.5],
        );
        assert_eq!(s.scores(0, 0, 0)[..2], [0.75, 0.25], "replaced, not added");
        assert_eq!(s.scores(0, 0, 1)[..2], [0.5, 0.5]);
    }

    /// The attention of the four steps the scissor window tests feed (2 heads, 4 slots; each
    /// head's row holds the slots in use, then the new token's column after the empty ones):
    /// step 0 one token (share 1/1); step 1 head 0 (0.25, 0.75), head 1 (0.5, 0.5) (share 1/2);
    /// steps 2 and 3 (shares 1/3, 1/4) keep pos0 below the share in head 0.
    fn scissor_steps() -> [Vec<f32>; 4] {
        let pad = [0.0; 3];
        let row = |a: f32, b: f32| [&[a][..], &pad, &[b]].concat();
        let r3 = |a: [f32; 3]| [&a[..2], &pad[..2], &a[2..]].concat();
        let r4 = |a: [f32; 4]| [&a[..3], &pad[..1], &a[3..]].concat();
        [
            vec![1.0, 1.0],
            [row(0.25, 0.75), row(0.5, 0.5)].concat(),
            [r3([0.1, 0.5, 0.4]), r3([0.4, 0.3, 0.3])].concat(),
            [r4([0.1, 0.5, 0.3, 0.1]), r4([0.1, 0.3, 0.3, 0.3])].concat(),
        ]
    }

    #[test]
    fn scissor_counts_below_mean_steps_within_the_window() {
        let mut s = store(1, 4);
        let pol = ScissorPolicy::new(4, 2, 0);
        let steps = scissor_steps();
        // step 0: one token, share 1/1: 1.0 is not below
        step(&mut s, 0, &pol, 0, &steps[0]);
        assert_eq!(s.scores(0, 0, 0)[0], 0.0);
        // step 1: share 1/2; head 0: pos0 0.25 (below), pos1 0.75; head 1: 0.5, 0.5 (not below)
        step(&mut s, 0, &pol, 1, &steps[1]);
        assert_eq!(s.scores(0, 0, 0)[..2], [-1.0, 0.0]);
        assert_eq!(s.scores(0, 0, 1)[..2], [0.0, 0.0]);
        // steps 2, 3: share 1/3 then 1/4, pos0 below both times in head 0: the window (2) holds
        // steps 2 and 3, so step 1's bit has dropped out: count 2
        step(&mut s, 0, &pol, 2, &steps[2]);
        assert_eq!(s.scores(0, 0, 0)[..3], [-2.0, 0.0, 0.0]);
        assert_eq!(s.scores(0, 0, 1)[..3], [0.0, -1.0, -1.0]);
        step(&mut s, 0, &pol, 3, &steps[3]);
        assert_eq!(s.scores(0, 0, 0), [-2.0, 0.0, 0.0, -1.0]);
        assert_eq!(s.scores(0, 0, 1), [-1.0, -1.0, -1.0, 0.0]);
    }

    /// Under grouped-query attention a row sums G query heads (1 after the fold's G = 2 here), so
    /// the mean share is G / n: at step 1 (n = 2) it is 1.0, not 0.5.
    #[test]
    fn scissor_share_counts_the_query_heads_of_a_folded_row() {
        let pol = ScissorPolicy::new(4, 2, 0);
        let pad = [0.0; 3];
        let row = |a: f32, b: f32| [&[a][..], &pad, &[b]].concat();
        // rows of two query heads each: head 0 (0.75, 1.25), head 1 (1.0, 1.0), both sum to 2
        let att = [row(0.75, 1.25), row(1.0, 1.0)].concat();
        let mut grouped = store(1, 4).with_query_group(2);
        step(&mut grouped, 0, &pol, 0, &[2.0, 2.0]);
        step(&mut grouped, 0, &pol, 1, &att);
        assert_eq!(
            grouped.scores(0, 0, 0)[..2],
            [-1.0, 0.0],
            "0.75 < 2/2: below"
        );
        assert_eq!(
            grouped.scores(0, 0, 1)[..2],
            [0.0, 0.0],
            "1.0 is not below 1.0"
        );
        // the same rows read as one query head each (share 1/2): nothing is below
        let mut single = store(1, 4);
        step(&mut single, 0, &pol, 0, &[2.0, 2.0]);
        step(&mut single, 0, &pol, 1, &att);
        assert_eq!(single.scores(0, 0, 0)[..2], [0.0, 0.0]);
    }

    /// The steps of [`scissor_counts_below_mean_steps_within_the_window`], normalised: each count
    /// divided by the steps its token was seen (entry included, at most the window of 2).
    #[test]
    fn scissor_normalized_divides_by_the_steps_seen() {
        let mut s = store(1, 4);
        let pol = ScissorPolicy::new(4, 2, 0).with_normalized(true);
        let steps = scissor_steps();
        step(&mut s, 0, &pol, 0, &steps[0]);
        assert_eq!(s.scores(0, 0, 0)[0], 0.0);
        step(&mut s, 0, &pol, 1, &steps[1]);
        // pos0: 1 below in 2 steps seen
        assert_eq!(s.scores(0, 0, 0)[..2], [-0.5, 0.0]);
        assert_eq!(s.scores(0, 0, 1)[..2], [0.0, 0.0]);
        step(&mut s, 0, &pol, 2, &steps[2]);
        // head 0: pos0 2 of 2; head 1: pos1 1 of 2, pos2 (new, below 1/3) 1 of 1
        assert_eq!(s.scores(0, 0, 0)[..3], [-1.0, 0.0, 0.0]);
        assert_eq!(s.scores(0, 0, 1)[..3], [0.0, -0.5, -1.0]);
        step(&mut s, 0, &pol, 3, &steps[3]);
        assert_eq!(s.scores(0, 0, 0), [-1.0, 0.0, 0.0, -1.0]);
        assert_eq!(s.scores(0, 0, 1), [-0.5, -0.5, -0.5, 0.0]);
    }

    #[test]
    fn knorm_and_random_scores_are_fixed_when_written() {
        let mut s = store(2, 3);
        let (kn, rnd) = (KnormPolicy::new(3), RandomPolicy::new(3, 9));
        step(&mut s, 0, &kn, 5, &[0.5, 0.5]);
        step(&mut s, 1, &rnd, 5, &[0.5, 0.5]);
        for _ in 0..2 {
            for h in 0..HEADS {
                assert_eq!(s.scores(0, 0, h)[0], key_score([5.0, h as f32]));
                assert_eq!(
                    s.scores(1, 0, h)[0],
                    random::key(9, 1, h, 5),
                    "layer 1's key"
                );
            }
            // a later step's attention changes nothing
            let att = vec![0.25; HEADS * (s.layer_capacity(0) + 1)];
            let next = s.table(0).used(0) as i64 + 5;
            step(&mut s, 0, &kn, next, &att);
            step(&mut s, 1, &rnd, next, &att);
        }
    }

    #[test]
    fn layers_with_different_limits_have_their_own_capacity_and_mask() {
        let mut s = KvStore::with_limits(&[3, 1], 1, HEADS, 2, KvDtype::Float32, 4).unwrap();
        assert!(!s.uniform_limits());
        let (a, b) = (LocalPolicy::new(3), LocalPolicy::new(1));
        for p in 0..3 {
            let att0 = vec![0.0; HEADS * (s.layer_capacity(0) + 1)];
            let att1 = vec![0.0; HEADS * (s.layer_capacity(1) + 1)];
            step(&mut s, 0, &a, p, &att0);
            step(&mut s, 1, &b, p, &att1);
        }
        assert_eq!((s.layer_capacity(0), s.layer_capacity(1)), (3, 1));
        assert_eq!(s.positions(0, 0, 0), [0, 1, 2]);
        assert_eq!(s.positions(1, 0, 0), [2]);
        let mut m = Vec::new();
        s.append_mask(0, &[1], 1, &mut m);
        s.append_mask(1, &[1], 1, &mut m);
        assert_eq!(
            m,
            [1, 1, 1, 1, 1, 1],
            "layer 0 [3 + 1], then layer 1 [1 + 1]"
        );
        assert_eq!(s.held_bytes(), (3 + 1) * HEADS * 2 * 2 * 4);
        assert!(KvStore::with_limits(&[3, 0], 1, 1, 1, KvDtype::Float32, 4)
            .unwrap_err()
            .to_string()
            .contains("layer 1"));
    }
}
