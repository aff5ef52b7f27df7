//! The decode loop `speed` and `generate` share: prefill a batch of prompts (in one graph run, or in
//! chunks of the prompt), then one token per row per step; the caller picks each row's next token
//! from its logits (greedy, or sampled) and sees the tokens as they come.
//!
//! Every row generates the same number of tokens, so the rows finish together: no row waits on
//! another and none runs past its length. Rows may have prompts of different lengths (shorter ones
//! are padded on the right in the prefill runs, and the padding is never cached).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::decoder::Decoder;
use crate::error::{Error, Result};
use crate::model::Traffic;
use crate::timing::StepTiming;

/// What a decode run gives.
#[derive(Debug, Clone)]
pub struct DecodeRun {
    /// Time of the prefill's graph runs (time to first token, picks excluded).
    pub prefill: Duration,
    /// Graph runs the prefill took (1 without a chunk).
    pub prefill_runs: usize,
    /// One entry per decode step (`gen - 1`).
    pub steps: Vec<StepTiming>,
    /// Wall time of the whole run, prefill and picks included.
    pub total: Duration,
    /// The generated tokens of each row, `[batch][gen]`.
    pub tokens: Vec<Vec<u32>>,
    /// Bytes between host and device: the prefill's runs, and the decode steps together.
    pub prefill_traffic: Traffic,
    pub decode_traffic: Traffic,
}

/// Which tokens of each prompt the prefill run starting at prompt token `start` feeds: rows whose
/// prompt is shorter than `start` feed nothing (all padding).
fn prefill_rows(prompts: &[Vec<u32>], start: usize, end: usize) -> Vec<Vec<u32>> {
    prompts
        .iter()
        .map(|p| p[start.min(p.len())..end.min(p.len())].to_vec())
        .collect()
}

/// Feeds `prompts` (one per row of `dec`'s batch) in runs of at most `chunk` tokens per row (`None`:
/// one run) and picks each row's first generated token after the run that holds its last prompt
/// token. Returns the first tokens, the prefill time, its graph runs and its traffic.
fn prefill(
    dec: &mut Decoder<'_>,
    prompts: &[Vec<u32>],
    chunk: Option<usize>,
    pick: &mut dyn FnMut(usize, &[f32]) -> u32,
) -> Result<(Vec<u32>, Duration, usize, Traffic)> {
    if prompts.iter().any(Vec::is_empty) {
        return Err(Error::Input(
            "every row needs at least one prompt token".into(),
        ));
    }
    if chunk == Some(0) {
        return Err(Error::Input(
            "a prefill chunk of 0 tokens feeds nothing".into(),
        ));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let chunk = chunk.unwrap_or(longest);
    let mut first = vec![None; prompts.len()];
    let (mut time, mut runs, mut start) = (Duration::ZERO, 0, 0);
    let mut traffic = Traffic::default();
    while start < longest {
        let end = start.saturating_add(chunk).min(longest);
        let rows = prefill_rows(prompts, start, end);
        // logits only from the earliest prompt end in this run (every row's is the last token when
        // the prompts are equally long), else the run's last token: the LM head skips the rest
        let from = prompts
            .iter()
            .filter(|p| p.len() > start && p.len() <= end)
            .map(|p| p.len() - 1 - start)
            .min()
            .unwrap_or(end - start - 1);
        let t = Instant::now();
        traffic += dec.prefill_from(&rows, from)?.traffic;
        time += t.elapsed();
        runs += 1;
        for (b, p) in prompts.iter().enumerate() {
            if first[b].is_none() && p.len() <= end {
                first[b] = Some(pick(b, dec.logits_at(b, p.len() - 1 - start)));
            }
        }
        start = end;
    }
    let first = first.into_iter().map(|t| t.unwrap_or_default()).collect();
    Ok((first, time, runs, traffic))
}

/// Prefill `prompts` into `dec` (a fresh decoder of batch `prompts.len()`), then decode until every
/// row has `gen` tokens: the prefill gives the first, then `gen - 1` steps feed each row's last
/// token. `pick(row, logits)` chooses a row's next token; `after(done, tokens)` sees the tokens
/// just chosen (one per row) with `done` tokens per row generated so far; `Break` stops the run
/// with [`Error::Cancelled`].
pub fn decode(
    dec: &mut Decoder<'_>,
    prompts: &[Vec<u32>],
    gen: usize,
    prefill_chunk: Option<usize>,
    pick: &mut dyn FnMut(usize, &[f32]) -> u32,
    after: &mut dyn FnMut(usize, &[u32]) -> ControlFlow<()>,
) -> Result<DecodeRun> {
    if gen == 0 {
        return Err(Error::Input(
            "decode needs at least one token to generate".into(),
        ));
    }
    let t0 = Instant::now();
    let (mut next, prefill_time, prefill_runs, prefill_traffic) =
        prefill(dec, prompts, prefill_chunk, pick)?;
    let mut tokens: Vec<Vec<u32>> = next
        .iter()
        .map(|&t| {
            let mut row = Vec::with_capacity(gen);
            row.push(t);
            row
        })
        .collect();
    if after(1, &next).is_break() {
        return Err(Error::Cancelled);
    }
    let mut steps = Vec::with_capacity(gen - 1);
    let mut decode_traffic = Traffic::default();
    for done in 2..=gen {
        let out = dec.step(&next)?;
        steps.push(out.timing);
        decode_traffic += out.traffic;
        for (b, (t, row)) in next.iter_mut().zip(&mut tokens).enumerate() {
            *t = pick(b, dec.logits_at(b, 0));
            row.push(*t);
        }
        if after(done, &next).is_break() {
            return Err(Error::Cancelled);
        }
    }
    Ok(DecodeRun {
        prefill: prefill_time,
        prefill_runs,
        steps,
        total: t0.elapsed(),
        tokens,
        prefill_traffic,
        decode_traffic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_rows_cut_each_prompt() {
        let p = vec![vec![1, 2, 3, 4, 5], vec![6, 7], vec![8, 9, 10]];
        assert_eq!(
            prefill_rows(&p, 0, 2),
            vec![vec![1, 2], vec![6, 7], vec![8, 9]]
        );
        assert_eq!(prefill_rows(&p, 2, 4), vec![vec![3, 4], vec![], vec![10]]);
        assert_eq!(prefill_rows(&p, 4, 5), vec![vec![5], vec![], vec![]]);
    }
}
