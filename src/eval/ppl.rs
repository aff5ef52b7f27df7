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

/// The perplexity of one window of consecutive predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowPpl {
    /// Text tokens streamed at the window's end (the last token it predicts is token `end - 1`).
    pub end: usize,
    /// exp(mean NLL) of the window's predictions.
    pub ppl: f64,
}

/// The perplexity per window of `window` predictions (the last window may be shorter), as the
/// StreamingLLM paper plots it: prediction i (of text token i + 1) falls in window i / `window`.
/// Empty for `window` 0 or no predictions.
pub fn window_ppl(nlls: &[f64], window: usize) -> Vec<WindowPpl> {
    if window == 0 {
        return Vec::new();
    }
    nlls.chunks(window)
        .enumerate()
        .map(|(k, w)| WindowPpl {
            end: k * window + w.len() + 1,
            ppl: perplexity(w),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_of_predictions() {
        let nlls = [0.0, 2.0, 1.0, 3.0, 4.0];
        let w = window_ppl(&nlls, 2);
        let e = |x: f64| x.exp();
        assert_eq!(
            w,
            vec![
                WindowPpl {
                    end: 3,
                    ppl: e(1.0)
                },
                WindowPpl {
                    end: 5,
                    ppl: e(2.0)
                },
                WindowPpl {
                    end: 6,
                    ppl: e(4.0)
                },
            ]
        );
        assert!(window_ppl(&nlls, 0).is_empty());
        assert!(window_ppl(&[], 4).is_empty());
        assert_eq!(
            window_ppl(&nlls, 9),
            vec![WindowPpl {
                end: 6,
                ppl: e(2.0)
            }]
        );
    }
}
