//! `h2o ppl`: streaming perplexity of one policy, with per-token NLLs and an optional eviction trace as JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use serde_json::json;

use h2o_engine::eval::data::TextMode;
use h2o_engine::experiment::{Counting, Experiment, Lab, PeakMemory, Plan, PplPlan};
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{counting_name, text_mode_name};

use super::numbers;
use super::{check_outputs, data_flag, resolve_data, start_runtime, write_to, Bars, ModelArgs};

#[derive(Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file (WikiText-2 raw test); default: $H2O_DATA.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which text of the file: `file` (as it is) or `seed` (the seed's: the dataset's rows joined
    /// up to 16,384 characters; see README "Lining up with the seed").
    #[arg(long, value_enum, default_value_t = TextMode::File)]
    pub text: TextMode,
    /// Tokens from the start of the text (N tokens give N-1 predictions; a model that declares a
    /// BOS gets it fed first, unscored, so text token i sits at position i+1).
    #[arg(long, default_value_t = 2048, value_parser = numbers::count, allow_hyphen_values = true)]
    pub tokens: usize,
    /// Policy: full, local:R, sink:S+R, h2o:H+R, h2o-layer:H+R, tova:B, tova-head:B, scissor:B,
    /// knorm:B, random:B, options @pyramid, @rng=N, @window=W, @recent=R (README "Eviction policies").
    #[arg(long, default_value = "full")]
    pub policy: PolicySpec,
    /// Budget counting, as bench's: `ours` (keep B, attend B + the new token) or `seed` (B counts
    /// the new token: the policy runs with one token less, e.g. the seed's Local (256) as local:255).
    #[arg(long, value_enum, default_value_t = Counting::Ours)]
    pub counting: Counting,
    /// Write {policy (as run), label, model, n_tokens, text, data, counting, prepend_bos_token_id,
    /// nll[], ppl, kv_bytes, ...} here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the eviction trace (h2o-evict-trace/1; its tokens as fed, a declared BOS first) here,
    /// for export/reference.py --replay.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

pub fn run(a: PplArgs) -> Result<()> {
    let exp = Experiment::of(a.policy).counted(a.counting).ok_or_else(|| {
        anyhow::anyhow!("--counting seed: {} has a budget of 1, which in the seed's counting attends only the new token and keeps nothing; use a budget of at least 2", a.policy)
    })?;
    let setup = a.model.setup(resolve_data(a.data.as_deref())?, a.text)?;
    let outputs = check_outputs(
        &[("--trace", &a.trace), ("--json", &a.json)],
        &[(data_flag(&a.data), &setup.data), ("--model", &setup.model)],
    )?;
    let plan = Plan {
        ppl: Some(PplPlan {
            tokens: a.tokens,
            trace: a.trace.is_some(),
        }),
        speed: None,
    };
    let rt = start_runtime(&setup.model)?;
    let mut lab = Lab::load_for(&rt, &setup, &[plan], &[exp.spec])?;
    let spec = exp.spec;
    let mut bars = Bars::new(format!("{spec}"));
    let outcome = lab.run(&exp, &plan, PeakMemory::SharedProcess, &mut |p| {
        bars.show(p)
    });
    bars.clear();
    let outcome = outcome?;
    let r = &outcome.result;
    let (Some(f), Some(m), Some(nlls)) = (&r.ppl, &r.memory, &r.nlls) else {
        anyhow::bail!("the perplexity run gave no figures");
    };
    let (man, config) = (&lab.model().manifest, &lab.model().config);
    let counted = match a.counting {
        Counting::Ours => String::new(),
        Counting::Seed => format!(" ({})", exp.label),
    };
    outln!(
        "{}  {spec}{counted}  tokens {}  PPL {:.4}  mean NLL {:.6}  KV held {} bytes",
        man.name,
        a.tokens,
        f.ppl,
        f.mean_nll,
        m.kv_bytes
    );
    if let Some(path) = &a.trace {
        let Some(trace) = &outcome.trace else {
            anyhow::bail!("the perplexity run recorded no eviction trace");
        };
        let bytes = serde_json::to_string(trace)?;
        write_to("--trace", &outputs.target(path), bytes.as_bytes())?;
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "policy": spec,
            "label": exp.label,
            "model": man.name,
            "n_tokens": a.tokens,
            "text": text_mode_name(setup.text),
            "data": setup.data.display().to_string(),
            "counting": counting_name(a.counting),
            "prepend_bos_token_id": man.prepend_bos_token_id,
            "nll": nlls,
            "ppl": f.ppl,
            "kv_bytes": m.kv_bytes,
            "onnxruntime": rt.version,
            "provider": config.provider.to_string(),
            "threads": config.intra_threads,
        });
        write_to(
            "--json",
            &outputs.target(path),
            serde_json::to_string_pretty(&doc)?.as_bytes(),
        )?;
    }
    Ok(())
}
