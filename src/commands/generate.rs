//! `h2o generate`: a prompt's continuation under one policy, streamed to stdout token by token, and a
//! one-line summary (tokens, TTFT, TPOT, K/V held) on stderr. The decode loop is the library's
//! ([`h2o_engine::eval::generate::generate`], the loop `speed` times).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use h2o_engine::eval::data::read_text;
use h2o_engine::eval::generate::{
    check_temperature, check_top_p, generate, prompt_tokens, GenerateRun, Sampling,
};
use h2o_engine::eval::throughput::format_bytes;
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{full_cache_bytes, percentile};

use super::numbers;
use super::ModelArgs;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text (a model that declares a BOS, prepend_bos_token_id, gets it fed first;
    /// Pythia's own models declare none).
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// A UTF-8 text file whose contents are the prompt.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Policy spec of the cache, e.g. full, local:256, h2o:192+64.
    #[arg(long, default_value = "full")]
    pub policy: PolicySpec,
    /// Tokens to generate (exactly this many: no end-of-text stop).
    #[arg(long, default_value_t = 64, value_parser = numbers::count, allow_hyphen_values = true)]
    pub max_new: usize,
    /// 0: greedy (the default); above 0: sample from softmax(logits / T).
    #[arg(long, default_value_t = 0.0, value_parser = parse_temperature, allow_hyphen_values = true)]
    pub temperature: f64,
    /// Nucleus sampling: draw among the most likely tokens whose probabilities reach P, in (0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = parse_top_p, allow_hyphen_values = true)]
    pub top_p: f64,
    /// Seed of the sampling RNG (ChaCha8): the same seed gives the same text. Named rng-seed because
    /// "seed" in this project is the PyTorch project the tool grew from. Default: from the clock,
    /// printed in the summary.
    #[arg(long, value_parser = numbers::seed, allow_hyphen_values = true)]
    pub rng_seed: Option<u64>,
}

fn parse_temperature(s: &str) -> Result<f64, String> {
    let t: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    check_temperature(t).map_err(|e| e.to_string())
}

fn parse_top_p(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    check_top_p(p).map_err(|e| e.to_string())
}

/// A seed from the clock, for a sampled run without `--rng-seed`.
fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_nanos() as u64)
}

fn summary(run: &GenerateRun, spec: &PolicySpec, sampling: &Sampling, full: u64) -> String {
    let steps: Vec<f64> = run
        .steps
        .iter()
        .map(|s| s.total().as_secs_f64() * 1e3)
        .collect();
    let tpot = percentile(&steps, 0.5);
    let tpot = if tpot.is_finite() {
        format!("{tpot:.2} ms")
    } else {
        "- (no decode step)".to_string()
    };
    let how = if sampling.is_greedy() {
        "greedy".to_string()
    } else {
        format!(
            "temperature {} top-p {} rng seed {}",
            sampling.temperature, sampling.top_p, sampling.rng_seed
        )
    };
    format!(
        "{} tokens after a {}-token prompt{} | TTFT {:.1} ms | TPOT {tpot} (median decode step) | K/V held {} ({spec}; full cache {}) | {how}",
        run.tokens.len(),
        run.prompt_tokens,
        run.bos
            .map(|b| format!(" (the declared BOS {b} first)"))
            .unwrap_or_default(),
        run.prefill.as_secs_f64() * 1e3,
        format_bytes(run.kv_bytes as u64),
        format_bytes(full),
    )
}

/// Refuses sampling flags that a greedy run (temperature 0) would ignore.
fn check_sampling_flags(a: &GenerateArgs) -> Result<()> {
    if a.temperature > 0.0 {
        return Ok(());
    }
    if let Some(seed) = a.rng_seed {
        anyhow::bail!("--rng-seed {seed}: a greedy run (--temperature 0, the default) draws nothing; give --temperature above 0 to sample, or drop --rng-seed");
    }
    if a.top_p != 1.0 {
        anyhow::bail!("--top-p {}: a greedy run (--temperature 0, the default) takes the most likely token whatever the nucleus; give --temperature above 0 to sample, or drop --top-p", a.top_p);
    }
    Ok(())
}

pub fn run(a: GenerateArgs) -> Result<()> {
    check_sampling_flags(&a)?;
    let sampling = Sampling {
        temperature: a.temperature,
        top_p: a.top_p,
        rng_seed: a.rng_seed.unwrap_or_else(clock_seed),
    };
    let text = match (&a.prompt, &a.file) {
        (_, Some(f)) => read_text(f)?,
        (Some(p), None) => p.clone(),
        (None, None) => anyhow::bail!("give the prompt: --prompt TEXT or --file PATH"),
    };
    let (_rt, mut model) = a.model.load()?;
    let man = model.manifest.clone();
    a.policy
        .validate(man.num_layers, man.max_position_embeddings)?;
    let prompt = prompt_tokens(&model, &text)?;
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let mut on_text = |piece: &str| match out.write_all(piece.as_bytes()).and_then(|()| out.flush())
    {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            write_error = Some(e);
            ControlFlow::Break(())
        }
    };
    let run = generate(
        &mut model,
        &a.policy,
        &prompt,
        a.max_new,
        sampling,
        &mut on_text,
    );
    if let Some(e) = write_error {
        return Err(e).context("cannot write the text to stdout");
    }
    let run = run?;
    writeln!(out).context("cannot write the text to stdout")?;
    let full = full_cache_bytes(
        man.num_layers,
        man.kv_heads(),
        man.head_dim,
        man.dtype.size(),
        run.prompt_tokens + run.tokens.len() - 1,
        1,
    );
    errln!("{}", summary(&run, &a.policy, &sampling, full));
    Ok(())
}
