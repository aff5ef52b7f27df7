//! Shared helpers for the integration tests: the runtime, the tiny fixture, golden arrays, test policies.
#![allow(dead_code)]

pub mod bad_input;
pub mod cli;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use h2o_engine::cache::{KvStore, LayerPlan};
use h2o_engine::decoder::{nll, AttentionCapture, Decoder, StepObserver};
use h2o_engine::model::Model;
use h2o_engine::policy::{Candidates, LayerPolicies, Policy, ScoreRule};
use h2o_engine::runtime::{Runtime, SessionConfig};
use h2o_engine::Result;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/tiny")
}

/// The fp16 export of the same checkpoint.
pub fn fixture_fp16_dir() -> PathBuf {
    root().join("tests/fixtures/tiny-fp16")
}

/// ONNX Runtime allows one environment per process, so the tests of one binary share it.
pub fn runtime() -> &'static Runtime {
    static RT: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        Runtime::start(&root()).expect("ONNX Runtime: run `make venv` or set ORT_DYLIB_PATH")
    })
}

pub fn load_fixture(rt: &Runtime) -> Model {
    load_model(rt, &fixture_dir())
}

pub fn load_model(rt: &Runtime, dir: &std::path::Path) -> Model {
    let cfg = SessionConfig {
        intra_threads: 1,
        ..SessionConfig::default()
    };
    Model::load(rt, dir, cfg).expect("fixture loads")
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
    fn score_rule(&self) -> ScoreRule {
        ScoreRule::None
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
    fn score_rule(&self) -> ScoreRule {
        ScoreRule::None
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

/// One decode step as [`Decisions`] saw it.
#[derive(Debug, Clone, Default)]
pub struct StepDecisions {
    /// `[layer][row][head]`: positions held after the step.
    pub kept: Vec<Vec<Vec<BTreeSet<i64>>>>,
    /// Per row, the smallest margin of a score-ranked eviction in this step (over layers and heads):
    /// the lowest kept unprotected score minus the highest evicted unprotected score; +inf when
    /// nothing unprotected was evicted. Numerics that move scores by less than half of it cannot
    /// change the choice.
    pub margin: Vec<f32>,
    /// `(layer, row, head, position)` -> the candidate's score after the step's attention.
    pub scores: HashMap<(usize, usize, usize, i64), f32>,
}

impl StepDecisions {
    /// Largest score difference between two runs' common candidates.
    pub fn score_gap(&self, other: &Self) -> f32 {
        self.scores
            .iter()
            .filter_map(|(k, a)| other.scores.get(k).map(|b| (a - b).abs()))
            .fold(0.0, f32::max)
    }

    /// Row `b` alone, as row 0 of a batch of 1.
    pub fn row(&self, b: usize) -> Self {
        Self {
            kept: self.kept.iter().map(|l| vec![l[b].clone()]).collect(),
            margin: vec![self.margin[b]],
            scores: self
                .scores
                .iter()
                .filter(|((_, r, _, _), _)| *r == b)
                .map(|(&(l, _, h, p), &x)| ((l, 0, h, p), x))
                .collect(),
        }
    }
}

/// Steps of two runs that must keep the same positions: compared in order while they can only be
/// equal; once a step's margin in `a` is within twice the largest score difference between the runs,
/// either choice is right and the runs may part there. Returns the number of steps compared.
pub fn compare_decisions(what: &str, a: &[StepDecisions], b: &[StepDecisions]) -> usize {
    assert_eq!(a.len(), b.len(), "{what}: step counts");
    let mut compared = 0;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.kept != y.kept {
            let gap = x.score_gap(y);
            assert!(
                x.margin[0] <= 2.0 * gap,
                "{what} step {i}: other positions kept though the margin {} > 2 x score gap {gap}",
                x.margin[0]
            );
            break;
        }
        compared += 1;
    }
    compared
}

/// An observer for policies that rank by per-head scores with a recent window of `recent`
/// positions (h2o head scope; local with no scores): each step's kept positions and decision margin.
#[derive(Debug, Default)]
pub struct Decisions {
    pub recent: usize,
    pub steps: Vec<StepDecisions>,
    current: StepDecisions,
    /// Next position of each row (the decoder's, mirrored).
    next: Vec<i64>,
    /// `[row * heads + head]`: this layer's candidates, position -> score after the step's attention.
    cands: Vec<HashMap<i64, f32>>,
}

impl Decisions {
    pub fn new(recent: usize) -> Self {
        Self {
            recent,
            ..Self::default()
        }
    }
}

impl StepObserver for Decisions {
    fn attention(
        &mut self,
        layer: usize,
        att: &[f32],
        query_heads: usize,
        past: usize,
        store: &KvStore,
    ) -> Result<()> {
        let (batch, heads) = (store.batch(), store.heads());
        self.next.resize(batch, 0);
        let seq = att.len() / (batch * query_heads) - past;
        // per KV head: the sum of its group's query-head rows (written here apart from the engine)
        let (cols, group) = (past + seq, query_heads / heads);
        let mut kv_att = vec![0f32; batch * heads * cols];
        for b in 0..batch {
            for q in 0..query_heads {
                let (src, dst) = ((b * query_heads + q) * cols, (b * heads + q / group) * cols);
                for c in 0..cols {
                    kv_att[dst + c] += att[src + c];
                }
            }
        }
        let att = &kv_att[..];
        self.cands.resize_with(batch * heads, HashMap::new);
        for b in 0..batch {
            for h in 0..heads {
                let r = b * heads + h;
                let row = &att[r * (past + seq)..(r + 1) * (past + seq)];
                let c = &mut self.cands[r];
                c.clear();
                let (pos, sc) = (store.positions(layer, b, h), store.scores(layer, b, h));
                for s in (0..past).filter(|&s| pos[s] >= 0) {
                    c.insert(pos[s], sc[s] + row[s]);
                }
                for j in 0..seq {
                    c.insert(self.next[b] + j as i64, row[past + j]);
                }
            }
        }
        Ok(())
    }

    fn planned(&mut self, layer: usize, plan: &LayerPlan, store: &KvStore) -> Result<()> {
        let (batch, heads) = (store.batch(), store.heads());
        self.current.margin.resize(batch, f32::INFINITY);
        let mut rows = Vec::new();
        for b in 0..batch {
            let mut hs = Vec::new();
            for h in 0..heads {
                let kept: BTreeSet<i64> = store.positions(layer, b, h)
                    [..store.table(layer).used(b)]
                    .iter()
                    .copied()
                    .collect();
                let ev = plan.evicted(b, h);
                let t = kept.iter().chain(ev).copied().max().unwrap_or(0);
                let floor = t - self.recent as i64;
                let sc = &self.cands[b * heads + h];
                for (&p, &x) in sc {
                    self.current.scores.insert((layer, b, h, p), x);
                }
                let lowest_kept = kept
                    .iter()
                    .filter(|&&p| p <= floor)
                    .map(|p| sc[p])
                    .fold(f32::INFINITY, f32::min);
                let highest_ev = ev
                    .iter()
                    .filter(|&&p| p <= floor)
                    .map(|p| sc[p])
                    .fold(f32::NEG_INFINITY, f32::max);
                if highest_ev > f32::NEG_INFINITY {
                    let m = &mut self.current.margin[b];
                    *m = m.min(lowest_kept - highest_ev);
                }
                hs.push(kept);
            }
            rows.push(hs);
        }
        self.current.kept.push(rows);
        Ok(())
    }

    fn step_done(&mut self, next_positions: &[i64]) -> Result<()> {
        self.next = next_positions.to_vec();
        self.steps.push(std::mem::take(&mut self.current));
        Ok(())
    }
}

/// Feed the golden `prefill` case's tokens one step at a time with the full cache: every step's
/// logits equal transformers' prefill logits at that token, every attention row sums to 1 with exactly
/// 0 on empty slots, and the rows summed by position equal the prefill's attention sums.
pub fn token_by_token_against_prefill(model: &mut Model, logits_tol: f64, att_tol: f64) {
    let c = golden()["cases"]["prefill"].clone();
    let toks: Vec<u32> = arr(&c["inputs"]["input_ids"])
        .1
        .iter()
        .map(|&x| x as u32)
        .collect();
    let (n, vocab) = (toks.len(), model.manifest.vocab_size);
    let (layers, heads) = (model.manifest.num_layers, model.manifest.num_heads);
    let (_, want_logits) = arr(&c["expected"]["logits"]);
    let mut dec = Decoder::new(model, Box::new(KeepAll), 1).unwrap();
    capture_attention(&mut dec);
    let mut sums = vec![vec![0f32; heads * n]; layers];
    for (j, &t) in toks.iter().enumerate() {
        let past = dec.step(&[t]).unwrap().past;
        let want = &want_logits[j * vocab..(j + 1) * vocab];
        assert_close(&format!("logits step {j}"), dec.logits(), want, logits_tol);
        let cap = captured(&dec);
        for (l, sum) in sums.iter_mut().enumerate() {
            for h in 0..heads {
                let row = &cap.attention[l][h * (past + 1)..(h + 1) * (past + 1)];
                let total: f32 = row.iter().sum();
                assert!((total - 1.0).abs() < 1e-5, "attention row sums to 1");
                let slots = &cap.positions[l][h * past..(h + 1) * past];
                for (&p, &a) in slots.iter().zip(row) {
                    if p >= 0 {
                        sum[h * n + p as usize] += a;
                    } else {
                        assert_eq!(a, 0.0, "empty slots get exactly 0");
                    }
                }
                sum[h * n + j] += row[past];
            }
        }
    }
    for (l, sum) in sums.iter().enumerate() {
        let (_, want) = arr(&c["expected"][format!("attention_sums.{l}")]);
        assert_close(
            &format!("summed step attention layer {l}"),
            sum,
            &want,
            att_tol,
        );
    }
}

/// One of golden.json's greedy continuations (transformers' `generate`, do_sample=False).
#[derive(Debug, Clone)]
pub struct GreedyCase {
    pub text: String,
    /// The prompt's ids (the tokenizer's, no special tokens).
    pub ids: Vec<u32>,
    /// The continuation; `tokens[0]` is the argmax of the prompt's last logits row.
    pub tokens: Vec<u32>,
    /// The continuation as text (the whole decoded after the prompt decoded).
    pub continuation: String,
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// golden.json's greedy continuations, in file order.
pub fn golden_greedy() -> Vec<GreedyCase> {
    golden()["greedy"]["prompts"]
        .as_array()
        .expect("golden.json has greedy continuations (make_fixture.py --greedy-only)")
        .iter()
        .map(|p| GreedyCase {
            text: p["text"].as_str().unwrap().to_string(),
            ids: ids_of(&p["ids"]),
            tokens: ids_of(&p["tokens"]),
            continuation: p["continuation"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// Feeds `rows` (start, prefill length) of `toks` through one decoder of `model`, prefilled
/// together, then `steps` steps of one text token per row: per row, the NLL of each next token
/// after the prefill and after every step, and each step's decisions ([`Decisions`] of `recent`).
pub fn run_rows(
    model: &mut Model,
    policies: impl Into<LayerPolicies>,
    toks: &[u32],
    recent: usize,
    rows: &[(usize, usize)],
    steps: usize,
) -> (Vec<Vec<f64>>, Vec<StepDecisions>) {
    let mut dec = Decoder::new(model, policies, rows.len()).unwrap();
    dec.set_observer(Box::new(Decisions::new(recent)));
    let prompts: Vec<Vec<u32>> = rows.iter().map(|&(s, n)| toks[s..s + n].to_vec()).collect();
    dec.prefill(&prompts).unwrap();
    let mut nlls: Vec<Vec<f64>> = rows
        .iter()
        .enumerate()
        .map(|(b, &(s, n))| vec![nll(dec.logits_at(b, n - 1), toks[s + n])])
        .collect();
    for k in 0..steps {
        let feed: Vec<u32> = rows.iter().map(|&(s, n)| toks[s + n + k]).collect();
        dec.step(&feed).unwrap();
        for (b, &(s, n)) in rows.iter().enumerate() {
            nlls[b].push(nll(dec.logits_at(b, 0), toks[s + n + k + 1]));
        }
    }
    (nlls, dec.take_observer::<Decisions>().unwrap().steps)
}
