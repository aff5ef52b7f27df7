//! K/V bytes a store allocates over a run, computed from the store's own growth rule without
//! allocating anything: what `h2o speed --kv-cap` sizes batches with.
//!
//! The slot arrays of a layer grow only when a step's new tokens need room, in `chunk`-slot steps
//! clamped to the layer's limit ([`grown_capacity`], the rule [`super::SlotTable`] grows by), and
//! never shrink; a row holds `min(held + new, limit)` entries after a step (a bounded policy keeps
//! exactly its budget once over it). So the capacity after a run depends only on the new tokens per
//! step, and the K/V bytes are `2 (K, V) x layers x batch x heads x capacity x head_dim x dtype`.

use crate::dtype::KvDtype;

/// Growth step of the full cache's slot arrays (bounded policies allocate up to their budget the same way).
pub const SLOT_CHUNK: usize = 64;

/// Most entries per (row, head) a decoder's store holds for a policy of `budget` on a model of
/// `max_positions` positions (what its slot arrays grow to at most).
pub fn slot_limit(budget: usize, max_positions: usize) -> usize {
    budget.min(max_positions)
}

/// The capacity a layer of `capacity` slots grows to when a step adds `seq` tokens to rows holding
/// at most `fullest`: the fullest row plus `seq`, rounded up to `chunk`s, clamped to `limit`;
/// `None` when the layer is large enough.
pub fn grown_capacity(
    capacity: usize,
    fullest: usize,
    seq: usize,
    limit: usize,
    chunk: usize,
) -> Option<usize> {
    let chunk = chunk.max(1);
    let want = fullest.saturating_add(seq).min(limit);
    (want > capacity).then(|| want.div_ceil(chunk).saturating_mul(chunk).min(limit))
}

/// Slots per (row, head) of a layer with `limit` after a run from an empty cache whose graph runs
/// add `seqs` tokens to every row, in order.
pub fn slots_after(limit: usize, chunk: usize, seqs: impl IntoIterator<Item = usize>) -> usize {
    let (mut capacity, mut held) = (0, 0);
    for seq in seqs {
        if let Some(c) = grown_capacity(capacity, held, seq, limit, chunk) {
            capacity = c;
        }
        held = held.saturating_add(seq).min(limit);
    }
    capacity
}

/// The shape of a model's K/V: what one slot of one row costs (`KvLayout::of` in `manifest` builds it
/// from a manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub dtype: KvDtype,
}

impl KvLayout {
    /// Bytes of the K and V slot arrays of every layer for `batch` rows of `slots` slots per head
    /// (saturating, never overflows).
    pub fn bytes(&self, batch: usize, slots: usize) -> u64 {
        let dims = [
            self.layers,
            batch,
            self.heads,
            slots,
            self.head_dim,
            self.dtype.size(),
        ];
        dims.iter()
            .fold(2u64, |acc, &x| acc.saturating_mul(x as u64))
    }

