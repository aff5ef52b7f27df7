//! Property tests: random steps through the real [`KvStore`] (slot reuse, growth, batch rows with
//! padding), checked against brute-force rankings, export/reference.py's victim rule (transcribed)
//! and an independent score truth for every score rule (accumulated, current, unimportance
//! counts over a sliding window, key norms, random keys); and arbitrary candidates (padding
//! included) against a sort oracle.
//!
//! The oracles take nothing from the policy under test: budgets, windows and the generator number
//! are the spec's numbers as the test wrote them ([`Kind`]), "below the mean share" and the key
//! norm's 12-bit rounding are computed here from their written definitions (docs/architecture.md),
//! never through the policy's `budget()`, `score_rule()` or helpers.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{KvStore, NewKv, NewTokens};
use crate::dtype::KvDtype;
use crate::policy::{
    random, Candidates, H2oPolicy, KnormPolicy, LocalPolicy, Policy, RandomPolicy, ScissorPolicy,
    Scope, SinkPolicy, TovaPolicy,
};

/// Small deterministic PRNG (xorshift64*), so a proptest case is one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Attention-like value from a tiny dyadic set: sums stay exact, ties are frequent.
    fn att(&mut self) -> f32 {
        [0.0, 0.25, 0.5, 1.0, 0.125][self.below(5) as usize]
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Local {
        recent: usize,
    },
    Sink {
        sinks: usize,
        recent: usize,
    },
    H2o {
        heavy: usize,
        recent: usize,
        scope: Scope,
    },
    Tova {
        budget: usize,
        scope: Scope,
    },
    Scissor {
        budget: usize,
        window: usize,
        recent: usize,
    },
    Knorm {
        budget: usize,
    },
    Random {
        budget: usize,
        rng: u64,
    },
}

impl Kind {
    fn build(self) -> Box<dyn Policy> {
        match self {
            Kind::Local { recent } => Box::new(LocalPolicy::new(recent)),
            Kind::Sink { sinks, recent } => Box::new(SinkPolicy::new(sinks, recent)),
            Kind::H2o {
                heavy,
                recent,
                scope,
            } => Box::new(H2oPolicy::new(heavy, recent, scope)),
            Kind::Tova { budget, scope } => Box::new(TovaPolicy::new(budget, scope)),
            Kind::Scissor {
                budget,
                window,
                recent,
            } => Box::new(ScissorPolicy::new(budget, window, recent)),
            Kind::Knorm { budget } => Box::new(KnormPolicy::new(budget)),
            Kind::Random { budget, rng } => Box::new(RandomPolicy::new(budget, rng)),
        }
    }
    /// The budget the spec gives: its written numbers (sinks + recent, heavy + recent, or B).
    fn budget(self) -> usize {
        match self {
            Kind::Local { recent } => recent,
            Kind::Sink { sinks, recent } => sinks + recent,
            Kind::H2o { heavy, recent, .. } => heavy + recent,
            Kind::Tova { budget, .. }
            | Kind::Scissor { budget, .. }
            | Kind::Knorm { budget }
            | Kind::Random { budget, .. } => budget,
        }
    }
    fn sinks(self) -> usize {
        match self {
            Kind::Sink { sinks, .. } => sinks,
            _ => 0,
        }
    }
    fn recent(self) -> usize {
        match self {
            Kind::Local { recent }
            | Kind::Sink { recent, .. }
            | Kind::H2o { recent, .. }
            | Kind::Scissor { recent, .. } => recent,
            Kind::Tova { .. } | Kind::Knorm { .. } | Kind::Random { .. } => 0,
        }
    }
    /// Whether victims depend on scores (local and sink rank by position alone).
    fn uses_scores(self) -> bool {
        !matches!(self, Kind::Local { .. } | Kind::Sink { .. })
    }
    /// Whether every head of a layer keeps the same positions (scores summed over heads).
    fn layer_scope(self) -> bool {
        matches!(
            self,
            Kind::H2o {
                scope: Scope::Layer,
                ..
            } | Kind::Tova {
                scope: Scope::Layer,
                ..
            }
        )
    }
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (1usize..8).prop_map(|recent| Kind::Local { recent }),
        (0usize..4, 0usize..6)
            .prop_filter("budget >= 1", |(s, r)| s + r > 0)
            .prop_map(|(sinks, recent)| Kind::Sink { sinks, recent }),
        (0usize..7, 0usize..6, prop::bool::ANY)
            .prop_filter("budget >= 1", |(h, r, _)| h + r > 0)
            .prop_map(|(heavy, recent, layer)| Kind::H2o {
                heavy,
                recent,
                scope: if layer { Scope::Layer } else { Scope::Head },
            }),
        (1usize..8, prop::bool::ANY).prop_map(|(budget, layer)| Kind::Tova {
            budget,
            scope: if layer { Scope::Layer } else { Scope::Head },
        }),
        (1usize..8, 1usize..6, 0usize..4)
            .prop_filter("recent <= budget", |(b, _, r)| r <= b)
            .prop_map(|(budget, window, recent)| Kind::Scissor {
                budget,
                window,
                recent
            }),
        (1usize..8).prop_map(|budget| Kind::Knorm { budget }),
        (1usize..8, 0u64..4).prop_map(|(budget, rng)| Kind::Random { budget, rng }),
    ]
}

