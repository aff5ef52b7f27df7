//! Eviction policies: which cached tokens survive a step. Knows nothing about ONNX or the store's layout.
//!
//! Semantics (design §3, docs/architecture.md "Cache and policy semantics", and the independent
//! Python reference `export/h2o_export/policies/`, which the engine must agree with exactly):
//! - a policy is asked to choose only when a head holds more than `budget` candidates; it keeps
//!   exactly `min(budget, n)` of them per head;
//! - each candidate carries a score whose meaning the policy declares with its [`ScoreRule`]
//!   (accumulated attention for h2o, this step's attention for tova, minus the count of
//!   below-average steps for scissor, minus the squared key norm for knorm, a random key for
//!   random); the store keeps it per slot, the policy ranks by it;
//! - `t` is the newest position among a head's candidates; the recent window R is the candidates
//!   with `position > t - R`, the sinks S those with `position < S`: both are protected;
//! - victims go in this order: empty/padding candidates (position -1) first, then unprotected
//!   candidates by lowest score (local and sink ignore scores), then by oldest
//!   position; protected candidates only if the budget cannot hold them all (never happens with
//!   unique positions, since at most S + R candidates are protected and budget >= S + R);
//! - among padding candidates scores are ignored (oldest position, then lowest index);
//! - remaining ties (equal positions, which a well-formed cache never has) go by lowest index.
//!
//! The victim choice is O(n) per head. The common decode step (`n = budget + 1`, one victim)
//! takes two or three branch-free linear scans with independent lane accumulators (min/max
//! position, then the lowest eligible score or oldest eligible position, then the scan for its
//! index); anything else (several victims, or only protected candidates left) uses the general
//! comparator above with `select_nth_unstable_by`. Scratch buffers live on the stack for
//! `n <= 1024`, so the hot path never allocates; policies hold no state (`Send + Sync`).
//!
//! Layer scope (`h2o-layer`) sums scores over heads in f32, head order; the reference sums with
//! torch, so near-ties may differ by rounding (the reference's replay check allows a relative
//! tolerance for exactly that).

use std::cmp::Ordering;

pub mod full;
pub mod h2o;
pub mod knorm;
pub mod local;
pub mod random;
pub mod schedule;
pub mod scissor;
pub mod sink;
pub mod spec;
pub mod tova;

pub use full::FullPolicy;
pub use h2o::{H2oPolicy, Scope};
pub use knorm::KnormPolicy;
pub use local::LocalPolicy;
pub use random::RandomPolicy;
pub use schedule::Schedule;
pub use scissor::ScissorPolicy;
pub use sink::SinkPolicy;
pub use spec::{PolicyError, PolicyKind, PolicySpec, Positions, ACCEPTED_FORMS};
pub use tova::TovaPolicy;

/// The candidates of one (batch row, layer) after a step: the cached slots followed by the new tokens.
///
/// Layout: `positions` and `scores` are `[heads, n]` row-major, `n = cached + new`.
/// Position -1 marks an empty or padding candidate (always evicted first).
/// Scores follow the policy's [`ScoreRule`] and already include this step (policies with
/// [`ScoreRule::None`] never read them, so the store may leave them stale).
pub struct Candidates<'a> {
    pub heads: usize,
    pub n: usize,
    pub positions: &'a [i64],
    pub scores: &'a [f32],
}

impl<'a> Candidates<'a> {
    /// Positions of head `h`, `[n]`.
    pub fn positions_of(&self, h: usize) -> &'a [i64] {
        &self.positions[h * self.n..(h + 1) * self.n]
    }

    /// Scores of head `h`, `[n]`.
    pub fn scores_of(&self, h: usize) -> &'a [f32] {
        &self.scores[h * self.n..(h + 1) * self.n]
    }
}

