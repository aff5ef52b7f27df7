//! LayerPlan: what one layer's step does to the cache, decided on the host before anything is written:
//! the slot each kept new token goes to, the positions evicted, and each row's entry count afterwards.

use std::time::Duration;

/// `dest` value of a new token that is not stored (padding, or evicted in its own step).
pub const NOT_STORED: u32 = u32::MAX;

/// One layer's step as a plain value. The slot table computes it ([`super::SlotTable::plan`]), the
/// table and the K/V buffers apply it; nothing in it depends on where K/V live.
#[derive(Debug, Default, Clone)]
pub struct LayerPlan {
    batch: usize,
    heads: usize,
    seq: usize,
    capacity: usize,
    /// `[batch, heads, seq]`: the slot new token j of (b, h) is written to, or [`NOT_STORED`].
    dest: Vec<u32>,
    /// Per batch row: entries held after the step (slots `0..used`, the same for every head).
    used: Vec<usize>,
    /// `[batch * heads]`: positions evicted, the cached victims in slot order, then new tokens in order.
    evicted: Vec<Vec<i64>>,
    score_time: Duration,
    policy_time: Duration,
}

impl LayerPlan {
    /// Empty plan for a step of `seq` new tokens per row into `capacity` slots: nothing stored, nothing
    /// evicted (buffers are reused across steps).
    pub(crate) fn reset(&mut self, batch: usize, heads: usize, seq: usize, capacity: usize) {
        self.batch = batch;
        self.heads = heads;
        self.seq = seq;
        self.capacity = capacity;
        self.dest.clear();
        self.dest.resize(batch * heads * seq, NOT_STORED);
        self.used.clear();
        self.used.resize(batch, 0);
        self.evicted.resize_with(batch * heads, Vec::new);
        self.evicted.iter_mut().for_each(Vec::clear);
        self.score_time = Duration::ZERO;
        self.policy_time = Duration::ZERO;
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn heads(&self) -> usize {
        self.heads
    }
    pub fn seq(&self) -> usize {
        self.seq
    }
    /// Slots per (batch, head) the plan's slot numbers refer to.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Destination slots of (b, h)'s new tokens, `[seq]` ([`NOT_STORED`] = not kept).
    pub fn dest(&self, b: usize, h: usize) -> &[u32] {
        let o = (b * self.heads + h) * self.seq;
        &self.dest[o..o + self.seq]
    }

    /// All destination slots, `[batch, heads, seq]`.
    pub fn dest_all(&self) -> &[u32] {
        &self.dest
    }

    pub(crate) fn set_dest(&mut self, b: usize, h: usize, j: usize, slot: usize) {
        self.dest[(b * self.heads + h) * self.seq + j] = slot as u32;
    }

    /// Entries row `b` holds after the step.
    pub fn used(&self, b: usize) -> usize {
        self.used[b]
    }

    pub(crate) fn set_used(&mut self, b: usize, n: usize) {
        self.used[b] = n;
    }

    /// Positions (b, h) evicts in this step: cached victims in slot order, then new tokens in order.
    pub fn evicted(&self, b: usize, h: usize) -> &[i64] {
        &self.evicted[b * self.heads + h]
    }

    pub(crate) fn evicted_mut(&mut self, b: usize, h: usize) -> &mut Vec<i64> {
        &mut self.evicted[b * self.heads + h]
    }

    /// Whether row `b` evicts anything in this step.
    pub fn evicts(&self, b: usize) -> bool {
        self.evicted[b * self.heads..(b + 1) * self.heads]
            .iter()
            .any(|v| !v.is_empty())
    }

    /// Time spent adding the step's attention to the scores.
    pub fn score_time(&self) -> Duration {
        self.score_time
    }

    /// Time spent in the policy's victim choice (zero when nothing was over budget).
    pub fn policy_time(&self) -> Duration {
        self.policy_time
    }

    pub(crate) fn add_score_time(&mut self, t: Duration) {
        self.score_time += t;
    }

    pub(crate) fn add_policy_time(&mut self, t: Duration) {
        self.policy_time += t;
    }
}
