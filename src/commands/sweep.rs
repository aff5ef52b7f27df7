//! `h2o sweep plan | run | merge`: a grid of experiments as one job a line, run here by N child
//! processes into one result file per job, merged into one run (the library's
//! [`h2o_engine::sweep`]); here: flags, the words, the summary lines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};

use h2o_engine::experiment::{Counting, Group};
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{ExperimentStatus, MachineInfo};
use h2o_engine::runner::Place;
use h2o_engine::runtime::{Denormals, ExecutionProvider, KvPlacement, OptLevel, Runtime};
use h2o_engine::sweep::{self, Choice, Grid, Host, JobRecord, SweepError};

use super::bench::MeasureArgs;
use super::numbers;
use super::{project_root, resolve_data, runner_error, write_to, ModelArgs};

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Write every job of a grid (models × experiments) as one JSON line each, with what it needs.
    Plan(PlanArgs),
    /// Run the jobs of a JOBS file here, N child processes at a time, one result file per job.
    Run(RunArgs),
    /// Join result folders into one run document + CSV (bench's formats, each row's origin added).
    Merge(MergeArgs),
    /// Write an sbatch script running the jobs of a JOBS file as one Slurm array (task I = job I).
    Slurm(SlurmArgs),
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: SweepCommand,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Exported model directories (repeat the flag or separate with commas); default: the default model.
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<PathBuf>,
    /// Intra-op threads each job's session uses.
    #[arg(long, value_parser = numbers::count, allow_hyphen_values = true)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, ignore_case = true, default_value_t = ExecutionProvider::Cpu)]
    pub provider: ExecutionProvider,
    #[arg(long, value_enum, ignore_case = true, default_value_t = OptLevel::All)]
    pub opt_level: OptLevel,
    #[arg(long)]
    pub no_spin: bool,
    #[arg(long, value_enum, ignore_case = true)]
    pub kv: Option<KvPlacement>,
    /// Subnormal floats in each job's ONNX Runtime threads: `flush` to zero or `keep` (as the
    /// model commands' `--denormals`).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Denormals::Flush)]
    pub denormals: Denormals,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// Comma-separated policy specs (instead of --groups).
    #[arg(long, value_delimiter = ',', conflicts_with = "groups")]
    pub exp: Vec<PolicySpec>,
    /// Comma-separated experiment groups, as bench's (default: seed).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<Group>,
    #[arg(long, value_enum, default_value_t = Counting::Ours)]
    pub counting: Counting,
    /// The JOBS file to write (one job a line).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The JOBS file (from `h2o sweep plan`).
    pub jobs: PathBuf,
    /// Jobs run at a time, each in a child process of its own.
    #[arg(long, default_value_t = 1, value_parser = numbers::count, allow_hyphen_values = true)]
    pub workers: usize,
    /// Folder of the result files (`<job id>.json`); a job whose file is there is skipped.
    #[arg(long)]
    pub results: PathBuf,
    /// Run only job I (0-based, in JOBS order): what a Ray or Slurm task runs.
    #[arg(long, value_parser = numbers::count, allow_hyphen_values = true, conflicts_with = "workers")]
    pub index: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SlurmArgs {
    /// The JOBS file (from `h2o sweep plan`).
    pub jobs: PathBuf,
    /// Folder of the result files the tasks write (made now; each task's log goes there too).
    #[arg(long)]
    pub results: PathBuf,
    /// The sbatch script to write (`sbatch FILE` submits the array).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Folders of result files (from `h2o sweep run --results`).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The JOBS file: rows in its order, its jobs without a result named.
    #[arg(long)]
    pub jobs: Option<PathBuf>,
    /// The merged run: writes <out>.csv and <out>.json (replaced when there).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: SweepArgs) -> Result<()> {
    match a.command {
        SweepCommand::Plan(a) => plan(a),
        SweepCommand::Run(a) => run_jobs(a),
        SweepCommand::Merge(a) => merge(a),
        SweepCommand::Slurm(a) => slurm(a),
    }
}

/// A library error of a step that reads `flag`'s file, naming the flag.
fn flagged(flag: &str, e: SweepError) -> anyhow::Error {
    match e {
        SweepError::Engine(e) => e.into(),
        e => anyhow!("{flag}: {e}"),
    }
}

fn plan(a: PlanArgs) -> Result<()> {
    let data = resolve_data(a.measure.data.as_deref())?;
    let models = match a.model.is_empty() {
        true => vec![h2o_engine::locate::default_model()],
        false => a.model.clone(),
    };
    let setups = models
        .iter()
        .map(|m| {
            ModelArgs {
                model: m.clone(),
                threads: a.threads,
                provider: a.provider,
                opt_level: a.opt_level,
                no_spin: a.no_spin,
                kv: a.kv,
                denormals: a.denormals,
            }
            .unchecked_setup(data.clone(), a.measure.text)
        })
        .collect();
    let grid = Grid {
        setups,
        plan: a.measure.plan(),
        experiments: Choice::of(&a.exp, &a.groups),
        counting: a.counting,
    };
    let jobs = sweep::plan(&grid).map_err(|e| match e {
        SweepError::Engine(e) => anyhow::Error::from(e),
        e => e.into(),
    })?;
    write_to(
        "--out",
        &(&a.out).into(),
        sweep::jobs_text(&jobs).as_bytes(),
    )?;
    outln!("{} jobs: {}", jobs.len(), a.out.display());
    Ok(())
}