/// What the store keeps in a slot's score for a policy, and how it changes each step; the policy
/// ranks candidates by it (lowest first, then oldest). The meaning of each rule is stated here, the
/// store (`cache::scores`) keeps it: per (batch, head, slot), with the new tokens' first value
/// computed when they arrive, so a policy never sees attention rows, keys or the slot layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScoreRule {
    /// No score (full, local, sink): the store leaves scores alone.
    None,
    /// The attention a token received since it entered the cache, its own query included (H2O).
    Accumulated,
    /// The attention a token received in this step only (TOVA); nothing carries over.
    Current,
    /// Minus the number of the last `window` steps in which the token's attention fell below the
    /// step's mean share ([`scissor::below_mean`]); Scissorhands' "unimportant" count. With
    /// `normalized`, that count divided (in f32) by the steps the token has been seen among them,
    /// its entry step included: `min(window, steps since entry + 1)`.
    Unimportance { window: usize, normalized: bool },
    /// Minus the squared L2 norm of the token's (rotated) key ([`knorm::key_score`]), fixed when the
    /// token is written. Reads no attention.
    KeyNorm,
    /// A uniform random key in `[0, 1)` from `(rng, layer, head, position)`
    /// ([`random::key`]), fixed when the token is written. Reads no attention.
    RandomKey { rng: u64 },
}

impl ScoreRule {
    /// Whether the rule reads the graph's attention sums.
    pub fn reads_attention(self) -> bool {
        matches!(
            self,
            ScoreRule::Accumulated | ScoreRule::Current | ScoreRule::Unimportance { .. }
        )
    }
}

/// One eviction policy. Called only when `n > budget()`.
pub trait Policy: Send + Sync {
    /// Canonical spec, e.g. `h2o:192+64`; used in tables and results.
    fn spec(&self) -> String;
    /// Most tokens kept per head between steps (`usize::MAX` for the full cache).
    fn budget(&self) -> usize;
    /// What the candidates' scores hold ([`ScoreRule::None`]: the policy never reads them).
    fn score_rule(&self) -> ScoreRule;
    /// Whether the policy reads scores at all (the store skips the score upkeep if not).
    fn needs_scores(&self) -> bool {
        self.score_rule() != ScoreRule::None
    }
    /// Mark exactly `min(budget, n)` candidates per head to keep: `keep` is `[heads, n]`.
    ///
    /// Panics if `positions`, `scores` (when read) or `keep` are shorter than `heads * n`.
    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]);
}

/// Protection rule shared by the bounded policies: sinks `position < sinks`, recent window
/// `position > t - recent` with `t` the newest position among the candidates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub sinks: usize,
    pub recent: usize,
}

/// Largest buffer kept on the stack; larger `n` falls back to one heap buffer per call.
const STACK_N: usize = 1024;

/// Runs `f` on a zeroed scratch slice of length `n`: on the stack when small, else on the heap.
#[inline]
pub(crate) fn with_scratch<T: Copy + Default, R>(n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    if n <= STACK_N {
        let mut a = [T::default(); STACK_N];
        f(&mut a[..n])
    } else {
        let mut v = vec![T::default(); n];
        f(&mut v)
    }
}

/// Score order: NaN counts as the largest (as in torch's sort), `-0.0 == 0.0`.
#[inline]
fn cmp_score(a: f32, b: f32) -> Ordering {
    match a.partial_cmp(&b) {
        Some(o) => o,
        None => a.is_nan().cmp(&b.is_nan()),
    }
}

/// Eviction order of one head's candidates: `Less` evicts first.
struct Ranker<'a> {
    pos: &'a [i64],
    scores: Option<&'a [f32]>,
    /// `t - recent`: positions above it are in the recent window.
    recent_floor: i64,
    /// Positions below it are sinks.
    sinks: i64,
}

impl<'a> Ranker<'a> {
    fn new(pos: &'a [i64], scores: Option<&'a [f32]>, rule: Rule) -> Self {
        let t = pos.iter().copied().max().unwrap_or(-1);
        let recent = i64::try_from(rule.recent).unwrap_or(i64::MAX);
        let sinks = i64::try_from(rule.sinks).unwrap_or(i64::MAX);
        Ranker {
            pos,
            scores,
            recent_floor: t.saturating_sub(recent),
            sinks,
        }
    }

    /// 0: empty/padding, 1: evictable, 2: protected (recent window or sink).
    #[inline]
    fn class(&self, i: usize) -> u8 {
        let p = self.pos[i];
        if p < 0 {
            0
        } else if p > self.recent_floor || p < self.sinks {
            2
        } else {
            1
        }
    }

