//! `h2o ppl`: streaming perplexity of one policy, with per-token NLLs and an optional eviction trace as JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use h2o_engine::decoder::Decoder;
use h2o_engine::eval::data::{load_tokens, resolve_data_path};
use h2o_engine::eval::ppl::streaming_ppl;

use super::{parse_policy, write_atomic, ModelArgs};

#[derive(Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file (WikiText-2 raw test); default: $H2O_DATA.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokens from the start of the text (N tokens give N-1 predictions).
    #[arg(long, default_value_t = 2048)]
    pub tokens: usize,
    /// Policy: full, local:R, sink:S+R, h2o:H+R, h2o-layer:H+R.
    #[arg(long, default_value = "full")]
    pub policy: String,
    /// Write {policy, model, n_tokens, nll[], ppl, kv_bytes, ...} here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the eviction trace (h2o-evict-trace/1) here, for export/reference.py --replay.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

pub fn run(a: PplArgs) -> Result<()> {
    let data = resolve_data_path(a.data.as_deref())?;
    if a.tokens < 2 {
        anyhow::bail!("--tokens must be at least 2 (N tokens give N-1 predictions)");
    }
    let (rt, mut model) = a.model.load()?;
    let max_pos = model.manifest.max_position_embeddings;
    if a.tokens > max_pos {
        anyhow::bail!(
            "--tokens {} is beyond the model's {max_pos} positions; lower --tokens",
            a.tokens
        );
    }
    let (spec, policy) = parse_policy(&a.policy, max_pos)?;
    let tokens = load_tokens(&model.tokenizer, &data, a.tokens)?;
    let (name, layers, heads) = (
        model.manifest.name.clone(),
        model.manifest.num_layers,
        model.manifest.num_heads,
    );
    let mut dec = Decoder::new(&mut model, policy, 1)?;
    if a.trace.is_some() {
        dec.record_trace();
    }
    let bar = indicatif::ProgressBar::new((tokens.len() - 1) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} tokens {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("ppl {spec}"));
    let run = streaming_ppl(&mut dec, &tokens, |i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    println!(
        "{name}  {spec}  tokens {}  PPL {:.4}  mean NLL {:.6}  KV held {} bytes",
        tokens.len(),
        run.ppl,
        run.nlls.iter().sum::<f64>() / run.nlls.len() as f64,
        run.kv_bytes
    );
    if let Some(path) = &a.trace {
        let doc = json!({
            "format": "h2o-evict-trace/1",
            "policy": spec.to_string(),
            "tokens": tokens,
            "layers": layers,
            "heads": heads,
            "steps": run.trace.as_deref().unwrap_or(&[]),
        });
        write_atomic(path, serde_json::to_string(&doc)?.as_bytes())?;
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "policy": spec.to_string(),
            "model": name,
            "n_tokens": tokens.len(),
            "nll": run.nlls,
            "ppl": run.ppl,
            "kv_bytes": run.kv_bytes,
            "onnxruntime": rt.version,
            "provider": dec.model().config.provider.to_string(),
            "threads": dec.model().config.intra_threads,
        });
        write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}
