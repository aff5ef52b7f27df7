//! The device KV store (K/V in memory of ONNX Runtime's allocator, bound with IoBinding, grown and
//! written by the companion graphs) on the CPU provider, which is the code path CUDA takes, against
//! the host store: the same NLLs bit for bit, the same plans (slots and evictions) in every step, the
//! same K/V at the end, for every policy family, a batch of two rows with padding, and the fp16 export.
//!
//! Why bit-identical, fp16 included: both stores hand the step graph the same bytes (the write graph's
//! ScatterND copies the new K/V rows as they are, as the host store's memcpy does; empty slots are zero
//! in both) and the graph runs in the same session with the same kernels, so nothing can differ. A
//! tolerance is needed only between providers (export/gpu: CPU vs CUDA within 1e-4).

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use common::*;
use h2o_engine::cache::{KvElement, KvStore, LayerPlan, NewKv};
use h2o_engine::decoder::{nll, Decoder, StepObserver};
use h2o_engine::eval::data::load_tokens;
use h2o_engine::eval::ppl::streaming_ppl;
use h2o_engine::model::{DeviceKv, Model, StepInputs, Traffic};
use h2o_engine::policy::PolicySpec;
use h2o_engine::runtime::{KvPlacement, SessionConfig};
use h2o_engine::Result;

fn load(dir: &Path, kv: KvPlacement) -> Model {
    let cfg = SessionConfig {
        intra_threads: 1,
        kv,
        ..SessionConfig::default()
    };
    Model::load(runtime(), dir, cfg).expect("model loads")
}

fn excerpt() -> PathBuf {
    root().join("tests/data/wiki.test.excerpt.raw")
}

/// One layer's plan as plain data.
#[derive(Debug, Clone, PartialEq)]
struct PlanRecord {
    dest: Vec<u32>,
    evicted: Vec<Vec<i64>>,
    used: Vec<usize>,
}

impl PlanRecord {
    fn of(p: &LayerPlan) -> Self {
        let rows = p.batch();
        Self {
            dest: p.dest_all().to_vec(),
            evicted: (0..rows * p.heads())
                .map(|i| p.evicted(i / p.heads(), i % p.heads()).to_vec())
                .collect(),
            used: (0..rows).map(|b| p.used(b)).collect(),
        }
    }
}

/// Every layer's plan of every step, all rows.
#[derive(Debug, Default)]
struct Plans(Vec<PlanRecord>);

impl StepObserver for Plans {
    fn planned(&mut self, _layer: usize, plan: &LayerPlan, _store: &KvStore) -> Result<()> {
        self.0.push(PlanRecord::of(plan));
        Ok(())
    }
}

/// An element type both stores hold and the device store reads back.
trait Element: KvElement + Into<f32> + ort::value::PrimitiveTensorElementType {}
impl<T: KvElement + Into<f32> + ort::value::PrimitiveTensorElementType> Element for T {}

/// Every layer's K and V at the end, as bits, from either store.
fn kv_bits<T: Element>(store: &KvStore) -> Vec<Vec<u32>> {
    let bits = |x: &[T]| x.iter().map(|&v| v.into().to_bits()).collect::<Vec<u32>>();
    (0..store.num_layers())
        .flat_map(|l| {
            let (k, v) = match (store.host_kv::<T>(), DeviceKv::of(store.buffers())) {
                (Some(h), _) => {
                    let (k, v) = h.kv(l);
                    (k.to_vec(), v.to_vec())
                }
                (None, Some(d)) => d.read_host::<T>(l).unwrap(),
                _ => panic!("a store is host or device"),
            };
            [bits(&k), bits(&v)]
        })
        .collect()
}

/// What a run gives: NLLs, plans, K/V bits, positions of every slot.
#[derive(Debug, PartialEq)]
struct Run {
    nlls: Vec<f64>,
    plans: Vec<PlanRecord>,
    kv: Vec<Vec<u32>>,
    positions: Vec<i64>,
}

fn finish<T: Element>(dec: &mut Decoder<'_>, nlls: Vec<f64>) -> Run {
    let s = dec.store();
    let mut positions = Vec::new();
    for l in 0..s.num_layers() {
        for b in 0..s.batch() {
            for h in 0..s.heads() {
                positions.extend_from_slice(s.positions(l, b, h));
            }
        }
    }
    let kv = kv_bits::<T>(s);
    Run {
        nlls,
        kv,
        positions,
        plans: dec.take_observer::<Plans>().unwrap().0,
    }
}