/// What the truth knows of one live token of one (row, head), from which every rule's score
/// follows.
#[derive(Debug, Clone, Default)]
struct Token {
    /// Attention summed since it entered.
    acc: f32,
    /// Attention in the last step.
    cur: f32,
    /// Per step since it entered: below the step's mean share (`queries / attended`).
    below: Vec<bool>,
    /// The stored K (= V) value, head_dim 1.
    key: f32,
}

impl Token {
    /// The score `kind`'s family gives this token at (layer 0, head `h`, position `p`)
    /// (docs/architecture.md's table; 0 for the families without scores).
    fn score(&self, kind: Kind, h: usize, p: i64) -> f32 {
        match kind {
            Kind::Local { .. } | Kind::Sink { .. } => 0.0,
            Kind::H2o { .. } => self.acc,
            Kind::Tova { .. } => self.cur,
            Kind::Scissor { window, .. } => {
                let recent = &self.below[self.below.len().saturating_sub(window)..];
                -(recent.iter().filter(|&&b| b).count() as f32)
            }
            Kind::Knorm { .. } => -rounded_square(self.key),
            Kind::Random { rng, .. } => random::key(rng, 0, h, p),
        }
    }

    /// One step's attention `a` when the row's `queries` real new tokens attend to `attended`
    /// tokens: below the mean share `queries / attended` (exact here: `a` is dyadic).
    fn attend(&mut self, a: f32, queries: usize, attended: usize) {
        self.acc += a;
        self.cur = a;
        self.below
            .push(f64::from(a) * (attended as f64) < queries as f64);
    }
}

/// The squared norm of a head_dim-1 key `k` (a whole number here) rounded to 12 significant
/// bits, half away from zero: knorm's score is minus this (docs/architecture.md).
fn rounded_square(k: f32) -> f32 {
    assert_eq!(k.fract(), 0.0, "keys are whole numbers");
    let sq = (k as i64 * k as i64) as u64;
    let bits = 64 - sq.leading_zeros();
    if bits <= 12 {
        return sq as f32;
    }
    let drop = bits - 12;
    (((sq + (1 << (drop - 1))) >> drop) << drop) as f32
}

/// K (= V) stored for (position, row, head): exact in f32, distinct per triple.
fn code(p: i64, b: usize, h: usize) -> f32 {
    (p * 16 + (b * 4 + h) as i64) as f32
}

/// One random step's inputs for a `[batch, heads]` store: right-padded rows, attention 0 on free
/// slots and padding (as the graph's mask gives), dyadic elsewhere.
struct StepIn {
    seq: usize,
    past: usize,
    positions: Vec<i64>,
    mask: Vec<i64>,
    attention: Vec<f32>,
    kv: Vec<f32>,
}

fn random_step(store: &KvStore, rng: &mut Rng, next_pos: &[i64]) -> StepIn {
    let (batch, heads, past) = (store.batch(), store.heads(), store.capacity());
    let seq = if rng.below(4) == 0 {
        1 + rng.below(3) as usize
    } else {
        1
    };
    let (mut positions, mut mask) = (Vec::new(), Vec::new());
    for &next in next_pos {
        let real = if batch > 1 {
            rng.below(seq as u64 + 1) as usize
        } else {
            seq
        };
        for j in 0..seq {
            positions.push(if j < real { next + j as i64 } else { 0 });
            mask.push(i64::from(j < real));
        }
    }
    let (mut attention, mut kv) = (Vec::new(), Vec::new());
    for b in 0..batch {
        for h in 0..heads {
            let used = store.valid_count(b);
            attention.extend((0..past).map(|s| if s < used { rng.att() } else { 0.0 }));
            for j in 0..seq {
                let real = mask[b * seq + j] != 0;
                attention.push(if real { rng.att() } else { 0.0 });
                kv.push(if real {
                    code(positions[b * seq + j], b, h)
                } else {
                    -1.0
                });
            }
        }
    }
    StepIn {
        seq,
        past,
        positions,
        mask,
        attention,
        kv,
    }
}

