//! SlotTable: one layer's cache metadata (position and accumulated score per `(batch, head, slot)`, the
//! slots in use per row), and the planning of a step: the policy's choice among the candidates, the
//! victim -> slot mapping, the evicted positions.
//!
//! Slots in use are always `0..used[b]`, the same for every head of a row, and the free slots are
//! `used[b]..capacity`: new tokens take the lowest free slots, and a slot freed by eviction is refilled
//! in the same step (a row over budget keeps exactly `budget` entries and held at most `budget`
//! before, so every cached victim's slot takes a kept new token). So which slots are free is O(1)
//! state, the cached candidates of a row are a contiguous prefix, and the mask needs no scan.

use std::time::Instant;

use super::history::History;
use super::new_tokens::NewTokens;
use super::plan::{LayerPlan, NOT_STORED};
use super::scores::{entry_scores, step_scores, Slots};
use super::sizing::grown_capacity;
use crate::error::{Error, Result};
use crate::policy::{Candidates, Policy, ScoreRule};

/// One layer's slots for `batch` rows of `heads` heads.
#[derive(Debug, Clone)]
pub struct SlotTable {
    batch: usize,
    heads: usize,
    capacity: usize,
    /// Most slots per (batch, head) this layer may ever hold.
    limit: usize,
    /// Per row: slots `0..used` hold entries (every head), `used..capacity` are free.
    used: Vec<usize>,
    /// `[batch, heads, capacity]`, -1 = empty.
    pos: Vec<i64>,
    /// `[batch, heads, capacity]`, the policy's score ([`ScoreRule`]).
    score: Vec<f32>,
    /// Scissorhands' attention history, kept only for [`ScoreRule::Unimportance`].
    history: Option<History>,
    /// Query heads summed into each attention row the table receives (1; G under grouped-query
    /// attention): the mean share a row is compared with counts them.
    queries_per_row: usize,
}

/// Buffers the planner reuses across steps (so the decode loop does not allocate); they live in the
/// store, so an error half-way through a plan loses nothing.
#[derive(Debug, Default, Clone)]
pub(crate) struct PlanScratch {
    cand_pos: Vec<i64>,
    cand_score: Vec<f32>,
    keep: Vec<bool>,
    new_idx: Vec<usize>,
    victims: Vec<usize>,
    /// The step's new tokens' first scores, `[batch, heads, seq]`.
    new_score: Vec<f32>,
    /// Per batch row, the step's mean attention share.
    shares: Vec<f32>,
}

impl SlotTable {
    pub fn new(batch: usize, heads: usize, limit: usize) -> Self {
        Self {
            batch,
            heads,
            capacity: 0,
            limit,
            used: vec![0; batch],
            pos: Vec::new(),
            score: Vec::new(),
            history: None,
            queries_per_row: 1,
        }
    }

    /// Each attention row this table receives sums `queries_per_row` query heads (grouped-query
    /// attention folded to KV heads; 1 without groups).
    pub fn set_queries_per_row(&mut self, queries_per_row: usize) {
        self.queries_per_row = queries_per_row.max(1);
    }

    /// Slots per (batch, head).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most slots per (batch, head) this layer may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Entries held by row `b` (every head holds the same count), in slots `0..used`.
    pub fn used(&self, b: usize) -> usize {
        self.used[b]
    }

    /// Entries held, all rows and heads.
    pub fn entries(&self) -> usize {
        self.used.iter().sum::<usize>() * self.heads
    }

    /// Positions of (b, h), one per slot (-1 = empty).
    pub fn positions(&self, b: usize, h: usize) -> &[i64] {
        let o = (b * self.heads + h) * self.capacity;
        &self.pos[o..o + self.capacity]
    }

    /// Scores of (b, h), one per slot (what they hold depends on the policy's [`ScoreRule`]).
    pub fn scores(&self, b: usize, h: usize) -> &[f32] {
        let o = (b * self.heads + h) * self.capacity;
        &self.score[o..o + self.capacity]
    }

