//! Speed measurement (design §4): prefill a prompt of P tokens, then G greedy decode steps, timing each.

use std::time::{Duration, Instant};

use crate::decoder::Decoder;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::policy::Policy;
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
    /// Allocated K/V slot bytes at the end.
    pub kv_allocated_bytes: usize,
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

/// Check P + G against the model's positions, up front.
pub fn check_lengths(model: &Model, prompt: usize, gen: usize) -> Result<()> {
    let max = model.manifest.max_position_embeddings;
    if prompt == 0 || gen < 2 {
        return Err(Error::Input(
            "--prompt must be at least 1 and --gen at least 2".into(),
        ));
    }
    if prompt + gen > max {
        return Err(Error::Input(format!(
            "--prompt {prompt} + --gen {gen} = {} is beyond the model's {max} positions; lower them",
            prompt + gen
        )));
    }
    Ok(())
}

/// Prefill `prompt`, then greedy decode until `gen` tokens are generated (the prefill yields the first,
/// so `gen - 1` timed decode steps, as the seed's `generate(max_new_tokens=gen)`), with a fresh cache.
/// `warmup` earlier runs of min(gen, 8) steps are done first and discarded.
pub fn measure(
    model: &mut Model,
    make_policy: &dyn Fn() -> Box<dyn Policy>,
    prompt: &[u32],
    gen: usize,
    warmup: usize,
    mut progress: impl FnMut(usize),
) -> Result<SpeedRun> {
    check_lengths(model, prompt.len(), gen)?;
    for _ in 0..warmup {
        let mut dec = Decoder::new(model, make_policy(), 1)?;
        let out = dec.prefill(&[prompt.to_vec()])?;
        let mut next = argmax(dec.logits_at(0, out.seq - 1));
        for _ in 0..gen.min(8) {
            dec.step(&[next])?;
            next = argmax(dec.logits_at(0, 0));
        }
    }
    let mut dec = Decoder::new(model, make_policy(), 1)?;
    let t0 = Instant::now();
    let out = dec.prefill(&[prompt.to_vec()])?;
    let prefill = t0.elapsed();
    let mut next = argmax(dec.logits_at(0, out.seq - 1));
    let mut steps = Vec::with_capacity(gen);
    for i in 0..gen - 1 {
        let out = dec.step(&[next])?;
        next = argmax(dec.logits_at(0, 0));
        steps.push(out.timing);
        progress(i + 1);
    }
    let total = t0.elapsed();
    Ok(SpeedRun {
        prompt_tokens: prompt.len(),
        prefill,
        steps,
        total,
        kv_bytes: dec.store().held_bytes(),
        kv_allocated_bytes: dec.store().allocated_bytes(),
    })
}
