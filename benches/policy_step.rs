//! One decode step's policy work at Pythia-2.8B shape (32 layers x 32 heads), budget 256 and 512,
//! for every policy family:
//! - `policy_step_32x32`: n = budget + 1 candidates per head, the score upkeep the policy's
//!   [`ScoreRule`] needs (accumulated attention added, this step's attention copied, nothing for
//!   scores fixed at entry) plus the victim choice, for every layer (scissor's windowed counts
//!   live in the store: it is measured in the second group only);
//! - `store_step_32x32`: the whole per-layer cache update of the real [`KvStore`] in steady state
//!   (score upkeep, candidates, victim choice, slot assignment, bookkeeping; head_dim 1 so the K/V
//!   copy is negligible), every layer, for every family and a pyramid schedule.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use h2o_engine::cache::{KvStore, NewKv, NewTokens};
use h2o_engine::manifest::KvDtype;
use h2o_engine::policy::{Candidates, LayerPolicies, PolicySpec, ScoreRule};

const LAYERS: usize = 32;
const HEADS: usize = 32;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Every family at budget `b` (the `policies` group's split: a quarter of h2o's budget recent).
fn specs(b: usize) -> Vec<String> {
    let r = b / 4;
    vec![
        format!("local:{b}"),
        format!("sink:4+{}", b - 4),
        format!("h2o:{}+{r}", b - r),
        format!("h2o-layer:{}+{r}", b - r),
        format!("tova:{b}"),
        format!("tova-head:{b}"),
        format!("scissor:{b}"),
        format!("knorm:{b}"),
        format!("random:{b}"),
    ]
}

fn parse(spec: &str) -> PolicySpec {
    match spec.parse() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// One layer's state after a decode step: `budget` cached slots (slot order shuffled, as slot
/// reuse leaves it) plus the new token, scores and this step's attention.
struct Layer {
    positions: Vec<i64>,
    scores: Vec<f32>,
    att: Vec<f32>,
}

fn layer(rng: &mut Rng, budget: usize, same_positions: bool) -> Layer {
    let n = budget + 1;
    let t = 4096i64; // newest position
    let mut positions = Vec::with_capacity(HEADS * n);
    let mut row: Vec<i64> = (0..budget as i64).map(|i| t - 1000 + i * 3).collect();
    for h in 0..HEADS {
        if h == 0 || !same_positions {
            for i in (1..row.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                row.swap(i, j);
            }
        }
        positions.extend_from_slice(&row);
        positions.push(t);
    }
    let scores = (0..HEADS * n).map(|_| rng.unit() * 4.0).collect();
    let att = (0..HEADS * n)
        .map(|_| rng.unit() * 2.0 / n as f32)
        .collect();
    Layer {
        positions,
        scores,
        att,
    }
}

/// Score upkeep + victim choice on synthetic candidates.
fn select_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_step_32x32");
    for budget in [256usize, 512] {
        for spec in specs(budget) {
            let spec = parse(&spec);
            let policy = spec.kind.build();
            let rule = policy.score_rule();
            if matches!(rule, ScoreRule::Unimportance { .. }) {
                continue; // its upkeep is the store's: see store_step_32x32
            }
            let n = budget + 1;
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let same = matches!(spec.family(), "h2o-layer" | "tova");
            let mut layers: Vec<Layer> =
                (0..LAYERS).map(|_| layer(&mut rng, budget, same)).collect();
            let mut keep = vec![false; HEADS * n];
            g.bench_function(BenchmarkId::new(spec.to_string(), format!("n={n}")), |b| {
                b.iter(|| {
                    for l in layers.iter_mut() {
                        match rule {
                            ScoreRule::Accumulated => {
                                for (s, a) in l.scores.iter_mut().zip(&l.att) {
                                    *s += *a;
                                }
                            }
                            ScoreRule::Current => l.scores.copy_from_slice(&l.att),
                            _ => {}
                        }
                        let cands = Candidates {
                            heads: HEADS,
                            n,
                            positions: &l.positions,
                            scores: &l.scores,
                        };
                        policy.select(&cands, &mut keep);
                        black_box(&keep);
                    }
                })
            });
        }
        // the score update alone (the part of the h2o rows above that is not the victim choice)
        let n = budget + 1;
        let mut rng = Rng(7);
        let mut layers: Vec<Layer> = (0..LAYERS)
            .map(|_| layer(&mut rng, budget, false))
            .collect();
        g.bench_function(
            BenchmarkId::new("score-update-only", format!("n={n}")),
            |b| {
                b.iter(|| {
                    for l in layers.iter_mut() {
                        for (s, a) in l.scores.iter_mut().zip(&l.att) {
                            *s += *a;
                        }
                        black_box(&l.scores);
                    }
                })
            },
        );
    }
    g.finish();
}

