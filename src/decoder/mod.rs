//! Decoder: prefill(tokens) and step(token) for a batch. A step is inputs -> one graph run -> per layer
//! cache update (scores, plan, apply), with per-step timings; an optional [`StepObserver`] sees the
//! attention and the plans (heatmaps, eviction trace). Positions are absolute (the text's) or
//! rolling (renumbered within the cache, [`Positions::Rolling`]; graphs that cache keys unrotated).

pub mod observer;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cache::sizing::{slot_limit, SLOT_CHUNK};
use crate::cache::{fold_query_heads, KvStore, NewTokens};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, MaskInputs};
use crate::model::{Model, StepInputs, StepView, Traffic};
use crate::policy::{LayerPolicies, PolicySpec, Positions, ScoreRule};
use crate::timing::StepTiming;

pub use observer::{
    kv_head_of, AttentionCapture, EvictionTrace, StepObserver, TraceFile, TraceStep, TRACE_FORMAT,
};

/// What one prefill or step returns.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub batch: usize,
    pub seq: usize,
    pub vocab: usize,
    /// The graph's past length at this run (layer 0's capacity; every layer's with uniform budgets).
    pub past: usize,
    pub timing: StepTiming,
    /// Bytes the step moved between host and device (counted on any provider; see [`Traffic`]).
    pub traffic: Traffic,
}

/// Streaming decoder over one model, one store and one policy per layer (or one for all).
pub struct Decoder<'m> {
    model: &'m mut Model,
    store: KvStore,
    policies: LayerPolicies,
    /// The positions fed to the graph: the text's, or renumbered within the cache.
    positions: Positions,
    next_pos: Vec<i64>,
    observer: Option<Box<dyn StepObserver>>,
    ids: Vec<i64>,
    /// The new tokens' original positions `[batch, seq]` (what the cache records).
    pos: Vec<i64>,
    /// Rolling positions: the new tokens' positions fed to the graph `[batch, seq]`.
    rolling_pos: Vec<i64>,
    /// Graphs that cache keys unrotated: every layer's `[batch, heads, past_l]`, layer after layer.
    key_pos: Vec<i64>,
    /// Scratch of the key positions' ranking.
    order: Vec<usize>,
    new_mask: Vec<i64>,
    mask: Vec<i64>,
    /// The last step's logits `[batch, seq, vocab]`, in a buffer reused across steps (a fresh 200 KB
    /// vector per step costs page faults at Pythia's vocabulary).
    logits: Vec<f32>,
    last_seq: usize,
    /// The first new token of the last run whose logits `logits` holds.
    logits_first: usize,
    /// A layer's attention sums folded from query heads to KV heads (grouped-query attention
    /// only), reused across layers and steps.
    folded: Vec<f32>,
}

/// Each layer's capacity limit under `policies` (its budget, at most the model's positions); refuses
/// a list for another number of layers, and layers with different limits on a graph that takes one
/// attention mask for all layers.
pub fn layer_limits(model: &Model, policies: &LayerPolicies) -> Result<Vec<usize>> {
    layer_limits_of(&model.manifest, &model.dir, model.kv_on_device(), policies)
}

/// [`layer_limits`] for the model `m` in `dir` with K/V on the device (`kv_on_device`) or not,
/// without a loaded model.
pub fn layer_limits_of(
    m: &Manifest,
    dir: &Path,
    kv_on_device: bool,
    policies: &LayerPolicies,
) -> Result<Vec<usize>> {
    if let Some(n) = policies.layers().filter(|&n| n != m.num_layers) {
        return Err(Error::Input(format!(
            "{n} per-layer policies for a model of {} layers",
            m.num_layers
        )));
    }
    let limits: Vec<usize> = (0..m.num_layers)
        .map(|l| slot_limit(policies.layer(l).budget(), m.max_position_embeddings))
        .collect();
    let key_norm = (0..m.num_layers).any(|l| policies.layer(l).score_rule() == ScoreRule::KeyNorm);
    if key_norm && kv_on_device {
        let spec = policies.layer(0).spec();
        let family = spec.split([':', '@']).next().unwrap_or_default();
        return Err(Error::KeyNormNeedsHostKv {
            family: family.to_string(),
        });
    }
    if m.attention_masks != MaskInputs::PerLayer && limits.iter().any(|&x| x != limits[0]) {
        return Err(Error::Input(format!(
            "the policy gives layers different budgets ({}, ...), but {} takes one attention mask for every layer; export the model with `export.py --layer-masks` (or use a uniform schedule)",
            policies.layer(0).spec(),
            dir.display()
        )));
    }
    Ok(limits)
}

