//! `h2o heatmap`: log-scale attention heatmaps of chosen layers, and what each policy keeps at a budget.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use h2o_engine::eval::data::read_text;
use h2o_engine::heatmap::{
    check_floor, collect_attention, default_layers, heatmap_file_name, heatmap_tokens, kept_at_end,
    kept_file_name, parse_layers, render_attention_heatmap, render_kept_tokens, require_text,
    token_labels, HeadChoice, DEFAULT_TEXT,
};
use h2o_engine::output::{check_folder, check_run, Named, Outputs};
use h2o_engine::policy::{PolicyKind, PolicySpec, Scope};

use super::numbers;
use super::ModelArgs;

#[derive(Args, Debug)]
pub struct HeatmapArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to stream (default: a short punctuation-heavy paragraph shipped with the tool).
    #[arg(long, conflicts_with = "file")]
    pub text: Option<String>,
    /// Read the text from a file instead.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// At most this many tokens from the start of the text (a model that declares a BOS gets it
    /// first, at position 0, labelled with its text, e.g. <|endoftext|>).
    #[arg(long, default_value_t = 120, value_parser = numbers::count, allow_hyphen_values = true)]
    pub max_tokens: usize,
    /// Layers, e.g. 2,16,30 (default: 2, L/2, L-2).
    #[arg(long, allow_hyphen_values = true)]
    pub layers: Option<String>,
    /// A head index or `mean`.
    #[arg(long, default_value = "mean", allow_hyphen_values = true)]
    pub head: String,
    /// Colour floor of the log scale, in (0, 1): smaller values are drawn at the floor.
    #[arg(long, default_value_t = 1e-4, value_parser = numbers::real, allow_hyphen_values = true)]
    pub floor: f32,
    /// Budget for the kept-tokens picture (default: a quarter of the tokens); compares h2o and local.
    /// Not with --policies (each spec carries its own budget).
    #[arg(long, value_parser = numbers::count, allow_hyphen_values = true, conflicts_with = "policies")]
    pub budget: Option<usize>,
    /// Policies for the kept-tokens picture (default: h2o:B/2+B/2, local:B, sink:4+(B-4) at the budget).
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<PolicySpec>,
    /// Output directory for the PNGs.
    #[arg(long, default_value = "results/heatmaps")]
    pub out: PathBuf,
}

/// h2o:B/2+B/2, local:B and (when B > 4) sink:4+(B-4) at budget B.
fn default_policies(budget: usize) -> Vec<PolicySpec> {
    let mut v = vec![
        PolicyKind::H2o {
            heavy: budget / 2,
            recent: budget - budget / 2,
            scope: Scope::Head,
        },
        PolicyKind::Local { recent: budget },
    ];
    if budget > 4 {
        v.push(PolicyKind::Sink {
            sinks: 4,
            recent: budget - 4,
        });
    }
    v.into_iter().map(PolicySpec::from).collect()
}

/// Refuses settings that cannot give a picture, before the model is loaded.
fn check_settings(a: &HeatmapArgs) -> Result<()> {
    check_floor(a.floor)?;
    if a.max_tokens < 2 {
        bail!(
            "--max-tokens {}: at least 2 tokens are needed to draw attention between tokens",
            a.max_tokens
        );
    }
    if a.budget == Some(0) {
        bail!("--budget 0: the kept-tokens picture needs a budget of at least 1 token (and below the tokens drawn)");
    }
    Ok(())
}

/// Creates the output folder and refuses picture paths that cannot be written (a directory in
/// the way, a read-only file, a FIFO with no reader, a file the run reads: the text or a model
/// file), before anything is drawn. Returns the pictures prepared (a FIFO open), for the writes.
fn prepare_out(a: &HeatmapArgs, layers: &[usize]) -> Result<Outputs> {
    check_folder(&a.out).map_err(|e| e.flag("--out"))?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("--out: cannot create the folder {}", a.out.display()))?;
    let pictures: Vec<PathBuf> = layers
        .iter()
        .flat_map(|&l| [heatmap_file_name(l), kept_file_name(l)])
        .map(|name| a.out.join(name))
        .collect();
    let outputs: Vec<Named<'_>> = pictures
        .iter()
        .map(|path| Named {
            flag: "--out",
            path,
        })
        .collect();
    let mut inputs = vec![Named {
        flag: "--model",
        path: &a.model.model,
    }];
    if let Some(path) = &a.file {
        inputs.push(Named {
            flag: "--file",
            path,
        });
    }
    Ok(check_run(&outputs, &inputs)?)
}

/// The kept-tokens picture's budget: `--budget`, else a quarter of the `n` tokens (at least 2);
/// one that keeps every token is refused, naming where it came from.
fn kept_budget(given: Option<usize>, n: usize) -> Result<usize> {
    let budget = given.unwrap_or((n / 4).max(2));
    if budget >= n {
        let what = match given {
            Some(_) => format!("--budget {budget}"),
            None => format!("the default budget, {budget} (a quarter of the tokens, at least 2),"),
        };
        bail!("{what} keeps every one of the {n} tokens; pass a smaller --budget or more tokens (--max-tokens, a longer text)");
    }
    Ok(budget)
}

pub fn run(a: HeatmapArgs) -> Result<()> {
    check_settings(&a)?;
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_text(f)?,
        (None, None) => DEFAULT_TEXT.to_string(),
    };
    require_text(&text)?;
    let (_rt, mut model) = a.model.load()?;
    let man = model.manifest.clone();
    let layers = match &a.layers {
        Some(s) => parse_layers(s, man.num_layers)?,
        None => default_layers(man.num_layers),
    };
    let head: HeadChoice = a.head.parse()?;
    let outputs = prepare_out(&a, &layers)?;
    let tokens = heatmap_tokens(&model, &text, a.max_tokens)?;
    let labels = token_labels(&model.tokenizer, &tokens);
    let data = collect_attention(
        &mut model,
        PolicySpec::FULL.kind.build(),
        &tokens,
        &layers,
        head,
    )?;
    let n = tokens.len();
    let (specs, kept_title) = if a.policies.is_empty() {
        let budget = kept_budget(a.budget, n)?;
        (default_policies(budget), format!("kept at budget {budget}"))
    } else {
        (a.policies.clone(), "kept by each policy".to_string())
    };
    let mut kept_by_policy = Vec::new();
    for spec in &specs {
        spec.validate(man.num_layers, man.max_position_embeddings)?;
        kept_by_policy.push((
            spec.to_string(),
            kept_at_end(&mut model, spec.build(man.num_layers), &tokens, &layers)?,
        ));
    }
    for (i, la) in data.iter().enumerate() {
        let path = a.out.join(heatmap_file_name(la.layer));
        let title = format!(
            "{} - layer {} - {} ({} tokens)",
            man.name, la.layer, head, n
        );
        let out = outputs.target(&path);
        render_attention_heatmap(&la.matrix, &labels, &title, a.floor, out).context("--out")?;
        outln!("{}", path.display());
        let kept: Vec<(String, Vec<Vec<bool>>)> = kept_by_policy
            .iter()
            .map(|(s, k)| (s.clone(), k[i].clone()))
            .collect();
        let path = a.out.join(kept_file_name(la.layer));
        let title = format!(
            "{} - layer {} - accumulated attention per head; {kept_title}",
            man.name, la.layer
        );
        let out = outputs.target(&path);
        render_kept_tokens(&la.accumulated, &labels, &kept, &title, out).context("--out")?;
        outln!("{}", path.display());
    }
    Ok(())
}
