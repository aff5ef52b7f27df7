//! Shared helpers for the integration tests: the runtime, the tiny fixture, golden arrays, test policies.
#![allow(dead_code)]

pub mod cli;

use std::path::PathBuf;

use h2o_engine::decoder::{AttentionCapture, Decoder};
use h2o_engine::model::Model;
use h2o_engine::policy::{Candidates, Policy};
use h2o_engine::runtime::{Runtime, SessionConfig};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/tiny")
}

/// ONNX Runtime allows one environment per process, so the tests of one binary share it.
pub fn runtime() -> &'static Runtime {
    static RT: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        Runtime::start(&root()).expect("ONNX Runtime: run `make venv` or set ORT_DYLIB_PATH")
    })
}

pub fn load_fixture(rt: &Runtime) -> Model {
    let cfg = SessionConfig {
        intra_threads: 1,
        ..SessionConfig::default()
    };
    Model::load(rt, &fixture_dir(), cfg).expect("fixture loads")
}

pub fn golden() -> serde_json::Value {
    let p = fixture_dir().join("golden.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// (shape, data) of a golden array.
pub fn arr(v: &serde_json::Value) -> (Vec<usize>, Vec<f64>) {
    let shape = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    (shape, data)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(want) {
        worst = worst.max((*g as f64 - w).abs());
    }
    assert!(worst <= tol, "{what}: max abs diff {worst} > {tol}");
}

/// A test policy that evicts exactly the given positions (and otherwise the newest beyond budget).
pub struct EvictPositions {
    pub budget: usize,
    pub victims: Vec<i64>,
}

impl Policy for EvictPositions {
    fn spec(&self) -> String {
        format!("test-evict:{:?}", self.victims)
    }
    fn budget(&self) -> usize {
        self.budget
    }
    fn needs_scores(&self) -> bool {
        false
    }
    fn select(&self, c: &Candidates<'_>, keep: &mut [bool]) {
        for h in 0..c.heads {
            let mut kept = 0;
            for i in 0..c.n {
                let p = c.positions[h * c.n + i];
                let k = p >= 0 && !self.victims.contains(&p) && kept < self.budget;
                keep[h * c.n + i] = k;
                kept += usize::from(k);
            }
        }
    }
}

/// Keeps everything (the full cache).
pub struct KeepAll;

impl Policy for KeepAll {
    fn spec(&self) -> String {
        "full".into()
    }
    fn budget(&self) -> usize {
        usize::MAX
    }
    fn needs_scores(&self) -> bool {
        false
    }
    fn select(&self, _c: &Candidates<'_>, keep: &mut [bool]) {
        keep.iter_mut().for_each(|k| *k = true);
    }
}

pub fn tiny_text_tokens() -> Vec<u32> {
    golden()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Keep each step's attention sums (an [`AttentionCapture`] observer).
pub fn capture_attention(dec: &mut Decoder<'_>) {
    dec.set_observer(Box::new(AttentionCapture::default()));
}

/// The last step's attention sums and slot positions (after [`capture_attention`]).
pub fn captured<'a>(dec: &'a Decoder<'_>) -> &'a AttentionCapture {
    dec.observer::<AttentionCapture>()
        .expect("capture_attention was called")
}