    /// Appends row `b`'s key positions, `[heads, capacity]`: what a graph that caches keys
    /// unrotated rotates each slot's key by. `None`: the original positions (absolute; free slots
    /// 0). `Some(offset)`: rolling positions, each used slot's rank by original position among
    /// the row's used slots (oldest 0) plus `offset`; free slots 0 (masked). `order` is scratch.
    pub fn key_positions(
        &self,
        b: usize,
        rolling: Option<i64>,
        order: &mut Vec<usize>,
        out: &mut Vec<i64>,
    ) {
        let used = self.used[b];
        for h in 0..self.heads {
            let row = self.positions(b, h);
            let start = out.len();
            match rolling {
                None => out.extend(row.iter().map(|&p| p.max(0))),
                Some(offset) => {
                    out.resize(start + self.capacity, 0);
                    order.clear();
                    order.extend(0..used);
                    // positions are distinct within a (row, head): the rank is unambiguous
                    order.sort_unstable_by_key(|&s| row[s]);
                    for (rank, &s) in order.iter().enumerate() {
                        out[start + s] = offset + rank as i64;
                    }
                }
            }
        }
    }

    /// The capacity a step adding up to `seq` tokens per row needs: the fullest row plus `seq`, in
    /// `chunk`s, clamped to the limit; `None` when the table is large enough.
    pub(crate) fn wanted_capacity(&self, seq: usize, chunk: usize) -> Option<usize> {
        let fullest = self.used.iter().copied().max().unwrap_or(0);
        grown_capacity(self.capacity, fullest, seq, self.limit, chunk)
    }

    /// Resize to `capacity` slots per (batch, head), keeping every entry.
    pub(crate) fn grow(&mut self, capacity: usize) {
        let (old, rows) = (self.capacity, self.batch * self.heads);
        let keep = old.min(capacity);
        let mut pos = vec![-1i64; rows * capacity];
        let mut score = vec![0f32; rows * capacity];
        for r in 0..rows {
            let (dst, src) = (r * capacity, r * old);
            pos[dst..dst + keep].copy_from_slice(&self.pos[src..src + keep]);
            score[dst..dst + keep].copy_from_slice(&self.score[src..src + keep]);
        }
        self.pos = pos;
        self.score = score;
        self.capacity = capacity;
        if let Some(h) = self.history.as_mut() {
            h.grow(capacity);
        }
    }

    /// The cached slots' scores after a step, as `rule` says (nothing for [`ScoreRule::None`]).
    pub(crate) fn update_scores(
        &mut self,
        rule: ScoreRule,
        new: &NewTokens<'_>,
        sc: &mut PlanScratch,
    ) -> Result<()> {
        self.check_step(new)?;
        if let ScoreRule::Unimportance { window, normalized } = rule {
            if self.history.as_ref().map(History::rule) != Some((window.max(1), normalized)) {
                let rows = self.batch * self.heads;
                self.history = Some(History::new(window, rows, self.capacity, normalized));
            }
        }
        let slots = Slots {
            heads: self.heads,
            capacity: self.capacity,
            used: &self.used,
            queries_per_row: self.queries_per_row,
        };
        step_scores(
            rule,
            &slots,
            new,
            &mut self.score,
            self.history.as_mut(),
            &mut sc.shares,
        );
        Ok(())
    }

    fn check_attention(&self, attention: &[f32], past: usize, seq: usize) -> Result<()> {
        if past > self.capacity {
            return Err(Error::Store(format!(
                "past {past} is larger than the capacity {}",
                self.capacity
            )));
        }
        if attention.len() != self.batch * self.heads * (past + seq) {
            return Err(Error::Store(format!(
                "attention sums have {} values, expected [batch {} x heads {} x (past {past} + seq {seq})]",
                attention.len(),
                self.batch,
                self.heads
            )));
        }
        Ok(())
    }

    /// Check the shapes of a step's attention, positions and mask against this table.
    pub(crate) fn check_step(&self, new: &NewTokens<'_>) -> Result<()> {
        self.check_attention(new.attention, new.past, new.seq)?;
        if new.positions.len() != self.batch * new.seq || new.mask.len() != self.batch * new.seq {
            return Err(Error::Store(
                "positions and mask must be [batch, seq]".into(),
            ));
        }
        Ok(())
    }