    #[inline]
    fn cmp(&self, i: usize, j: usize) -> Ordering {
        let ci = self.class(i);
        ci.cmp(&self.class(j))
            .then_with(|| match self.scores {
                Some(s) if ci != 0 => cmp_score(s[i], s[j]),
                _ => Ordering::Equal, // padding: by position and index only
            })
            .then_with(|| self.pos[i].cmp(&self.pos[j]))
            .then_with(|| i.cmp(&j))
    }
}

/// Marks in `keep` (`[n]`) the `min(budget, n)` candidates of one head that survive, evicting
/// in the order described in the module docs. `scores = None` ranks by position alone.
pub(crate) fn select_row(
    pos: &[i64],
    scores: Option<&[f32]>,
    rule: Rule,
    budget: usize,
    keep: &mut [bool],
) {
    let n = pos.len();
    let keep = &mut keep[..n];
    if let Some(s) = scores {
        assert!(s.len() >= n, "scores shorter than positions");
    }
    keep.fill(true);
    if n <= budget {
        return;
    }
    let k = n - budget;
    if k >= n {
        keep.fill(false);
        return;
    }
    if k == 1 {
        if let Some(v) = single_victim(pos, scores, rule) {
            keep[v] = false;
            return;
        }
    }
    let r = Ranker::new(pos, scores, rule);
    if k == 1 {
        let mut best = 0;
        for i in 1..n {
            if r.cmp(i, best) == Ordering::Less {
                best = i;
            }
        }
        keep[best] = false;
        return;
    }
    with_scratch::<u32, _>(n, |idx| {
        for (i, x) in idx.iter_mut().enumerate() {
            *x = i as u32;
        }
        idx.select_nth_unstable_by(k - 1, |&a, &b| r.cmp(a as usize, b as usize));
        for &v in &idx[..k] {
            keep[v as usize] = false;
        }
    });
}

/// Lanes of the independent accumulators in the scans below (no loop-carried dependency chain,
/// so the compiler can vectorize or at least overlap them).
const LANES: usize = 8;

