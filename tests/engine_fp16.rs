//! The fp16 export of the tiny fixture (tests/fixtures/tiny-fp16) through the engine: against
//! transformers' fp32 golden outputs, against the fp32 engine with an evicting policy, and knorm's
//! scores against the stored fp16 keys' norms computed here.
//!
//! Tolerances: an fp16 graph stores weights and K/V in float16 (relative rounding 2^-11 = 4.9e-4),
//! so it cannot meet the fp32 tolerances. We use export/tests/test_export_fp16.py's caps, which it
//! justifies (float16's relative error over the fixture's 2 layers of O(1) activations gives
//! ~1e-3 to 4e-3): logits 2e-2, attention sums 5e-3 absolute. This export measures 1.7e-3 (logits)
//! and 9.5e-4 (attention sums) against the golden values with onnxruntime (transformers run in
//! float16 measures 3.0e-3 and 1.8e-3), so the caps hold with a margin of about 5x; a step that
//! reads a broken cache (zeros, another row's values) is off by O(1).

mod common;

use common::*;
use h2o_engine::cache::{KvElement, KvStore};
use h2o_engine::decoder::Decoder;
use h2o_engine::eval::ppl::streaming_ppl;
use h2o_engine::manifest::KvDtype;
use h2o_engine::policy::PolicySpec;

const LOGITS_TOL: f64 = 2e-2;
const ATT_TOL: f64 = 5e-3;

/// Token by token, every step reads the K/V the earlier steps wrote in fp16: logits and the attention
/// rows summed by position equal transformers' prefill within the fp16 caps.
#[test]
fn fp16_engine_matches_transformers_token_by_token() {
    let mut model = load_model(runtime(), &fixture_fp16_dir());
    assert_eq!(model.manifest.dtype, KvDtype::Float16);
    token_by_token_against_prefill(&mut model, LOGITS_TOL, ATT_TOL);
}

/// A prefill, then steps: the fp16 engine's logits stay within the cap of the fp32 engine's.
#[test]
fn fp16_prefill_then_steps_track_fp32() {
    let toks = tiny_text_tokens();
    let run = |dir: &std::path::Path| -> Vec<Vec<f32>> {
        let mut model = load_model(runtime(), dir);
        let mut dec = Decoder::new(&mut model, Box::new(KeepAll), 1).unwrap();
        dec.prefill(&[toks[..16].to_vec()]).unwrap();
        let mut out = vec![dec.logits_at(0, 15).to_vec()];
        for &t in &toks[16..24] {
            dec.step(&[t]).unwrap();
            out.push(dec.logits().to_vec());
        }
        out
    };
    let (f32_logits, f16_logits) = (run(&fixture_dir()), run(&fixture_fp16_dir()));
    for (i, (a, b)) in f32_logits.iter().zip(&f16_logits).enumerate() {
        let want: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        assert_close(&format!("step {i}"), b, &want, LOGITS_TOL);
    }
}

/// Streaming with an evicting policy (h2o:8+4 over the fixture's 57 tokens): per-token NLLs within
/// the logits cap of the fp32 engine's, and the same kept positions in every (step, layer, head) as
/// long as the fp32 run's decisions have a margin the fp16 scores cannot cross.
#[test]
fn fp16_eviction_keeps_what_fp32_keeps_where_margins_allow() {
    let toks = tiny_text_tokens();
    let spec: PolicySpec = "h2o:8+4".parse().unwrap();
    let run = |dir: &std::path::Path| {
        let mut model = load_model(runtime(), dir);
        let mut dec = Decoder::new(&mut model, spec.kind.build(), 1).unwrap();
        dec.set_observer(Box::new(Decisions::new(4)));
        let ppl = streaming_ppl(&mut dec, &toks, |_| std::ops::ControlFlow::Continue(())).unwrap();
        (ppl.nlls, dec.take_observer::<Decisions>().unwrap().steps)
    };
    let (nll32, d32) = run(&fixture_dir());
    let (nll16, d16) = run(&fixture_fp16_dir());
    for (i, (a, b)) in nll32.iter().zip(&nll16).enumerate() {
        assert!(
            (a - b).abs() <= 2.0 * LOGITS_TOL,
            "NLL {i}: fp32 {a} fp16 {b}"
        );
    }
    let compared = compare_decisions("fp16 vs fp32", &d32, &d16);
    eprintln!("kept sets compared over {compared} of {} steps", d32.len());
    // 12 steps fill the budget; at least as many evicting steps must have been compared.
    assert!(compared >= 24, "only {compared} steps compared");
}

/// Every held slot's knorm score against minus its stored key's squared norm, summed here in f64
/// from the K rows: equal within 2^-11 relative (the score keeps 12 significant bits, an error of
/// at most 2^-12, plus the f32 sum's rounding), and never 0 (no key here is zero).
fn check_key_norms<T: KvElement + Into<f32>>(store: &KvStore, what: &str) {
    let d = store.head_dim();
    for l in 0..store.num_layers() {
        let cap = store.layer_capacity(l);
        let (k, _) = store.host_kv::<T>().expect("host K/V").kv(l);
        for h in 0..store.heads() {
            for s in 0..store.table(l).used(0) {
                let row = &k[(h * cap + s) * d..(h * cap + s + 1) * d];
                let want = -row
                    .iter()
                    .map(|&x| f64::from(x.into()).powi(2))
                    .sum::<f64>();
                let got = f64::from(store.scores(l, 0, h)[s]);
                assert!(
                    want < 0.0,
                    "{what}: layer {l} head {h} slot {s}: a zero key"
                );
                assert!(
                    (got - want).abs() <= want.abs() / 2048.0,
                    "{what}: layer {l} head {h} slot {s}: score {got}, minus squared norm {want}"
                );
            }
        }
    }
}

/// knorm:8 over 20 tokens (a prefill of 6, then steps that evict and reuse slots) on `dir`.
fn knorm_scores_follow_the_keys<T: KvElement + Into<f32>>(dir: &std::path::Path) {
    let toks = tiny_text_tokens();
    let mut model = load_model(runtime(), dir);
    let spec: PolicySpec = "knorm:8".parse().unwrap();
    let mut dec = Decoder::new(&mut model, spec.kind.build(), 1).unwrap();
    dec.prefill(&[toks[..6].to_vec()]).unwrap();
    check_key_norms::<T>(dec.store(), "prefill");
    for (i, &t) in toks[6..20].iter().enumerate() {
        dec.step(&[t]).unwrap();
        check_key_norms::<T>(dec.store(), &format!("step {i}"));
    }
}

#[test]
fn fp16_knorm_scores_are_the_stored_keys_norms() {
    knorm_scores_follow_the_keys::<half::f16>(&fixture_fp16_dir());
}

#[test]
fn fp32_knorm_scores_are_the_stored_keys_norms() {
    knorm_scores_follow_the_keys::<f32>(&fixture_dir());
}