    /// Decide where `new`'s tokens go and what `policy` (layer `layer`'s) evicts, without changing
    /// anything.
    pub(crate) fn plan(
        &self,
        new: &NewTokens<'_>,
        policy: &dyn Policy,
        layer: usize,
        sc: &mut PlanScratch,
        plan: &mut LayerPlan,
    ) -> Result<()> {
        let (batch, seq) = (self.batch, new.seq);
        self.check_step(new)?;
        let slots = Slots {
            heads: self.heads,
            capacity: self.capacity,
            used: &self.used,
            queries_per_row: self.queries_per_row,
        };
        entry_scores(
            policy.score_rule(),
            layer,
            &slots,
            new,
            &mut sc.new_score,
            &mut sc.shares,
        );
        let budget = policy.budget().min(self.limit);
        plan.reset(batch, self.heads, seq, self.capacity);
        for b in 0..batch {
            // Real new tokens of this row (padding is never stored).
            sc.new_idx.clear();
            sc.new_idx
                .extend((0..seq).filter(|&j| new.mask[b * seq + j] != 0));
            let (cached, fresh) = (self.used[b], sc.new_idx.len());
            if cached > budget {
                return Err(Error::Store(format!(
                    "row {b} holds {cached} entries, more than policy {}'s budget {budget}",
                    policy.spec()
                )));
            }
            if cached + fresh <= budget {
                self.plan_append(b, sc, plan)?;
            } else {
                self.plan_evict(b, new, policy, budget, sc, plan)?;
            }
        }
        Ok(())
    }

    /// Row `b` stays within budget: its new tokens take the lowest free slots, in every head.
    fn plan_append(&self, b: usize, sc: &PlanScratch, plan: &mut LayerPlan) -> Result<()> {
        let (cached, fresh) = (self.used[b], sc.new_idx.len());
        if cached + fresh > self.capacity {
            return Err(self.no_free_slot(cached, fresh));
        }
        for h in 0..self.heads {
            for (i, &j) in sc.new_idx.iter().enumerate() {
                plan.set_dest(b, h, j, cached + i);
            }
        }
        plan.set_used(b, cached + fresh);
        Ok(())
    }

    fn no_free_slot(&self, cached: usize, fresh: usize) -> Error {
        Error::Store(format!(
            "no free slot: capacity {} holds {cached} and {fresh} new tokens arrive (the store grows only up to its limit {})",
            self.capacity, self.limit
        ))
    }

    /// Row `b` goes over budget: the policy keeps `budget` of the cached + new candidates per head;
    /// kept new tokens take the victims' slots (in slot order), then the lowest free slots.
    fn plan_evict(
        &self,
        b: usize,
        new: &NewTokens<'_>,
        policy: &dyn Policy,
        budget: usize,
        sc: &mut PlanScratch,
        plan: &mut LayerPlan,
    ) -> Result<()> {
        let (heads, cached) = (self.heads, self.used[b]);
        let n = cached + sc.new_idx.len();
        if budget > self.capacity {
            return Err(self.no_free_slot(cached, sc.new_idx.len()));
        }
        self.candidates(b, new, sc);
        sc.keep.clear();
        sc.keep.resize(heads * n, false);
        let t0 = Instant::now();
        let cands = Candidates {
            heads,
            n,
            positions: &sc.cand_pos,
            scores: &sc.cand_score,
        };
        policy.select(&cands, &mut sc.keep);
        plan.add_policy_time(t0.elapsed());
        for h in 0..heads {
            let kept = sc.keep[h * n..(h + 1) * n].iter().filter(|&&k| k).count();
            if kept != budget {
                return Err(Error::Store(format!(
                    "policy {} kept {kept} of {n} candidates in head {h}, expected {budget}",
                    policy.spec()
                )));
            }
            self.assign_head(b, h, new, budget, sc, plan);
        }
        plan.set_used(b, budget);
        Ok(())
    }

