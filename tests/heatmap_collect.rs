//! Heatmap data from the engine: rows equal the decoder's own attention rows, each sums to 1,
//! accumulated scores equal the column sums, bad layers/heads/empty text are refused.

mod common;

use common::*;
use h2o_engine::decoder::Decoder;
use h2o_engine::heatmap::{collect_attention, kept_at_end, HeadChoice};
use h2o_engine::policy::PolicySpec;

#[test]
fn rows_equal_the_engines_attention_rows_and_sum_to_one() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let toks: Vec<u32> = tiny_text_tokens()[..24].to_vec();
    let got = collect_attention(
        &mut model,
        PolicySpec::FULL.kind.build(),
        &toks,
        &[0, 1],
        HeadChoice::One(2),
    )
    .unwrap();
    let mean = collect_attention(
        &mut model,
        PolicySpec::FULL.kind.build(),
        &toks,
        &[1],
        HeadChoice::Mean,
    )
    .unwrap();
    // The decoder's rows, read directly (full cache: slot s holds position s).
    let mut dec = Decoder::new(&mut model, PolicySpec::FULL.kind.build(), 1).unwrap();
    capture_attention(&mut dec);
    for (i, &t) in toks.iter().enumerate() {
        let out = dec.step(&[t]).unwrap();
        let past = out.past;
        let cap = captured(&dec);
        for (li, layer) in [0usize, 1].iter().enumerate() {
            let att = &cap.attention[*layer];
            let h = 2;
            let row = &att[h * (past + 1)..(h + 1) * (past + 1)];
            let mut want: Vec<f32> = row[..i].to_vec();
            want.push(row[past]);
            assert_eq!(
                got[li].matrix.row(i).unwrap(),
                &want[..],
                "layer {layer} row {i}"
            );
        }
        let att = &cap.attention[1];
        let want_mean: Vec<f32> = (0..=i)
            .map(|k| {
                let col = if k == i { past } else { k };
                (0..4).map(|h| att[h * (past + 1) + col]).sum::<f32>() / 4.0
            })
            .collect();
        for (a, b) in mean[0].matrix.row(i).unwrap().iter().zip(&want_mean) {
            assert!((a - b).abs() < 1e-6);
        }
    }
    for la in got.iter().chain(&mean) {
        la.matrix.check_rows_sum_to_one(1e-5).unwrap();
    }
    // accumulated[h] = column sums of head h's matrix
    let cols = got[1].matrix.column_sums();
    for (a, b) in got[1].accumulated[2].iter().zip(&cols) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn kept_sets_match_the_policy() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let toks: Vec<u32> = tiny_text_tokens()[..20].to_vec();
    let kept = kept_at_end(
        &mut model,
        "local:5".parse::<PolicySpec>().unwrap().kind.build(),
        &toks,
        &[0, 1],
    )
    .unwrap();
    for layer in &kept {
        for head in layer {
            let idx: Vec<usize> = head
                .iter()
                .enumerate()
                .filter(|(_, &k)| k)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(idx, vec![15, 16, 17, 18, 19]);
        }
    }
}

#[test]
fn bad_layers_heads_and_empty_text_are_refused() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let toks = vec![1u32, 2, 3];
    let e = collect_attention(
        &mut model,
        PolicySpec::FULL.kind.build(),
        &toks,
        &[5],
        HeadChoice::Mean,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("5") && e.contains("0..=1"), "{e}");
    let e = collect_attention(
        &mut model,
        PolicySpec::FULL.kind.build(),
        &toks,
        &[0],
        HeadChoice::One(9),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("head 9") && e.contains("4 heads"), "{e}");
    let e = collect_attention(
        &mut model,
        PolicySpec::FULL.kind.build(),
        &[],
        &[0],
        HeadChoice::Mean,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.to_lowercase().contains("empty") || e.contains("text"),
        "{e}"
    );
    let e = collect_attention(
        &mut model,
        "local:2".parse::<PolicySpec>().unwrap().kind.build(),
        &toks,
        &[0],
        HeadChoice::Mean,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("full cache"), "{e}");
}
