//! `h2o bench`: a list of experiments on one model and data file; each experiment runs in its own child
//! process (`h2o bench-one`) so its peak memory is its own; rows are appended to results/ as they finish.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use h2o_engine::eval::data::{load_tokens, resolve_data_path};
use h2o_engine::eval::memory::peak_rss_bytes;
use h2o_engine::eval::ppl::streaming_ppl;
use h2o_engine::eval::speed::{check_lengths, measure};
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{
    breakdown_table, default_experiments, full_cache_bytes, main_table, memory_table, run_stem,
    ExperimentResult, ExperimentStatus, MachineInfo, MemoryFigures, ModelInfo, PplFigures,
    ResultsWriter, RunInfo, RuntimeInfo, Settings, SpeedFigures,
};

use h2o_engine::runtime::Runtime;

use super::{parse_policy, write_atomic, ModelArgs};

/// What one experiment measures (shared by bench, bench-one, ppl-less speed runs).
#[derive(Args, Debug, Clone)]
pub struct MeasureArgs {
    /// Text file (WikiText-2 raw test); default: $H2O_DATA.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokens for streaming perplexity (0 = skip perplexity).
    #[arg(long, default_value_t = 2048)]
    pub ppl_tokens: usize,
    /// Prompt tokens for the speed run (from the start of the data).
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    /// Generated tokens for the speed run (the prefill gives the first; gen-1 timed decode steps).
    #[arg(long, default_value_t = 1024)]
    pub gen: usize,
    /// Untimed warm-up runs (prefill + 8 steps) before the timed one.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// Comma-separated policy specs (default: the seed's ten groups, scaled to the model's positions).
    #[arg(long, value_delimiter = ',')]
    pub exp: Vec<String>,
    /// Directory for <time>-<model>.csv and .json.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Run experiments in this process instead of one child each (peak memory is then cumulative).
    #[arg(long)]
    pub in_process: bool,
}

/// Hidden: one experiment, result as JSON (run by `bench` in a child process).
#[derive(Args, Debug)]
pub struct BenchOneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub measure: MeasureArgs,
    #[arg(long)]
    pub label: String,
    #[arg(long)]
    pub spec: String,
    #[arg(long)]
    pub out: PathBuf,
    /// The bench process that started this one (the child stops if it dies).
    #[arg(long)]
    pub parent_pid: Option<u32>,
}

/// Measure one experiment in this process.
pub fn run_experiment(
    rt: &Runtime,
    model_args: &ModelArgs,
    m: &MeasureArgs,
    label: &str,
    spec_text: &str,
    peak_method: &str,
    parent: Option<u32>,
) -> Result<ExperimentResult> {
    // A child whose bench parent died stops instead of running on and writing a stray result.
    let orphaned = move || parent.is_some_and(|p| std::os::unix::process::parent_id() != p);
    let data = resolve_data_path(m.data.as_deref())?;
    let mut model = model_args.load_on(rt)?;
    let max_pos = model.manifest.max_position_embeddings;
    let (spec, _) = parse_policy(spec_text, max_pos)?;
    check_lengths(&model, m.prompt, m.gen)?;
    let need = m.ppl_tokens.max(m.prompt);
    let tokens = load_tokens(&model.tokenizer, &data, need)?;
    let mut result = ExperimentResult::new(label, spec.to_string());
    result.family = spec.family().to_string();
    result.budget = spec.budget();
    let progress = |msg: String, n: usize| {
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(msg);
        bar
    };
    if m.ppl_tokens > 0 {
        if m.ppl_tokens < 2 || m.ppl_tokens > max_pos {
            bail!("--ppl-tokens must be 0 (skip) or between 2 and the model's {max_pos} positions");
        }
        let bar = progress(format!("{spec} ppl"), m.ppl_tokens - 1);
        let mut dec = h2o_engine::decoder::Decoder::new(&mut model, spec.build(), 1)?;
        let run = streaming_ppl(&mut dec, &tokens[..m.ppl_tokens], |i| {
            bar.set_position(i as u64);
            if i % 64 == 0 && orphaned() {
                std::process::exit(3);
            }
        })?;
        bar.finish_and_clear();
        result.ppl = Some(PplFigures::from_nlls(&run.nlls));
        result.nlls = Some(run.nlls);
    }
    let bar = progress(format!("{spec} speed"), m.gen - 1);
    let make = || spec.build();
    let speed = measure(
        &mut model,
        &make,
        &tokens[..m.prompt],
        m.gen,
        m.warmup,
        |i| {
            bar.set_position(i as u64);
            if i % 64 == 0 && orphaned() {
                std::process::exit(3);
            }
        },
    )?;
    bar.finish_and_clear();
    result.speed = Some(SpeedFigures::from_run(
        speed.prefill,
        speed.prompt_tokens,
        &speed.steps,
    ));
    let man = &model.manifest;
    let full = full_cache_bytes(
        man.num_layers,
        man.num_heads,
        man.head_dim,
        man.dtype.size(),
        m.prompt + m.gen - 1,
        1,
    );
    result.memory = Some(MemoryFigures::new(
        speed.kv_bytes as u64,
        full,
        peak_rss_bytes().unwrap_or(0),
        peak_method,
    ));
    result.status = ExperimentStatus::Ok;
    Ok(result)
}

pub fn run_one(a: BenchOneArgs) -> Result<()> {
    let rt = Runtime::start(&super::project_root())?;
    let r = run_experiment(
        &rt,
        &a.model,
        &a.measure,
        &a.label,
        &a.spec,
        "child process per experiment: VmHWM",
        a.parent_pid,
    )?;
    if a.parent_pid
        .is_some_and(|p| std::os::unix::process::parent_id() != p)
    {
        bail!(
            "the bench process that started this experiment is gone; not writing {}",
            a.out.display()
        );
    }
    write_atomic(&a.out, serde_json::to_string(&r)?.as_bytes())
}

