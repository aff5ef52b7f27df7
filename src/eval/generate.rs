//! Text generation: a prompt's continuation under one policy, token by token, through the decode
//! loop `speed` times ([`super::decode::decode`], batch 1): greedy by default, or sampled with a
//! temperature and top-p from a seeded RNG (ChaCha8), so a run is reproducible from its RNG seed.
//! Text is detokenized incrementally, so a character split over several tokens prints whole.

use std::ops::ControlFlow;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bos::{check_positions, fed, lead};
use super::decode::decode;
use super::speed::argmax;
use crate::decoder::Decoder;
use crate::error::{Error, LengthError, Result, Setting};
use crate::model::Model;
use crate::policy::PolicySpec;
use crate::timing::StepTiming;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0: greedy (the largest logit); above 0: sample from softmax(logits / temperature).
    pub temperature: f64,
    /// Nucleus: sample among the most likely tokens whose probabilities sum to at least `top_p`
    /// (1: all tokens). In (0, 1].
    pub top_p: f64,
    /// Seed of the sampling RNG (unused when greedy).
    pub rng_seed: u64,
}

/// A sampling setting out of range.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature {0} is not allowed; give 0 (greedy) or a positive number")]
    Temperature(f64),
    #[error("top-p {0} is outside (0, 1]; give a probability above 0 and at most 1 (1 = no nucleus cut)")]
    TopP(f64),
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        rng_seed: 0,
    };

    /// Refuses a negative (or NaN, or infinite) temperature and a top-p outside (0, 1].
    pub fn check(&self) -> Result<(), SamplingError> {
        check_temperature(self.temperature)?;
        check_top_p(self.top_p)?;
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A temperature is 0 (greedy) or a finite positive number.
pub fn check_temperature(t: f64) -> Result<f64, SamplingError> {
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err(SamplingError::Temperature(t))
    }
}

/// A top-p is in (0, 1].
pub fn check_top_p(p: f64) -> Result<f64, SamplingError> {
    if p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err(SamplingError::TopP(p))
    }
}

/// Picks tokens as a [`Sampling`] says, with its own RNG and buffers.
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
    /// (probability, token) of the candidates, reused across picks.
    probs: Vec<(f64, u32)>,
}

impl Sampler {
    pub fn new(sampling: Sampling) -> Result<Sampler, SamplingError> {
        sampling.check()?;
        Ok(Sampler {
            sampling,
            rng: ChaCha8Rng::seed_from_u64(sampling.rng_seed),
            probs: Vec::new(),
        })
    }

    /// A uniform draw in [0, 1) (53 random bits).
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next token from `logits`: the largest (greedy), else a draw from the tempered softmax cut
    /// to the top-p nucleus (most likely first; equal probabilities by token id).
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.sampling.is_greedy() {
            return argmax(logits);
        }
        let t = self.sampling.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        self.probs.clear();
        self.probs.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &x)| (((x as f64 - max) / t).exp(), i as u32)),
        );
        self.probs
            .sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let total: f64 = self.probs.iter().map(|p| p.0).sum();
        let (mut kept, mut mass) = (0, 0.0);
        for p in &self.probs {
            kept += 1;
            mass += p.0;
            if mass >= self.sampling.top_p * total {
                break;
            }
        }
        let mut u = self.uniform() * mass;
        for p in &self.probs[..kept] {
            if u < p.0 {
                return p.1;
            }
            u -= p.0;
        }
        self.probs[kept - 1].1
    }
}

/// The prompt's token ids as fed: the text tokenized without special tokens, after the BOS the
/// model declares, if any ([`super::bos`]; Pythia's own models declare none, so nothing is
/// prepended for them). The one place `generate` turns text into ids.
pub fn prompt_tokens(model: &Model, text: &str) -> Result<Vec<u32>> {
    let ids = super::data::tokenize(&model.tokenizer, text)?;
    if ids.is_empty() {
        return Err(Error::Input(
            "the prompt has no tokens; give some text".into(),
        ));
    }
    Ok(fed(model.manifest.prepend_bos_token_id, &ids))
}

