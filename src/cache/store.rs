//! KvStore: per layer K, V `[batch, heads, capacity, head_dim]` plus position and accumulated score per
//! `(batch, head, slot)`; new tokens go into free slots or the slots their policy just freed (no compaction).

use half::f16;

use crate::error::{Error, Result};
use crate::manifest::KvDtype;
use crate::policy::{Candidates, Policy};

/// K or V elements of one layer, `[batch, heads, capacity, head_dim]` row-major.
#[derive(Debug, Clone)]
pub enum KvBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvBuf {
    fn zeros(dtype: KvDtype, n: usize) -> Self {
        match dtype {
            KvDtype::Float32 => Self::F32(vec![0.0; n]),
            KvDtype::Float16 => Self::F16(vec![f16::ZERO; n]),
        }
    }
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }
}

/// The new tokens' K/V of one layer as the graph returned them, `[batch, heads, seq, head_dim]`.
#[derive(Debug, Clone, Copy)]
pub enum NewKv<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// What a step adds to one layer.
pub struct NewTokens<'a> {
    /// New keys, `[batch, heads, seq, head_dim]` (rotated).
    pub k: NewKv<'a>,
    /// New values, `[batch, heads, seq, head_dim]`.
    pub v: NewKv<'a>,
    /// The step's attention sums, `[batch, heads, past + seq]`.
    pub attention: &'a [f32],
    /// The capacity the graph ran with (the store may have grown since, by [`KvStore::reserve_for_step`]).
    pub past: usize,
    /// Absolute positions of the new tokens, `[batch, seq]`.
    pub positions: &'a [i64],
    /// 1 for a real token, 0 for padding, `[batch, seq]`.
    pub mask: &'a [i64],
    pub seq: usize,
}

/// One layer's slots.
#[derive(Debug, Clone)]
struct LayerSlots {
    k: KvBuf,
    v: KvBuf,
    /// `[batch, heads, capacity]`, -1 = empty.
    pos: Vec<i64>,
    /// `[batch, heads, capacity]`, accumulated attention.
    score: Vec<f32>,
}

/// Scratch buffers reused across steps so the hot loop does not allocate.
#[derive(Debug, Default, Clone)]
struct Scratch {
    cand_pos: Vec<i64>,
    cand_score: Vec<f32>,
    keep: Vec<bool>,
    cached_slots: Vec<usize>,
    free_slots: Vec<usize>,
    new_idx: Vec<usize>,
    victims: Vec<usize>,
}

/// The host KV cache for a batch of sequences.
#[derive(Debug, Clone)]
pub struct KvStore {
    batch: usize,
    heads: usize,
    head_dim: usize,
    dtype: KvDtype,
    capacity: usize,
    /// Most slots this store may ever hold per head (the policy's budget, or the model's positions).
    capacity_limit: usize,
    /// Growth step of the slot arrays while below the limit.
    chunk: usize,
    layers: Vec<LayerSlots>,
    scratch: Scratch,
}

