//! Scissorhands' attention history ([`crate::policy::ScoreRule::Unimportance`]): for every (batch,
//! head) row, one bit per slot for each of the last `window` steps (the slot's token fell below
//! the step's mean share), and the step each slot's token entered.
//!
//! The bits of a step live in a ring of `window` rows of `ceil(capacity / 64)` words, so a step
//! touches one ring row (a few words) per (batch, head) and the slot's count changes only where a
//! bit flips. A slot reused by a new token is not cleared (that would touch `window` rows):
//! the bit a step drops (written `window` steps before) counts only if the slot's token had
//! entered by then. A "young" bit per slot says it had not (set when a token enters, cleared
//! `window` steps later from a per-step list of arrivals), so a step reads no per-slot entry
//! steps. Steps are counted modulo 2^32. Memory: `window` bits per slot, e.g. 32 layers x 32
//! heads x 512 slots x 400 steps = 26 MB.
//!
//! Normalised (`@normalized`): the counts live here (`counts`, minus the count per slot) and the
//! score is written from them after each step as `count / seen` with `seen = min(window, step -
//! entered + 1)` for every slot in use (O(used) per row and step, only for this variant).

/// One layer's history.
#[derive(Debug, Clone)]
pub(crate) struct History {
    window: usize,
    rows: usize,
    capacity: usize,
    /// `ceil(capacity / 64)`.
    words: usize,
    /// `[rows, window, words]`: bit `s % 64` of word `s / 64` of ring row `step % window`.
    bits: Vec<u64>,
    /// `[rows, capacity]`: the step the slot's token entered.
    entered: Vec<u32>,
    /// `[rows, words]`: the slot's token entered less than `window` steps ago.
    young: Vec<u64>,
    /// Per ring row: the (row, slot) pairs that took a new token in that step.
    arrivals: Vec<Vec<(u32, u32)>>,
    /// The current step (this layer's updates so far, modulo 2^32).
    step: u32,
    /// Normalised scores: `[rows, capacity]` minus the count per slot (empty otherwise, and the
    /// count lives in the score itself).
    counts: Vec<f32>,
    normalized: bool,
}

impl History {
    pub(crate) fn new(window: usize, rows: usize, capacity: usize, normalized: bool) -> Self {
        let mut h = History {
            window: window.max(1),
            rows,
            capacity: 0,
            words: 0,
            bits: Vec::new(),
            entered: Vec::new(),
            young: Vec::new(),
            arrivals: vec![Vec::new(); window.max(1)],
            step: 0,
            counts: Vec::new(),
            normalized,
        };
        h.grow(capacity);
        h
    }

    /// The rule this history keeps: (window, normalized).
    pub(crate) fn rule(&self) -> (usize, bool) {
        (self.window, self.normalized)
    }

    /// Resize to `capacity` slots per row, keeping every slot's bits and entry step.
    pub(crate) fn grow(&mut self, capacity: usize) {
        let (old_cap, old_words) = (self.capacity, self.words);
        let words = capacity.div_ceil(64);
        let mut bits = vec![0u64; self.rows * self.window * words];
        let mut entered = vec![0u32; self.rows * capacity];
        let mut young = vec![0u64; self.rows * words];
        let (keep_w, keep_c) = (old_words.min(words), old_cap.min(capacity));
        for r in 0..self.rows {
            young[r * words..r * words + keep_w]
                .copy_from_slice(&self.young[r * old_words..r * old_words + keep_w]);
            for i in 0..self.window {
                let (dst, src) = (
                    (r * self.window + i) * words,
                    (r * self.window + i) * old_words,
                );
                bits[dst..dst + keep_w].copy_from_slice(&self.bits[src..src + keep_w]);
            }
            entered[r * capacity..r * capacity + keep_c]
                .copy_from_slice(&self.entered[r * old_cap..r * old_cap + keep_c]);
        }
        if self.normalized {
            let mut counts = vec![0f32; self.rows * capacity];
            for r in 0..self.rows {
                counts[r * capacity..r * capacity + keep_c]
                    .copy_from_slice(&self.counts[r * old_cap..r * old_cap + keep_c]);
            }
            self.counts = counts;
        }
        self.bits = bits;
        self.entered = entered;
        self.young = young;
        self.capacity = capacity;
        self.words = words;
    }

    /// Start of a step: the tokens that entered `window` steps ago are no longer young (unless
    /// their slot took another token since).
    pub(crate) fn begin_step(&mut self) {
        let (step, window) = (self.step, self.window as u32);
        let ring = (step % window) as usize;
        let then = step.wrapping_sub(window);
        for &(r, slot) in &self.arrivals[ring] {
            let (r, slot) = (r as usize, slot as usize);
            if self.entered[r * self.capacity + slot] == then {
                self.young[r * self.words + slot / 64] &= !(1u64 << (slot % 64));
            }
        }
        self.arrivals[ring].clear();
    }

    /// This step's bits of row `r` for its cached slots `0..used` (`attention[s]` below `share`),
    /// replacing the ring row's bits of `window` steps ago; `score[s]` (minus the slot's count)
    /// changes where a counted bit flips. [`History::begin_step`] comes first.
    pub(crate) fn step_row(
        &mut self,
        r: usize,
        attention: &[f32],
        used: usize,
        share: f32,
        score: &mut [f32],
    ) {
        let ring = (self.step % self.window as u32) as usize;
        let o = (r * self.window + ring) * self.words;
        let young = &self.young[r * self.words..(r + 1) * self.words];
        let words = &mut self.bits[o..o + self.words];
        if !self.normalized {
            flip_counts(words, young, attention, used, share, score);
            return;
        }
        let cap = self.capacity;
        let count = &mut self.counts[r * cap..(r + 1) * cap];
        flip_counts(words, young, attention, used, share, count);
        let entered = &self.entered[r * cap..r * cap + used];
        let (step, window) = (self.step, self.window as u32);
        for ((d, &c), &e) in score.iter_mut().zip(count.iter()).zip(entered) {
            let seen = step.wrapping_sub(e).saturating_add(1).min(window);
            *d = c / seen as f32;
        }
    }

