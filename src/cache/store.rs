//! KvStore: per layer a [`SlotTable`] (positions, scores, slots in use) and the layer's K/V in
//! [`KvBuffers`]; a step's update is planned on the host (score update, policy, victim -> slot mapping),
//! then applied to the table and the buffers. New tokens go into free slots or the slots their policy
//! just freed (no compaction). Each layer has its own limit (a budget schedule gives layers different
//! budgets), hence its own capacity and its own attention mask.

use std::time::Instant;

use super::buffers::{host_buffers, HostKv, KvBuffers};
use super::new_tokens::{KvElement, NewTokens};
use super::plan::LayerPlan;
use super::slots::{PlanScratch, SlotTable};
use crate::dtype::KvDtype;
use crate::error::{Error, Result};
use crate::policy::Policy;

/// The KV cache of a batch of sequences.
#[derive(Debug)]
pub struct KvStore {
    batch: usize,
    heads: usize,
    head_dim: usize,
    /// Growth step of the slot arrays while below a layer's limit.
    chunk: usize,
    tables: Vec<SlotTable>,
    buffers: Box<dyn KvBuffers>,
    /// The last update's plan and the planner's buffers, reused across steps and layers.
    plan: LayerPlan,
    scratch: PlanScratch,
}

impl KvStore {
    /// An empty store in host memory. `capacity_limit` is the most entries per head a layer ever
    /// holds between steps (the budget, or the model's positions for the full cache); slots grow in
    /// `chunk`s up to it.
    pub fn new(
        layers: usize,
        batch: usize,
        heads: usize,
        head_dim: usize,
        dtype: KvDtype,
        capacity_limit: usize,
        chunk: usize,
    ) -> Result<Self> {
        let limits = vec![capacity_limit; layers];
        Self::with_limits(&limits, batch, heads, head_dim, dtype, chunk)
    }

    /// An empty store in host memory with one limit per layer (`limits.len()` layers).
    pub fn with_limits(
        limits: &[usize],
        batch: usize,
        heads: usize,
        head_dim: usize,
        dtype: KvDtype,
        chunk: usize,
    ) -> Result<Self> {
        let buffers = host_buffers(dtype, limits.len(), batch, heads, head_dim);
        Self::with_buffers(limits, batch, heads, head_dim, buffers, chunk)
    }