/// Streaming perplexity of `spec` over `tokens` with K/V where `kv` says.
fn stream<T: Element>(dir: &Path, kv: KvPlacement, spec: &PolicySpec, tokens: &[u32]) -> Run {
    let mut model = load(dir, kv);
    let layers = model.manifest.num_layers;
    let mut dec = Decoder::new(&mut model, spec.build(layers), 1).unwrap();
    assert_eq!(
        DeviceKv::of(dec.store().buffers()).is_some(),
        kv == KvPlacement::Device,
        "the store is where the model's config says"
    );
    dec.set_observer(Box::new(Plans::default()));
    let run = streaming_ppl(&mut dec, tokens, |_| ControlFlow::Continue(())).unwrap();
    finish::<T>(&mut dec, run.nlls)
}

fn assert_same(what: &str, host: &Run, device: &Run) {
    assert_eq!(host.nlls, device.nlls, "{what}: NLLs bit for bit");
    assert_eq!(host.plans.len(), device.plans.len(), "{what}: plan count");
    for (i, (a, b)) in host.plans.iter().zip(&device.plans).enumerate() {
        assert_eq!(a, b, "{what}: plan {i} (step x layer)");
    }
    assert_eq!(host.positions, device.positions, "{what}: slot positions");
    assert_eq!(host.kv, device.kv, "{what}: K/V bits at the end");
}

/// 200 tokens of the excerpt through every policy family on the fixture (knorm aside: it needs the
/// keys on the host, and is refused with device K/V): the full cache grows through four 64-slot
/// chunks (three pool growths on the device), the others evict from step 33 on.
#[test]
fn device_store_equals_host_store_for_every_policy_family() {
    let dir = fixture_dir();
    let tokens = load_tokens(&load_fixture(runtime()).tokenizer, &excerpt(), 200).unwrap();
    for spec in [
        "full",
        "local:32",
        "sink:4+28",
        "h2o:24+8",
        "h2o-layer:24+8",
        "tova:32",
        "tova-head:32",
        "scissor:32@window=16@recent=8",
        "random:32@rng=3",
    ] {
        let spec: PolicySpec = spec.parse().unwrap();
        let host = stream::<f32>(&dir, KvPlacement::Host, &spec, &tokens);
        let device = stream::<f32>(&dir, KvPlacement::Device, &spec, &tokens);
        assert_same(&spec.to_string(), &host, &device);
        let evictions = host
            .plans
            .iter()
            .filter(|p| p.evicted.iter().any(|e| !e.is_empty()));
        assert_eq!(evictions.count() > 0, spec != PolicySpec::FULL, "{spec}");
    }
}

/// Rows of 14 and 5 tokens (the second padded to 14, padding never cached), then 16 steps: the
/// logits of every row and step, every plan and the K/V at the end are the host store's.
#[test]
fn device_store_equals_host_store_in_a_batch_with_padding() {
    let toks = tiny_text_tokens();
    let rows = [(0usize, 14usize), (30, 5)];
    for spec in [
        "full",
        "h2o:6+2",
        "local:6",
        "tova-head:8",
        "scissor:8@window=4@recent=2",
        "random:8@rng=1",
    ] {
        let spec: PolicySpec = spec.parse().unwrap();
        let run = |kv| {
            let mut model = load(&fixture_dir(), kv);
            let layers = model.manifest.num_layers;
            let mut dec = Decoder::new(&mut model, spec.build(layers), 2).unwrap();
            dec.set_observer(Box::new(Plans::default()));
            let prompts: Vec<Vec<u32>> =
                rows.iter().map(|&(s, n)| toks[s..s + n].to_vec()).collect();
            dec.prefill(&prompts).unwrap();
            let mut nlls: Vec<f64> = rows
                .iter()
                .enumerate()
                .map(|(b, &(s, n))| nll(dec.logits_at(b, n - 1), toks[s + n]))
                .collect();
            for k in 0..16 {
                let feed: Vec<u32> = rows.iter().map(|&(s, n)| toks[s + n + k]).collect();
                dec.step(&feed).unwrap();
                for (b, &(s, n)) in rows.iter().enumerate() {
                    nlls.push(nll(dec.logits_at(b, 0), toks[s + n + k + 1]));
                }
            }
            finish::<f32>(&mut dec, nlls)
        };
        let (host, device) = (run(KvPlacement::Host), run(KvPlacement::Device));
        assert_same(&format!("batch {spec}"), &host, &device);
        assert!(
            host.plans[0].dest.contains(&h2o_engine::cache::NOT_STORED),
            "{spec}: the padded row stores nothing for its padding"
        );
    }
}