/// Newest and oldest position of a row.
#[inline]
fn min_max(pos: &[i64]) -> (i64, i64) {
    const L: usize = 4; // i64 lanes: 8 would spill
    let (mut lo, mut hi) = ([i64::MAX; L], [i64::MIN; L]);
    let chunks = pos.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..L {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    for (j, &p) in tail.iter().enumerate() {
        lo[j] = lo[j].min(p);
        hi[j] = hi[j].max(p);
    }
    (
        lo.into_iter().min().unwrap_or(i64::MAX),
        hi.into_iter().max().unwrap_or(i64::MIN),
    )
}

/// The one victim of the common decode step (`n = budget + 1`), in two or three linear scans
/// without the general comparator. `None` when no candidate is padding or evictable (only
/// protected ones, or only NaN scores): the caller then falls back to the general order.
#[inline]
fn single_victim(pos: &[i64], scores: Option<&[f32]>, rule: Rule) -> Option<usize> {
    let (lo, t) = min_max(pos);
    let first = |v: i64| pos.iter().position(|&p| p == v);
    if lo < 0 {
        return first(lo); // padding goes first (oldest, then lowest index)
    }
    let floor = t.saturating_sub(i64::try_from(rule.recent).unwrap_or(i64::MAX));
    let sinks = i64::try_from(rule.sinks).unwrap_or(i64::MAX);
    match scores {
        None if sinks == 0 => {
            // local: the oldest, if it is outside the window
            if lo <= floor {
                first(lo)
            } else {
                None
            }
        }
        None => {
            // oldest position outside sinks and window (branch-free eligibility: slot order is
            // random, so a branch on it would mispredict)
            if floor < sinks {
                return None;
            }
            match (i32::try_from(sinks), i32::try_from(floor), i32::try_from(t)) {
                (Ok(s32), Ok(f32_), Ok(_)) => oldest_eligible(pos, |p| p as i32, s32, f32_),
                _ => oldest_eligible(pos, |p| p, sinks, floor),
            }
        }
        Some(sc) => {
            let sc = &sc[..pos.len()];
            if floor < sinks {
                return None; // nothing outside sinks and window
            }
            // positions are in [0, t]: when t fits i32 the scan compares i32 (SIMD-friendly on
            // baseline x86-64, which has no packed i64 compare)
            // (None: nothing eligible, or only NaN scores)
            match (i32::try_from(sinks), i32::try_from(floor), i32::try_from(t)) {
                (Ok(s32), Ok(f32_), Ok(_)) => lowest_eligible(pos, sc, |p| p as i32, s32, f32_),
                _ => lowest_eligible(pos, sc, |p| p, sinks, floor),
            }
        }
    }
}

/// Index of the lowest (score, position) among candidates with position in `[sinks, floor]`,
/// NaN scores never winning; `None` if there is none (or an eligible position converts to
/// `P::MAX`, which only makes the caller fall back to the general order). Two passes: a
/// branch-free lane-wise f32 min, then a scan for that score. `conv` maps a position into the
/// comparison type `P`, order-preserving on every position of the row.
#[inline]
fn lowest_eligible<P>(
    pos: &[i64],
    sc: &[f32],
    conv: impl Fn(i64) -> P,
    sinks: P,
    floor: P,
) -> Option<usize>
where
    P: Copy + PartialOrd + Bounded,
{
    // pass 1: the lowest eligible score (branch-free f32 min over lanes; NaN never wins)
    let mut lanes = [f32::INFINITY; LANES];
    let pc = pos.chunks_exact(LANES);
    let scc = sc.chunks_exact(LANES);
    let (pt, st) = (pc.remainder(), scc.remainder());
    for (p, s) in pc.zip(scc) {
        for j in 0..LANES {
            let q = conv(p[j]);
            let k = if (q >= sinks) & (q <= floor) {
                s[j]
            } else {
                f32::INFINITY
            };
            lanes[j] = if k < lanes[j] { k } else { lanes[j] };
        }
    }
    for (j, (&p, &s)) in pt.iter().zip(st).enumerate() {
        let q = conv(p);
        let k = if (q >= sinks) & (q <= floor) {
            s
        } else {
            f32::INFINITY
        };
        lanes[j] = if k < lanes[j] { k } else { lanes[j] };
    }
    let m = lanes
        .into_iter()
        .fold(f32::INFINITY, |a, b| if b < a { b } else { a });
    // pass 2: the oldest eligible candidate with that score (rarely more than one hit)
    // (first index on equal positions, which only an ill-formed cache has)
    let (mut rp, mut ri) = (P::MAX, None);
    for (i, (&p, &s)) in pos.iter().zip(sc).enumerate() {
        if s == m {
            let q = conv(p);
            if (q >= sinks) & (q <= floor) & (q < rp) {
                rp = q;
                ri = Some(i);
            }
        }
    }
    ri
}

/// Largest value of a position comparison type (the "none" sentinel).
trait Bounded {
    const MAX: Self;
}

impl Bounded for i32 {
    const MAX: i32 = i32::MAX;
}

impl Bounded for i64 {
    const MAX: i64 = i64::MAX;
}

/// Index of the oldest position in `[sinks, floor]` (first index on equal positions), `None`
/// if there is none. Lane-wise branch-free min, then a scan for it; `conv` as in
/// [`lowest_eligible`].
#[inline]
fn oldest_eligible<P>(pos: &[i64], conv: impl Fn(i64) -> P, sinks: P, floor: P) -> Option<usize>
where
    P: Copy + PartialOrd + Bounded,
{
    let mut lo = [P::MAX; LANES];
    let chunks = pos.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            let q = conv(c[j]);
            let k = if (q >= sinks) & (q <= floor) {
                q
            } else {
                P::MAX
            };
            lo[j] = if k < lo[j] { k } else { lo[j] };
        }
    }
    for (j, &p) in tail.iter().enumerate() {
        let q = conv(p);
        let k = if (q >= sinks) & (q <= floor) {
            q
        } else {
            P::MAX
        };
        lo[j] = if k < lo[j] { k } else { lo[j] };
    }
    let m = lo
        .into_iter()
        .fold(P::MAX, |a, b| if b < a { b } else { a });
    if m == P::MAX {
        return None;
    }
    pos.iter().position(|&p| conv(p) == m)
}

/// Checks the slice lengths of a `select` call.
pub(crate) fn check_shapes(cands: &Candidates<'_>, keep: &[bool], scores: bool) {
    let len = cands.heads * cands.n;
    assert!(
        cands.positions.len() >= len,
        "positions shorter than heads * n"
    );
    assert!(keep.len() >= len, "keep shorter than heads * n");
    if scores {
        assert!(cands.scores.len() >= len, "scores shorter than heads * n");
    }
}