/// Refuses rolling positions for the model `m` in `dir` under `policies`: they need a graph that
/// caches keys unrotated and a bounded policy in every layer.
pub fn check_rolling_of(m: &Manifest, dir: &Path, policies: &LayerPolicies) -> Result<()> {
    let spec = policies.layer(0).spec();
    if (0..m.num_layers).any(|l| policies.layer(l).budget() == usize::MAX) {
        return Err(Error::Input(format!(
            "policy {spec} keeps every token: rolling positions (@rolling) need a bounded policy"
        )));
    }
    if !m.takes_key_positions() {
        return Err(Error::Input(format!(
            "policy {spec}@rolling renumbers positions, but {} caches its keys rotated (manifest.json has no \"key_cache\": \"unrotated\"); export a graph that caches them unrotated: `make export-micro-rolling` (models/pythia-micro/onnx-rolling) or `export.py --key-cache unrotated`",
            dir.display()
        )));
    }
    Ok(())
}

impl<'m> Decoder<'m> {
    /// A decoder for `batch` sequences with an empty cache; `policies` is one policy for every
    /// layer (a `Box<P>` converts) or one per layer ([`crate::policy::PolicySpec::build`]).
    pub fn new(
        model: &'m mut Model,
        policies: impl Into<LayerPolicies>,
        batch: usize,
    ) -> Result<Self> {
        let policies = policies.into();
        let limits = layer_limits(model, &policies)?;
        let buffers = model.kv_buffers(batch)?;
        let m = &model.manifest;
        let store = KvStore::with_buffers(
            &limits,
            batch,
            m.kv_heads(),
            m.head_dim,
            buffers,
            SLOT_CHUNK,
        )?
        .with_query_group(m.num_heads / m.kv_heads());
        Ok(Self {
            model,
            store,
            policies,
            positions: Positions::Absolute,
            next_pos: vec![0; batch],
            observer: None,
            ids: Vec::new(),
            pos: Vec::new(),
            rolling_pos: Vec::new(),
            key_pos: Vec::new(),
            order: Vec::new(),
            new_mask: Vec::new(),
            mask: Vec::new(),
            logits: Vec::new(),
            last_seq: 0,
            logits_first: 0,
            folded: Vec::new(),
        })
    }

    /// Feed the graph `positions` from the next step on (absolute by default); rolling positions
    /// are refused unless the graph caches keys unrotated and every layer's policy is bounded.
    pub fn set_positions(&mut self, positions: Positions) -> Result<()> {
        if positions == Positions::Rolling {
            check_rolling_of(&self.model.manifest, &self.model.dir, &self.policies)?;
        }
        self.positions = positions;
        Ok(())
    }

    /// The positions fed to the graph.
    pub fn positions(&self) -> Positions {
        self.positions
    }

    /// A decoder for `batch` sequences under `spec`: its policies for the model's layers, on the
    /// positions it asks for (`@rolling`: refused as [`Decoder::set_positions`] says).
    pub fn of_spec(model: &'m mut Model, spec: &PolicySpec, batch: usize) -> Result<Self> {
        let layers = model.manifest.num_layers;
        let mut dec = Self::new(model, spec.build(layers), batch)?;
        dec.set_positions(spec.positions)?;
        Ok(dec)
    }

    /// Let `observer` see every following step (replaces any earlier one).
    pub fn set_observer(&mut self, observer: Box<dyn StepObserver>) {
        self.observer = Some(observer);
    }

    /// The observer, if it is a `T`.
    pub fn observer<T: StepObserver>(&self) -> Option<&T> {
        let any: &dyn std::any::Any = self.observer.as_deref()?;
        any.downcast_ref()
    }

    /// Remove the observer and return it, if it is a `T`.
    pub fn take_observer<T: StepObserver>(&mut self) -> Option<T> {
        let any: Box<dyn std::any::Any> = self.observer.take()?;
        any.downcast().ok().map(|b| *b)
    }

    /// Record which positions each step evicts (batch row 0): an [`EvictionTrace`] observer.
    pub fn record_trace(&mut self) {
        self.set_observer(Box::new(EvictionTrace::default()));
    }

    /// The steps recorded since [`Decoder::record_trace`].
    pub fn trace(&self) -> Option<&[TraceStep]> {
        self.observer::<EvictionTrace>().map(EvictionTrace::steps)
    }

