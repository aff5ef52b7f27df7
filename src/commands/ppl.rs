//! `h2o ppl`: streaming perplexity of one policy (or several, one after the other), with per-token NLLs
//! and an optional eviction trace as JSON; `--windows N` the perplexity of every N predictions, as a
//! table, a CSV and a plot (the StreamingLLM paper's figure).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use serde_json::json;

use h2o_engine::eval::data::TextMode;
use h2o_engine::eval::ppl::window_ppl;
use h2o_engine::experiment::{Counting, Experiment, Lab, PeakMemory, Plan, PplPlan};
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{counting_name, render_windows, text_mode_name, WindowSeries};

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
    /// knorm:B, random:B, options @pyramid, @rng=N, @window=W, @recent=R, @sinks=S, @normalized,
    /// @skip=N, @rolling (README "Eviction policies", "Rolling positions"). Repeat it to run several
    /// one after the other (then without --json and --trace).
    #[arg(long, default_value = "full")]
    pub policy: Vec<PolicySpec>,
    /// Perplexity of every N consecutive predictions, printed per window and policy (the
    /// StreamingLLM paper's figure; --csv, --plot).
    #[arg(long, value_parser = numbers::count)]
    pub windows: Option<usize>,
    /// With --windows: write the windows as CSV (window_end, then one PPL column per policy).
    #[arg(long, requires = "windows")]
    pub csv: Option<PathBuf>,
    /// With --windows: draw PPL per window against tokens streamed, a line per policy, as PNG.
    #[arg(long, requires = "windows")]
    pub plot: Option<PathBuf>,
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
    if a.policy.len() > 1 && (a.json.is_some() || a.trace.is_some()) {
        anyhow::bail!("--json and --trace record one policy; give one --policy (or leave --json and --trace out to run several)");
    }
    if a.windows == Some(0) {
        anyhow::bail!(
            "--windows is 0; give the number of predictions per window, such as --windows 1024"
        );
    }
    let exps = a
        .policy
        .iter()
        .map(|&spec| {
            Experiment::of(spec).counted(a.counting).ok_or_else(|| {
                anyhow::anyhow!("--counting seed: {spec} has a budget of 1, which in the seed's counting attends only the new token and keeps nothing; use a budget of at least 2")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let setup = a.model.setup(resolve_data(a.data.as_deref())?, a.text)?;
    let outputs = check_outputs(
        &[
            ("--trace", &a.trace),
            ("--json", &a.json),
            ("--csv", &a.csv),
            ("--plot", &a.plot),
        ],
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
    let specs: Vec<PolicySpec> = exps.iter().map(|e| e.spec).collect();
    let mut lab = Lab::load_for(&rt, &setup, &[plan], &specs)?;
    for exp in &exps {
        lab.check(exp)?;
    }
    let mut series = Vec::new();
    for exp in &exps {
        let nlls = run_one(&a, &rt, &setup, &outputs, &mut lab, exp, &plan)?;
        if let Some(w) = a.windows {
            series.push(WindowSeries {
                policy: exp.spec.to_string(),
                points: window_ppl(&nlls, w)
                    .iter()
                    .map(|x| (x.end, x.ppl))
                    .collect(),
            });
        }
    }
    if let Some(w) = a.windows {
        print_windows(&series);
        if let Some(path) = &a.csv {
            write_to(
                "--csv",
                &outputs.target(path),
                windows_csv(&series).as_bytes(),
            )?;
        }
        if let Some(path) = &a.plot {
            let man = &lab.model().manifest;
            let title = format!(
                "{}: perplexity per {w} predictions, {} tokens of {}",
                man.name,
                a.tokens,
                setup.data.file_name().unwrap_or_default().to_string_lossy()
            );
            render_windows(
                &series,
                Some(man.max_position_embeddings),
                &title,
                outputs.target(path),
            )?;
        }
    }
    Ok(())
}

/// The windows row by row: each window's end and every policy's PPL there (`None` past the last
/// window of a shorter run).
fn window_rows(series: &[WindowSeries]) -> Vec<(usize, Vec<Option<f64>>)> {
    let rows = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    (0..rows)
        .map(|r| {
            let end = series
                .iter()
                .find_map(|s| s.points.get(r).map(|p| p.0))
                .unwrap_or(0);
            (
                end,
                series
                    .iter()
                    .map(|s| s.points.get(r).map(|p| p.1))
                    .collect(),
            )
        })
        .collect()
}

/// The windows as a table on stdout: a row per window, a column per policy, each as wide as its
/// spec (at least 10: a PPL below 100,000 with 4 decimals), so three rolling specs fit 80 columns.
fn print_windows(series: &[WindowSeries]) {
    let widths: Vec<usize> = series.iter().map(|s| s.policy.len().max(10)).collect();
    let head: Vec<String> = series
        .iter()
        .zip(&widths)
        .map(|(s, &w)| format!("{:>w$}", s.policy))
        .collect();
    outln!("{:>10} {}", "window end", head.join(" "));
    for (end, ppls) in window_rows(series) {
        let cells: Vec<String> = ppls
            .iter()
            .zip(&widths)
            .map(|(p, &w)| format!("{:>w$}", p.map_or(String::new(), |v| format!("{v:.4}"))))
            .collect();
        outln!("{end:>10} {}", cells.join(" "));
    }
}

/// `window_end,POLICY,...` then a row per window (PPL with 6 decimals).
fn windows_csv(series: &[WindowSeries]) -> String {
    let mut out = String::from("window_end");
    for s in series {
        out.push(',');
        out.push_str(&s.policy);
    }
    out.push('\n');
    for (end, ppls) in window_rows(series) {
        out.push_str(&end.to_string());
        for p in ppls {
            out.push(',');
            if let Some(v) = p {
                out.push_str(&format!("{v:.6}"));
            }
        }
        out.push('\n');
    }
    out
}

/// One policy's run: its line, its --trace and --json; returns its per-token NLLs.
fn run_one(
    a: &PplArgs,
    rt: &h2o_engine::runtime::Runtime,
    setup: &h2o_engine::experiment::Setup,
    outputs: &super::Outputs,
    lab: &mut Lab,
    exp: &Experiment,
    plan: &Plan,
) -> Result<Vec<f64>> {
    let spec = exp.spec;
    let mut bars = Bars::new(format!("{spec}"));
    let outcome = lab.run(exp, plan, PeakMemory::SharedProcess, &mut |p| bars.show(p));
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
        let mut doc = json!({
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
        if let Some(w) = a.windows {
            let windows: Vec<_> = window_ppl(nlls, w)
                .iter()
                .map(|x| json!({"end": x.end, "ppl": x.ppl}))
                .collect();
            doc["windows"] = json!({"predictions": w, "ppl": windows});
        }
        write_to(
            "--json",
            &outputs.target(path),
            serde_json::to_string_pretty(&doc)?.as_bytes(),
        )?;
    }
    Ok(nlls.clone())
}