/// The experiments to run: `--exp` specs (labelled by the spec) or the scaled default groups.
pub fn experiments(exp: &[String], max_positions: usize) -> Result<Vec<(String, String)>> {
    if exp.is_empty() {
        return Ok(default_experiments(max_positions));
    }
    exp.iter()
        .map(|s| {
            let spec: PolicySpec = s.parse()?;
            spec.validate(max_positions)?;
            Ok((spec.label(), spec.to_string()))
        })
        .collect()
}

pub fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn pass_model_args(cmd: &mut Command, m: &ModelArgs, threads: usize) {
    cmd.arg("--model")
        .arg(&m.model)
        .arg("--threads")
        .arg(threads.to_string());
    cmd.arg("--provider")
        .arg(&m.provider)
        .arg("--opt-level")
        .arg(&m.opt_level);
}

fn pass_measure_args(cmd: &mut Command, m: &MeasureArgs, data: &Path) {
    cmd.arg("--data").arg(data);
    cmd.arg("--ppl-tokens").arg(m.ppl_tokens.to_string());
    cmd.arg("--prompt").arg(m.prompt.to_string());
    cmd.arg("--gen").arg(m.gen.to_string());
    cmd.arg("--warmup").arg(m.warmup.to_string());
}

pub fn run(a: BenchArgs) -> Result<()> {
    // Everything that can be refused is refused before the first measurement.
    let data = resolve_data_path(a.measure.data.as_deref())?;
    let (rt, model) = a.model.load()?;
    let man = model.manifest.clone();
    let max_pos = man.max_position_embeddings;
    let exps = experiments(&a.exp, max_pos)?;
    check_lengths(&model, a.measure.prompt, a.measure.gen)?;
    if a.measure.ppl_tokens == 1 || a.measure.ppl_tokens > max_pos {
        bail!("--ppl-tokens must be 0 (skip) or between 2 and the model's {max_pos} positions");
    }
    load_tokens(
        &model.tokenizer,
        &data,
        a.measure.ppl_tokens.max(a.measure.prompt),
    )?;
    let threads = model.config.intra_threads;
    let provider = model.config.provider.to_string();
    drop(model);
    let start = chrono::Local::now();
    let run_info = RunInfo {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model: ModelInfo {
            name: man.name.clone(),
            dir: a.model.model.display().to_string(),
            dtype: man.dtype.name().to_string(),
            layers: man.num_layers,
            heads: man.num_heads,
            head_dim: man.head_dim,
            max_positions: max_pos,
        },
        runtime: RuntimeInfo {
            ort_version: rt.version.clone(),
            execution_provider: provider,
            intra_op_threads: threads,
            inter_op_threads: Some(1),
        },
        settings: Settings {
            ppl_tokens: a.measure.ppl_tokens,
            prompt: a.measure.prompt,
            gen: a.measure.gen,
            warmup: a.measure.warmup,
            data_path: data.display().to_string(),
            batch: 1,
            experiments: exps.clone(),
        },
        machine: MachineInfo::collect(),
        git_commit: git_commit(),
        start_time: RunInfo::timestamp(&start),
        command_line: std::env::args().collect(),
    };
    let mut writer = ResultsWriter::create(&a.results, &run_stem(&start, &man.name), run_info)?;
    eprintln!(
        "{} experiments on {} ({} threads, onnxruntime {}); results: {}",
        exps.len(),
        man.name,
        threads,
        rt.version,
        writer.csv_path().display()
    );
    for (i, (label, spec)) in exps.iter().enumerate() {
        eprintln!("[{}/{}] {label} ({spec})", i + 1, exps.len());
        let result = if a.in_process {
            run_experiment(
                &rt,
                &a.model,
                &a.measure,
                label,
                spec,
                "in-process VmHWM (cumulative over experiments)",
                None,
            )
        } else {
            let out = a
                .results
                .join(format!(".exp-{}-{i}.json", std::process::id()));
            let exe = std::env::current_exe().context("cannot find the h2o binary")?;
            let mut cmd = Command::new(exe);
            cmd.arg("bench-one");
            pass_model_args(&mut cmd, &a.model, threads);
            pass_measure_args(&mut cmd, &a.measure, &data);
            cmd.arg("--label")
                .arg(label)
                .arg("--spec")
                .arg(spec)
                .arg("--out")
                .arg(&out)
                .arg("--parent-pid")
                .arg(std::process::id().to_string());
            let status = cmd
                .status()
                .context("cannot start the experiment's child process")?;
            if !status.success() {
                bail!("experiment {label} ({spec}) failed (exit status {status}); finished rows are in {}", writer.csv_path().display());
            }
            let text = std::fs::read_to_string(&out)
                .with_context(|| format!("child wrote no result {}", out.display()))?;
            let _ = std::fs::remove_file(&out);
            Ok(serde_json::from_str::<ExperimentResult>(&text)?)
        }?;
        writer.append(result)?;
    }
    let results = writer.results().to_vec();
    let (csv, json) = (
        writer.csv_path().to_path_buf(),
        writer.json_path().to_path_buf(),
    );
    writer.finish()?;
    println!("{}", main_table(&results));
    println!(
        "Per-step breakdown (decode steps)\n{}",
        breakdown_table(&results)
    );
    println!("Memory\n{}", memory_table(&results));
    println!("results: {}\n         {}", csv.display(), json.display());
    Ok(())
}