/// Drives a real [`KvStore`] (one layer, head_dim 1, capacity limit = budget, growing in `chunk`s)
/// through random steps of random rows; after every update checks it against brute force, the
/// reference's victim rule and an independent score truth. Panics on a violation.
fn simulate(kind: Kind, batch: usize, heads: usize, steps: usize, chunk: usize, seed: u64) {
    let policy = kind.build();
    let budget = kind.budget();
    let mut store = KvStore::new(1, batch, heads, 1, KvDtype::Float32, budget, chunk).unwrap();
    let mut rng = Rng(seed | 1);
    // independent truth per (row, head): alive position -> what the token has seen
    let mut truth: Vec<BTreeMap<i64, Token>> = vec![BTreeMap::new(); batch * heads];
    let mut next_pos = vec![0i64; batch];
    for _ in 0..steps {
        let st = random_step(&store, &mut rng, &next_pos);
        let before: Vec<Vec<i64>> = (0..batch * heads)
            .map(|r| store.positions(0, r / heads, r % heads).to_vec())
            .collect();
        // the truth after this step's attention: cached slots by position, then the real new tokens
        for (r, t) in truth.iter_mut().enumerate() {
            let row = &st.attention[r * (st.past + st.seq)..(r + 1) * (st.past + st.seq)];
            let b = r / heads;
            let real: Vec<usize> = (0..st.seq)
                .filter(|&j| st.mask[b * st.seq + j] != 0)
                .collect();
            let (queries, attended) = (real.len(), t.len() + real.len());
            for (s, &p) in before[r].iter().enumerate().filter(|(_, &p)| p >= 0) {
                let tok = t.get_mut(&p).expect("cached position is alive");
                tok.attend(row[s], queries, attended);
            }
            for &j in &real {
                let tok = t.entry(st.positions[b * st.seq + j]).or_insert(Token {
                    key: st.kv[r * st.seq + j],
                    ..Token::default()
                });
                tok.attend(row[st.past + j], queries, attended);
            }
        }
        let new = NewTokens {
            k: NewKv::of(&st.kv),
            v: NewKv::of(&st.kv),
            attention: &st.attention,
            past: st.past,
            positions: &st.positions,
            mask: &st.mask,
            seq: st.seq,
        };
        store.update(0, &new, policy.as_ref()).unwrap();
        let plan = store.plan().clone();
        let seen = Seen {
            store: &store,
            plan: &plan,
            truth: &truth,
            before: &before,
            st: &st,
        };
        for b in 0..batch {
            check_row(kind, &seen, b);
        }
        for (r, t) in truth.iter_mut().enumerate() {
            for p in plan.evicted(r / heads, r % heads) {
                t.remove(p);
            }
        }
        for (b, next) in next_pos.iter_mut().enumerate() {
            *next += st.mask[b * st.seq..(b + 1) * st.seq].iter().sum::<i64>();
        }
    }
}

/// The kept set brute force chooses for one (row, head): protected candidates, then the best
/// unprotected by (score desc, position desc) for h2o, by position desc otherwise.
fn brute_force_kept(
    kind: Kind,
    cands: &[i64],
    score_of: &dyn Fn(i64) -> f32,
    budget: usize,
) -> BTreeSet<i64> {
    if cands.len() <= budget {
        return cands.iter().copied().collect();
    }
    let t = *cands.iter().max().expect("candidates");
    let protected = |p: i64| p > t - kind.recent() as i64 || p < kind.sinks() as i64;
    let mut kept: BTreeSet<i64> = cands.iter().copied().filter(|&p| protected(p)).collect();
    let mut rest: Vec<i64> = cands.iter().copied().filter(|&p| !protected(p)).collect();
    if kind.uses_scores() {
        rest.sort_by(|&a, &b| score_of(b).total_cmp(&score_of(a)).then(b.cmp(&a)));
    } else {
        rest.sort_by(|a, b| b.cmp(a));
    }
    kept.extend(&rest[..budget - kept.len()]);
    kept
}

