//! Decoder: prefill(tokens) and step(token) for a batch; one graph run, then score update, eviction and
//! the write of the new K/V into the store, with per-step timings and an optional eviction trace.

use std::time::Instant;

use half::f16;

use crate::cache::{KvStore, NewKv, NewTokens};
use crate::error::{Error, Result};
use crate::manifest::LayerNames;
use crate::model::Model;
use crate::policy::Policy;
use crate::timing::StepTiming;

/// Growth step of the full cache's slot arrays (bounded policies allocate up to their budget the same way).
pub const SLOT_CHUNK: usize = 64;

/// What one prefill or step returns.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub batch: usize,
    pub seq: usize,
    pub vocab: usize,
    /// Per layer, the attention sums `[batch, heads, past + seq]` (only when the decoder keeps them).
    pub attention: Option<Vec<Vec<f32>>>,
    /// Per layer, the slot positions the attention columns `0..past` refer to, `[batch, heads, past]`
    /// (only with `attention`).
    pub attention_positions: Option<Vec<Vec<i64>>>,
    /// The graph's past length at this run (the store's capacity).
    pub past: usize,
    pub timing: StepTiming,
}

/// One step of an eviction trace (format h2o-evict-trace/1, batch row 0): positions evicted per layer and head.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceStep {
    pub pos: i64,
    pub evicted: Vec<Vec<Vec<i64>>>,
}

/// Streaming decoder over one model, one store and one policy.
pub struct Decoder<'m> {
    model: &'m mut Model,
    store: KvStore,
    policy: Box<dyn Policy>,
    next_pos: Vec<i64>,
    keep_attention: bool,
    trace: Option<Vec<TraceStep>>,
    ids: Vec<i64>,
    pos: Vec<i64>,
    new_mask: Vec<i64>,
    mask: Vec<i64>,
    /// The graph's per-layer names (a copy: the model is borrowed by the run's outputs).
    names: Vec<LayerNames>,
    /// The last step's logits `[batch, seq, vocab]`, in a buffer reused across steps (a fresh 200 KB
    /// vector per step costs page faults at Pythia's vocabulary).
    logits: Vec<f32>,
    last_seq: usize,
    /// `[layers][batch][heads]` positions evicted this step (tracing only).
    evicted: Vec<Vec<Vec<Vec<i64>>>>,
}

impl<'m> Decoder<'m> {
    /// A decoder for `batch` sequences with an empty cache.
    pub fn new(model: &'m mut Model, policy: Box<dyn Policy>, batch: usize) -> Result<Self> {
        let m = &model.manifest;
        let limit = policy.budget().min(m.max_position_embeddings);
        let store = KvStore::new(
            m.num_layers,
            batch,
            m.num_heads,
            m.head_dim,
            m.dtype,
            limit,
            SLOT_CHUNK,
        )?;
        let names = model.names.clone();
        Ok(Self {
            model,
            store,
            policy,
            next_pos: vec![0; batch],
            keep_attention: false,
            trace: None,
            ids: Vec::new(),
            pos: Vec::new(),
            new_mask: Vec::new(),
            mask: Vec::new(),
            names,
            logits: Vec::new(),
            last_seq: 0,
            evicted: Vec::new(),
        })
    }

    /// Return each step's attention sums (heatmaps, tests).
    pub fn keep_attention(&mut self, on: bool) {
        self.keep_attention = on;
    }

    /// Record which positions each step evicts (batch row 0).
    pub fn record_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    pub fn trace(&self) -> Option<&[TraceStep]> {
        self.trace.as_deref()
    }