impl KvStore {
    /// An empty store. `capacity_limit` is the most entries per head ever held between steps
    /// (the budget, or the model's positions for the full cache); slots grow in `chunk`s up to it.
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
        let mut s = Self {
            batch,
            heads,
            head_dim,
            dtype,
            capacity: 0,
            capacity_limit,
            chunk: chunk.max(1),
            layers: Vec::with_capacity(layers),
            scratch: Scratch::default(),
        };
        for _ in 0..layers {
            s.layers.push(LayerSlots {
                k: KvBuf::zeros(dtype, 0),
                v: KvBuf::zeros(dtype, 0),
                pos: Vec::new(),
                score: Vec::new(),
            });
        }
        Ok(s)
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
        self.layers.len()
    }
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }
    /// Slots per (batch, head) currently allocated; the graph's `past` length.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn capacity_limit(&self) -> usize {
        self.capacity_limit
    }

    /// Layer `l`'s K and V, `[batch, heads, capacity, head_dim]`.
    pub fn kv(&self, layer: usize) -> (&KvBuf, &KvBuf) {
        let l = &self.layers[layer];
        (&l.k, &l.v)
    }

    /// Positions of `(layer, batch row, head)`, one per slot (-1 = empty).
    pub fn positions(&self, layer: usize, b: usize, h: usize) -> &[i64] {
        let c = self.capacity;
        let o = (b * self.heads + h) * c;
        &self.layers[layer].pos[o..o + c]
    }

    /// Accumulated scores of `(layer, batch row, head)`, one per slot.
    pub fn scores(&self, layer: usize, b: usize, h: usize) -> &[f32] {
        let c = self.capacity;
        let o = (b * self.heads + h) * c;
        &self.layers[layer].score[o..o + c]
    }

    /// Valid entries in row `b` (every head and layer holds the same count).
    pub fn valid_count(&self, b: usize) -> usize {
        if self.capacity == 0 {
            return 0;
        }
        self.positions(0, b, 0).iter().filter(|&&p| p >= 0).count()
    }

    /// Exact bytes of K and V held by valid entries, all layers, heads and rows.
    pub fn held_bytes(&self) -> usize {
        let per_entry = 2 * self.head_dim * self.dtype.size();
        self.layers
            .iter()
            .map(|l| l.pos.iter().filter(|&&p| p >= 0).count() * per_entry)
            .sum()
    }

    /// Bytes of the allocated K and V slot arrays.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * self.dtype.size())
            .sum()
    }

    /// The graph's `attention_mask` for a step, `[batch, capacity + seq]`, written into `out`:
    /// 1 where a slot is valid (from layer 0, head 0: validity is the same for every head and layer),
    /// then the new tokens' own mask `[batch, seq]`.
    pub fn build_mask(&self, new_mask: &[i64], seq: usize, out: &mut Vec<i64>) {
        out.clear();
        let c = self.capacity;
        for b in 0..self.batch {
            if c > 0 {
                out.extend(self.positions(0, b, 0).iter().map(|&p| i64::from(p >= 0)));
            }
            out.extend_from_slice(&new_mask[b * seq..(b + 1) * seq]);
        }
    }

    /// Make room so that each row can take `extra` more entries without eviction, up to the limit.
    /// The decoder calls it after the model run (which saw the slots as they were, so a prefill into an
    /// empty store runs with past = 0) and before [`KvStore::commit`].
    pub fn reserve_for_step(&mut self, extra: usize) {
        let most_valid = (0..self.batch)
            .map(|b| self.valid_count(b))
            .max()
            .unwrap_or(0);
        let want = (most_valid + extra).min(self.capacity_limit);
        if want > self.capacity {
            let grown = want.div_ceil(self.chunk) * self.chunk;
            self.grow(grown.min(self.capacity_limit));
        }
    }

    fn grow(&mut self, new_cap: usize) {
        let (old, bh, d) = (self.capacity, self.batch * self.heads, self.head_dim);
        for l in &mut self.layers {
            let mut pos = vec![-1i64; bh * new_cap];
            let mut score = vec![0f32; bh * new_cap];
            for r in 0..bh {
                pos[r * new_cap..r * new_cap + old].copy_from_slice(&l.pos[r * old..(r + 1) * old]);
                score[r * new_cap..r * new_cap + old]
                    .copy_from_slice(&l.score[r * old..(r + 1) * old]);
            }
            l.pos = pos;
            l.score = score;
            fn regrow<T: Copy>(
                src: &[T],
                zero: T,
                bh: usize,
                old: usize,
                new_cap: usize,
                d: usize,
            ) -> Vec<T> {
                let mut dst = vec![zero; bh * new_cap * d];
                for r in 0..bh {
                    dst[r * new_cap * d..(r * new_cap + old) * d]
                        .copy_from_slice(&src[r * old * d..(r + 1) * old * d]);
                }
                dst
            }
            l.k = match &l.k {
                KvBuf::F32(v) => KvBuf::F32(regrow(v, 0.0, bh, old, new_cap, d)),
                KvBuf::F16(v) => KvBuf::F16(regrow(v, f16::ZERO, bh, old, new_cap, d)),
            };
            l.v = match &l.v {
                KvBuf::F32(v) => KvBuf::F32(regrow(v, 0.0, bh, old, new_cap, d)),
                KvBuf::F16(v) => KvBuf::F16(regrow(v, f16::ZERO, bh, old, new_cap, d)),
            };
        }
        self.capacity = new_cap;
    }

    /// Add the step's attention to the scores of the cached slots: `score[b,h,s] += att[b,h,s]`
    /// for `s < past` (masked slots receive exactly 0). `past` is the capacity the graph ran with
    /// (the store may have grown since). O(batch x heads x past).
    pub fn add_scores(
        &mut self,
        layer: usize,
        attention: &[f32],
        past: usize,
        seq: usize,
    ) -> Result<()> {
        let c = self.capacity;
        if past > c {
            return Err(Error::Store(format!(
                "past {past} is larger than the capacity {c}"
            )));
        }
        let cols = past + seq;
        let rows = self.batch * self.heads;
        if attention.len() != rows * cols {
            return Err(Error::Store(format!(
                "attention sums have {} values, expected [batch {} x heads {} x (past {} + seq {})]",
                attention.len(),
                self.batch,
                self.heads,
                past,
                seq
            )));
        }
        let score = &mut self.layers[layer].score;
        for r in 0..rows {
            let dst = &mut score[r * c..r * c + past];
            let src = &attention[r * cols..r * cols + past];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += *s;
            }
        }
        Ok(())
    }

    /// Write one layer's new tokens into the store, evicting with `policy` where a row would go over
    /// `policy.budget()`. `evicted`, when given, receives per `[batch][head]` the positions evicted
    /// (cached or new). Returns the time spent in the policy's victim choice.
    pub fn commit(
        &mut self,
        layer: usize,
        new: &NewTokens<'_>,
        policy: &dyn Policy,
        mut evicted: Option<&mut Vec<Vec<Vec<i64>>>>,
    ) -> Result<std::time::Duration> {
        let (heads, d, c, seq) = (self.heads, self.head_dim, self.capacity, new.seq);
        let past = new.past;
        if past > c {
            return Err(Error::Store(format!(
                "past {past} is larger than the capacity {c}"
            )));
        }
        let budget = policy.budget().min(self.capacity_limit);
        let cols = past + seq;
        if new.attention.len() != self.batch * heads * cols {
            return Err(Error::Store(format!(
                "attention sums have {} values, expected [batch {} x heads {heads} x (past {past} + seq {seq})]",
                new.attention.len(),
                self.batch
            )));
        }
        let mut policy_time = std::time::Duration::ZERO;
        let kv_len = self.batch * heads * seq * d;
        let kv_ok = |x: &NewKv<'_>| match x {
            NewKv::F32(s) => s.len() == kv_len && self.dtype == KvDtype::Float32,
            NewKv::F16(s) => s.len() == kv_len && self.dtype == KvDtype::Float16,
        };
        if !kv_ok(&new.k) || !kv_ok(&new.v) {
            return Err(Error::Store(format!(
                "new K/V must be {} [batch {} x heads {heads} x seq {seq} x head_dim {d}] of {}",
                kv_len,
                self.batch,
                self.dtype.name()
            )));
        }
        if new.positions.len() != self.batch * seq || new.mask.len() != self.batch * seq {
            return Err(Error::Store(
                "positions and mask must be [batch, seq]".into(),
            ));
        }
        let mut sc = std::mem::take(&mut self.scratch);
        for b in 0..self.batch {
            // Real new tokens of this row (padding is never stored).
            sc.new_idx.clear();
            sc.new_idx
                .extend((0..seq).filter(|&j| new.mask[b * seq + j] != 0));
            let n_new = sc.new_idx.len();
            if n_new == 0 {
                continue;
            }
            // Slots in use / free: the same for every head of the row (see module docs).
            sc.cached_slots.clear();
            sc.free_slots.clear();
            {
                let p0 = &self.layers[layer].pos[(b * heads) * c..(b * heads + 1) * c];
                for (s, &p) in p0.iter().enumerate() {
                    if p >= 0 {
                        sc.cached_slots.push(s);
                    } else {
                        sc.free_slots.push(s);
                    }
                }
            }
            let n_cached = sc.cached_slots.len();
            if n_cached + n_new <= budget {
                if n_new > sc.free_slots.len() {
                    return Err(Error::Store(format!(
                        "no free slot: capacity {c} holds {n_cached} and {n_new} new tokens arrive (reserve_for_step was not called)"
                    )));
                }
                for (i, &j) in sc.new_idx.iter().enumerate() {
                    let slot = sc.free_slots[i];
                    for h in 0..heads {
                        let r = b * heads + h;
                        let a = new.attention[r * cols + past + j];
                        self.write(layer, b, h, slot, j, seq, new, a);
                    }
                }
                continue;
            }
            // Over budget: the policy chooses `budget` of the n candidates per head.
            let n = n_cached + n_new;
            sc.cand_pos.clear();
            sc.cand_score.clear();
            for h in 0..heads {
                let r = b * heads + h;
                let l = &self.layers[layer];
                if n_cached == c {
                    // No empty slot (the usual decode case): the cached candidates are the whole row.
                    sc.cand_pos.extend_from_slice(&l.pos[r * c..(r + 1) * c]);
                    sc.cand_score
                        .extend_from_slice(&l.score[r * c..(r + 1) * c]);
                } else {
                    for &s in &sc.cached_slots {
                        sc.cand_pos.push(l.pos[r * c + s]);
                        sc.cand_score.push(l.score[r * c + s]);
                    }
                }
                for &j in &sc.new_idx {
                    sc.cand_pos.push(new.positions[b * seq + j]);
                    sc.cand_score.push(new.attention[r * cols + past + j]);
                }
            }
            sc.keep.clear();
            sc.keep.resize(heads * n, false);
            let t0 = std::time::Instant::now();
            policy.select(
                &Candidates {
                    heads,
                    n,
                    positions: &sc.cand_pos,
                    scores: &sc.cand_score,
                },
                &mut sc.keep,
            );
            policy_time += t0.elapsed();
            let want = budget.min(n);
            for h in 0..heads {
                let keep = &sc.keep[h * n..(h + 1) * n];
                let kept = keep.iter().filter(|&&k| k).count();
                if kept != want {
                    return Err(Error::Store(format!(
                        "policy {} kept {kept} of {n} candidates in head {h}, expected {want}",
                        policy.spec()
                    )));
                }
                sc.victims.clear();
                // Cached victims = evictions not spent on new tokens; stop scanning once all are found
                // (in decode there is at most one, often none when the new token itself goes).
                let new_evicted = keep[n_cached..].iter().filter(|&&k| !k).count();
                let cached_victims = (n - want) - new_evicted;
                if cached_victims > 0 {
                    for (i, &s) in sc.cached_slots.iter().enumerate() {
                        if !keep[i] {
                            sc.victims.push(s);
                            if sc.victims.len() == cached_victims {
                                break;
                            }
                        }
                    }
                }
                let r = b * heads + h;
                if let Some(ev) = evicted.as_deref_mut() {
                    let row = &mut ev[b][h];
                    for (i, &s) in sc.cached_slots.iter().enumerate() {
                        if !keep[i] {
                            row.push(self.layers[layer].pos[r * c + s]);
                        }
                    }
                    for (i, &j) in sc.new_idx.iter().enumerate() {
                        if !keep[n_cached + i] {
                            row.push(new.positions[b * seq + j]);
                        }
                    }
                }
                // Freed slots first, then the lowest free slots (the same ones for every head).
                let mut kept_new = 0usize;
                for (i, &j) in sc.new_idx.iter().enumerate() {
                    if !keep[n_cached + i] {
                        continue;
                    }
                    let slot = if kept_new < sc.victims.len() {
                        sc.victims[kept_new]
                    } else {
                        *sc.free_slots
                            .get(kept_new - sc.victims.len())
                            .ok_or_else(|| Error::Store("no slot left for a kept token".into()))?
                    };
                    kept_new += 1;
                    let a = new.attention[r * cols + past + j];
                    self.write(layer, b, h, slot, j, seq, new, a);
                }
                // Victims no kept new token replaced become empty (cannot happen while the row
                // holds at most `budget` entries, kept for safety).
                for &slot in sc.victims.iter().skip(kept_new) {
                    self.layers[layer].pos[r * c + slot] = -1;
                    self.layers[layer].score[r * c + slot] = 0.0;
                }
            }
        }
        self.scratch = sc;
        Ok(policy_time)
    }

    /// Copy new token `j` of row `b`, head `h` into `slot`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn write(
        &mut self,
        layer: usize,
        b: usize,
        h: usize,
        slot: usize,
        j: usize,
        seq: usize,
        new: &NewTokens<'_>,
        score: f32,
    ) {
        let (heads, d, c) = (self.heads, self.head_dim, self.capacity);
        let r = b * heads + h;
        let dst = (r * c + slot) * d;
        let src = (r * seq + j) * d;
        let l = &mut self.layers[layer];
        match (&mut l.k, new.k) {
            (KvBuf::F32(k), NewKv::F32(n)) => k[dst..dst + d].copy_from_slice(&n[src..src + d]),
            (KvBuf::F16(k), NewKv::F16(n)) => k[dst..dst + d].copy_from_slice(&n[src..src + d]),
            _ => unreachable!("dtype checked in commit"),
        }
        match (&mut l.v, new.v) {
            (KvBuf::F32(v), NewKv::F32(n)) => v[dst..dst + d].copy_from_slice(&n[src..src + d]),
            (KvBuf::F16(v), NewKv::F16(n)) => v[dst..dst + d].copy_from_slice(&n[src..src + d]),
            _ => unreachable!("dtype checked in commit"),
        }
        l.pos[r * c + slot] = new.positions[b * seq + j];
        l.score[r * c + slot] = score;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the newest `budget` positions per head (a local window, written here independently).
    struct Newest(usize);
    impl Policy for Newest {
        fn spec(&self) -> String {
            format!("newest:{}", self.0)
        }
        fn budget(&self) -> usize {
            self.0
        }
        fn needs_scores(&self) -> bool {
            false
        }
        fn select(&self, c: &Candidates<'_>, keep: &mut [bool]) {
            for h in 0..c.heads {
                let row = &c.positions[h * c.n..(h + 1) * c.n];
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
        fn needs_scores(&self) -> bool {
            true
        }
        fn select(&self, c: &Candidates<'_>, keep: &mut [bool]) {
            for h in 0..c.heads {
                let (p, s) = (
                    &c.positions[h * c.n..(h + 1) * c.n],
                    &c.scores[h * c.n..(h + 1) * c.n],
                );
                let victim = if h == 0 {
                    (0..c.n)
                        .min_by(|&a, &b| s[a].partial_cmp(&s[b]).unwrap())
                        .unwrap()
                } else {
                    (0..c.n).min_by_key(|&i| p[i]).unwrap()
                };
                for i in 0..c.n {
                    keep[h * c.n + i] = i != victim;
                }
            }
        }
    }

    fn step(store: &mut KvStore, pol: &dyn Policy, pos: i64, att: &[f32]) {
        // one layer, batch 1, 2 heads, head_dim 2: K = [pos, h], V = [-pos, h]
        let k: Vec<f32> = (0..2).flat_map(|h| [pos as f32, h as f32]).collect();
        let v: Vec<f32> = (0..2).flat_map(|h| [-(pos as f32), h as f32]).collect();
        let new = NewTokens {
            k: NewKv::F32(&k),
            v: NewKv::F32(&v),
            attention: att,
            past: att.len() / 2 - 1,
            positions: &[pos],
            mask: &[1],
            seq: 1,
        };
        if pol.needs_scores() {
            store.add_scores(0, att, att.len() / 2 - 1, 1).unwrap();
        }
        store.commit(0, &new, pol, None).unwrap();
    }

    fn store(limit: usize, chunk: usize) -> KvStore {
        KvStore::new(1, 1, 2, 2, KvDtype::Float32, limit, chunk).unwrap()
    }

    #[test]
    fn appends_into_free_slots_then_reuses_the_victims_slot() {
        let mut s = store(3, 2);
        let pol = Newest(3);
        for p in 0..3 {
            s.reserve_for_step(1);
            let att = vec![0.0; 2 * (s.capacity() + 1)];
            step(&mut s, &pol, p, &att);
        }
        assert_eq!(s.capacity(), 3, "grows in chunks, clamped to the limit");
        assert_eq!(s.positions(0, 0, 0), &[0, 1, 2]);
        s.reserve_for_step(1);
        assert_eq!(s.capacity(), 3);
        step(&mut s, &pol, 3, &[0.0; 8]);
        // position 0 evicted; 3 takes its slot (no compaction)
        assert_eq!(s.positions(0, 0, 0), &[3, 1, 2]);
        assert_eq!(s.positions(0, 0, 1), &[3, 1, 2]);
        if let KvBuf::F32(k) = &s.kv(0).0 {
            // [batch, heads, capacity, head_dim]: head 1 slot 0 = [3, 1]
            assert_eq!(&k[(3) * 2..(3 + 1) * 2], &[3.0, 1.0]);
            assert_eq!(&k[0..2], &[3.0, 0.0]);
        }
        if let KvBuf::F32(v) = &s.kv(0).1 {
            assert_eq!(&v[0..2], &[-3.0, 0.0]);
        }
        assert_eq!(s.held_bytes(), 3 * 2 * 2 * 2 * 4);
    }

    #[test]
    fn mask_marks_valid_slots_then_new_tokens() {
        let mut s = store(8, 4);
        let pol = Newest(8);
        for p in 0..2 {
            s.reserve_for_step(1);
            let att = vec![0.0; 2 * (s.capacity() + 1)];
            step(&mut s, &pol, p, &att);
        }
        let mut m = Vec::new();
        s.build_mask(&[1], 1, &mut m);
        assert_eq!(m, vec![1, 1, 0, 0, 1]);
    }

    #[test]
    fn scores_accumulate_and_heads_evict_independently() {
        let mut s = store(2, 2);
        let pol = PerHead(2);
        s.reserve_for_step(1);
        step(&mut s, &pol, 0, &[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        s.reserve_for_step(1);
        // head 0: pos0 gets 0.9, pos1 0.1; head 1: 0.5 / 0.5
        step(&mut s, &pol, 1, &[0.9, 0.0, 0.1, 0.5, 0.0, 0.5]);
        assert_eq!(s.scores(0, 0, 0), &[1.9, 0.1]);
        // step 2: head 0 attends pos1 heavily so pos0 (1.9+0) vs pos1 (0.1+0.6) vs new 0.4 -> evict new? lowest = new (0.4)
        step(&mut s, &pol, 2, &[0.0, 0.6, 0.4, 0.2, 0.2, 0.6]);
        assert_eq!(
            s.positions(0, 0, 0),
            &[0, 1],
            "head 0 evicted the new token (lowest score)"
        );
        assert_eq!(
            s.positions(0, 0, 1),
            &[2, 1],
            "head 1 evicted the oldest, slot 0 reused"
        );
        assert!(
            (s.scores(0, 0, 1)[0] - 0.6).abs() < 1e-6,
            "new token starts with its own attention"
        );
    }

    #[test]
    fn rejects_wrong_shapes_and_empty_limits() {
        assert!(KvStore::new(1, 1, 2, 2, KvDtype::Float32, 0, 4).is_err());
        assert!(KvStore::new(0, 1, 2, 2, KvDtype::Float32, 4, 4).is_err());
        let mut s = store(4, 4);
        s.reserve_for_step(1);
        assert!(s.add_scores(0, &[0.0; 3], 4, 1).is_err());
        assert!(
            s.add_scores(0, &[0.0; 12], 5, 1).is_err(),
            "past beyond capacity"
        );
        let k = [0f32; 3];
        let new = NewTokens {
            k: NewKv::F32(&k),
            v: NewKv::F32(&k),
            attention: &[0.0; 10],
            past: 4,
            positions: &[0],
            mask: &[1],
            seq: 1,
        };
        let err = s.commit(0, &new, &Newest(4), None).unwrap_err().to_string();
        assert!(err.contains("new K/V"), "{err}");
        let k16 = [f16::ZERO; 4];
        let new = NewTokens {
            k: NewKv::F16(&k16),
            v: NewKv::F16(&k16),
            attention: &[0.0; 10],
            past: 4,
            positions: &[0],
            mask: &[1],
            seq: 1,
        };
        assert!(
            s.commit(0, &new, &Newest(4), None).is_err(),
            "dtype mismatch refused"
        );
    }

    #[test]
    fn missing_reserve_is_an_error_not_a_panic() {
        let mut s = store(4, 4);
        let k = [0f32; 4];
        let new = NewTokens {
            k: NewKv::F32(&k),
            v: NewKv::F32(&k),
            attention: &[0.0; 2],
            past: 0,
            positions: &[0],
            mask: &[1],
            seq: 1,
        };
        let err = s.commit(0, &new, &Newest(4), None).unwrap_err().to_string();
        assert!(err.contains("no free slot"), "{err}");
    }
}
