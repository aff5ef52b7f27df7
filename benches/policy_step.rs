//! One decode step's policy work at Pythia-2.8B shape (32 layers x 32 heads), n = budget + 1:
//! the score update (a [heads, n] attention row added into the scores, skipped for policies
//! that do not read scores, as the store skips it) plus the victim choice, for every layer.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use h2o_engine::policy::{Candidates, PolicySpec};

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

/// One layer's state after a decode step: `budget` cached slots (slot order shuffled, as slot
/// reuse leaves it) plus the new token, accumulated scores and this step's attention.
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

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_step_32x32");
    for budget in [256usize, 512] {
        let r = budget / 4;
        let specs = [
            format!("local:{budget}"),
            format!("sink:4+{}", budget - 4),
            format!("h2o:{}+{r}", budget - r),
            format!("h2o-layer:{}+{r}", budget - r),
        ];
        for spec in specs {
            let spec: PolicySpec = match spec.parse() {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
            let policy = spec.build();
            let n = budget + 1;
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let layer_scope = spec.family() == "h2o-layer";
            let mut layers: Vec<Layer> = (0..LAYERS)
                .map(|_| layer(&mut rng, budget, layer_scope))
                .collect();
            let mut keep = vec![false; HEADS * n];
            g.bench_function(BenchmarkId::new(spec.to_string(), format!("n={n}")), |b| {
                b.iter(|| {
                    for l in layers.iter_mut() {
                        if policy.needs_scores() {
                            for (s, a) in l.scores.iter_mut().zip(&l.att) {
                                *s += *a;
                            }
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

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = bench
}
criterion_main!(benches);
