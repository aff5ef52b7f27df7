//! Batch > 1 with evicting policies and rows of different lengths: each row of a batch gives the NLLs
//! and keeps the positions that decoding that row alone gives (padding is never cached, rows plan
//! independently), on the tiny fixture's text, with the fp32 export and the fp16 one.

mod common;

use std::path::Path;

use common::*;
use h2o_engine::policy::PolicySpec;

/// Row 0 prefills 14 tokens (over the budget: it evicts during the prefill), row 1 prefills 5 (padded
/// to 14); then 16 steps, one new text token per row.
const ROWS: [(usize, usize); 2] = [(0, 14), (30, 5)];
const STEPS: usize = 16;
/// fp32 logits of one row in a batch of 2 vs alone differ only by the kernels' blocking: within the
/// golden tolerance (1e-4) a log-softmax entry moves by at most 2e-4.
const NLL_TOL: f64 = 2e-4;
/// The same for the fp16 export: blocking may move an fp16 intermediate by a rounding, so the cap is
/// tests/engine_fp16.rs's (logits within 2e-2 move a log-softmax entry by at most 4e-2); a row that
/// read another row's cache or padding would be off by O(1). Measured: 0 (bit-identical) here.
const NLL_TOL_FP16: f64 = 4e-2;

/// Feed `rows` (start, prefill length) of the text through one decoder of the model in `dir`: per
/// row, the NLL of each next token after the prefill and after every step, and each step's decisions.
fn run(
    dir: &Path,
    spec: &PolicySpec,
    recent: usize,
    rows: &[(usize, usize)],
) -> (Vec<Vec<f64>>, Vec<StepDecisions>) {
    let toks = tiny_text_tokens();
    let mut model = load_model(runtime(), dir);
    run_rows(&mut model, spec.kind.build(), &toks, recent, rows, STEPS)
}

fn check(dir: &Path, spec: &str, recent: usize, tol: f64) {
    let spec: PolicySpec = spec.parse().unwrap();
    let (nlls, decisions) = run(dir, &spec, recent, &ROWS);
    for (b, &row) in ROWS.iter().enumerate() {
        let (alone_nlls, alone) = run(dir, &spec, recent, &[row]);
        for (i, (x, y)) in nlls[b].iter().zip(&alone_nlls[0]).enumerate() {
            assert!(
                (x - y).abs() <= tol,
                "{spec} row {b} NLL {i}: batch {x}, alone {y}"
            );
        }
        let in_batch: Vec<StepDecisions> = decisions.iter().map(|d| d.row(b)).collect();
        let compared = compare_decisions(&format!("{spec} row {b}"), &alone, &in_batch);
        assert_eq!(
            compared,
            STEPS + 1,
            "{spec} row {b}: kept sets compared at every step"
        );
        let held = in_batch.last().unwrap().kept[0][0][0].len();
        assert_eq!(held, spec.budget().unwrap(), "{spec} row {b} ends full");
    }
    // The rows really evicted: row 0 in the prefill already, row 1 from its 4th step on.
    let evicted_in_prefill = decisions[0].kept[0][0][0].len() < ROWS[0].1;
    assert!(
        evicted_in_prefill,
        "{spec}: row 0 evicts during the prefill"
    );
}

#[test]
fn batch_rows_equal_decoding_each_row_alone_h2o() {
    check(&fixture_dir(), "h2o:6+2", 2, NLL_TOL);
}

#[test]
fn batch_rows_equal_decoding_each_row_alone_local() {
    check(&fixture_dir(), "local:6", 6, NLL_TOL);
}

#[test]
fn fp16_batch_rows_equal_decoding_each_row_alone_h2o() {
    check(&fixture_fp16_dir(), "h2o:6+2", 2, NLL_TOL_FP16);
}

#[test]
fn fp16_batch_rows_equal_decoding_each_row_alone_local() {
    check(&fixture_fp16_dir(), "local:6", 6, NLL_TOL_FP16);
}
