//! Step observers: what wants to look inside a decoder step (attention rows for heatmaps and tests, the
//! eviction trace) hangs off one optional observer instead of decoder flags.

use std::any::Any;

use crate::cache::{KvStore, LayerPlan};
use crate::error::Result;

/// Sees each layer of a step between the graph run and the end of the step. Every method defaults to
/// doing nothing.
pub trait StepObserver: Any {
    /// After the run, before layer `layer`'s cache update: its attention sums per query head,
    /// `[batch, heads, past + seq]`, and the store as the graph saw that layer. The store holds KV
    /// heads: query head `h` reads KV head `h / (heads / store.heads())`, so its column `s < past`
    /// is slot `s` of `store.positions(layer, b, h / group)` (see [`kv_head_of`]).
    fn attention(
        &mut self,
        _layer: usize,
        _attention: &[f32],
        _heads: usize,
        _past: usize,
        _store: &KvStore,
    ) -> Result<()> {
        Ok(())
    }

    /// After layer `layer`'s cache update, with the plan that was applied and the store after it.
    fn planned(&mut self, _layer: usize, _plan: &LayerPlan, _store: &KvStore) -> Result<()> {
        Ok(())
    }

    /// At the end of the step, with each row's next position.
    fn step_done(&mut self, _next_positions: &[i64]) -> Result<()> {
        Ok(())
    }
}

/// The KV head query head `h` of `heads` reads in a store of `kv_heads` (Hugging Face's repeat_kv
/// order: consecutive query heads share one).
pub fn kv_head_of(h: usize, heads: usize, kv_heads: usize) -> usize {
    h / (heads / kv_heads.max(1)).max(1)
}

/// One step of an eviction trace (format h2o-evict-trace/1, batch row 0): positions evicted per layer
/// and head.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceStep {
    pub pos: i64,
    pub evicted: Vec<Vec<Vec<i64>>>,
}

/// The trace format's name.
pub const TRACE_FORMAT: &str = "h2o-evict-trace/1";

/// An eviction trace as a file (format h2o-evict-trace/1, what `h2o ppl --trace` writes and
/// export/h2o_export/trace.py reads and replays): `tokens` as fed, position p holding tokens[p]
/// (for a model that declares a BOS, the BOS first and `prepend_bos_token_id` set; the field is
/// left out for a model without one, as in the reference's traces). Fields in alphabetical order,
/// as the file had them before it was a type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceFile {
    pub format: &'static str,
    pub heads: usize,
    pub layers: usize,
    pub policy: crate::policy::PolicySpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepend_bos_token_id: Option<u32>,
    pub steps: Vec<TraceStep>,
    pub tokens: Vec<u32>,
}

/// Records the positions each step evicts in batch row 0, from the plans (steps that evict nothing are
/// left out).
#[derive(Debug, Default, Clone)]
pub struct EvictionTrace {
    steps: Vec<TraceStep>,
    /// This step's `[layer][head]` evicted positions.
    current: Vec<Vec<Vec<i64>>>,
}

impl EvictionTrace {
    pub fn steps(&self) -> &[TraceStep] {
        &self.steps
    }
}

impl StepObserver for EvictionTrace {
    fn planned(&mut self, layer: usize, plan: &LayerPlan, _store: &KvStore) -> Result<()> {
        if self.current.len() <= layer {
            self.current.resize(layer + 1, Vec::new());
        }
        let heads = &mut self.current[layer];
        heads.resize(plan.heads(), Vec::new());
        for (h, ev) in heads.iter_mut().enumerate() {
            ev.clear();
            ev.extend_from_slice(plan.evicted(0, h));
        }
        Ok(())
    }

    fn step_done(&mut self, next_positions: &[i64]) -> Result<()> {
        if self.current.iter().any(|l| l.iter().any(|v| !v.is_empty())) {
            self.steps.push(TraceStep {
                pos: next_positions[0] - 1,
                evicted: self.current.clone(),
            });
        }
        Ok(())
    }
}

/// Keeps the last step's attention sums per layer, with the positions their slot columns held.
#[derive(Debug, Default, Clone)]
pub struct AttentionCapture {
    /// The graph's past length in the last step.
    pub past: usize,
    /// Per layer, `[batch, heads, past + seq]`.
    pub attention: Vec<Vec<f32>>,
    /// Per layer, `[batch, heads, past]` per query head (the slots of the KV head it reads): the
    /// position slot `s` held when the graph ran (-1 = empty).
    pub positions: Vec<Vec<i64>>,
}

impl StepObserver for AttentionCapture {
    fn attention(
        &mut self,
        layer: usize,
        attention: &[f32],
        heads: usize,
        past: usize,
        store: &KvStore,
    ) -> Result<()> {
        if layer == 0 {
            self.attention.clear();
            self.positions.clear();
        }
        self.past = past;
        self.attention.push(attention.to_vec());
        let mut pos = Vec::with_capacity(store.batch() * heads * past);
        for b in 0..store.batch() {
            for h in 0..heads {
                let g = kv_head_of(h, heads, store.heads());
                pos.extend_from_slice(&store.positions(layer, b, g)[..past]);
            }
        }
        self.positions.push(pos);
        Ok(())
    }
}
