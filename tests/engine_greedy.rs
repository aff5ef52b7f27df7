//! Greedy tokens against an oracle outside the engine: transformers' `generate` (do_sample=False,
//! eager attention, full cache) continuations stored in golden.json ("greedy"). The engine's
//! `generate`, `h2o generate` and `speed`'s decode loop (batch 1 and 2, the prompt in one prefill
//! run or in chunks) must produce exactly those tokens, the first one (read from the prefill's
//! last logits row) included. The prompts were chosen so that the top two logits stay 1e-3 apart
//! at every step (engine and transformers differ by ~1e-6) and the prompt's second-to-last row
//! predicts another first token (tests/fixtures/tiny/README.md).

mod common;

use std::ops::ControlFlow;
use std::time::Duration;

use common::cli::h2o;
use common::*;
use h2o_engine::eval::generate::{generate, prompt_tokens, Sampling};
use h2o_engine::eval::speed::measure;
use h2o_engine::policy::PolicySpec;

/// Tokens each golden continuation has.
fn new_tokens() -> usize {
    golden()["greedy"]["max_new_tokens"].as_u64().unwrap() as usize
}

#[test]
fn generate_continues_each_prompt_as_transformers() {
    let mut model = load_fixture(runtime());
    for case in golden_greedy() {
        let prompt = prompt_tokens(&model, &case.text).unwrap();
        assert_eq!(prompt, case.ids, "{:?}: the prompt's ids", case.text);
        let mut text = String::new();
        let mut on_text = |piece: &str| {
            text.push_str(piece);
            ControlFlow::Continue(())
        };
        let run = generate(
            &mut model,
            &PolicySpec::FULL,
            &prompt,
            new_tokens(),
            Sampling::GREEDY,
            &mut on_text,
        )
        .unwrap();
        assert_eq!(run.tokens, case.tokens, "{:?}: greedy tokens", case.text);
        assert_eq!(text, case.continuation, "{:?}: streamed text", case.text);
    }
}

#[test]
fn h2o_generate_prints_the_continuation_of_transformers() {
    for case in golden_greedy() {
        let out = h2o()
            .args(["generate", "--model"])
            .arg(fixture_dir())
            .args(["--threads", "1", "--policy", "full"])
            .args(["--max-new", &new_tokens().to_string()])
            .args(["--prompt", &case.text])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert_eq!(
            stdout,
            format!("{}\n", case.continuation),
            "{:?}",
            case.text
        );
    }
}

/// `speed`'s greedy decode loop (what `bench` runs too) over `rows` as one batch, full cache.
fn speed_tokens(rows: &[Vec<u32>], chunk: Option<usize>) -> Vec<Vec<u32>> {
    let mut model = load_fixture(runtime());
    let go_on = |_: usize| ControlFlow::Continue(());
    measure(
        &mut model,
        &PolicySpec::FULL,
        rows,
        new_tokens(),
        0,
        chunk,
        go_on,
    )
    .unwrap()
    .tokens
}

#[test]
fn speed_decode_loop_continues_each_prompt_as_transformers() {
    for case in golden_greedy() {
        for chunk in [None, Some(4)] {
            let got = speed_tokens(std::slice::from_ref(&case.ids), chunk);
            assert_eq!(
                got,
                std::slice::from_ref(&case.tokens),
                "{:?} chunk {chunk:?}",
                case.text
            );
        }
    }
}

/// The two prompts (6 and 11 tokens) decoded together: each row is transformers' continuation of
/// that prompt alone, with the prompt in one run and in chunks of 4 (the rows' last prompt tokens
/// then fall in different runs).
#[test]
fn speed_decode_loop_batch_of_two_continues_each_row_as_transformers() {
    let cases = golden_greedy();
    let rows: Vec<Vec<u32>> = cases.iter().map(|c| c.ids.clone()).collect();
    let want: Vec<Vec<u32>> = cases.iter().map(|c| c.tokens.clone()).collect();
    assert_ne!(rows[0].len(), rows[1].len(), "rows of different lengths");
    for chunk in [None, Some(4)] {
        assert_eq!(speed_tokens(&rows, chunk), want, "chunk {chunk:?}");
    }
}
