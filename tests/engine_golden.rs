//! The Rust engine against transformers' golden outputs on the tiny fixture: prefill, token by token,
//! a continuation whose past has gaps (after eviction), and a batch of 2 with padding.

mod common;

use common::*;
use h2o_engine::decoder::Decoder;
use h2o_engine::eval::ppl::streaming_ppl;

const LOGITS_TOL: f64 = 1e-4;
const ATT_TOL: f64 = 1e-5;

fn case(name: &str) -> serde_json::Value {
    golden()["cases"][name].clone()
}

fn ids(c: &serde_json::Value) -> Vec<u32> {
    arr(&c["inputs"]["input_ids"])
        .1
        .iter()
        .map(|&x| x as u32)
        .collect()
}

#[test]
fn prefill_matches_transformers() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let c = case("prefill");
    let mut dec = Decoder::new(&mut model, Box::new(KeepAll), 1).unwrap();
    capture_attention(&mut dec);
    let out = dec.prefill(&[ids(&c)]).unwrap();
    assert_eq!(
        out.past, 0,
        "a prefill into an empty store runs with past = 0"
    );
    assert_close(
        "logits",
        dec.logits(),
        &arr(&c["expected"]["logits"]).1,
        LOGITS_TOL,
    );
    let att = &captured(&dec).attention;
    let store = dec.store();
    let cap = store.capacity();
    assert_eq!(cap, 64, "the full cache grows in 64-slot chunks");
    for l in 0..2 {
        let (_, want) = arr(&c["expected"][format!("attention_sums.{l}")]);
        assert_close(&format!("attention_sums.{l}"), &att[l], &want, ATT_TOL);
        // New K/V landed in slots 0..8 with positions 0..8.
        let (_, want_k) = arr(&c["expected"][format!("new_key_values.{l}.key")]);
        let (_, want_v) = arr(&c["expected"][format!("new_key_values.{l}.value")]);
        let (k, v) = store.host_kv::<f32>().expect("fixture is float32").kv(l);
        for h in 0..4 {
            let (slots, want) = (
                h * cap * 16..(h * cap + 8) * 16,
                h * 8 * 16..(h + 1) * 8 * 16,
            );
            assert_close("key", &k[slots.clone()], &want_k[want.clone()], 1e-5);
            assert_close("value", &v[slots], &want_v[want], 1e-5);
            assert_eq!(&store.positions(l, 0, h)[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        }
    }
    // The next step runs on all 64 slots, 56 of them empty: they get exactly 0 attention.
    let toks = tiny_text_tokens();
    let out = dec.step(&[toks[8]]).unwrap();
    assert_eq!(out.past, 64);
    for (l, att) in captured(&dec).attention.iter().enumerate() {
        for h in 0..4 {
            let row = &att[h * 65..(h + 1) * 65];
            assert!(
                row[8..64].iter().all(|&x| x == 0.0),
                "layer {l} head {h}: empty slots get exactly 0"
            );
            assert!(row[..8].iter().all(|&x| x > 0.0), "cached slots attended");
            let total: f32 = row.iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "attention row sums to 1");
        }
    }
}

#[test]
fn token_by_token_matches_prefill_golden() {
    let mut model = load_fixture(runtime());
    token_by_token_against_prefill(&mut model, LOGITS_TOL, ATT_TOL);
}

#[test]
fn stepwise_golden_cases_match() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let mut dec = Decoder::new(&mut model, Box::new(KeepAll), 1).unwrap();
    capture_attention(&mut dec);
    for i in 0..4 {
        let c = case(&format!("stepwise_{i}"));
        let out = dec.step(&ids(&c)).unwrap();
        assert_close(
            "logits",
            dec.logits(),
            &arr(&c["expected"]["logits"]).1,
            LOGITS_TOL,
        );
        for l in 0..2 {
            let (_, want) = arr(&c["expected"][format!("attention_sums.{l}")]);
            let att = &captured(&dec).attention[l];
            let past = out.past;
            let mut got = Vec::new();
            for h in 0..4 {
                let row = &att[h * (past + 1)..(h + 1) * (past + 1)];
                got.extend_from_slice(&row[..i]);
                got.push(row[past]);
            }
            assert_close("attention", &got, &want, ATT_TOL);
        }
    }
}