    /// Row `b`'s candidates, `[heads, n]`: the cached slots `0..used` (a contiguous prefix), then the
    /// real new tokens with their first score.
    fn candidates(&self, b: usize, new: &NewTokens<'_>, sc: &mut PlanScratch) {
        let (c, cached, seq) = (self.capacity, self.used[b], new.seq);
        sc.cand_pos.clear();
        sc.cand_score.clear();
        for h in 0..self.heads {
            let r = b * self.heads + h;
            sc.cand_pos
                .extend_from_slice(&self.pos[r * c..r * c + cached]);
            sc.cand_score
                .extend_from_slice(&self.score[r * c..r * c + cached]);
            for &j in &sc.new_idx {
                sc.cand_pos.push(new.positions[b * seq + j]);
                sc.cand_score.push(sc.new_score[r * seq + j]);
            }
        }
    }

    /// Head `h` of row `b` after the policy's choice (`sc.keep`): its victims' positions, then the
    /// evicted new tokens' positions, and a slot for every kept new token.
    fn assign_head(
        &self,
        b: usize,
        h: usize,
        new: &NewTokens<'_>,
        budget: usize,
        sc: &mut PlanScratch,
        plan: &mut LayerPlan,
    ) {
        let (cached, seq) = (self.used[b], new.seq);
        let n = cached + sc.new_idx.len();
        let keep = &sc.keep[h * n..(h + 1) * n];
        // Cached victims = evictions not spent on new tokens; stop scanning once all are found
        // (in decode there is at most one, often none when the new token itself goes).
        let new_evicted = keep[cached..].iter().filter(|&&k| !k).count();
        let cached_victims = (n - budget) - new_evicted;
        let row = &self.pos[(b * self.heads + h) * self.capacity..];
        sc.victims.clear();
        if cached_victims > 0 {
            for s in 0..cached {
                if !keep[s] {
                    sc.victims.push(s);
                    plan.evicted_mut(b, h).push(row[s]);
                    if sc.victims.len() == cached_victims {
                        break;
                    }
                }
            }
        }
        let mut kept_new = 0usize;
        for (i, &j) in sc.new_idx.iter().enumerate() {
            if !keep[cached + i] {
                plan.evicted_mut(b, h).push(new.positions[b * seq + j]);
                continue;
            }
            // `used <= budget`, so kept new tokens >= cached victims: every victim slot is refilled.
            let slot = match sc.victims.get(kept_new) {
                Some(&s) => s,
                None => cached + kept_new - sc.victims.len(),
            };
            plan.set_dest(b, h, j, slot);
            kept_new += 1;
        }
    }

    /// Write the plan's metadata: positions and first scores (`sc`, from the plan) of the stored new
    /// tokens, entries per row; the step is over.
    pub(crate) fn apply(&mut self, plan: &LayerPlan, new: &NewTokens<'_>, sc: &PlanScratch) {
        let (c, seq) = (self.capacity, new.seq);
        for (i, &slot) in plan.dest_all().iter().enumerate() {
            if slot == NOT_STORED {
                continue;
            }
            // i = (b * heads + h) * seq + j
            let (r, j) = (i / seq, i % seq);
            let b = r / self.heads;
            let dst = r * c + slot as usize;
            self.pos[dst] = new.positions[b * seq + j];
            self.score[dst] = sc.new_score[i];
            if let Some(h) = self.history.as_mut() {
                h.enter(r, slot as usize, sc.new_score[i] < 0.0);
            }
        }
        for b in 0..self.batch {
            self.used[b] = plan.used(b);
        }
        if let Some(h) = self.history.as_mut() {
            h.advance();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SlotTable;

    #[test]
    fn key_positions_are_original_or_ranks() {
        // 1 row, 2 heads, capacity 4, 3 slots in use; slot order is not position order
        let mut t = SlotTable::new(1, 2, 4);
        t.grow(4);
        t.pos = vec![9, 2, 40, -1, 7, 30, 1, -1];
        t.used = vec![3];
        let (mut order, mut out) = (Vec::new(), Vec::new());
        t.key_positions(0, None, &mut order, &mut out);
        assert_eq!(out, vec![9, 2, 40, 0, 7, 30, 1, 0]);
        out.clear();
        t.key_positions(0, Some(0), &mut order, &mut out);
        assert_eq!(out, vec![1, 0, 2, 0, 1, 2, 0, 0]);
        out.clear();
        t.key_positions(0, Some(5), &mut order, &mut out);
        assert_eq!(out, vec![6, 5, 7, 0, 6, 7, 5, 0]);
    }
}