    /// A new token enters slot `slot` of row `r` in this step, with this step's bit `below`.
    pub(crate) fn enter(&mut self, r: usize, slot: usize, below: bool) {
        self.entered[r * self.capacity + slot] = self.step;
        self.young[r * self.words + slot / 64] |= 1u64 << (slot % 64);
        let ring = (self.step % self.window as u32) as usize;
        self.arrivals[ring].push((r as u32, slot as u32));
        if self.normalized {
            self.counts[r * self.capacity + slot] = -f32::from(u8::from(below));
        }
        let word = &mut self.bits[(r * self.window + ring) * self.words + slot / 64];
        let bit = 1u64 << (slot % 64);
        if below {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// The step is over.
    pub(crate) fn advance(&mut self) {
        self.step = self.step.wrapping_add(1);
    }
}

/// One ring row's words of a (batch, head) row for this step: bit s set where `attention[s]` is
/// below `share` for the slots `0..used` (0 beyond), replacing what was there; `count[s]` (minus
/// the slot's count) changes where a counted bit flips (bits of tokens still `young` were written
/// before they entered, so they never counted).
fn flip_counts(
    words: &mut [u64],
    young: &[u64],
    attention: &[f32],
    used: usize,
    share: f32,
    count: &mut [f32],
) {
    for (wi, word) in words.iter_mut().enumerate() {
        let lo = wi * 64;
        if lo >= used {
            *word = 0;
            continue;
        }
        let new = below_bits(&attention[lo..(lo + 64).min(used)], share);
        let old = *word & !young[wi];
        *word = new;
        let (mut up, mut down) = (new & !old, old & !new);
        while up != 0 {
            count[lo + up.trailing_zeros() as usize] -= 1.0;
            up &= up - 1;
        }
        while down != 0 {
            count[lo + down.trailing_zeros() as usize] += 1.0;
            down &= down - 1;
        }
    }
}

/// Bit k: `a[k] < share`, for `a.len() <= 64`. Four compares form a nibble at a time: this
/// compiles to packed compares, about as fast as adding the row into the scores (a loop that
/// shifts in one bit per element is several times slower).
#[inline]
fn below_bits(a: &[f32], share: f32) -> u64 {
    let (mut m, mut k) = (0u64, 0);
    let mut quads = a.chunks_exact(4);
    for c in &mut quads {
        let nibble = u64::from(c[0] < share)
            | u64::from(c[1] < share) << 1
            | u64::from(c[2] < share) << 2
            | u64::from(c[3] < share) << 3;
        m |= nibble << k;
        k += 4;
    }
    for &x in quads.remainder() {
        m |= u64::from(x < share) << k;
        k += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts by brute force: per slot the list of (step, bit) since its token entered.
    #[test]
    fn below_bits_of_any_length() {
        let a: Vec<f32> = (0..64).map(|i| (i % 3) as f32).collect();
        for len in [0, 1, 3, 4, 5, 63, 64] {
            let want = (0..len).fold(0u64, |m, k| m | u64::from(a[k] < 1.0) << k);
            assert_eq!(below_bits(&a[..len], 1.0), want, "{len}");
        }
    }

    #[test]
    fn counts_match_a_sliding_window_with_slot_reuse_and_growth() {
        for normalized in [false, true] {
            counts_match(normalized);
        }
    }

    /// The brute force of [`counts_match_a_sliding_window_with_slot_reuse_and_growth`]: the score is
    /// minus the count, divided by the steps seen (at most the window) when `normalized`.
    fn counts_match(normalized: bool) {
        let window = 3;
        let mut h = History::new(window, 1, 2, normalized);
        let mut score = vec![0.0f32; 70];
        let mut truth: Vec<Vec<bool>> = vec![Vec::new(); 70];
        let mut rng = 12345u64;
        let mut used = 0usize;
        for step in 0..40 {
            if step == 5 {
                h.grow(70); // crosses a 64-slot word
            }
            let cap = if step < 5 { 2 } else { 70 };
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let att: Vec<f32> = (0..cap).map(|s| ((rng >> (s % 60)) & 1) as f32).collect();
            h.begin_step();
            h.step_row(0, &att, used, 0.5, &mut score);
            for s in 0..used {
                truth[s].push(att[s] < 0.5);
            }
            // a new token: appended while there is room, else into slot step % used
            let slot = if used < cap { used } else { step % used };
            let below = step % 3 == 0;
            h.enter(0, slot, below);
            score[slot] = -f32::from(u8::from(below));
            truth[slot] = vec![below];
            used = (used + 1).max(slot + 1).min(cap);
            h.advance();
            for s in 0..used {
                let t = &truth[s];
                let count = t[t.len().saturating_sub(window)..]
                    .iter()
                    .filter(|&&b| b)
                    .count();
                let seen = t.len().min(window) as f32;
                let want = if normalized {
                    -(count as f32) / seen
                } else {
                    -(count as f32)
                };
                assert_eq!(
                    score[s], want,
                    "step {step} slot {s} normalized {normalized}"
                );
            }
        }
    }
}