    pub fn store(&self) -> &KvStore {
        &self.store
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// The last step's logits, `[batch, seq, vocab]`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The last step's logits of row `b`, new token `j`.
    pub fn logits_at(&self, b: usize, j: usize) -> &[f32] {
        let vocab = self.model.manifest.vocab_size;
        let o = (b * self.last_seq + j) * vocab;
        &self.logits[o..o + vocab]
    }

    /// Next absolute position of each row.
    pub fn next_positions(&self) -> &[i64] {
        &self.next_pos
    }

    /// Feed each row's tokens (rows may differ in length: shorter rows are padded on the right and the
    /// padding is never cached).
    pub fn prefill(&mut self, rows: &[Vec<u32>]) -> Result<StepOutput> {
        let batch = self.store.batch();
        if rows.len() != batch {
            return Err(Error::Input(format!(
                "prefill got {} rows for a batch of {batch}",
                rows.len()
            )));
        }
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if seq == 0 {
            return Err(Error::Input("prefill needs at least one token".into()));
        }
        self.ids.clear();
        self.pos.clear();
        self.new_mask.clear();
        for (b, row) in rows.iter().enumerate() {
            for j in 0..seq {
                let real = j < row.len();
                self.ids.push(if real { i64::from(row[j]) } else { 0 });
                self.pos
                    .push(if real { self.next_pos[b] + j as i64 } else { 0 });
                self.new_mask.push(i64::from(real));
            }
        }
        self.run_step(seq)
    }

    /// Feed one token per row.
    pub fn step(&mut self, tokens: &[u32]) -> Result<StepOutput> {
        let batch = self.store.batch();
        if tokens.len() != batch {
            return Err(Error::Input(format!(
                "step got {} tokens for a batch of {batch}",
                tokens.len()
            )));
        }
        self.ids.clear();
        self.pos.clear();
        self.new_mask.clear();
        for (b, &t) in tokens.iter().enumerate() {
            self.ids.push(i64::from(t));
            self.pos.push(self.next_pos[b]);
            self.new_mask.push(1);
        }
        self.run_step(1)
    }

    fn run_step(&mut self, seq: usize) -> Result<StepOutput> {
        let t_start = Instant::now();
        let vocab = self.model.manifest.vocab_size;
        let max_pos = self.model.manifest.max_position_embeddings as i64;
        if let Some(p) = self
            .pos
            .iter()
            .zip(&self.new_mask)
            .filter(|(_, &m)| m != 0)
            .map(|(p, _)| *p)
            .max()
        {
            if p >= max_pos {
                return Err(Error::Input(format!(
                    "position {p} is beyond the model's {max_pos} positions; use fewer tokens"
                )));
            }
        }
        for &id in &self.ids {
            if id < 0 || id as usize >= vocab {
                return Err(Error::Input(format!(
                    "token id {id} is outside the model's vocabulary of {vocab}"
                )));
            }
        }
        // The graph sees the slots as they are (a prefill into an empty store runs with past = 0);
        // room for the new tokens is made after the run, before they are written.
        self.store.build_mask(&self.new_mask, seq, &mut self.mask);
        let past = self.store.capacity();
        let layers = self.store.num_layers();
        let batch = self.store.batch();
        let heads = self.store.heads();
        let tracing = self.trace.is_some();
        if tracing {
            self.evicted.resize(layers, Vec::new());
            for rows in &mut self.evicted {
                rows.resize(batch, Vec::new());
                for hs in rows.iter_mut() {
                    hs.resize(heads, Vec::new());
                    hs.iter_mut().for_each(Vec::clear);
                }
            }
        }
        let prep = t_start.elapsed();

        let t_model = Instant::now();
        let outputs = self
            .model
            .run(&self.store, &self.ids, &self.pos, &self.mask, seq)?;
        let model_time = t_model.elapsed();

        let t_after = Instant::now();
        self.store.reserve_for_step(seq);
        let mut score_time = std::time::Duration::ZERO;
        let mut evict_time = std::time::Duration::ZERO;
        let (_, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        if logits.len() != batch * seq * vocab {
            return Err(Error::GraphMismatch(format!(
                "logits have {} values, expected [batch {batch} x seq {seq} x vocab {vocab}]",
                logits.len()
            )));
        }
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.last_seq = seq;
        let mut attention_out = self.keep_attention.then(|| Vec::with_capacity(layers));
        let mut attention_pos = self.keep_attention.then(|| Vec::with_capacity(layers));
        let needs_scores = self.policy.needs_scores();
        let dtype = self.store.dtype();
        for l in 0..layers {
            let names = &self.names[l];
            let (_, att) = outputs[names.attention_sums.as_str()].try_extract_tensor::<f32>()?;
            if let Some(a) = attention_out.as_mut() {
                a.push(att.to_vec());
                let mut ps = Vec::with_capacity(batch * heads * past);
                for b in 0..batch {
                    for h in 0..heads {
                        ps.extend_from_slice(&self.store.positions(l, b, h)[..past]);
                    }
                }
                attention_pos.as_mut().expect("set with attention").push(ps);
            }
            if needs_scores {
                let t = Instant::now();
                self.store.add_scores(l, att, past, seq)?;
                score_time += t.elapsed();
            }
            let kv = |name: &str| -> Result<NewKv<'_>> {
                let v = &outputs[name];
                Ok(match dtype {
                    crate::manifest::KvDtype::Float32 => {
                        NewKv::F32(v.try_extract_tensor::<f32>()?.1)
                    }
                    crate::manifest::KvDtype::Float16 => {
                        NewKv::F16(v.try_extract_tensor::<f16>()?.1)
                    }
                })
            };
            let new = NewTokens {
                k: kv(&names.new_key)?,
                v: kv(&names.new_value)?,
                attention: att,
                past,
                positions: &self.pos,
                mask: &self.new_mask,
                seq,
            };
            let ev_rows = if tracing {
                Some(&mut self.evicted[l])
            } else {
                None
            };
            evict_time += self.store.commit(l, &new, self.policy.as_ref(), ev_rows)?;
        }
        drop(outputs);
        // Each row advances by its real (unpadded) new tokens.
        for (next, row) in self.next_pos.iter_mut().zip(self.new_mask.chunks(seq)) {
            *next += row.iter().sum::<i64>();
        }
        if let Some(trace) = self.trace.as_mut() {
            if self
                .evicted
                .iter()
                .any(|rows| rows[0].iter().any(|v| !v.is_empty()))
            {
                let pos = self.next_pos[0] - 1;
                let evicted = self.evicted.iter().map(|rows| rows[0].clone()).collect();
                trace.push(TraceStep { pos, evicted });
            }
        }
        let total_after = t_after.elapsed();
        let commit_other = total_after.saturating_sub(score_time + evict_time);
        let timing = StepTiming {
            model: model_time,
            score_update: score_time,
            eviction: evict_time,
            other: prep + commit_other,
        };
        Ok(StepOutput {
            batch,
            seq,
            vocab,
            attention: attention_out,
            attention_positions: attention_pos,
            past,
            timing,
        })
    }
}

/// NLL of `target` under `logits` (log-softmax in f64).
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| ((x as f64) - max).exp()).sum();
    let lse = max + sum.ln();
    lse - logits[target as usize] as f64
}
