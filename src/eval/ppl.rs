//! Streaming perplexity (design §4): token by token from the first token, NLL in f64, per-token NLLs kept.
//! A model that declares a BOS gets it fed first and its prediction unscored ([`super::bos`]).

use std::ops::ControlFlow;

use super::bos::{fed, lead};
use crate::decoder::{nll, Decoder, TraceStep};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::policy::PolicySpec;

/// Result of a streaming perplexity run.
#[derive(Debug, Clone)]
pub struct PplRun {
    /// NLL of text token i+1 given text tokens 0..=i (after the declared BOS, if any) under the
    /// compressed cache; N text tokens give N-1 values.
    pub nlls: Vec<f64>,
    pub ppl: f64,
    pub trace: Option<Vec<TraceStep>>,
    /// Exact K/V bytes held at the end.
    pub kv_bytes: usize,
}

/// exp(mean NLL).
pub fn perplexity(nlls: &[f64]) -> f64 {
    if nlls.is_empty() {
        return f64::NAN;
    }
    (nlls.iter().sum::<f64>() / nlls.len() as f64).exp()
}

/// Stream the text `tokens` through `dec` one at a time (batch 1): step i feeds token i and scores
/// token i+1. For a model that declares a BOS the BOS is fed first, at position 0, and its
/// prediction is not scored: text token i sits at position i+1 and N text tokens still give N-1
/// NLLs. `progress` is called after every step with the number of predictions scored so far;
/// `Break` stops the run with [`Error::Cancelled`].
pub fn streaming_ppl(
    dec: &mut Decoder<'_>,
    tokens: &[u32],
    mut progress: impl FnMut(usize) -> ControlFlow<()>,
) -> Result<PplRun> {
    if tokens.len() < 2 {
        return Err(Error::Input(
            "perplexity needs at least 2 tokens (N tokens give N-1 predictions)".into(),
        ));
    }
    if dec.store().batch() != 1 {
        return Err(Error::Input("streaming perplexity runs at batch 1".into()));
    }
    let bos = dec.model().manifest.prepend_bos_token_id;
    let (ids, first_scored) = (fed(bos, tokens), lead(bos));
    let mut nlls = Vec::with_capacity(tokens.len() - 1);
    for i in 0..ids.len() - 1 {
        dec.step(&ids[i..=i])?;
        if i >= first_scored {
            nlls.push(nll(dec.logits_at(0, 0), ids[i + 1]));
        }
        if progress(nlls.len()).is_break() {
            return Err(Error::Cancelled);
        }
    }
    let ppl = perplexity(&nlls);
    Ok(PplRun {
        nlls,
        ppl,
        trace: dec.trace().map(|t| t.to_vec()),
        kv_bytes: dec.store().held_bytes(),
    })
}

/// Streaming perplexity of `spec`'s policy on `tokens` with a fresh batch-1 cache (see
/// [`streaming_ppl`]); with `trace`, the eviction trace is recorded and returned.
pub fn measure_ppl(
    model: &mut Model,
    spec: &PolicySpec,
    tokens: &[u32],
    trace: bool,
    progress: impl FnMut(usize) -> ControlFlow<()>,
) -> Result<PplRun> {
    let mut dec = Decoder::of_spec(model, spec, 1)?;
    if trace {
        dec.record_trace();
    }
    streaming_ppl(&mut dec, tokens, progress)
}