#[test]
fn gapped_continuation_after_eviction_matches() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let toks = tiny_text_tokens();
    let c = case("continuation_gapped");
    // A 10-token prefill through a policy that evicts positions 3, 6, 8 leaves 0,1,2,4,5,7,9.
    let policy = EvictPositions {
        budget: 7,
        victims: vec![3, 6, 8],
    };
    let mut dec = Decoder::new(&mut model, Box::new(policy), 1).unwrap();
    capture_attention(&mut dec);
    dec.prefill(&[toks[..10].to_vec()]).unwrap();
    for l in 0..2 {
        for h in 0..4 {
            assert_eq!(dec.store().positions(l, 0, h), &[0, 1, 2, 4, 5, 7, 9]);
        }
    }
    let out = dec.prefill(&[ids(&c)]).unwrap();
    assert_eq!(out.past, 7);
    assert_close(
        "logits",
        dec.logits(),
        &arr(&c["expected"]["logits"]).1,
        LOGITS_TOL,
    );
    for l in 0..2 {
        let (_, want) = arr(&c["expected"][format!("attention_sums.{l}")]);
        assert_close("attention", &captured(&dec).attention[l], &want, ATT_TOL);
    }
}

#[test]
fn batch_of_two_with_padding_matches() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let toks = tiny_text_tokens();
    let c = case("batch2_padded");
    let (_, want_logits) = arr(&c["expected"]["logits"]);
    let mut dec = Decoder::new(&mut model, Box::new(KeepAll), 2).unwrap();
    capture_attention(&mut dec);
    let rows = vec![toks[..8].to_vec(), toks[1..6].to_vec()];
    dec.prefill(&rows).unwrap();
    // Row 0: all 8; row 1: golden is left-padded by 3, ours right-padded.
    assert_close(
        "row 0 logits",
        &dec.logits()[..8 * 512],
        &want_logits[..8 * 512],
        LOGITS_TOL,
    );
    for j in 0..5 {
        assert_close(
            &format!("row 1 token {j}"),
            dec.logits_at(1, j),
            &want_logits[(8 + 3 + j) * 512..(8 + 4 + j) * 512],
            LOGITS_TOL,
        );
    }
    assert_eq!(dec.store().valid_count(0), 8);
    assert_eq!(dec.store().valid_count(1), 5, "padding is never cached");
    assert_eq!(dec.next_positions(), &[8, 5]);
    let d = case("batch2_padded_decode");
    let out = dec.step(&ids(&d)).unwrap();
    let (_, want) = arr(&d["expected"]["logits"]);
    assert_close("decode logits", dec.logits(), &want, LOGITS_TOL);
    // Attention by position: golden columns row 0 = positions 0..7 + new; row 1 = 3 pads, 0..4, new.
    for l in 0..2 {
        let (_, want) = arr(&d["expected"][format!("attention_sums.{l}")]);
        let att = &captured(&dec).attention[l];
        let pos = &captured(&dec).positions[l];
        let past = out.past;
        for b in 0..2 {
            for h in 0..4 {
                let r = b * 4 + h;
                let row = &att[r * (past + 1)..(r + 1) * (past + 1)];
                let wrow = &want[r * 9..(r + 1) * 9];
                let offset = if b == 0 { 0 } else { 3 };
                for s in 0..past {
                    let p = pos[r * past + s];
                    if p >= 0 {
                        let w = wrow[offset + p as usize];
                        assert!((row[s] as f64 - w).abs() < ATT_TOL, "b{b} h{h} pos {p}");
                    } else {
                        assert_eq!(row[s], 0.0);
                    }
                }
                assert!((row[past] as f64 - wrow[8]).abs() < ATT_TOL);
            }
        }
    }
}

/// Streaming perplexity: step i feeds token i and scores token i + 1. The NLLs equal those computed
/// here from transformers' logits of the prefill case (logits within 1e-4 move a log-softmax entry
/// by at most 2e-4).
#[test]
fn streaming_ppl_scores_the_next_token_as_transformers() {
    let rt = runtime();
    let mut model = load_fixture(rt);
    let c = case("prefill");
    let toks = ids(&c);
    let (_, logits) = arr(&c["expected"]["logits"]);
    let want: Vec<f64> = (0..toks.len() - 1)
        .map(|i| {
            let row = &logits[i * 512..(i + 1) * 512];
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - row[toks[i + 1] as usize]
        })
        .collect();
    let mut dec = Decoder::new(&mut model, Box::new(KeepAll), 1).unwrap();
    let run = streaming_ppl(&mut dec, &toks, |_| std::ops::ControlFlow::Continue(())).unwrap();
    assert_eq!(
        run.nlls.len(),
        toks.len() - 1,
        "N tokens give N-1 predictions"
    );
    for (i, (g, w)) in run.nlls.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 2e-4, "NLL of token {}: {g} vs {w}", i + 1);
    }
    let mean = want.iter().sum::<f64>() / want.len() as f64;
    assert!(
        (run.ppl - mean.exp()).abs() <= 2e-4 * run.ppl,
        "PPL = exp(mean NLL)"
    );
}