    /// Bytes of one row's K and V slot arrays when layer `l` has `layer_slots[l]` slots per head
    /// (per-layer budget schedules; equals `bytes(1, s)` when every layer has `s`).
    pub fn row_bytes(&self, layer_slots: &[usize]) -> u64 {
        let one = KvLayout { layers: 1, ..*self };
        layer_slots
            .iter()
            .fold(0u64, |acc, &s| acc.saturating_add(one.bytes(1, s)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cache::{KvStore, NewKv, NewTokens};
    use crate::policy::{H2oPolicy, LocalPolicy, Policy, Scope};

    #[test]
    fn growth_rule_exact() {
        assert_eq!(grown_capacity(0, 0, 512, 2048, 64), Some(512));
        assert_eq!(grown_capacity(512, 512, 1, 2048, 64), Some(576));
        assert_eq!(grown_capacity(576, 513, 1, 2048, 64), None);
        assert_eq!(grown_capacity(0, 0, 512, 256, 64), Some(256), "clamped");
        assert_eq!(grown_capacity(0, 0, 5, 3, 4), Some(3));
        assert_eq!(
            grown_capacity(0, 0, 1, 100, 0),
            Some(1),
            "chunk 0 acts as 1"
        );
        assert_eq!(grown_capacity(4, 4, 0, 100, 4), None);
    }

    #[test]
    fn slots_after_a_run() {
        // prompt 512 + 127 decode steps: 639 held, 640 slots (the 128th token is never fed)
        let steps = std::iter::once(512).chain(std::iter::repeat_n(1, 127));
        assert_eq!(slots_after(2048, 64, steps.clone()), 640);
        assert_eq!(slots_after(256, 64, steps.clone()), 256);
        // prompt 100 into a budget of 200: 128 after the prefill, 192, then the budget
        let steps = std::iter::once(100).chain(std::iter::repeat_n(1, 150));
        assert_eq!(slots_after(200, 64, steps), 200);
        // chunked prefill: the same end capacity
        let chunked = std::iter::repeat_n(64, 8).chain(std::iter::repeat_n(1, 127));
        assert_eq!(slots_after(2048, 64, chunked), 640);
        assert_eq!(slots_after(2048, 64, std::iter::empty()), 0);
    }

    #[test]
    fn layout_bytes() {
        let l = KvLayout {
            layers: 12,
            heads: 12,
            head_dim: 64,
            dtype: KvDtype::Float32,
        };
        // random-160m, full cache at 640 slots: 2 x 12 x 12 x 640 x 64 x 4 = 47,185,920 per row
        assert_eq!(l.bytes(1, 640), 47_185_920);
        assert_eq!(l.bytes(3, 640), 3 * 47_185_920);
        assert_eq!(l.bytes(usize::MAX, usize::MAX), u64::MAX);
    }

    /// Feeds `seq` new tokens to every row of layer 0 (zero K/V and attention).
    fn feed(store: &mut KvStore, policy: &dyn Policy, next: &mut i64, seq: usize) {
        let (b, h, d) = (store.batch(), store.heads(), store.head_dim());
        let kv = vec![0f32; b * h * seq * d];
        let attention = vec![0f32; b * h * (store.capacity() + seq)];
        let positions: Vec<i64> = (0..b)
            .flat_map(|_| (*next..*next + seq as i64).collect::<Vec<_>>())
            .collect();
        let mask = vec![1i64; b * seq];
        let new = NewTokens {
            k: NewKv::of(&kv),
            v: NewKv::of(&kv),
            attention: &attention,
            past: store.capacity(),
            positions: &positions,
            mask: &mask,
            seq,
        };
        store.update(0, &new, policy).unwrap();
        *next += seq as i64;
    }

    proptest! {
        /// The real store, fed a prefill (whole or in chunks) then single tokens, allocates exactly
        /// the bytes computed from the growth rule after every graph run.
        #[test]
        fn the_store_allocates_what_is_computed(
            batch in 1usize..4, heads in 1usize..3, limit in 1usize..90, chunk in 1usize..70,
            prompt in 1usize..80, prefill_chunk in prop::option::of(1usize..40), steps in 0usize..60,
            h2o in any::<bool>(),
        ) {
            let layout = KvLayout { layers: 1, heads, head_dim: 2, dtype: KvDtype::Float32 };
            let mut store = KvStore::new(1, batch, heads, 2, KvDtype::Float32, limit, chunk).unwrap();
            let policy: Box<dyn Policy> = if h2o {
                Box::new(H2oPolicy::new(limit / 2, limit - limit / 2, Scope::Head))
            } else {
                Box::new(LocalPolicy::new(limit))
            };
            let pc = prefill_chunk.unwrap_or(prompt);
            let mut runs: Vec<usize> = std::iter::repeat_n(pc, prompt / pc).collect();
            runs.extend((prompt % pc > 0).then_some(prompt % pc));
            runs.extend(std::iter::repeat_n(1, steps));
            let mut next = 0;
            for i in 0..runs.len() {
                feed(&mut store, policy.as_ref(), &mut next, runs[i]);
                let slots = slots_after(limit, chunk, runs[..=i].iter().copied());
                prop_assert_eq!(store.capacity(), slots, "after run {} of {:?}", i, runs);
                prop_assert_eq!(store.allocated_bytes() as u64, layout.bytes(batch, slots));
            }
        }
    }
}