/// Victims by export/reference.py's rule (`_choose_victims`): candidates in position order, ranking
/// score (0 for policies without scores) with the protected set to +inf, stable ascending sort, the
/// first n - budget.
fn reference_victims(
    kind: Kind,
    cands: &[i64],
    score_of: &dyn Fn(i64) -> f32,
    budget: usize,
) -> BTreeSet<i64> {
    if cands.len() <= budget {
        return BTreeSet::new();
    }
    let mut c = cands.to_vec();
    c.sort_unstable();
    let t = *c.last().expect("candidates");
    let uses_scores = kind.uses_scores();
    let rank = |p: i64| {
        if p > t - kind.recent() as i64 || p < kind.sinks() as i64 {
            f32::INFINITY
        } else if uses_scores {
            score_of(p)
        } else {
            0.0
        }
    };
    c.sort_by(|&a, &b| rank(a).total_cmp(&rank(b)));
    c[..c.len().saturating_sub(budget)]
        .iter()
        .copied()
        .collect()
}

/// What one update left: the store, its plan, the truth (after this step's attention, before
/// removing the evicted), each (row, head)'s slot positions before the update, the step's inputs.
struct Seen<'a> {
    store: &'a KvStore,
    plan: &'a super::LayerPlan,
    truth: &'a [BTreeMap<i64, Token>],
    before: &'a [Vec<i64>],
    st: &'a StepIn,
}

/// Row `b` of the store after an update against brute force, the reference rule and the truth.
fn check_row(kind: Kind, seen: &Seen<'_>, b: usize) {
    let (heads, budget) = (seen.store.heads(), kind.budget());
    let layer = kind.layer_scope();
    let mut kept_sets = Vec::new();
    for h in 0..heads {
        let r = b * heads + h;
        let cands: Vec<i64> = seen.truth[r].keys().copied().collect();
        let score_of = |p: i64| {
            if layer {
                (0..heads).fold(0.0f32, |acc, hh| {
                    acc + seen.truth[b * heads + hh][&p].score(kind, hh, p)
                })
            } else {
                seen.truth[r][&p].score(kind, h, p)
            }
        };
        let got = check_slots(kind, seen, b, h);
        let want = brute_force_kept(kind, &cands, &score_of, budget);
        assert_eq!(
            got, want,
            "row {b} head {h}: kept set differs from brute force"
        );
        let evicted: BTreeSet<i64> = seen.plan.evicted(b, h).iter().copied().collect();
        let all: BTreeSet<i64> = cands.iter().copied().collect();
        assert_eq!(evicted, &all - &got, "evicted = candidates - kept");
        let reference = reference_victims(kind, &cands, &score_of, budget);
        assert_eq!(evicted, reference, "reference rule");
        // evicted order: cached victims in slot order, then new tokens in order
        let (st, seq) = (seen.st, seen.st.seq);
        let new_real = (0..seq)
            .filter(|&j| st.mask[b * seq + j] != 0)
            .map(|j| st.positions[b * seq + j]);
        let order: Vec<i64> = seen.before[r]
            .iter()
            .copied()
            .chain(new_real)
            .filter(|p| evicted.contains(p))
            .collect();
        assert_eq!(seen.plan.evicted(b, h), &order[..], "evicted order");
        if let Kind::H2o {
            heavy,
            recent,
            scope: Scope::Head,
        } = kind
        {
            let t = cands.iter().copied().max().unwrap_or(-1);
            if cands.len() > budget && t + 1 >= recent as i64 {
                let unprotected = got.iter().filter(|&&p| p <= t - recent as i64).count();
                assert_eq!(
                    unprotected, heavy,
                    "steady state keeps exactly H heavy hitters"
                );
            }
        }
        kept_sets.push(got);
    }
    if layer {
        assert!(
            kept_sets.iter().all(|k| *k == kept_sets[0]),
            "layer scope: heads differ"
        );
    }
}

