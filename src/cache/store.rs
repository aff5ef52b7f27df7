//! KvStore: per layer a [`SlotTable`] (positions, scores, slots in use) and the layer's K/V in
//! [`KvBuffers`]; a step's update is planned on the host (score update, policy, victim -> slot mapping),
//! then applied to the table and the buffers. New tokens go into free slots or the slots their policy
//! just freed (no compaction).

use std::time::Instant;

use ort::session::SessionInputValue;

use super::buffers::{host_buffers, HostKv, KvBuffers, KvElement, NewKv};
use super::plan::LayerPlan;
use super::slots::{PlanScratch, SlotTable};
use crate::error::{Error, Result};
use crate::manifest::KvDtype;
use crate::policy::Policy;

/// What a step adds to one layer.
#[derive(Debug, Clone, Copy)]
pub struct NewTokens<'a> {
    /// New keys, `[batch, heads, seq, head_dim]` (rotated).
    pub k: NewKv<'a>,
    /// New values, `[batch, heads, seq, head_dim]`.
    pub v: NewKv<'a>,
    /// The step's attention sums, `[batch, heads, past + seq]`.
    pub attention: &'a [f32],
    /// The layer's capacity when the graph ran (the store may grow before writing).
    pub past: usize,
    /// Absolute positions of the new tokens, `[batch, seq]`.
    pub positions: &'a [i64],
    /// 1 for a real token, 0 for padding, `[batch, seq]`.
    pub mask: &'a [i64],
    pub seq: usize,
}

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
        if layers == 0 || batch == 0 || heads == 0 || head_dim == 0 {
            return Err(Error::Store(
                "layers, batch, heads and head_dim must be positive".into(),
            ));
        }
        if capacity_limit == 0 {
            return Err(Error::Store(
                "capacity limit 0: the cache could hold nothing".into(),
            ));
        }
        Ok(Self {
            batch,
            heads,
            head_dim,
            chunk: chunk.max(1),
            tables: (0..layers)
                .map(|_| SlotTable::new(batch, heads, capacity_limit))
                .collect(),
            buffers: host_buffers(dtype, layers, batch, heads, head_dim),
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

    /// Slots per (batch, head): the graph's `past` length. Every layer has the same capacity between
    /// steps (the graph takes one attention mask for all layers).
    pub fn capacity(&self) -> usize {
        self.tables[0].capacity()
    }

    /// Most entries per (batch, head) layer 0 may hold (every layer has the same limit today).
    pub fn capacity_limit(&self) -> usize {
        self.tables[0].limit()
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

    /// Valid entries in row `b` (every head and layer holds the same count).
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
        let any: &dyn std::any::Any = self.buffers.as_ref();
        any.downcast_ref()
    }

    /// Layer `layer`'s K and V as graph inputs `[batch, heads, capacity, head_dim]`, without a copy.
    pub fn bind(&self, layer: usize) -> Result<[SessionInputValue<'_>; 2]> {
        self.buffers.bind(layer)
    }

    /// The graph's `attention_mask` for a step, `[batch, capacity + seq]`, written into `out`: 1 for
    /// the slots in use (the same for every head and layer), 0 for free slots, then the new tokens'
    /// own mask `[batch, seq]`.
    pub fn build_mask(&self, new_mask: &[i64], seq: usize, out: &mut Vec<i64>) {
        out.clear();
        let (t, c) = (&self.tables[0], self.capacity());
        for b in 0..self.batch {
            let used = t.used(b);
            out.extend(std::iter::repeat_n(1, used));
            out.extend(std::iter::repeat_n(0, c - used));
            out.extend_from_slice(&new_mask[b * seq..(b + 1) * seq]);
        }
    }

    /// One layer's cache update after a graph run: add the attention to the scores (if the policy
    /// reads them), grow if the new tokens need room, plan (policy choice, victim -> slot mapping,
    /// evicted positions), then apply the plan to the slot table and the K/V buffers. Returns the plan.
    pub fn update(
        &mut self,
        layer: usize,
        new: &NewTokens<'_>,
        policy: &dyn Policy,
    ) -> Result<&LayerPlan> {
        self.tables[layer].check_step(new)?;
        let score_time = if policy.needs_scores() {
            let t = Instant::now();
            self.tables[layer].add_scores(new.attention, new.past, new.seq)?;
            t.elapsed()
        } else {
            std::time::Duration::ZERO
        };
        if let Some(cap) = self.tables[layer].wanted_capacity(new.seq, self.chunk) {
            self.tables[layer].grow(cap);
            self.buffers.grow(layer, cap);
        }
        let table = &mut self.tables[layer];
        table.plan(new, policy, &mut self.scratch, &mut self.plan)?;
        self.plan.add_score_time(score_time);
        self.buffers.apply(layer, &self.plan, &new.k, &new.v)?;
        table.apply(&self.plan, new);
        Ok(&self.plan)
    }
}