fn run_jobs(a: RunArgs) -> Result<()> {
    if a.workers == 0 {
        bail!("--workers 0: run at least one job at a time");
    }
    let all = sweep::read_jobs(&a.jobs).map_err(|e| flagged("JOBS", e))?;
    let jobs = match a.index {
        Some(i) if i >= all.len() => bail!(
            "--index {i}: {} holds {} (give an index from 0 to {})",
            a.jobs.display(),
            match all.len() {
                1 => "1 job".to_string(),
                n => format!("{n} jobs"),
            },
            all.len() - 1
        ),
        Some(i) => &all[i..=i],
        None => &all[..],
    };
    h2o_engine::report::check_results_dir(&a.results).map_err(|e| anyhow!("--results: {e}"))?;
    let rt = Runtime::start(&project_root())?;
    let host = Host {
        machine: MachineInfo::collect(),
        ort_version: rt.version.clone(),
    };
    let Place::Child { exe } = Place::child().map_err(runner_error)? else {
        unreachable!("Place::child makes a child place")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the interrupt handler")?;
    match a.index {
        Some(i) => errln!(
            "job {i} of {} ({}); results: {}",
            all.len(),
            jobs[0].id,
            a.results.display()
        ),
        None => errln!(
            "{} jobs, {} at a time; results: {}",
            jobs.len(),
            a.workers,
            a.results.display()
        ),
    }
    let done = |r: &JobRecord| {
        let what = format!("{} ({}) {}", r.result.label, r.result.spec, r.job.id);
        match &r.result.status {
            ExperimentStatus::Ok => errln!("done: {what}"),
            ExperimentStatus::Failed { message } => errln!("failed: {what}: {message}"),
        }
    };
    let s = sweep::run(&exe, jobs, a.workers, &a.results, &host, &stop, &done).map_err(
        |e| match e {
            e @ SweepError::Results(_) => anyhow!("--results: {e}"),
            e => flagged("--results", e),
        },
    )?;
    outln!(
        "{} ran ({} failed), {} skipped (their result files were there); results: {}",
        s.ran,
        s.failed,
        s.skipped,
        a.results.display()
    );
    if s.interrupted {
        bail!("interrupted; run the same command again to run the jobs left");
    }
    if s.failed > 0 {
        return Err(super::SomeFailed {
            failed: s.failed,
            total: jobs.len(),
            what: "jobs",
            why: format!(
                "their records in {} say why (`status`); delete a job's record to run it again",
                a.results.display()
            ),
        }
        .into());
    }
    Ok(())
}

fn merge(a: MergeArgs) -> Result<()> {
    let jobs = match &a.jobs {
        Some(p) => Some(sweep::read_jobs(p).map_err(|e| flagged("--jobs", e))?),
        None => None,
    };
    let m = sweep::merge(&a.dirs, jobs.as_deref()).map_err(|e| flagged("results folder", e))?;
    let with_ext = |ext: &str| {
        let mut p = a.out.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (csv, json) = (with_ext(".csv"), with_ext(".json"));
    let mut doc = serde_json::to_string_pretty(&m.document)?;
    doc.push('\n');
    write_to("--out", &(&csv).into(), m.csv.as_bytes())?;
    write_to("--out", &(&json).into(), doc.as_bytes())?;
    for (id, used, left) in &m.duplicates {
        errln!(
            "duplicate: job {id} in {} and {}; the first is merged",
            used.display(),
            left.display()
        );
    }
    for (id, p) in &m.unlisted {
        errln!("not in --jobs: job {id} ({}), merged", p.display());
    }
    for (id, label, model) in &m.missing {
        errln!("missing: job {id} ({label} on {model}) has no result");
    }
    outln!(
        "{} rows: {}\n         {}",
        m.document.run.experiments.len(),
        csv.display(),
        json.display()
    );
    if !m.missing.is_empty() {
        bail!(
            "{} of {} jobs have no result (\"complete\": false); run them and merge again",
            m.missing.len(),
            jobs.map_or(0, |j| j.len())
        );
    }
    Ok(())
}

fn slurm(a: SlurmArgs) -> Result<()> {
    let jobs = sweep::read_jobs(&a.jobs).map_err(|e| flagged("JOBS", e))?;
    h2o_engine::report::check_results_dir(&a.results).map_err(|e| anyhow!("--results: {e}"))?;
    std::fs::create_dir_all(&a.results)
        .with_context(|| format!("--results: cannot make {}", a.results.display()))?;
    let absolute = |p: &PathBuf, flag: &str| {
        std::path::absolute(p).with_context(|| format!("{flag}: cannot resolve {}", p.display()))
    };
    let exe = std::env::current_exe().context("cannot find this h2o binary's path")?;
    let script = sweep::sbatch_script(
        &jobs,
        &exe,
        &absolute(&a.jobs, "JOBS")?,
        &absolute(&a.results, "--results")?,
    );
    write_to("--out", &(&a.out).into(), script.as_bytes())?;
    let r = sweep::SlurmRequest::of(&jobs);
    outln!(
        "{} array tasks, each {} CPU{}, {} MiB{}{}: {}\nsubmit: sbatch {}",
        r.tasks,
        r.cpus,
        if r.cpus == 1 { "" } else { "s" },
        r.mem_mib,
        if r.gpu { ", 1 GPU" } else { "" },
        if r.mixed {
            " (the most any job needs)"
        } else {
            ""
        },
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