    pub fn store(&self) -> &KvStore {
        &self.store
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    /// The policies of the layers.
    pub fn policies(&self) -> &LayerPolicies {
        &self.policies
    }

    /// The last step's logits, `[batch, rows, vocab]`: the new tokens from
    /// [`Decoder::logits_first`] on (every new token's unless the prefill asked for fewer).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The first new token of the last step whose logits [`Decoder::logits`] holds.
    pub fn logits_first(&self) -> usize {
        self.logits_first
    }

    /// The last step's logits of row `b`, new token `j` (at least [`Decoder::logits_first`]).
    pub fn logits_at(&self, b: usize, j: usize) -> &[f32] {
        assert!(
            j >= self.logits_first && j < self.last_seq,
            "logits of new token {j} asked, the last run kept tokens {}..{}",
            self.logits_first,
            self.last_seq
        );
        let vocab = self.model.manifest.vocab_size;
        let rows = self.last_seq - self.logits_first;
        let o = (b * rows + j - self.logits_first) * vocab;
        &self.logits[o..o + vocab]
    }

    /// Next absolute position of each row.
    pub fn next_positions(&self) -> &[i64] {
        &self.next_pos
    }

    /// Feed each row's tokens (rows may differ in length: shorter rows are padded on the right and the
    /// padding is never cached); every new token's logits are kept.
    pub fn prefill(&mut self, rows: &[Vec<u32>]) -> Result<StepOutput> {
        self.prefill_from(rows, 0)
    }

    /// [`Decoder::prefill`], keeping the logits of the new tokens from index `logits_from` on only
    /// (below the longest row's length). A graph that takes `logits_from` (exporter 1.3.0 on) then
    /// skips the LM head for the tokens before it: a prompt's prefill needs its last token's.
    pub fn prefill_from(&mut self, rows: &[Vec<u32>], logits_from: usize) -> Result<StepOutput> {
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
        self.run_step(seq, logits_from)
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
        self.run_step(1, 0)
    }

    /// Inputs -> run -> per layer cache update -> positions advance; logits kept from new token
    /// `logits_from` on.
    fn run_step(&mut self, seq: usize, logits_from: usize) -> Result<StepOutput> {
        let t_start = Instant::now();
        self.fill_positions(seq);
        self.check_inputs()?;
        // The graph sees the slots as they are (a prefill into an empty store runs with past = 0);
        // each layer's update grows the store if the new tokens need room.
        if self.model.per_layer_masks() {
            self.mask.clear();
            for l in 0..self.store.num_layers() {
                self.store
                    .append_mask(l, &self.new_mask, seq, &mut self.mask);
            }
        } else {
            self.store.build_mask(&self.new_mask, seq, &mut self.mask);
        }
        let inputs = StepInputs {
            ids: &self.ids,
            positions: match self.positions {
                Positions::Absolute => &self.pos,
                Positions::Rolling => &self.rolling_pos,
            },
            key_positions: &self.key_pos,
            mask: &self.mask,
            seq,
            logits_from,
        };
        let prep = t_start.elapsed();

        let t_model = Instant::now();
        let outputs = self.model.run(&self.store, &inputs)?;
        let mut model_time = t_model.elapsed();
        let mut traffic = outputs.traffic();

        let t_after = Instant::now();
        let out = outputs.view()?;
        // [batch, seq - from, vocab] from a graph that takes logits_from, else [batch, seq, vocab]:
        // keep rows logits_from.. of each batch row
        let (vocab, rows) = (out.dims.vocab, out.dims.logits_rows());
        let skip = rows - (seq - logits_from);
        self.logits.clear();
        for row in out.logits.chunks(rows * vocab) {
            self.logits.extend_from_slice(&row[skip * vocab..]);
        }
        (self.last_seq, self.logits_first) = (seq, logits_from);
        let (score_time, evict_time) = update_cache(
            &mut self.store,
            &self.policies,
            self.observer.as_deref_mut(),
            &out,
            &self.pos,
            &self.new_mask,
            &mut self.folded,
        )?;
        let dims = out.dims;
        drop(outputs);
        let other_end = t_after.elapsed();
        // Device K/V: grow and write on the device (ONNX Runtime work, counted as model time).
        let t_write = Instant::now();
        traffic += self.model.write_kv(self.store.buffers_mut())?;
        model_time += t_write.elapsed();
        let t_rest = Instant::now();
        // Each row advances by its real (unpadded) new tokens.
        for (next, row) in self.next_pos.iter_mut().zip(self.new_mask.chunks(seq)) {
            *next += row.iter().sum::<i64>();
        }
        if let Some(obs) = self.observer.as_deref_mut() {
            obs.step_done(&self.next_pos)?;
        }
        let other = prep + other_end.saturating_sub(score_time + evict_time) + t_rest.elapsed();
        Ok(StepOutput {
            batch: dims.batch,
            seq,
            vocab: dims.vocab,
            past: dims.past,
            timing: StepTiming {
                model: model_time,
                score_update: score_time,
                eviction: evict_time,
                other,
            },
            traffic,
        })
    }

    /// The new tokens' positions fed to the graph `[batch, seq]`.
    fn fed_positions(&self) -> &[i64] {
        match self.positions {
            Positions::Absolute => &self.pos,
            Positions::Rolling => &self.rolling_pos,
        }
    }

    /// Rolling positions of the new tokens and, for a graph that caches keys unrotated, every
    /// layer's key positions, from the cache before this step. Rolling (docs/architecture.md,
    /// "Graph contract"): row b's new tokens take P_b, P_b + 1, ... with P_b the most slots any
    /// layer holds in that row; layer l's cached keys take their rank by original position plus
    /// P_b - used_l(b), so the newest sits right before the new tokens in every layer.
    fn fill_positions(&mut self, seq: usize) {
        let (store, batch) = (&self.store, self.store.batch());
        let top = |b: usize| {
            (0..store.num_layers())
                .map(|l| store.table(l).used(b))
                .max()
                .unwrap_or(0) as i64
        };
        let rolling = self.positions == Positions::Rolling;
        self.rolling_pos.clear();
        if rolling {
            for (b, row) in self.new_mask.chunks(seq).enumerate() {
                let first = top(b);
                let real = row.iter().map(|&m| m != 0);
                self.rolling_pos
                    .extend(real.zip(first..).map(|(r, p)| if r { p } else { 0 }));
            }
        }
        self.key_pos.clear();
        if !self.model.manifest.takes_key_positions() {
            return;
        }
        for l in 0..store.num_layers() {
            let table = store.table(l);
            for b in 0..batch {
                let offset = rolling.then(|| top(b) - table.used(b) as i64);
                table.key_positions(b, offset, &mut self.order, &mut self.key_pos);
            }
        }
    }

    /// Positions within the model's range, ids within its vocabulary.
    fn check_inputs(&self) -> Result<()> {
        let vocab = self.model.manifest.vocab_size;
        let max_pos = self.model.manifest.max_position_embeddings as i64;
        let real = self
            .fed_positions()
            .iter()
            .zip(&self.new_mask)
            .filter(|(_, &m)| m != 0);
        if let Some(p) = real.map(|(p, _)| *p).max() {
            if p >= max_pos {
                return Err(Error::Input(format!(
                    "position {p} is beyond the model's {max_pos} positions; use fewer tokens"
                )));
            }
        }
        if let Some(id) = self.ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            let m = &self.model.manifest;
            let tokenizer = match m.borrowed_tokenizer() {
                Some(t) => format!(
                    "{} (the tokenizer this model borrows; its tokenizer.json is not the model's own)",
                    t.source
                ),
                None => self.model.dir.join("tokenizer.json").display().to_string(),
            };
            return Err(Error::Input(format!(
                "token id {id} is outside the model's vocabulary: vocab_size is {vocab} in {} (ids 0 to {}); the ids come from {tokenizer}: use text or a tokenizer whose ids the model has",
                self.model.dir.join("manifest.json").display(),
                vocab.saturating_sub(1)
            )));
        }
        Ok(())
    }
}

