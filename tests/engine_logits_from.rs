//! `logits_from` (exporter 1.3.0 on): a prefill that keeps the logits of its last tokens only gets
//! the same logits for them as one that keeps all, and leaves the cache exactly as it would be; a
//! graph of before (tests/fixtures/tiny-exp120, the tiny fixture as exporter 1.2.0 wrote it)
//! computes every token's and the decoder keeps the asked rows, bit for bit. The decode loop of
//! speed and generate asks the graph for one logits row per sequence.

mod common;

use std::ops::ControlFlow;

use common::{fixture_dir, load_model, root, runtime, tiny_text_tokens};
use h2o_engine::decoder::Decoder;
use h2o_engine::eval::decode::decode;
use h2o_engine::eval::speed::argmax;
use h2o_engine::model::Model;
use h2o_engine::policy::PolicySpec;

/// pythia-micro as `make export-micro` exports it (this exporter's graph, which takes logits_from).
fn micro() -> Model {
    let dir = root().join("models/pythia-micro/onnx");
    assert!(
        dir.join("model.onnx").is_file(),
        "{} is absent: run `make export-micro` first",
        dir.display()
    );
    load_model(runtime(), &dir)
}

/// (each row's logits of new tokens `from..`, the next step's logits) after prefilling `rows`
/// keeping logits from `from`, under h2o at a budget below the prompt (the prefill evicts).
fn prefill_then_step(
    model: &mut Model,
    rows: &[Vec<u32>],
    from: usize,
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let spec: PolicySpec = "h2o:4+4".parse().unwrap();
    let layers = model.manifest.num_layers;
    let mut dec = Decoder::new(model, spec.build(layers), rows.len()).unwrap();
    dec.prefill_from(rows, from).unwrap();
    let seq = rows.iter().map(Vec::len).max().unwrap();
    assert_eq!(dec.logits_first(), from);
    let kept = (0..rows.len())
        .map(|b| {
            (from..seq)
                .flat_map(|j| dec.logits_at(b, j).to_vec())
                .collect()
        })
        .collect();
    let next: Vec<u32> = rows.iter().map(|r| r[0]).collect();
    dec.step(&next).unwrap();
    (kept, dec.logits().to_vec())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_graph_computes_only_the_asked_rows_and_the_cache_is_unchanged() {
    assert!(load_model(runtime(), &fixture_dir())
        .manifest
        .takes_logits_from());
    let mut model = micro();
    assert!(model.manifest.takes_logits_from());
    let toks = tiny_text_tokens();
    let vocab = model.manifest.vocab_size as u32;
    let rows: Vec<Vec<u32>> = [&toks[..12], &toks[12..24]]
        .iter()
        .map(|r| r.iter().map(|t| t % vocab).collect())
        .collect();
    let (all, next_all) = prefill_then_step(&mut model, &rows, 0);
    for from in [11, 7] {
        let (part, next_part) = prefill_then_step(&mut model, &rows, from);
        let vocab = vocab as usize;
        for (b, (p, a)) in part.iter().zip(&all).enumerate() {
            // the head runs on fewer rows: GEMM blocking may change the last bits
            let d = max_abs_diff(p, &a[from * vocab..]);
            assert!(d <= 1e-4, "row {b} from {from}: logits differ by {d}");
        }
        assert_eq!(
            next_part, next_all,
            "from {from}: the cache (and so the next step) is the same"
        );
    }
}

#[test]
fn an_older_graph_computes_every_row_and_the_decoder_keeps_the_asked_ones() {
    let mut model = load_model(runtime(), &root().join("tests/fixtures/tiny-exp120"));
    assert!(!model.manifest.takes_logits_from());
    let toks = tiny_text_tokens();
    let rows = vec![toks[..10].to_vec()];
    let (all, next_all) = prefill_then_step(&mut model, &rows, 0);
    let (part, next_part) = prefill_then_step(&mut model, &rows, 9);
    let vocab = model.manifest.vocab_size;
    assert_eq!(
        part[0],
        all[0][9 * vocab..],
        "bit for bit: the same graph run"
    );
    assert_eq!(next_part, next_all);
}

#[test]
#[should_panic(expected = "logits of new token 3 asked")]
fn asking_for_a_row_that_was_not_kept_is_a_bug() {
    let mut model = load_model(runtime(), &fixture_dir());
    let layers = model.manifest.num_layers;
    let mut dec = Decoder::new(&mut model, PolicySpec::FULL.build(layers), 1).unwrap();
    dec.prefill_from(&[tiny_text_tokens()[..6].to_vec()], 4)
        .unwrap();
    let _ = dec.logits_at(0, 3);
}

#[test]
fn logits_from_beyond_the_run_is_refused() {
    let mut model = micro();
    let layers = model.manifest.num_layers;
    let mut dec = Decoder::new(&mut model, PolicySpec::FULL.build(layers), 1).unwrap();
    let e = dec
        .prefill_from(&[vec![1, 2, 3]], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("logits from new token 3 of a run of 3"), "{e}");
}

/// The decode loop's prefill (speed's equally long rows, generate's one row), in one run or in
/// chunks, on a graph that takes logits_from: the last run's logits, as the graph returned them,
/// are one row per sequence: the prompt's last token's.
#[test]
fn the_decode_loop_prefill_asks_the_graph_for_one_logits_row_per_sequence() {
    let mut model = load_model(runtime(), &fixture_dir());
    let (vocab, layers) = (model.manifest.vocab_size, model.manifest.num_layers);
    let toks = tiny_text_tokens();
    let one = vec![toks[..8].to_vec()];
    let two = vec![toks[..8].to_vec(), toks[8..16].to_vec()];
    // (rows, chunk, the last run's first token)
    for (rows, chunk, start) in [(&one, None, 0), (&two, None, 0), (&two, Some(3), 6)] {
        let mut dec = Decoder::new(&mut model, PolicySpec::FULL.build(layers), rows.len()).unwrap();
        let mut pick = |_: usize, logits: &[f32]| argmax(logits);
        let mut go_on = |_: usize, _: &[u32]| ControlFlow::Continue(());
        decode(&mut dec, rows, 1, chunk, &mut pick, &mut go_on).unwrap();
        let what = format!("batch {} chunk {chunk:?}", rows.len());
        assert_eq!(
            dec.logits().len(),
            rows.len() * vocab,
            "{what}: one row each"
        );
        assert_eq!(
            dec.logits_first(),
            7 - start,
            "{what}: the last prompt token's"
        );
    }
}
