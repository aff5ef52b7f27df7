//! Speed measurement (design §4): prefill a prompt of P tokens, then G greedy decode steps, timing each.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::decoder::Decoder;
use crate::error::{Error, LengthError, Result, Setting};
use crate::model::{Model, Traffic};
use crate::policy::PolicySpec;
use crate::timing::StepTiming;

/// Raw timings of one speed run.
#[derive(Debug, Clone)]
pub struct SpeedRun {
    pub prompt_tokens: usize,
    /// Prefill of the prompt (time to first token).
    pub prefill: Duration,
    /// One entry per decode step.
    pub steps: Vec<StepTiming>,
    /// Wall time of the whole generate loop, prefill included (the seed's TPOT numerator).
    pub total: Duration,
    /// Exact K/V bytes held at the end.
    pub kv_bytes: usize,
    /// Bytes the prefill moved between host and device, and all timed decode steps together.
    pub prefill_traffic: Traffic,
    pub decode_traffic: Traffic,
}

/// Index of the largest logit (greedy decoding).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Refuses a prompt of 0 tokens, fewer than 2 generated tokens, and P + G beyond the model's positions.
pub fn check_lengths(max_positions: usize, prompt: usize, gen: usize) -> Result<(), LengthError> {
    for (setting, value, min) in [
        (Setting::PromptTokens, prompt, 1),
        (Setting::GenTokens, gen, 2),
    ] {
        if value < min {
            return Err(LengthError::TooFew {
                setting,
                value,
                min,
            });
        }
    }
    if prompt.saturating_add(gen) > max_positions {
        return Err(LengthError::BeyondPositions {
            parts: vec![(Setting::PromptTokens, prompt), (Setting::GenTokens, gen)],
            max_positions,
        });
    }
    Ok(())
}

/// Prefill `prompt`, then greedy decode until `gen` tokens are generated (the prefill yields the first,
/// so `gen - 1` timed decode steps, as the seed's `generate(max_new_tokens=gen)`), with a fresh cache
/// of `spec`'s policy. `warmup` earlier runs of min(gen, 8) steps are done first and discarded.
/// `progress` is called after every timed step; `Break` stops the run with [`Error::Cancelled`].
pub fn measure(
    model: &mut Model,
    spec: &PolicySpec,
    prompt: &[u32],
    gen: usize,
    warmup: usize,
    mut progress: impl FnMut(usize) -> ControlFlow<()>,
) -> Result<SpeedRun> {
    check_lengths(model.manifest.max_position_embeddings, prompt.len(), gen)?;
    for _ in 0..warmup {
        let mut dec = Decoder::new(model, spec.build(), 1)?;
        let out = dec.prefill(&[prompt.to_vec()])?;
        let mut next = argmax(dec.logits_at(0, out.seq - 1));
        for _ in 0..gen.min(8) {
            dec.step(&[next])?;
            next = argmax(dec.logits_at(0, 0));
        }
    }
    let mut dec = Decoder::new(model, spec.build(), 1)?;
    let t0 = Instant::now();
    let out = dec.prefill(&[prompt.to_vec()])?;
    let prefill = t0.elapsed();
    let prefill_traffic = out.traffic;
    let mut next = argmax(dec.logits_at(0, out.seq - 1));
    let mut steps = Vec::with_capacity(gen);
    let mut decode_traffic = Traffic::default();
    for i in 0..gen - 1 {
        let out = dec.step(&[next])?;
        next = argmax(dec.logits_at(0, 0));
        steps.push(out.timing);
        decode_traffic += out.traffic;
        if progress(i + 1).is_break() {
            return Err(Error::Cancelled);
        }
    }
    let total = t0.elapsed();
    Ok(SpeedRun {
        prompt_tokens: prompt.len(),
        prefill,
        steps,
        total,
        kv_bytes: dec.store().held_bytes(),
        prefill_traffic,
        decode_traffic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(check_lengths(2048, 512, 1024), Ok(()));
        assert_eq!(check_lengths(2048, 2000, 48), Ok(()));
        assert!(matches!(
            check_lengths(2048, 0, 8),
            Err(LengthError::TooFew {
                setting: Setting::PromptTokens,
                ..
            })
        ));
        assert!(matches!(
            check_lengths(2048, 8, 1),
            Err(LengthError::TooFew {
                setting: Setting::GenTokens,
                min: 2,
                ..
            })
        ));
        assert_eq!(
            check_lengths(2048, 2000, 49).unwrap_err().to_string(),
            "prompt tokens 2000 + generated tokens 49 = 2049 is beyond the model's 2048 positions; lower them"
        );
        assert_eq!(argmax(&[0.5, 2.0, 2.0, -1.0]), 1);
    }
}
