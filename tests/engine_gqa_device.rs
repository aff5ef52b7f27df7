//! Grouped-query attention with K/V in device memory (the CPU provider's allocator, the path CUDA
//! takes) against the host store on tiny-llama and tiny-qwen2: the same NLLs bit for bit, the same
//! plans (per KV head), slot positions and K/V bits at the end, for every policy family that runs
//! on device K/V (tests/engine_device.rs says why no tolerance is needed), and a batch of 2 with
//! eviction whose rows each equal the row decoded alone (tests/engine_batch.rs's check).

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use common::*;
use h2o_engine::cache::{KvStore, LayerPlan};
use h2o_engine::decoder::{Decoder, StepObserver};
use h2o_engine::eval::ppl::streaming_ppl;
use h2o_engine::model::{DeviceKv, Model};
use h2o_engine::policy::PolicySpec;
use h2o_engine::runtime::{KvPlacement, SessionConfig};
use h2o_engine::Result;

const FIXTURES: [&str; 2] = ["tiny-llama", "tiny-qwen2"];

fn dir(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

fn tokens_of(name: &str) -> Vec<u32> {
    let p = dir(name).join("golden.json");
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    g["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load(dir: &Path, kv: KvPlacement) -> Model {
    let cfg = SessionConfig {
        intra_threads: 1,
        kv,
        ..SessionConfig::default()
    };
    Model::load(runtime(), dir, cfg).expect("model loads")
}

/// Every layer's plan of every step: destination slots, evicted positions per (row, KV head).
#[derive(Debug, Default)]
struct Plans(Vec<(Vec<u32>, Vec<Vec<i64>>)>);

impl StepObserver for Plans {
    fn planned(&mut self, _layer: usize, p: &LayerPlan, _store: &KvStore) -> Result<()> {
        let evicted = (0..p.batch() * p.heads())
            .map(|i| p.evicted(i / p.heads(), i % p.heads()).to_vec())
            .collect();
        self.0.push((p.dest_all().to_vec(), evicted));
        Ok(())
    }
}

/// NLLs, plans, slot positions and K/V bits at the end.
type Run = (
    Vec<f64>,
    Vec<(Vec<u32>, Vec<Vec<i64>>)>,
    Vec<i64>,
    Vec<Vec<u32>>,
);

fn finish(dec: &mut Decoder<'_>, nlls: Vec<f64>) -> Run {
    let s = dec.store();
    assert_eq!(s.heads(), 2, "the store holds KV heads");
    let mut positions = Vec::new();
    let mut kv = Vec::new();
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    for l in 0..s.num_layers() {
        for b in 0..s.batch() {
            for h in 0..s.heads() {
                positions.extend_from_slice(s.positions(l, b, h));
            }
        }
        let (k, v) = match (s.host_kv::<f32>(), DeviceKv::of(s.buffers())) {
            (Some(h), _) => {
                let (k, v) = h.kv(l);
                (k.to_vec(), v.to_vec())
            }
            (None, Some(d)) => d.read_host::<f32>(l).unwrap(),
            _ => panic!("a store is host or device"),
        };
        kv.push(bits(&k));
        kv.push(bits(&v));
    }
    let plans = dec.take_observer::<Plans>().unwrap().0;
    (nlls, plans, positions, kv)
}

#[test]
fn device_store_equals_host_store_for_every_policy_family() {
    for name in FIXTURES {
        let tokens = tokens_of(name);
        for spec in [
            "full",
            "local:16",
            "sink:4+12",
            "h2o:12+4",
            "h2o-layer:12+4",
            "tova:16",
            "tova-head:16",
            "scissor:16@window=8@recent=4",
            "random:16@rng=3",
        ] {
            let spec: PolicySpec = spec.parse().unwrap();
            let run = |kv| {
                let mut model = load(&dir(name), kv);
                let layers = model.manifest.num_layers;
                let mut dec = Decoder::new(&mut model, spec.build(layers), 1).unwrap();
                dec.set_observer(Box::new(Plans::default()));
                let r = streaming_ppl(&mut dec, &tokens, |_| ControlFlow::Continue(())).unwrap();
                finish(&mut dec, r.nlls)
            };
            let (host, device) = (run(KvPlacement::Host), run(KvPlacement::Device));
            assert_eq!(
                host, device,
                "{name} {spec}: NLLs, plans, positions, K/V bits"
            );
            let evicted = host.1.iter().any(|p| p.1.iter().any(|e| !e.is_empty()));
            assert_eq!(evicted, spec != PolicySpec::FULL, "{name} {spec}");
        }
    }
}

/// Row 0 prefills 14 tokens (over the budget), row 1 prefills 5 (padded); then 16 steps.
const ROWS: [(usize, usize); 2] = [(0, 14), (30, 5)];
const STEPS: usize = 16;
/// tests/engine_batch.rs's fp32 cap.
const NLL_TOL: f64 = 2e-4;

fn batch_run(
    name: &str,
    spec: &PolicySpec,
    recent: usize,
    rows: &[(usize, usize)],
) -> (Vec<Vec<f64>>, Vec<StepDecisions>) {
    let toks = tokens_of(name);
    let mut model = load(&dir(name), KvPlacement::Host);
    let layers = model.manifest.num_layers;
    run_rows(&mut model, spec.build(layers), &toks, recent, rows, STEPS)
}

#[test]
fn batch_rows_with_eviction_equal_each_row_alone() {
    for name in FIXTURES {
        for (spec, recent) in [("h2o:6+2", 2), ("local:6", 6)] {
            let spec: PolicySpec = spec.parse().unwrap();
            let (nlls, decisions) = batch_run(name, &spec, recent, &ROWS);
            for (b, &row) in ROWS.iter().enumerate() {
                let (alone_nlls, alone) = batch_run(name, &spec, recent, &[row]);
                for (i, (x, y)) in nlls[b].iter().zip(&alone_nlls[0]).enumerate() {
                    assert!(
                        (x - y).abs() <= NLL_TOL,
                        "{name} {spec} row {b} NLL {i}: {x} vs {y}"
                    );
                }
                let in_batch: Vec<StepDecisions> = decisions.iter().map(|d| d.row(b)).collect();
                let what = format!("{name} {spec} row {b}");
                assert_eq!(
                    compare_decisions(&what, &alone, &in_batch),
                    STEPS + 1,
                    "{what}"
                );
                let held = in_batch.last().unwrap().kept[0][0][0].len();
                assert_eq!(held, spec.budget().unwrap(), "{what} ends full");
            }
            assert!(
                decisions[0].kept[0][0][0].len() < ROWS[0].1,
                "{name} {spec}: row 0 evicts during the prefill"
            );
        }
    }
}
