//! Speed measurement (design §4): prefill a prompt of P tokens per row, then G greedy decode steps for
//! a batch of rows decoded together, timing each step.

use std::ops::ControlFlow;
use std::time::Duration;

use super::bos::{check_positions, fed};
use super::decode::decode;
use crate::decoder::Decoder;
use crate::error::{LengthError, Result, Setting};
use crate::model::{Model, Traffic};
use crate::policy::PolicySpec;
use crate::timing::StepTiming;

/// Raw timings of one speed run.
#[derive(Debug, Clone)]
pub struct SpeedRun {
    /// Sequences decoded together.
    pub batch: usize,
    /// Text tokens of the longest prompt (every row's, in a speed plan; a declared BOS not counted).
    pub prompt_tokens: usize,
    /// Prefill of the prompts (time to first token), all its graph runs.
    pub prefill: Duration,
    /// Graph runs of the prefill (1 unless the prompt is fed in chunks).
    pub prefill_runs: usize,
    /// One entry per decode step (a step decodes one token of every row).
    pub steps: Vec<StepTiming>,
    /// Wall time of the whole generate loop, prefill included (the seed's TPOT numerator).
    pub total: Duration,
    /// Exact K/V bytes held by valid entries at the end, all rows.
    pub kv_bytes: usize,
    /// Bytes of the K/V slot arrays at the end (what occupies memory), all rows.
    pub kv_allocated_bytes: usize,
    /// Bytes the prefill moved between host and device, and all timed decode steps together.
    pub prefill_traffic: Traffic,
    pub decode_traffic: Traffic,
    /// The generated tokens of each row.
    pub tokens: Vec<Vec<u32>>,
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

/// Refuses a prompt of 0 tokens, fewer than 2 generated tokens, and P + G beyond the model's
/// positions, with one position more for a model that declares a BOS (`bos`: fed first, at
/// position 0), which the error then names.
pub fn check_lengths(
    max_positions: usize,
    prompt: usize,
    gen: usize,
    bos: bool,
) -> Result<(), LengthError> {
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
    check_positions(
        max_positions,
        vec![(Setting::PromptTokens, prompt), (Setting::GenTokens, gen)],
        bos,
    )
}

/// Prefill `rows` (one prompt of text tokens per sequence, decoded together as one batch; a model
/// that declares a BOS gets it fed first in every row, at the row's position 0, and generates from
/// position P + 1), then greedy decode until every row has `gen` tokens (the prefill yields the first, so `gen - 1` timed decode steps, as the
/// seed's `generate(max_new_tokens=gen)`), with a fresh cache of `spec`'s policy. The prompt is fed
/// in graph runs of at most `prefill_chunk` tokens per row (`None`: one run). `warmup` earlier runs
/// of min(gen, 8) steps on the same rows are done first and discarded. `progress` is called after
/// every timed step; `Break` stops the run with [`Error::Cancelled`].
pub fn measure(
    model: &mut Model,
    spec: &PolicySpec,
    rows: &[Vec<u32>],
    gen: usize,
    warmup: usize,
    prefill_chunk: Option<usize>,
    mut progress: impl FnMut(usize) -> ControlFlow<()>,
) -> Result<SpeedRun> {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let bos = model.manifest.prepend_bos_token_id;
    check_lengths(
        model.manifest.max_position_embeddings,
        longest,
        gen,
        bos.is_some(),
    )?;
    let rows: Vec<Vec<u32>> = rows.iter().map(|r| fed(bos, r)).collect();
    let rows = &rows[..];
    let mut greedy = |_: usize, logits: &[f32]| argmax(logits);
    for _ in 0..warmup {
        let mut dec = Decoder::of_spec(model, spec, rows.len())?;
        let mut quiet = |_: usize, _: &[u32]| ControlFlow::Continue(());
        decode(
            &mut dec,
            rows,
            gen.min(8) + 1,
            prefill_chunk,
            &mut greedy,
            &mut quiet,
        )?;
    }
    let mut dec = Decoder::of_spec(model, spec, rows.len())?;
    let mut after = |done: usize, _: &[u32]| {
        if done > 1 {
            progress(done - 1)
        } else {
            ControlFlow::Continue(())
        }
    };
    let run = decode(&mut dec, rows, gen, prefill_chunk, &mut greedy, &mut after)?;
    Ok(SpeedRun {
        batch: rows.len(),
        prompt_tokens: longest,
        prefill: run.prefill,
        prefill_runs: run.prefill_runs,
        steps: run.steps,
        total: run.total,
        kv_bytes: dec.store().held_bytes(),
        kv_allocated_bytes: dec.store().allocated_bytes(),
        prefill_traffic: run.prefill_traffic,
        decode_traffic: run.decode_traffic,
        tokens: run.tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(check_lengths(2048, 512, 1024, false), Ok(()));
        assert_eq!(check_lengths(2048, 2000, 48, false), Ok(()));
        assert!(matches!(
            check_lengths(2048, 0, 8, false),
            Err(LengthError::TooFew {
                setting: Setting::PromptTokens,
                ..
            })
        ));
        assert!(matches!(
            check_lengths(2048, 8, 1, false),
            Err(LengthError::TooFew {
                setting: Setting::GenTokens,
                min: 2,
                ..
            })
        ));
        assert_eq!(
            check_lengths(2048, 2000, 49, false).unwrap_err().to_string(),
            "prompt tokens 2000 + generated tokens 49 = 2049 is beyond the model's 2048 positions; lower them"
        );
        // a declared BOS takes position 0: one position less for the prompt and the generation
        assert_eq!(check_lengths(2048, 2000, 47, true), Ok(()));
        assert_eq!(
            check_lengths(2048, 2000, 48, true).unwrap_err().to_string(),
            "prompt tokens 2000 + generated tokens 48 + the model's declared BOS 1 = 2049 is beyond the model's 2048 positions; lower them"
        );
        assert_eq!(argmax(&[0.5, 2.0, 2.0, -1.0]), 1);
    }
}