/// Per-head selection for every head of `cands`.
pub(crate) fn select_per_head(
    cands: &Candidates<'_>,
    rule: Rule,
    budget: usize,
    scores: bool,
    keep: &mut [bool],
) {
    check_shapes(cands, keep, scores);
    let n = cands.n;
    for h in 0..cands.heads {
        let s = if scores {
            Some(cands.scores_of(h))
        } else {
            None
        };
        select_row(
            cands.positions_of(h),
            s,
            rule,
            budget,
            &mut keep[h * n..(h + 1) * n],
        );
    }
}

/// Per head, the `budget` highest scores stay; nothing is protected (tova-head, knorm, random).
pub(crate) fn select_by_score(cands: &Candidates<'_>, budget: usize, keep: &mut [bool]) {
    let rule = Rule {
        sinks: 0,
        recent: 0,
    };
    select_per_head(cands, rule, budget, true, keep);
}

/// `p`'s keep mask for `heads` heads of candidates `pos` and scores `sc`, both `[heads, n]` (the
/// policies' unit tests).
#[cfg(test)]
pub(crate) fn keep_mask(p: &dyn Policy, heads: usize, pos: &[i64], sc: &[f32]) -> Vec<bool> {
    let c = Candidates {
        heads,
        n: pos.len() / heads,
        positions: pos,
        scores: sc,
    };
    let mut keep = vec![false; pos.len()];
    p.select(&c, &mut keep);
    keep
}

/// Layer scope (h2o-layer, tova): rank head 0's positions by the scores summed over heads (f32,
/// head order), and give every head the same keep row. Every head of a layer then holds the same
/// positions in the same slots, so head 0's positions stand for all.
pub(crate) fn select_layer_scope(
    cands: &Candidates<'_>,
    rule: Rule,
    budget: usize,
    keep: &mut [bool],
) {
    check_shapes(cands, keep, true);
    let (heads, n) = (cands.heads, cands.n);
    if heads == 0 || n == 0 {
        return;
    }
    with_scratch::<f32, _>(n, |sum| {
        sum.copy_from_slice(cands.scores_of(0));
        for h in 1..heads {
            for (s, &x) in sum.iter_mut().zip(cands.scores_of(h)) {
                *s += x;
            }
        }
        select_row(
            cands.positions_of(0),
            Some(sum),
            rule,
            budget,
            &mut keep[..n],
        );
    });
    let (first, rest) = keep.split_at_mut(n);
    for row in rest[..(heads - 1) * n].chunks_exact_mut(n) {
        row.copy_from_slice(first);
    }
}

/// The policy of every layer: one shared by all layers, or one per layer (a budget schedule gives
/// layers different budgets, [`Schedule`]).
pub enum LayerPolicies {
    Shared(Box<dyn Policy>),
    PerLayer(Vec<Box<dyn Policy>>),
}

impl LayerPolicies {
    /// Layer `l`'s policy (a shared policy serves every layer).
    ///
    /// Panics if a per-layer list has no entry for `l`.
    pub fn layer(&self, l: usize) -> &dyn Policy {
        match self {
            LayerPolicies::Shared(p) => p.as_ref(),
            LayerPolicies::PerLayer(v) => v[l].as_ref(),
        }
    }

    /// The per-layer list's length (`None` for a shared policy, which fits any layer count).
    pub fn layers(&self) -> Option<usize> {
        match self {
            LayerPolicies::Shared(_) => None,
            LayerPolicies::PerLayer(v) => Some(v.len()),
        }
    }
}

impl std::fmt::Debug for LayerPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerPolicies::Shared(p) => write!(f, "Shared({})", p.spec()),
            LayerPolicies::PerLayer(v) => {
                f.debug_list().entries(v.iter().map(|p| p.spec())).finish()
            }
        }
    }
}

impl From<Box<dyn Policy>> for LayerPolicies {
    fn from(p: Box<dyn Policy>) -> Self {
        LayerPolicies::Shared(p)
    }
}

impl<P: Policy + 'static> From<Box<P>> for LayerPolicies {
    fn from(p: Box<P>) -> Self {
        LayerPolicies::Shared(p)
    }
}