/// Slots of (b, h): `0..used` hold unique positions with their K/V (and the truth's score, for the
/// policies that read scores), the rest are empty. Returns the positions held.
fn check_slots(kind: Kind, seen: &Seen<'_>, b: usize, h: usize) -> BTreeSet<i64> {
    let store = seen.store;
    let (r, used, cap) = (
        b * store.heads() + h,
        store.valid_count(b),
        store.capacity(),
    );
    let (_, kv) = store.host_kv::<f32>().expect("host f32").kv(0);
    let pos = store.positions(0, b, h);
    let got: BTreeSet<i64> = pos[..used].iter().copied().collect();
    assert_eq!(got.len(), used, "positions unique, slots 0..used in use");
    assert!(pos[used..].iter().all(|&p| p == -1), "free slots are empty");
    for (s, &p) in pos[..used].iter().enumerate() {
        assert_eq!(
            kv[r * cap + s],
            code(p, b, h),
            "K/V of position {p} in slot {s}"
        );
        if kind.uses_scores() {
            assert_eq!(
                store.scores(0, b, h)[s],
                seen.truth[r][&p].score(kind, h, p),
                "score of position {p} ({kind:?})"
            );
        }
    }
    got
}

/// Oracle for arbitrary candidates: full sort by (class, score, position, index), evict the first k.
fn oracle(kind: Kind, pos: &[i64], sc: &[f32], budget: usize) -> Vec<bool> {
    let n = pos.len();
    let t = pos.iter().copied().max().unwrap_or(-1);
    let (sinks, recent) = (kind.sinks() as i64, kind.recent() as i64);
    let class = |p: i64| -> u8 {
        if p < 0 {
            0
        } else if p > t - recent || p < sinks {
            2
        } else {
            1
        }
    };
    let use_scores = kind.uses_scores();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| {
        class(pos[a])
            .cmp(&class(pos[b]))
            .then(if use_scores && pos[a] >= 0 {
                sc[a].partial_cmp(&sc[b]).unwrap()
            } else {
                std::cmp::Ordering::Equal
            })
            .then(pos[a].cmp(&pos[b]))
            .then(a.cmp(&b))
    });
    let mut keep = vec![true; n];
    for &i in &idx[..n.saturating_sub(budget)] {
        keep[i] = false;
    }
    keep
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn store_streams_match_brute_force(
        kind in kind_strategy(),
        batch in 1usize..3,
        heads in 1usize..4,
        steps in 1usize..60,
        chunk in 1usize..6,
        seed in any::<u64>(),
    ) {
        simulate(kind, batch, heads, steps, chunk, seed);
    }

    #[test]
    fn arbitrary_candidates_match_sort_oracle(
        kind in kind_strategy(),
        heads in 1usize..4,
        extra in 0usize..6,
        pad_pct in 0u64..60,
        seed in any::<u64>(),
    ) {
        let policy = kind.build();
        let budget = kind.budget();
        let n = budget + extra.max(1);
        let layer = kind.layer_scope();
        let mut rng = Rng(seed | 1);
        // distinct positions (a random subset of 0..3n, shuffled), some replaced by padding
        let base: Vec<i64> = {
            let mut all: Vec<i64> = (0..3 * n as i64).collect();
            for i in (1..all.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                all.swap(i, j);
            }
            all.truncate(n);
            all.iter().map(|&p| if rng.below(100) < pad_pct { -1 } else { p }).collect()
        };
        let mut pos = Vec::with_capacity(heads * n);
        for h in 0..heads {
            if layer || h == 0 {
                pos.extend_from_slice(&base);
            } else {
                let mut row = base.clone();
                for i in (1..n).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    row.swap(i, j);
                }
                pos.extend(row);
            }
        }
        let sc: Vec<f32> = (0..heads * n).map(|_| rng.att()).collect();
        let mut keep = vec![false; heads * n];
        policy.select(&Candidates { heads, n, positions: &pos, scores: &sc }, &mut keep);
        let summed: Vec<f32> = (0..n).map(|j| (0..heads).fold(0.0f32, |a, h| a + sc[h * n + j])).collect();
        for h in 0..heads {
            let row = &keep[h * n..(h + 1) * n];
            let prow = &pos[h * n..(h + 1) * n];
            let srow = if layer { &summed[..] } else { &sc[h * n..(h + 1) * n] };
            prop_assert_eq!(row.iter().filter(|&&k| k).count(), budget.min(n));
            let want = oracle(kind, prow, srow, budget);
            prop_assert_eq!(row, &want[..]);
            let pad_kept = prow.iter().zip(row).any(|(&p, &k)| p < 0 && k);
            let valid_evicted = prow.iter().zip(row).any(|(&p, &k)| p >= 0 && !k);
            prop_assert!(!(pad_kept && valid_evicted), "padding kept while a valid candidate was evicted");
            if layer {
                prop_assert_eq!(row, &keep[..n]);
            }
        }
    }
}