/// Incremental detokenization: the text each new token adds, held back while it ends in an
/// incomplete character (a byte-level token may carry part of one).
pub struct TextStream<'t> {
    stream: tokenizers::DecodeStream<
        't,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
}

impl<'t> TextStream<'t> {
    /// A stream that continues `context` (the prompt's ids: a tokenizer that strips a leading space
    /// from the first token sees the continuation in place).
    pub fn new(tokenizer: &'t tokenizers::Tokenizer, context: &[u32]) -> Result<TextStream<'t>> {
        let mut s = TextStream {
            stream: tokenizer.decode_stream(false),
        };
        for &id in context {
            s.push(id)?;
        }
        Ok(s)
    }

    /// The text `id` completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.stream
            .step(id)
            .map_err(|e| Error::Input(format!("detokenizing token {id} failed: {e}")))
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct GenerateRun {
    /// Tokens fed before the generation: the prompt's, the declared BOS included.
    pub prompt_tokens: usize,
    /// The BOS the model declares, fed first (None: nothing was prepended).
    pub bos: Option<u32>,
    /// The generated ids.
    pub tokens: Vec<u32>,
    /// Prefill of the prompt (time to first token).
    pub prefill: Duration,
    /// One entry per decode step (`tokens - 1`).
    pub steps: Vec<StepTiming>,
    pub total: Duration,
    /// Exact K/V bytes held at the end.
    pub kv_bytes: usize,
    /// Bytes of the K/V slot arrays at the end.
    pub kv_allocated_bytes: usize,
}

/// Refuses 0 new tokens and a prompt + continuation beyond the model's positions (as `speed`:
/// prompt + new tokens at most the positions, one position less with a declared BOS, `bos`).
pub fn check_generate_lengths(
    max_positions: usize,
    prompt: usize,
    max_new: usize,
    bos: bool,
) -> Result<(), LengthError> {
    if max_new == 0 {
        return Err(LengthError::TooFew {
            setting: Setting::NewTokens,
            value: 0,
            min: 1,
        });
    }
    check_positions(
        max_positions,
        vec![
            (Setting::PromptTokens, prompt),
            (Setting::NewTokens, max_new),
        ],
        bos,
    )
}

/// Continues `prompt` (the ids as fed, from [`prompt_tokens`]: a model's declared BOS first) by
/// `max_new` tokens under `spec`'s policy (a fresh batch-1 cache), picking as `sampling` says;
/// `on_text` receives the text of each token as soon as it is complete (`Break` stops the run
/// with [`Error::Cancelled`]).
pub fn generate(
    model: &mut Model,
    spec: &PolicySpec,
    prompt: &[u32],
    max_new: usize,
    sampling: Sampling,
    on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<GenerateRun> {
    let bos = model.manifest.prepend_bos_token_id;
    if let Some(b) = bos.filter(|b| prompt.first() != Some(b)) {
        return Err(Error::Input(format!(
            "the model declares the BOS {b} (prepend_bos_token_id), fed first, but the prompt does not start with it; make the prompt's ids with prompt_tokens"
        )));
    }
    let text_ids = &prompt[lead(bos)..];
    check_generate_lengths(
        model.manifest.max_position_embeddings,
        text_ids.len(),
        max_new,
        bos.is_some(),
    )?;
    spec.validate(
        model.manifest.num_layers,
        model.manifest.max_position_embeddings,
    )?;
    let mut sampler = Sampler::new(sampling).map_err(|e| Error::Input(e.to_string()))?;
    let tokenizer = model.tokenizer.clone();
    let mut text = TextStream::new(&tokenizer, text_ids)?;
    let mut failed = None;
    let mut after = |_: usize, new: &[u32]| match text.push(new[0]) {
        Ok(Some(piece)) => on_text(&piece),
        Ok(None) => ControlFlow::Continue(()),
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    };
    let mut dec = Decoder::of_spec(model, spec, 1)?;
    let rows = [prompt.to_vec()];
    let run = decode(
        &mut dec,
        &rows,
        max_new,
        None,
        &mut |_: usize, logits: &[f32]| sampler.pick(logits),
        &mut after,
    );
    if let Some(e) = failed {
        return Err(e);
    }
    let run = run?;
    Ok(GenerateRun {
        prompt_tokens: prompt.len(),
        bos,
        tokens: run.tokens.into_iter().next().unwrap_or_default(),
        prefill: run.prefill,
        steps: run.steps,
        total: run.total,
        kv_bytes: dec.store().held_bytes(),
        kv_allocated_bytes: dec.store().allocated_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_in_range() {
        assert!(Sampling::GREEDY.check().is_ok());
        assert_eq!(check_temperature(0.7), Ok(0.7));
        for t in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(check_temperature(t).is_err(), "{t}");
        }
        assert_eq!(
            check_temperature(-1.0).unwrap_err().to_string(),
            "temperature -1 is not allowed; give 0 (greedy) or a positive number"
        );
        assert_eq!(check_top_p(1.0), Ok(1.0));
        for p in [0.0, -0.5, 1.01, f64::NAN] {
            assert!(check_top_p(p).is_err(), "{p}");
        }
        assert!(Sampler::new(Sampling {
            top_p: 0.0,
            ..Sampling::GREEDY
        })
        .is_err());
    }

    fn sampler(temperature: f64, top_p: f64, rng_seed: u64) -> Sampler {
        Sampler::new(Sampling {
            temperature,
            top_p,
            rng_seed,
        })
        .unwrap()
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        let mut s = sampler(0.0, 0.5, 9);
        assert_eq!(s.pick(&[0.5, 2.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn sampling_is_reproducible_from_its_seed_and_follows_the_probabilities() {
        let logits = [0.0f32, (3f32).ln(), f32::NEG_INFINITY, 0.0];
        // probabilities 0.2, 0.6, 0, 0.2
        let draws = |seed| {
            let mut s = sampler(1.0, 1.0, seed);
            (0..5000).map(|_| s.pick(&logits)).collect::<Vec<u32>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7), "same seed, same tokens");
        assert_ne!(a, draws(8), "another seed, other tokens");
        let count = |t| a.iter().filter(|&&x| x == t).count() as f64 / a.len() as f64;
        assert_eq!(count(2), 0.0, "a zero-probability token is never drawn");
        assert!((count(1) - 0.6).abs() < 0.03, "{}", count(1));
        assert!((count(0) - 0.2).abs() < 0.03, "{}", count(0));
    }

    #[test]
    fn top_p_cuts_to_the_nucleus() {
        let logits = [0.0f32, (3f32).ln(), 0.0, (4f32).ln()];
        // probabilities 1/9, 3/9, 1/9, 4/9: sorted 3, 1, then 0 and 2
        let mut s = sampler(1.0, 0.7, 1);
        let seen: std::collections::BTreeSet<u32> = (0..2000).map(|_| s.pick(&logits)).collect();
        assert_eq!(seen, [1, 3].into(), "4/9 + 3/9 reaches 0.7");
        let mut s = sampler(1.0, 0.3, 1);
        assert!((0..200).all(|_| s.pick(&logits) == 3), "top token alone");
        // a low temperature sharpens towards the largest logit
        let mut s = sampler(0.01, 1.0, 3);
        assert!((0..200).all(|_| s.pick(&logits) == 3));
    }

    #[test]
    fn lengths() {
        assert_eq!(check_generate_lengths(2048, 2000, 48, false), Ok(()));
        assert_eq!(
            check_generate_lengths(2048, 2000, 49, false).unwrap_err().to_string(),
            "prompt tokens 2000 + new tokens 49 = 2049 is beyond the model's 2048 positions; lower them"
        );
        assert_eq!(check_generate_lengths(2048, 2000, 47, true), Ok(()));
        assert_eq!(
            check_generate_lengths(2048, 2000, 48, true).unwrap_err().to_string(),
            "prompt tokens 2000 + new tokens 48 + the model's declared BOS 1 = 2049 is beyond the model's 2048 positions; lower them"
        );
        assert!(matches!(
            check_generate_lengths(2048, 10, 0, false),
            Err(LengthError::TooFew { min: 1, .. })
        ));
    }
}
