//! A model that declares a BOS (manifest `prepend_bos_token_id`): the engine feeds it first, at
//! position 0, and never scores its prediction, in ppl, speed, generate and heatmap; the same graph
//! without the declaration fed `[BOS] + text` by hand gives the same numbers bit for bit.
//!
//! The declaring model is the tiny fixture copied with `"prepend_bos_token_id": 0` added to its
//! manifest (the graph is the same: the BOS is a host-side decision).

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use common::{fixture_dir, load_model, runtime, tiny_text_tokens};
use h2o_engine::decoder::{Decoder, EvictionTrace};
use h2o_engine::eval::generate::{generate, prompt_tokens, Sampling};
use h2o_engine::eval::ppl::streaming_ppl;
use h2o_engine::eval::speed::measure;
use h2o_engine::heatmap::heatmap_tokens;
use h2o_engine::policy::PolicySpec;

const BOS: u32 = 0;

/// The tiny fixture in `dir`, its manifest declaring `BOS`.
fn bos_fixture(dir: &Path) {
    for f in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(fixture_dir().join(f), dir.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    let mut man: serde_json::Value = serde_json::from_str(&text).unwrap();
    man["prepend_bos_token_id"] = BOS.into();
    std::fs::write(dir.join("manifest.json"), man.to_string()).unwrap();
}

/// (NLLs, eviction trace steps) of streaming perplexity over `tokens` on the model in `dir`.
fn ppl(dir: &Path, spec: &str, tokens: &[u32]) -> (Vec<f64>, String) {
    let mut model = load_model(runtime(), dir);
    let spec: PolicySpec = spec.parse().unwrap();
    let layers = model.manifest.num_layers;
    let mut dec = Decoder::new(&mut model, spec.build(layers), 1).unwrap();
    dec.set_observer(Box::new(EvictionTrace::default()));
    let run = streaming_ppl(&mut dec, tokens, |_| ControlFlow::Continue(())).unwrap();
    let steps = dec
        .take_observer::<EvictionTrace>()
        .unwrap()
        .steps()
        .to_vec();
    (run.nlls, serde_json::to_string(&steps).unwrap())
}

#[test]
fn perplexity_feeds_the_bos_first_and_scores_the_text_only() {
    let d = tempfile::tempdir().unwrap();
    bos_fixture(d.path());
    let text = &tiny_text_tokens()[..40];
    let by_hand: Vec<u32> = std::iter::once(BOS).chain(text.iter().copied()).collect();
    for spec in ["full", "local:8", "sink:1+7", "h2o:4+4", "h2o-layer:4+4"] {
        let (nlls, trace) = ppl(d.path(), spec, text);
        assert_eq!(
            nlls.len(),
            text.len() - 1,
            "{spec}: N text tokens, N-1 NLLs"
        );
        let (plain, plain_trace) = ppl(&fixture_dir(), spec, &by_hand);
        // the plain model's first prediction (text token 0 after the BOS) is the one left unscored
        assert_eq!(
            nlls,
            plain[1..],
            "{spec}: the NLLs of [BOS] + text, the first dropped"
        );
        assert_eq!(
            trace, plain_trace,
            "{spec}: the same evictions, positions counted from the BOS"
        );
    }
    // and the BOS changes what is predicted: it is really fed
    let (without, _) = ppl(&fixture_dir(), "full", text);
    let (with, _) = ppl(d.path(), "full", text);
    assert_ne!(with, without);
}

#[test]
fn speed_prefills_the_bos_before_every_prompt() {
    let d = tempfile::tempdir().unwrap();
    bos_fixture(d.path());
    let toks = tiny_text_tokens();
    let rows = vec![toks[..12].to_vec(), toks[12..24].to_vec()];
    let spec: PolicySpec = "h2o:4+4".parse().unwrap();
    let none = |_: usize| ControlFlow::Continue(());
    let mut bos_model = load_model(runtime(), d.path());
    let run = measure(&mut bos_model, &spec, &rows, 6, 0, Some(5), none).unwrap();
    let by_hand: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| std::iter::once(BOS).chain(r.iter().copied()).collect())
        .collect();
    let mut plain = load_model(runtime(), &fixture_dir());
    let want = measure(&mut plain, &spec, &by_hand, 6, 0, Some(5), none).unwrap();
    assert_eq!(
        run.tokens, want.tokens,
        "greedy tokens as with [BOS] + prompt"
    );
    assert_eq!(run.prefill_runs, 3, "13 tokens in runs of at most 5");
    assert_eq!(run.kv_bytes, want.kv_bytes);
    // the BOS takes a position: prompt + gen may use one position less
    let max = bos_model.manifest.max_position_embeddings;
    let long = vec![toks[..8]
        .iter()
        .copied()
        .cycle()
        .take(max - 4)
        .collect::<Vec<u32>>()];
    let e = measure(&mut bos_model, &spec, &long, 4, 0, None, none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("declared BOS"), "{e}");
}

#[test]
fn generate_and_heatmap_start_with_the_bos() {
    let d = tempfile::tempdir().unwrap();
    bos_fixture(d.path());
    let mut model = load_model(runtime(), d.path());
    let ids = prompt_tokens(&model, "The tower is").unwrap();
    assert_eq!(ids[0], BOS);
    let text_ids = prompt_tokens(&load_model(runtime(), &fixture_dir()), "The tower is").unwrap();
    assert_eq!(ids[1..], text_ids[..]);
    let spec = PolicySpec::FULL;
    let run = generate(&mut model, &spec, &ids, 3, Sampling::GREEDY, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!((run.bos, run.tokens.len()), (Some(BOS), 3));
    // ids made without the BOS are refused, naming the fix
    let e = generate(
        &mut model,
        &spec,
        &text_ids,
        3,
        Sampling::GREEDY,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("prompt_tokens"), "{e}");

    let toks = heatmap_tokens(&model, "The tower is", 2).unwrap();
    assert_eq!(
        toks,
        vec![BOS, text_ids[0], text_ids[1]],
        "the BOS, then at most 2 text tokens"
    );
    let plain = load_model(runtime(), &fixture_dir());
    assert_eq!(
        heatmap_tokens(&plain, "The tower is", 2).unwrap(),
        text_ids[..2]
    );
}