/// Per layer: the observer sees the attention (per query head), the store updates (scores, plan,
/// apply) on the attention folded to KV heads, the observer sees the plan. Returns the time spent
/// in the score update and in the policy.
fn update_cache(
    store: &mut KvStore,
    policies: &LayerPolicies,
    mut observer: Option<&mut dyn StepObserver>,
    out: &StepView<'_>,
    positions: &[i64],
    mask: &[i64],
    folded: &mut Vec<f32>,
) -> Result<(Duration, Duration)> {
    let (mut score_time, mut evict_time) = (Duration::ZERO, Duration::ZERO);
    let (seq, batch, query_heads) = (out.dims.seq, out.dims.batch, out.dims.heads);
    for (l, layer) in out.layers.iter().enumerate() {
        if let Some(obs) = observer.as_deref_mut() {
            obs.attention(l, layer.attention, query_heads, layer.past, store)?;
        }
        // [batch, query heads, past + seq] -> [batch, kv heads, past + seq]: KV head g receives
        // the sum of query heads g*G .. g*G+G-1 (the sums themselves when there are no groups)
        let attention =
            fold_query_heads(layer.attention, batch, query_heads, store.heads(), folded)?;
        let new = NewTokens {
            k: layer.key,
            v: layer.value,
            attention,
            past: layer.past,
            positions,
            mask,
            seq,
        };
        store.update(l, &new, policies.layer(l))?;
        let plan = store.plan();
        score_time += plan.score_time();
        evict_time += plan.policy_time();
        if let Some(obs) = observer.as_deref_mut() {
            obs.planned(l, plan, store)?;
        }
    }
    Ok((score_time, evict_time))
}

/// NLL of `target` under `logits` (log-softmax in f64).
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| ((x as f64) - max).exp()).sum();
    let lse = max + sum.ln();
    lse - logits[target as usize] as f64
}