/// The fp16 export through both stores, with eviction: the same NLLs, kept sets and K/V bits (see the
/// module comment for why no tolerance is needed on one provider).
#[test]
fn fp16_device_store_equals_host_store() {
    let dir = fixture_fp16_dir();
    let tokens = load_tokens(&load_model(runtime(), &dir).tokenizer, &excerpt(), 120).unwrap();
    for spec in ["h2o:24+8", "full"] {
        let spec: PolicySpec = spec.parse().unwrap();
        let host = stream::<half::f16>(&dir, KvPlacement::Host, &spec, &tokens);
        let device = stream::<half::f16>(&dir, KvPlacement::Device, &spec, &tokens);
        assert_same(&format!("fp16 {spec}"), &host, &device);
    }
}

/// Bytes per decode step on the fixture (2 layers x 4 heads x head_dim 16, vocabulary 512, fp32) at
/// 64 slots: the host store sends every layer's past K/V and receives the new ones; the device store
/// sends ids, positions, mask, logits_from and one source and one destination row index per kept K
/// and V row.
#[test]
fn traffic_per_decode_step() {
    let toks = tiny_text_tokens();
    let step = |kv| {
        let mut model = load(&fixture_dir(), kv);
        let layers = model.manifest.num_layers;
        let mut dec = Decoder::new(&mut model, PolicySpec::FULL.build(layers), 1).unwrap();
        dec.prefill(&[toks[..10].to_vec()]).unwrap();
        dec.step(&[toks[10]]).unwrap().traffic
    };
    // ids, positions, the mask [1, 64 + 1] and logits_from, int64
    let ids_pos_mask = 8 * (1 + 1 + 65 + 1);
    let outputs = 4 * (512 + 2 * 4 * 65);
    assert_eq!(
        step(KvPlacement::Device),
        Traffic {
            to_device: ids_pos_mask + 16 * 2 * 2 * 4,
            from_device: outputs,
        }
    );
    assert_eq!(
        step(KvPlacement::Host),
        Traffic {
            to_device: ids_pos_mask + 2 * 2 * 4 * 64 * 16 * 4,
            from_device: outputs + 2 * 2 * 4 * 16 * 4,
        }
    );
}

/// Device buffers only work with a model loaded for them, take only the K/V the run left on the
/// device, and a run refuses a store whose last step was not written.
#[test]
fn device_buffers_refuse_misuse() {
    let mut host_model = load(&fixture_dir(), KvPlacement::Host);
    let mut dev_model = load(&fixture_dir(), KvPlacement::Device);
    let store = |m: &mut Model| {
        let bufs = m.kv_buffers(1).unwrap();
        KvStore::with_buffers(&[8, 8], 1, 4, 16, bufs, 8).unwrap()
    };
    let mut s = store(&mut dev_model);
    let inputs = StepInputs {
        ids: &[1],
        positions: &[0],
        key_positions: &[],
        mask: &[1],
        seq: 1,
        logits_from: 0,
    };
    let e = host_model.run(&s, &inputs).err().unwrap().to_string();
    assert!(e.contains("loaded for host K/V"), "{e}");
    let e = host_model
        .write_kv(s.buffers_mut())
        .unwrap_err()
        .to_string();
    assert!(e.contains("loaded for host K/V"), "{e}");

    // a step whose write is skipped: the next run refuses the store
    let out = dev_model.run(&s, &inputs).unwrap();
    let view = out.view().unwrap();
    let attention: Vec<Vec<f32>> = view.layers.iter().map(|l| l.attention.to_vec()).collect();
    assert!(matches!(view.layers[0].key, NewKv::Device));
    drop(out);
    for (l, att) in attention.iter().enumerate() {
        let new = h2o_engine::cache::NewTokens {
            k: NewKv::Device,
            v: NewKv::Device,
            attention: att,
            past: 0,
            positions: &[0],
            mask: &[1],
            seq: 1,
        };
        s.update(l, &new, &KeepAll).unwrap();
    }
    // the store grew to its limit of 8 slots: one is in use
    let mut mask = vec![1i64];
    mask.extend([0; 7]);
    mask.push(1);
    let next = StepInputs {
        ids: &[2],
        positions: &[1],
        key_positions: &[],
        mask: &mask,
        seq: 1,
        logits_from: 0,
    };
    let e = dev_model.run(&s, &next).err().unwrap().to_string();
    assert!(e.contains("were not written"), "{e}");
    dev_model.write_kv(s.buffers_mut()).unwrap();
    assert!(
        dev_model.run(&s, &next).is_ok(),
        "written, the store runs again"
    );

    // host K/V slices given to device buffers
    let e = {
        let mut s = store(&mut dev_model);
        let k = [0f32; 4 * 16];
        let new = h2o_engine::cache::NewTokens {
            k: NewKv::of(&k),
            v: NewKv::of(&k),
            attention: &[0.0; 4],
            past: 0,
            positions: &[0],
            mask: &[1],
            seq: 1,
        };
        s.update(0, &new, &KeepAll).unwrap_err().to_string()
    };
    assert!(e.contains("not host slices"), "{e}");
}
