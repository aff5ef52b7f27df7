//! The figures `h2o speed --json` publishes, each against a value computed here from the fixture's
//! manifest shapes and files (never from the engine's own functions), so that one off by 2x shows:
//! weight bytes read per token, K/V bytes held, the bandwidth floor, and the bytes the prefill and
//! each decode step bring back from the device (one logits row per sequence).

mod common;

use std::path::Path;

use common::cli::{h2o, write_text};
use common::fixture_dir;
use serde_json::Value;

const PROMPT: u64 = 8;
const GEN: u64 = 4;
const F32: u64 = 4;

/// The fixture's manifest shapes.
struct Shapes {
    layers: u64,
    heads: u64,
    head_dim: u64,
    hidden: u64,
    inner: u64,
    vocab: u64,
}

fn shapes() -> Shapes {
    let text = std::fs::read_to_string(fixture_dir().join("manifest.json")).unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();
    let n = |k: &str| m[k].as_u64().unwrap();
    assert_eq!(m["dtype"], "float32");
    Shapes {
        layers: n("num_layers"),
        heads: n("num_heads"),
        head_dim: n("head_dim"),
        hidden: n("hidden_size"),
        inner: n("intermediate_size"),
        vocab: n("vocab_size"),
    }
}

/// GPT-NeoX's parameters a decode step reads, counted from the shapes: per layer QKV and the
/// attention output (weights and biases), the MLP's two linears, two layer norms; the final layer
/// norm and the LM head (no bias). The input embedding is left out: a step gathers one row.
fn parameters_read(s: &Shapes) -> u64 {
    let h = s.hidden;
    let layer = (3 * h * h + 3 * h) + (h * h + h) + (2 * h * s.inner + s.inner + h) + 4 * h;
    s.layers * layer + 2 * h + s.vocab * h
}

/// `h2o speed` on the fixture (full cache, batch 1, K/V on the host as on the CPU by default), with
/// the bandwidth floor measured; its JSON.
fn speed_json(dir: &Path) -> Value {
    let data = write_text(dir, 100);
    let json = dir.join("speed.json");
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--exp", "full", "--prompt", &PROMPT.to_string()])
        .args(["--gen", &GEN.to_string(), "--warmup", "0", "--threads", "1"])
        .arg("--json")
        .arg(&json);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs(),
        "{what}: {got} vs {want} by hand"
    );
}

#[test]
fn speed_publishes_floor_bytes_and_traffic_as_computed_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let doc = speed_json(tmp.path());
    let s = shapes();
    let run = &doc["runs"][0];
    assert_eq!(doc["kv"], "host");

    // weights read per token: the graph file less the input embedding [vocab, hidden] f32
    let file = std::fs::metadata(fixture_dir().join("model.onnx"))
        .unwrap()
        .len();
    let weights = doc["weight_bytes_read_per_token"].as_u64().unwrap();
    assert_eq!(weights, file - s.vocab * s.hidden * F32);
    let params = parameters_read(&s) * F32;
    assert!(
        params <= weights && weights * 100 <= params * 105,
        "{weights} bytes read per token, {params} of parameters (the rest is the graph)"
    );

    // K/V held at the end: prompt + gen - 1 tokens, K and V of every layer and head
    let held = PROMPT + GEN - 1;
    let kv = 2 * s.layers * s.heads * s.head_dim * F32 * held;
    assert_eq!(run["kv_bytes"].as_u64().unwrap(), kv);

    // the floor: (weights + K/V) / the published bandwidth, the better of the two measurements
    let bw = doc["read_bandwidth_bytes_per_s"].as_f64().unwrap();
    let both = doc["read_bandwidth_before_after"].as_array().unwrap();
    let best = both.iter().map(|x| x.as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(bw, best);
    let floor = run["floor_ms"].as_f64().unwrap();
    close("floor_ms", floor, (weights + kv) as f64 / bw * 1e3);

    // bytes back from the device: logits [1, 1, vocab] (the prompt's last token only), the
    // attention sums [1, heads, past + seq] per layer, the new K/V [1, heads, seq, head_dim] per
    // layer; the prefill runs on an empty store (past 0), the steps on 64 slots
    let back = |rows: u64, past: u64, seq: u64| {
        let kv = s.layers * 2 * s.heads * seq * s.head_dim;
        F32 * (rows * s.vocab + s.layers * s.heads * (past + seq) + kv)
    };
    let traffic = &run["speed"]["traffic"];
    let figure = |k: &str| traffic[k].as_u64().unwrap();
    assert_eq!(figure("prefill_from_device"), back(1, 0, PROMPT));
    assert_eq!(figure("step_from_device"), back(1, 64, 1));
}
