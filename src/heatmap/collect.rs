//! Collecting heatmap data from the engine: the tokens streamed (a declared BOS first), each step's
//! attention row with the full cache, per layer, mean over heads or one head; per-head accumulated
//! attention; what a policy keeps at the end.

use crate::cache::KvStore;
use crate::decoder::{kv_head_of, Decoder, StepObserver};
use crate::error::{Error, Result};
use crate::eval::bos::{fed, lead};
use crate::eval::data::tokenize;
use crate::model::Model;
use crate::policy::{LayerPolicies, Policy};

use super::{AttentionMatrix, HeatmapError};

/// Which heads a heatmap shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadChoice {
    Mean,
    One(usize),
}

impl std::str::FromStr for HeadChoice {
    type Err = HeatmapError;
    fn from_str(s: &str) -> std::result::Result<Self, HeatmapError> {
        if s.eq_ignore_ascii_case("mean") {
            return Ok(Self::Mean);
        }
        s.trim()
            .parse()
            .map(Self::One)
            .map_err(|_| HeatmapError::Head(s.to_string()))
    }
}

impl std::fmt::Display for HeadChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mean => f.write_str("mean over heads"),
            Self::One(h) => write!(f, "head {h}"),
        }
    }
}

/// Attention collected for one layer.
#[derive(Debug, Clone)]
pub struct LayerAttention {
    pub layer: usize,
    /// Query x key, rows as chosen by [`HeadChoice`].
    pub matrix: AttentionMatrix,
    /// `[heads][tokens]`: attention each token received from every query so far, its own included
    /// (what H2O accumulates).
    pub accumulated: Vec<Vec<f32>>,
}

/// The tokens a heatmap streams for `text`: the BOS the model declares, if any, first (at position
/// 0, like every other run of that model), then at most `max_tokens` text tokens, all within the
/// model's positions. Text without tokens is refused.
pub fn heatmap_tokens(model: &Model, text: &str, max_tokens: usize) -> Result<Vec<u32>> {
    let mut ids = tokenize(&model.tokenizer, text)?;
    if ids.is_empty() {
        return Err(HeatmapError::EmptyText.into());
    }
    let bos = model.manifest.prepend_bos_token_id;
    let room = model
        .manifest
        .max_position_embeddings
        .saturating_sub(lead(bos));
    ids.truncate(max_tokens.min(room));
    Ok(fed(bos, &ids))
}

/// Stream `tokens` with the full cache (`full` must keep everything) and collect, for each of
/// `layers`, every step's attention row (by absolute position) and the per-head accumulated scores.
pub fn collect_attention(
    model: &mut Model,
    full: Box<dyn Policy>,
    tokens: &[u32],
    layers: &[usize],
    head: HeadChoice,
) -> Result<Vec<LayerAttention>> {
    if tokens.is_empty() {
        return Err(HeatmapError::EmptyText.into());
    }
    let (num_layers, heads) = (model.manifest.num_layers, model.manifest.num_heads);
    for &l in layers {
        if l >= num_layers {
            return Err(HeatmapError::LayerOutOfRange {
                layer: l,
                num_layers,
            }
            .into());
        }
    }
    if let HeadChoice::One(h) = head {
        if h >= heads {
            return Err(HeatmapError::HeadOutOfRange { head: h, heads }.into());
        }
    }
    if full.budget() < tokens.len() {
        return Err(Error::Input(format!(
            "heatmaps need the full cache; policy {} would evict",
            full.spec()
        )));
    }
    let mut dec = Decoder::new(model, full, 1)?;
    dec.set_observer(Box::new(RowCollector::new(
        layers,
        head,
        heads,
        tokens.len(),
    )));
    for &t in tokens {
        dec.step(&[t])?;
    }
    let collector = dec
        .take_observer::<RowCollector>()
        .ok_or_else(|| Error::Input("the heatmap collector was replaced".into()))?;
    Ok(collector.out)
}

/// The decoder's observer for [`collect_attention`]: each step's attention row of the chosen layers,
/// by absolute position (batch row 0; full cache).
struct RowCollector {
    head: HeadChoice,
    /// Tokens fed so far (the row of the current step).
    step: usize,
    out: Vec<LayerAttention>,
    /// `[heads][tokens]` scratch: this step's row per head.
    per_head: Vec<Vec<f32>>,
}

impl RowCollector {
    fn new(layers: &[usize], head: HeadChoice, heads: usize, n: usize) -> Self {
        Self {
            head,
            step: 0,
            out: layers
                .iter()
                .map(|&layer| LayerAttention {
                    layer,
                    matrix: AttentionMatrix::with_capacity(n),
                    accumulated: vec![vec![0.0; n]; heads],
                })
                .collect(),
            per_head: vec![vec![0f32; n]; heads],
        }
    }
}

impl StepObserver for RowCollector {
    fn attention(
        &mut self,
        layer: usize,
        att: &[f32],
        heads: usize,
        past: usize,
        store: &KvStore,
    ) -> Result<()> {
        let i = self.step;
        for la in self.out.iter_mut().filter(|la| la.layer == layer) {
            for (h, row) in self.per_head.iter_mut().enumerate() {
                row[..=i].iter_mut().for_each(|x| *x = 0.0);
                // [batch 1, heads, past + 1]: slot columns, then the new token's own column
                let arow = &att[h * (past + 1)..(h + 1) * (past + 1)];
                // query head h reads the slots of its KV head
                let g = kv_head_of(h, heads, store.heads());
                for (s, &q) in store.positions(layer, 0, g)[..past].iter().enumerate() {
                    if q >= 0 {
                        row[q as usize] = arow[s];
                    }
                }
                row[i] = arow[past];
                for (acc, &x) in la.accumulated[h][..=i].iter_mut().zip(&row[..=i]) {
                    *acc += x;
                }
            }
            let chosen: Vec<f32> = match self.head {
                HeadChoice::One(h) => self.per_head[h][..=i].to_vec(),
                HeadChoice::Mean => (0..=i)
                    .map(|k| self.per_head.iter().map(|r| r[k]).sum::<f32>() / heads as f32)
                    .collect(),
            };
            la.matrix.push_row(&chosen)?;
        }
        Ok(())
    }

    fn step_done(&mut self, _next_positions: &[i64]) -> Result<()> {
        self.step += 1;
        Ok(())
    }
}

/// Run `policy` over `tokens` and return, per layer in `layers`, `[query heads][tokens]` = kept at
/// the end, as the attention pictures draw heads: the cache keeps tokens per KV head, so query head
/// h shows what its KV head h / G kept (G = query heads / KV heads; without groups, its own).
pub fn kept_at_end(
    model: &mut Model,
    policy: impl Into<LayerPolicies>,
    tokens: &[u32],
    layers: &[usize],
) -> Result<Vec<Vec<Vec<bool>>>> {
    let (heads, group) = (
        model.manifest.num_heads,
        model.manifest.num_heads / model.manifest.kv_heads(),
    );
    let mut dec = Decoder::new(model, policy, 1)?;
    for &t in tokens {
        dec.step(&[t])?;
    }
    Ok(layers
        .iter()
        .map(|&l| {
            (0..heads)
                .map(|h| {
                    let mut kept = vec![false; tokens.len()];
                    for &p in dec.store().positions(l, 0, h / group) {
                        if p >= 0 {
                            kept[p as usize] = true;
                        }
                    }
                    kept
                })
                .collect()
        })
        .collect())
}