/// Decode steps cycle through this many attention rows (and keys) per layer, so that the victims
/// move as they do in a real decode.
const ROWS: usize = 4;

/// A store of 32 layers x 32 heads (head_dim 1) filled to each layer's budget, and per layer
/// [`ROWS`] decode-step attention rows `[heads, capacity + 1]`.
fn filled_store(policies: &LayerPolicies, rng: &mut Rng) -> (KvStore, Vec<Vec<Vec<f32>>>) {
    let limits: Vec<usize> = (0..LAYERS).map(|l| policies.layer(l).budget()).collect();
    let mut store = match KvStore::with_limits(&limits, 1, HEADS, 1, KvDtype::Float32, 64) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let mut rows = Vec::new();
    for (l, &b) in limits.iter().enumerate() {
        let positions: Vec<i64> = (0..b as i64).collect();
        let kv: Vec<f32> = (0..HEADS * b).map(|_| rng.unit()).collect();
        let att: Vec<f32> = (0..HEADS * b).map(|_| rng.unit() / b as f32).collect();
        let new = NewTokens {
            k: NewKv::of(&kv),
            v: NewKv::of(&kv),
            attention: &att,
            past: 0,
            positions: &positions,
            mask: &vec![1; b],
            seq: b,
        };
        if let Err(e) = store.update(l, &new, policies.layer(l)) {
            panic!("{e}");
        }
        let n = store.layer_capacity(l) + 1;
        rows.push(
            (0..ROWS)
                .map(|_| {
                    (0..HEADS * n)
                        .map(|_| rng.unit() * 2.0 / n as f32)
                        .collect()
                })
                .collect(),
        );
    }
    (store, rows)
}

/// The real store's per-layer update in steady state (one eviction per head per layer).
fn store_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_step_32x32");
    for budget in [256usize, 512] {
        let mut all = specs(budget);
        all.push(format!(
            "h2o:{}+{}@pyramid",
            budget - budget / 4,
            budget / 4
        ));
        for spec in all {
            let spec = parse(&spec);
            let policies = spec.build(LAYERS);
            let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
            let (mut store, rows) = filled_store(&policies, &mut rng);
            let kvs: Vec<Vec<f32>> = (0..ROWS)
                .map(|_| (0..HEADS).map(|_| rng.unit()).collect())
                .collect();
            let mut pos = 1_000_000i64;
            g.bench_function(
                BenchmarkId::new(spec.to_string(), format!("B={budget}")),
                |b| {
                    b.iter(|| {
                        pos += 1;
                        let i = pos as usize % ROWS;
                        for (l, att) in rows.iter().enumerate() {
                            let new = NewTokens {
                                k: NewKv::of(&kvs[i]),
                                v: NewKv::of(&kvs[i]),
                                attention: &att[i],
                                past: store.layer_capacity(l),
                                positions: &[pos],
                                mask: &[1],
                                seq: 1,
                            };
                            if let Err(e) = store.update(l, &new, policies.layer(l)) {
                                panic!("{e}");
                            }
                        }
                        black_box(store.plan());
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = select_step, store_step
}
criterion_main!(benches);