    /// An empty store with one limit per layer (`limits.len()` layers) whose K/V live in `buffers`
    /// (empty, made for `layers x batch x heads x head_dim`), e.g. the model's device buffers from
    /// `Model::kv_buffers`.
    pub fn with_buffers(
        limits: &[usize],
        batch: usize,
        heads: usize,
        head_dim: usize,
        buffers: Box<dyn KvBuffers>,
        chunk: usize,
    ) -> Result<Self> {
        let layers = limits.len();
        if layers == 0 || batch == 0 || heads == 0 || head_dim == 0 {
            return Err(Error::Store(
                "layers, batch, heads and head_dim must be positive".into(),
            ));
        }
        if let Some(l) = limits.iter().position(|&x| x == 0) {
            return Err(Error::Store(format!(
                "capacity limit 0 in layer {l}: the cache could hold nothing"
            )));
        }
        let most = limits.iter().copied().max().unwrap_or(0);
        let dims = [layers, batch, heads, most, head_dim, buffers.dtype().size()];
        let bytes = dims.iter().try_fold(2usize, |acc, &x| acc.checked_mul(x));
        if bytes.is_none_or(|b| b > isize::MAX as usize) {
            return Err(Error::Store(format!(
                "{layers} layers x batch {batch} x {heads} heads x {most} slots x head_dim {head_dim} of K and V is more bytes than this machine can address"
            )));
        }
        Ok(Self {
            batch,
            heads,
            head_dim,
            chunk: chunk.max(1),
            tables: limits
                .iter()
                .map(|&limit| SlotTable::new(batch, heads, limit))
                .collect(),
            buffers,
            plan: LayerPlan::default(),
            scratch: PlanScratch::default(),
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn heads(&self) -> usize {
        self.heads
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub fn num_layers(&self) -> usize {
        self.tables.len()
    }
    pub fn dtype(&self) -> KvDtype {
        self.buffers.dtype()
    }

    /// Layer 0's slots per (batch, head): the graph's `past` length when every layer has the same
    /// limit (then every layer has the same capacity); see [`KvStore::layer_capacity`].
    pub fn capacity(&self) -> usize {
        self.tables[0].capacity()
    }

    /// Layer `layer`'s slots per (batch, head): its `past` length in the graph.
    pub fn layer_capacity(&self, layer: usize) -> usize {
        self.tables[layer].capacity()
    }

    /// Most entries per (batch, head) layer 0 may hold (see [`SlotTable::limit`] for the others).
    pub fn capacity_limit(&self) -> usize {
        self.tables[0].limit()
    }

    /// Whether every layer has the same limit (so one attention mask serves every layer).
    pub fn uniform_limits(&self) -> bool {
        self.tables
            .iter()
            .all(|t| t.limit() == self.tables[0].limit())
    }

    /// Layer `l`'s slot table.
    pub fn table(&self, layer: usize) -> &SlotTable {
        &self.tables[layer]
    }

    /// Positions of `(layer, batch row, head)`, one per slot (-1 = empty).
    pub fn positions(&self, layer: usize, b: usize, h: usize) -> &[i64] {
        self.tables[layer].positions(b, h)
    }

    /// Accumulated scores of `(layer, batch row, head)`, one per slot.
    pub fn scores(&self, layer: usize, b: usize, h: usize) -> &[f32] {
        self.tables[layer].scores(b, h)
    }

    /// Valid entries in row `b` of layer 0 (every head holds the same count, and every layer when
    /// the limits are uniform).
    pub fn valid_count(&self, b: usize) -> usize {
        self.tables[0].used(b)
    }

    /// Exact bytes of K and V held by valid entries, all layers, heads and rows.
    pub fn held_bytes(&self) -> usize {
        let per_entry = 2 * self.head_dim * self.dtype().size();
        self.tables.iter().map(|t| t.entries() * per_entry).sum()
    }

    /// Bytes of the allocated K and V slot arrays.
    pub fn allocated_bytes(&self) -> usize {
        self.buffers.allocated_bytes()
    }

    /// The K/V buffers when they are host buffers of element type `T` (to read them back).
    pub fn host_kv<T: KvElement>(&self) -> Option<&HostKv<T>> {
        self.buffers.host()
    }

    /// The K/V buffers (a graph run binds them as past).
    pub fn buffers(&self) -> &dyn KvBuffers {
        self.buffers.as_ref()
    }

    /// The K/V buffers, mutably (device buffers are grown and written by the model after the updates).
    pub fn buffers_mut(&mut self) -> &mut dyn KvBuffers {
        self.buffers.as_mut()
    }

    /// The graph's `attention_mask` for a step, `[batch, capacity + seq]` of layer 0 (every layer's
    /// when the limits are uniform), written into `out`: 1 for the slots in use (the same for every
    /// head), 0 for free slots, then the new tokens' own mask `[batch, seq]`.
    pub fn build_mask(&self, new_mask: &[i64], seq: usize, out: &mut Vec<i64>) {
        out.clear();
        self.append_mask(0, new_mask, seq, out);
    }

    /// Layer `layer`'s attention mask for a step, `[batch, layer capacity + seq]`, appended to `out`.
    pub fn append_mask(&self, layer: usize, new_mask: &[i64], seq: usize, out: &mut Vec<i64>) {
        let t = &self.tables[layer];
        let c = t.capacity();
        for b in 0..self.batch {
            let used = t.used(b);
            out.extend(std::iter::repeat_n(1, used));
            out.extend(std::iter::repeat_n(0, c - used));
            out.extend_from_slice(&new_mask[b * seq..(b + 1) * seq]);
        }
    }

    /// One layer's cache update after a graph run: update the scores as the policy's
    /// [`crate::policy::ScoreRule`] says (nothing if it reads none), grow if the new tokens need
    /// room, plan (new tokens' first scores, policy choice, victim -> slot mapping, evicted
    /// positions), then apply the plan to the slot table and the K/V buffers. The plan stays
    /// readable through [`KvStore::plan`] until the next update.
    pub fn update(&mut self, layer: usize, new: &NewTokens<'_>, policy: &dyn Policy) -> Result<()> {
        self.tables[layer].check_step(new)?;
        let score_time = if policy.needs_scores() {
            let t = Instant::now();
            self.tables[layer].update_scores(policy.score_rule(), new, &mut self.scratch)?;
            t.elapsed()
        } else {
            std::time::Duration::ZERO
        };
        if let Some(cap) = self.tables[layer].wanted_capacity(new.seq, self.chunk) {
            self.tables[layer].grow(cap);
            self.buffers.grow(layer, cap);
        }
        let table = &mut self.tables[layer];
        table.plan(new, policy, layer, &mut self.scratch, &mut self.plan)?;
        self.plan.add_score_time(score_time);
        self.buffers.apply(layer, &self.plan, &new.k, &new.v)?;
        table.apply(&self.plan, new, &self.scratch);
        Ok(())
    }

    /// Under grouped-query attention each attention row a layer receives is the sum of `group`
    /// query heads (cache::fold): scissor's mean share counts them (G / n per new token, not 1 / n).
    pub fn with_query_group(mut self, group: usize) -> Self {
        for t in &mut self.tables {
            t.set_queries_per_row(group);
        }
        self
    }

    /// The last update's plan.
    pub fn plan(&self) -> &LayerPlan {
        &self.plan
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;
    use crate::cache::{NewKv, NOT_STORED};
    use crate::policy::{Candidates, H2oPolicy, Scope, ScoreRule};

    /// Keeps the newest `budget` positions per head (a local window, written here independently).
    struct Newest(usize);
    impl Policy for Newest {
        fn spec(&self) -> String {
            format!("newest:{}", self.0)
        }
        fn budget(&self) -> usize {
            self.0
        }
        fn score_rule(&self) -> ScoreRule {
            ScoreRule::None
        }
        fn select(&self, c: &Candidates<'_>, keep: &mut [bool]) {
            for h in 0..c.heads {
                let row = c.positions_of(h);
                let mut order: Vec<usize> = (0..c.n).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(row[i]));
                for &i in order.iter().take(self.0) {
                    keep[h * c.n + i] = true;
                }
            }
        }
    }

    /// Head 0 evicts the lowest score, head 1 the oldest position.
    struct PerHead(usize);
    impl Policy for PerHead {
        fn spec(&self) -> String {
            "per-head".into()
        }
        fn budget(&self) -> usize {
            self.0
        }
        fn score_rule(&self) -> ScoreRule {
            ScoreRule::Accumulated
        }
        fn select(&self, c: &Candidates<'_>, keep: &mut [bool]) {
            for h in 0..c.heads {
                let (p, s) = (c.positions_of(h), c.scores_of(h));
                let victim = if h == 0 {
                    (0..c.n).min_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap()
                } else {
                    (0..c.n).min_by_key(|&i| p[i]).unwrap()
                };
                for i in 0..c.n {
                    keep[h * c.n + i] = i != victim;
                }
            }
        }
    }

    /// A policy that keeps one candidate too many (a broken policy).
    struct KeepsAll(usize);
    impl Policy for KeepsAll {
        fn spec(&self) -> String {
            "keeps-all".into()
        }
        fn budget(&self) -> usize {
            self.0
        }
        fn score_rule(&self) -> ScoreRule {
            ScoreRule::None
        }
        fn select(&self, _c: &Candidates<'_>, keep: &mut [bool]) {
            keep.fill(true);
        }
    }

    const HEADS: usize = 2;

    /// K of (position p, head h) = [p, h], V = [-p, h]: `[1, HEADS, seq, 2]`.
    fn kv_of(positions: &[i64]) -> (Vec<f32>, Vec<f32>) {
        let mut k = Vec::new();
        let mut v = Vec::new();
        for h in 0..HEADS {
            for &p in positions {
                k.extend([p as f32, h as f32]);
                v.extend([-(p as f32), h as f32]);
            }
        }
        (k, v)
    }

    /// One batch-1 update of layer 0 with new tokens at `positions`; `att` is `[HEADS, past + seq]`.
    fn update(store: &mut KvStore, pol: &dyn Policy, positions: &[i64], att: &[f32]) -> LayerPlan {
        let (k, v) = kv_of(positions);
        let seq = positions.len();
        let mask = vec![1; seq];
        let new = NewTokens {
            k: NewKv::of(&k),
            v: NewKv::of(&v),
            attention: att,
            past: att.len() / HEADS - seq,
            positions,
            mask: &mask,
            seq,
        };
        store.update(0, &new, pol).unwrap();
        store.plan().clone()
    }

    /// Zero attention for a step of `seq` tokens on the store as it is.
    fn quiet(store: &KvStore, seq: usize) -> Vec<f32> {
        vec![0.0; HEADS * (store.capacity() + seq)]
    }

    fn store(limit: usize, chunk: usize) -> KvStore {
        KvStore::new(1, 1, HEADS, 2, KvDtype::Float32, limit, chunk).unwrap()
    }

    fn host(s: &KvStore) -> (&[f32], &[f32]) {
        s.host_kv::<f32>().expect("host f32 buffers").kv(0)
    }

    #[test]
    fn appends_into_free_slots_then_reuses_the_victims_slot() {
        let mut s = store(3, 2);
        let pol = Newest(3);
        for p in 0..3 {
            let att = quiet(&s, 1);
            let plan = update(&mut s, &pol, &[p], &att);
            assert_eq!(plan.dest(0, 1), &[p as u32], "lowest free slot");
        }
        assert_eq!(s.capacity(), 3, "grows in chunks, clamped to the limit");
        assert_eq!(s.positions(0, 0, 0), &[0, 1, 2]);
        let plan = update(&mut s, &pol, &[3], &[0.0; 8]);
        assert_eq!(s.capacity(), 3);
        // position 0 evicted; 3 takes its slot (no compaction)
        assert_eq!(plan.evicted(0, 0), &[0]);
        assert_eq!(plan.dest(0, 0), &[0]);
        assert_eq!(s.positions(0, 0, 0), &[3, 1, 2]);
        assert_eq!(s.positions(0, 0, 1), &[3, 1, 2]);
        let (k, v) = host(&s);
        // [batch, heads, capacity, head_dim]: head 1 slot 0 = [3, 1]
        assert_eq!(&k[3 * 2..4 * 2], &[3.0, 1.0]);
        assert_eq!(&k[0..2], &[3.0, 0.0]);
        assert_eq!(&v[0..2], &[-3.0, 0.0]);
        assert_eq!(&v[3 * 2..4 * 2], &[-3.0, 1.0]);
        assert_eq!(s.held_bytes(), 3 * HEADS * 2 * 2 * 4);
        assert_eq!(s.allocated_bytes(), 3 * HEADS * 2 * 2 * 4);
    }

    #[test]
    fn mask_marks_slots_in_use_then_new_tokens() {
        let mut s = store(8, 4);
        let pol = Newest(8);
        for p in 0..2 {
            let att = quiet(&s, 1);
            update(&mut s, &pol, &[p], &att);
        }
        let mut m = Vec::new();
        s.build_mask(&[1], 1, &mut m);
        assert_eq!(m, vec![1, 1, 0, 0, 1]);
    }

    #[test]
    fn scores_accumulate_in_every_head_and_heads_evict_independently() {
        let mut s = store(2, 2);
        let pol = PerHead(2);
        update(&mut s, &pol, &[0], &[1.0, 0.5]);
        // head 0: pos0 gets 0.875, pos1 0.125; head 1: 0.25 / 0.5 (columns: slot 0, slot 1 (empty), new)
        update(&mut s, &pol, &[1], &[0.875, 0.0, 0.125, 0.25, 0.0, 0.5]);
        assert_eq!(s.scores(0, 0, 0), &[1.875, 0.125]);
        assert_eq!(s.scores(0, 0, 1), &[0.75, 0.5], "head 1 accumulates too");
        // head 0: pos0 1.875, pos1 0.125 + 0.5, new 0.25 -> the new token goes (lowest score);
        // head 1: the oldest (pos0) goes, the new token takes its slot with its own attention
        let plan = update(&mut s, &pol, &[2], &[0.0, 0.5, 0.25, 0.125, 0.125, 0.75]);
        assert_eq!(plan.evicted(0, 0), &[2]);
        assert_eq!(plan.dest(0, 0), &[NOT_STORED]);
        assert_eq!(plan.evicted(0, 1), &[0]);
        assert_eq!(plan.dest(0, 1), &[0]);
        assert_eq!(s.positions(0, 0, 0), &[0, 1]);
        assert_eq!(s.positions(0, 0, 1), &[2, 1]);
        assert_eq!(s.scores(0, 0, 0), &[1.875, 0.625]);
        assert_eq!(
            s.scores(0, 0, 1),
            &[0.75, 0.625],
            "new token starts with its own attention"
        );
    }

    /// The new tokens' candidate scores are this step's attention: here they decide who goes.
    #[test]
    fn plan_ranks_new_tokens_by_their_own_attention() {
        let mut s = store(2, 2);
        let pol = H2oPolicy::new(2, 0, Scope::Head);
        update(&mut s, &pol, &[0, 1], &[0.5, 0.25, 0.5, 0.25]);
        assert_eq!(s.scores(0, 0, 0), &[0.5, 0.25]);
        // cached: pos0 0.5 + 0, pos1 0.25 + 0; new pos2 0.375 > 0.25: pos1 goes, pos2 takes slot 1
        let plan = update(&mut s, &pol, &[2], &[0.0, 0.0, 0.375, 0.0, 0.0, 0.375]);
        for h in 0..HEADS {
            assert_eq!(plan.evicted(0, h), &[1]);
            assert_eq!(plan.dest(0, h), &[1]);
            assert_eq!(s.positions(0, 0, h), &[0, 2]);
            assert_eq!(s.scores(0, 0, h), &[0.5, 0.375]);
        }
    }

    /// A prefill longer than the budget: victims' slots first (slot order), then the lowest free
    /// slots; evicted = cached victims in slot order, then new tokens in order.
    #[test]
    fn plan_of_a_prefill_longer_than_the_budget() {
        let mut s = store(4, 4);
        let pol = Newest(4);
        update(&mut s, &pol, &[0, 1], &[0.0; HEADS * 2]);
        let att = quiet(&s, 5);
        let plan = update(&mut s, &pol, &[2, 3, 4, 5, 6], &att);
        for h in 0..HEADS {
            assert_eq!(plan.evicted(0, h), &[0, 1, 2]);
            assert_eq!(plan.dest(0, h), &[NOT_STORED, 0, 1, 2, 3]);
            assert_eq!(s.positions(0, 0, h), &[3, 4, 5, 6]);
        }
        assert_eq!(plan.used(0), 4);
        assert!(plan.evicts(0));
        let (k, _) = host(&s);
        assert_eq!(&k[..8], &[3.0, 0.0, 4.0, 0.0, 5.0, 0.0, 6.0, 0.0]);
    }

    #[test]
    fn fp16_buffers_store_keys_and_values() {
        let mut s = KvStore::new(1, 1, 1, 2, KvDtype::Float16, 2, 2).unwrap();
        let k = [f16::from_f32(1.5), f16::from_f32(-2.0)];
        let v = [f16::from_f32(0.25), f16::from_f32(3.0)];
        let new = NewTokens {
            k: NewKv::of(&k),
            v: NewKv::of(&v),
            attention: &[1.0],
            past: 0,
            positions: &[0],
            mask: &[1],
            seq: 1,
        };
        s.update(0, &new, &Newest(2)).unwrap();
        assert!(s.host_kv::<f32>().is_none());
        let (gk, gv) = s.host_kv::<f16>().unwrap().kv(0);
        assert_eq!(&gk[..2], &k);
        assert_eq!(&gv[..2], &v);
        assert_eq!(s.held_bytes(), 2 * 2 * 2);
    }

    #[test]
    fn rejects_wrong_shapes_and_empty_limits() {
        assert!(KvStore::new(1, 1, 2, 2, KvDtype::Float32, 0, 4).is_err());
        assert!(KvStore::new(0, 1, 2, 2, KvDtype::Float32, 4, 4).is_err());
        let mut s = store(4, 4);
        let k = [0f32; 3];
        let mut new = NewTokens {
            k: NewKv::of(&k),
            v: NewKv::of(&k),
            attention: &[0.0; 3],
            past: 0,
            positions: &[0],
            mask: &[1],
            seq: 1,
        };
        let err = |s: &mut KvStore, new: &NewTokens<'_>| {
            s.update(0, new, &Newest(4)).unwrap_err().to_string()
        };
        assert!(err(&mut s, &new).contains("attention sums"));
        new.attention = &[0.0; 2];
        new.past = 1;
        assert!(err(&mut s, &new).contains("past 1"));
        new.past = 0;
        assert!(err(&mut s, &new).contains("new K/V"));
        let k16 = [f16::ZERO; 4];
        new.k = NewKv::of(&k16);
        new.v = NewKv::of(&k16);
        assert!(
            err(&mut s, &new).contains("of float32"),
            "dtype mismatch refused"
        );
        new.positions = &[0, 1];
        assert!(err(&mut s, &new).contains("[batch, seq]"));
        assert_eq!(s.valid_count(0), 0, "nothing stored by a refused update");
    }

    /// A policy that breaks its contract, or a budget below what the store holds, is an error, and
    /// the planner's buffers survive it.
    #[test]
    fn broken_policies_are_errors_and_the_store_stays_usable() {
        let mut s = store(2, 2);
        update(&mut s, &Newest(2), &[0, 1], &[0.0; 4]);
        let (k, v) = kv_of(&[2]);
        let new = NewTokens {
            k: NewKv::of(&k),
            v: NewKv::of(&v),
            attention: &[0.0; 6],
            past: 2,
            positions: &[2],
            mask: &[1],
            seq: 1,
        };
        let e = s.update(0, &new, &KeepsAll(2)).unwrap_err().to_string();
        assert!(e.contains("kept 3 of 3") && e.contains("expected 2"), "{e}");
        let e = s.update(0, &new, &Newest(1)).unwrap_err().to_string();
        assert!(e.contains("more than policy newest:1's budget 1"), "{e}");
        assert_eq!(s.positions(0, 0, 0), &[0, 1], "nothing changed");
        let plan = update(&mut s, &Newest(2), &[2], &[0.0; 6]);
        assert_eq!(plan.evicted(0, 1), &[0]);
        assert_eq!(s.positions(0, 0, 1), &[2, 1]);
    }

    /// Rows of a batch plan independently; padding is never stored.
    #[test]
    fn batch_rows_with_padding() {
        let mut s = KvStore::new(1, 2, 1, 1, KvDtype::Float32, 3, 4).unwrap();
        // row 0: 3 real tokens; row 1: 1 real token then 2 padding
        let k = [0.0, 1.0, 2.0, 10.0, 0.0, 0.0];
        let new = NewTokens {
            k: NewKv::of(&k),
            v: NewKv::of(&k),
            attention: &[0.0; 6],
            past: 0,
            positions: &[0, 1, 2, 0, 0, 0],
            mask: &[1, 1, 1, 1, 0, 0],
            seq: 3,
        };
        s.update(0, &new, &Newest(3)).unwrap();
        let plan = s.plan();
        assert_eq!(plan.dest(1, 0), &[0, NOT_STORED, NOT_STORED]);
        assert_eq!((s.valid_count(0), s.valid_count(1)), (3, 1));
        let mut m = Vec::new();
        s.build_mask(&[1, 1], 1, &mut m);
        assert_eq!(m, vec![1, 1, 1, 1, 1, 0, 0, 1], "capacity 3: the limit");
        // next step: row 0 evicts its oldest, row 1 appends
        let k = [3.0, 11.0];
        let new = NewTokens {
            k: NewKv::of(&k),
            v: NewKv::of(&k),
            attention: &[0.0; 8],
            past: 3,
            positions: &[3, 1],
            mask: &[1, 1],
            seq: 1,
        };
        s.update(0, &new, &Newest(3)).unwrap();
        let plan = s.plan();
        assert_eq!(
            (plan.evicted(0, 0), plan.evicted(1, 0)),
            (&[0i64][..], &[][..])
        );
        assert_eq!(s.positions(0, 0, 0), &[3, 1, 2]);
        assert_eq!(s.positions(0, 1, 0), &[0, 1, -1]);
        assert_eq!(
            s.host_kv::<f32>().unwrap().kv(0).0,
            &[3.0, 1.0, 2.0, 10.0, 11.0, 0.0]
        );
    }
}
