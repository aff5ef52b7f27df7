//! The decode loop of `speed` and `generate` (`eval::decode::decode`) at batch 3, rows of different
//! prompt lengths, with evicting policies: each row's greedy tokens and their NLLs equal decoding
//! that row alone, on the tiny fixture and on pythia-micro, with the prompt in one prefill run or
//! in chunks; and the K/V the store allocates is the one `--kv-cap` computes without allocating.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use common::*;
use h2o_engine::cache::KvLayout;
use h2o_engine::decoder::{nll, Decoder};
use h2o_engine::eval::data::load_tokens;
use h2o_engine::eval::decode::decode;
use h2o_engine::eval::speed::argmax;
use h2o_engine::eval::throughput::RunShape;
use h2o_engine::model::Model;
use h2o_engine::policy::PolicySpec;

/// Per row: the greedy tokens and the NLL of each (after the store's end state is checked).
type Rows = (Vec<Vec<u32>>, Vec<Vec<f64>>);

/// Greedy decoding of `prompts` as one batch: per row the tokens and the NLL of each token chosen.
/// Checks the store allocated what [`RunShape::slots`] computes for the longest prompt.
fn greedy(
    model: &mut Model,
    spec: &PolicySpec,
    prompts: &[Vec<u32>],
    gen: usize,
    chunk: Option<usize>,
) -> Rows {
    let man = model.manifest.clone();
    let mut dec =
        Decoder::new(model, spec.build(model.manifest.num_layers), prompts.len()).unwrap();
    let mut nlls = vec![Vec::new(); prompts.len()];
    let mut pick = |b: usize, logits: &[f32]| {
        let t = argmax(logits);
        nlls[b].push(nll(logits, t));
        t
    };
    let mut go_on = |_: usize, _: &[u32]| ControlFlow::Continue(());
    let run = decode(&mut dec, prompts, gen, chunk, &mut pick, &mut go_on).unwrap();
    assert_eq!(run.steps.len(), gen - 1);
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    let shape = RunShape {
        prompt: longest,
        gen,
        prefill_chunk: chunk,
        bos: false,
    };
    let slots = shape.slots(spec, man.max_position_embeddings);
    let computed = KvLayout::of(&man).bytes(prompts.len(), slots);
    assert_eq!(
        dec.store().allocated_bytes() as u64,
        computed,
        "{spec} {shape:?}: allocated K/V = the computed bytes"
    );
    for (b, p) in prompts.iter().enumerate() {
        let held = (p.len() + gen - 1).min(spec.budget().unwrap_or(usize::MAX));
        assert_eq!(dec.store().valid_count(b), held, "{spec} row {b} holds");
    }
    (run.tokens, nlls)
}

/// Batch of `rows` (start in `text`, prompt length) vs each row alone: same tokens, NLLs within `tol`.
fn check(
    model: &mut Model,
    text: &[u32],
    spec: &str,
    rows: [(usize, usize); 3],
    gen: usize,
    chunk: Option<usize>,
    tol: f64,
) {
    let spec: PolicySpec = spec.parse().unwrap();
    let prompts: Vec<Vec<u32>> = rows.iter().map(|&(s, n)| text[s..s + n].to_vec()).collect();
    let budget = spec.budget().unwrap();
    assert!(
        prompts.iter().any(|p| p.len() > budget) && prompts.iter().any(|p| p.len() < budget),
        "one row evicts in the prefill, one only while decoding"
    );
    let (tokens, nlls) = greedy(model, &spec, &prompts, gen, chunk);
    for (b, prompt) in prompts.iter().enumerate() {
        let (alone, alone_nlls) = greedy(model, &spec, std::slice::from_ref(prompt), gen, chunk);
        assert_eq!(
            tokens[b], alone[0],
            "{spec} chunk {chunk:?} row {b}: tokens"
        );
        assert_eq!(nlls[b].len(), gen);
        for (i, (x, y)) in nlls[b].iter().zip(&alone_nlls[0]).enumerate() {
            assert!(
                (x - y).abs() <= tol,
                "{spec} chunk {chunk:?} row {b} token {i}: NLL in the batch {x}, alone {y}"
            );
        }
    }
}

/// fp32 logits of a row in a batch vs alone differ only by the kernels' blocking (as engine_batch.rs;
/// seen: bit-identical in one prefill run, ~2e-6 with a chunked prefill).
const TOL: f64 = 2e-4;

#[test]
fn fixture_batch_of_three_equals_each_row_alone() {
    let text = tiny_text_tokens();
    let mut model = load_fixture(runtime());
    for spec in ["h2o:6+2", "local:8"] {
        for chunk in [None, Some(4)] {
            check(
                &mut model,
                &text,
                spec,
                [(0, 14), (20, 5), (30, 9)],
                12,
                chunk,
                TOL,
            );
        }
    }
}

fn micro_dir() -> PathBuf {
    let dir = root().join("models/pythia-micro/onnx");
    assert!(
        dir.join("model.onnx").is_file(),
        "{} is missing: run `make export-micro`",
        dir.display()
    );
    dir
}

#[test]
fn pythia_micro_batch_of_three_equals_each_row_alone() {
    let mut model = load_model(runtime(), &micro_dir());
    let excerpt = root().join("tests/data/wiki.test.excerpt.raw");
    let text = load_tokens(&model.tokenizer, &excerpt, 600).unwrap();
    for chunk in [None, Some(16)] {
        check(
            &mut model,
            &text,
            "h2o:24+8",
            [(0, 50), (200, 17), (400, 33)],
            24,
            chunk,
            TOL,
        );
    }
}

/// Streaming detokenization: each piece is whole characters, and the pieces make the text.
#[test]
fn text_stream_prints_characters_split_over_tokens_whole() {
    use h2o_engine::eval::generate::TextStream;
    let model = load_fixture(runtime());
    let tok = &model.tokenizer;
    let text = " café — 日本語 naïve 🙂 end";
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    assert!(ids.len() > text.chars().count() / 2, "{ids:?}");
    let context = tok.encode("The river", false).unwrap().get_ids().to_vec();
    let mut stream = TextStream::new(tok, &context).unwrap();
    let mut pieces = Vec::new();
    let mut held_back = 0;
    for &id in &ids {
        match stream.push(id).unwrap() {
            Some(p) => pieces.push(p),
            None => held_back += 1,
        }
    }
    assert!(held_back > 0, "a multi-byte character spans tokens");
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(pieces.concat(), tok.decode(&ids, false).unwrap());
}
