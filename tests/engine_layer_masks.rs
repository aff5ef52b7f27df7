//! A per-layer-mask graph (tests/fixtures/tiny-layer-masks: the tiny checkpoint exported with
//! `--layer-masks`) under a `@pyramid` schedule: each layer holds its own budget, computed here from
//! docs/architecture.md's rule, at every step; the evictions, the kept sets and the NLLs are the
//! PyTorch reference's (reference.json, export/h2o_export/reference.py); and the device store gives
//! the host store's run bit for bit.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use common::*;
use h2o_engine::decoder::Decoder;
use h2o_engine::eval::ppl::streaming_ppl;
use h2o_engine::policy::PolicySpec;
use h2o_engine::runtime::{KvPlacement, SessionConfig};
use serde_json::Value;

/// h2o's recent window R (protected part P) and free part F of the spec the reference ran.
const RECENT: usize = 4;
const FREE: usize = 20;
/// NLLs: logits within the golden tolerance (1e-4) move a log-softmax entry by at most 2e-4.
const NLL_TOL: f64 = 2e-4;
/// The golden tolerance of attention sums (tests/fixtures/tiny/golden.json).
const ATT_TOL: f32 = 1e-5;

fn dir() -> PathBuf {
    root().join("tests/fixtures/tiny-layer-masks")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn spec() -> PolicySpec {
    format!("h2o:{FREE}+{RECENT}@pyramid").parse().unwrap()
}

/// The schedule by hand, for the fixture's 2 layers: F_l falls linearly from 2F - F/20 at layer 0
/// to F/20 at the top; F = 20 makes both whole (39 and 1), so nothing is rounded; each layer adds
/// the protected part.
fn budgets_by_hand() -> Vec<usize> {
    let top = FREE / 20;
    vec![RECENT + 2 * FREE - top, RECENT + top]
}

/// What a streaming run over the reference's tokens gives: NLLs and each step's decisions.
struct Run {
    nlls: Vec<f64>,
    steps: Vec<StepDecisions>,
    /// `[layer][head]` positions held at the end.
    kept: Vec<Vec<Vec<i64>>>,
}

fn stream(kv: KvPlacement) -> Run {
    let cfg = SessionConfig {
        intra_threads: 1,
        kv,
        ..SessionConfig::default()
    };
    let mut model = h2o_engine::model::Model::load(runtime(), &dir(), cfg).unwrap();
    assert!(
        model.per_layer_masks(),
        "the graph takes one mask per layer"
    );
    let layers = model.manifest.num_layers;
    let tokens = ids(&reference()["tokens"]);
    let mut dec = Decoder::new(&mut model, spec().build(layers), 1).unwrap();
    dec.set_observer(Box::new(Decisions::new(RECENT)));
    let run = streaming_ppl(&mut dec, &tokens, |_| ControlFlow::Continue(())).unwrap();
    let s = dec.store();
    let kept = (0..layers)
        .map(|l| {
            let used = s.table(l).used(0);
            (0..s.heads())
                .map(|h| sorted(&s.positions(l, 0, h)[..used]))
                .collect()
        })
        .collect();
    let steps = dec.take_observer::<Decisions>().unwrap().steps;
    Run {
        nlls: run.nlls,
        steps,
        kept,
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn sorted(p: &[i64]) -> Vec<i64> {
    let mut p = p.to_vec();
    p.sort_unstable();
    p
}

fn positions(v: &Value) -> Vec<i64> {
    sorted(
        &v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect::<Vec<_>>(),
    )
}

#[test]
fn pyramid_holds_each_layers_own_budget_at_every_step() {
    let want = budgets_by_hand();
    assert_eq!(want, [43, 5]);
    let reference: Vec<usize> = reference()["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(reference, want, "the reference's schedule");
    let run = stream(KvPlacement::Host);
    for (t, step) in run.steps.iter().enumerate() {
        for (l, layer) in step.kept.iter().enumerate() {
            for (h, kept) in layer[0].iter().enumerate() {
                let n = (t + 1).min(want[l]);
                assert_eq!(kept.len(), n, "step {t} layer {l} head {h}");
            }
        }
    }
}

/// Every step's evictions, the final kept sets and the NLLs are the reference's. Each step adds
/// its attention to h2o's scores, within ATT_TOL of torch's (the golden tolerance the engine meets
/// on this checkpoint), so after step t the two differ by at most (t + 1) ATT_TOL: every eviction's
/// margin is asserted above twice that, so no choice can tip between engine and reference.
#[test]
fn pyramid_run_is_the_pytorch_references() {
    let doc = reference();
    let run = stream(KvPlacement::Host);
    for (t, s) in run.steps.iter().enumerate() {
        let gap = (t + 1) as f32 * ATT_TOL;
        assert!(
            s.margin[0] > 2.0 * gap,
            "step {t}: margin {} near a tie",
            s.margin[0]
        );
    }
    let steps = doc["trace"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), run.steps.len());
    // [layer][head]: the positions the reference's evictions leave, step by step
    let mut alive = vec![vec![Vec::new(); run.kept[0].len()]; run.kept.len()];
    for (t, (want, got)) in steps.iter().zip(&run.steps).enumerate() {
        for (l, heads) in want["evicted"].as_array().unwrap().iter().enumerate() {
            for (h, ev) in heads.as_array().unwrap().iter().enumerate() {
                alive[l][h].push(t as i64);
                alive[l][h].retain(|p| !positions(ev).contains(p));
                let kept: Vec<i64> = got.kept[l][0][h].iter().copied().collect();
                assert_eq!(kept, alive[l][h], "step {t} layer {l} head {h}: kept set");
            }
        }
    }
    for (l, heads) in doc["kept_final"].as_array().unwrap().iter().enumerate() {
        for (h, want) in heads.as_array().unwrap().iter().enumerate() {
            assert_eq!(run.kept[l][h], positions(want), "final layer {l} head {h}");
        }
    }
    let want: Vec<f64> = doc["nll"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(run.nlls.len(), want.len());
    for (i, (g, w)) in run.nlls.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= NLL_TOL,
            "NLL {i}: engine {g}, reference {w}"
        );
    }
}

/// The device store on the per-layer-mask graph (each layer's pool part sized by its own budget):
/// the host store's NLLs and decisions, bit for bit.
#[test]
fn pyramid_device_store_equals_host_store() {
    let (host, device) = (stream(KvPlacement::Host), stream(KvPlacement::Device));
    assert_eq!(host.nlls, device.nlls);
    assert_eq!(host.kept, device.kept);
    for (t, (a, b)) in host.steps.iter().zip(&device.steps).enumerate() {
        assert_eq!(a.kept, b.kept, "step {t}");
    }
}
