//! `h2o bench`: a list of experiments on one model and data file; each experiment runs in its own child
//! process (`h2o bench-one`, handed one serialised [`Job`]) so its peak memory is its own; rows are
//! appended to results/ as they finish.

use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;

use h2o_engine::experiment::{
    run_job, Experiment, Job, Lab, PeakMemory, Plan, PplPlan, Setup, SpeedPlan,
};
use h2o_engine::manifest::Manifest;
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{
    breakdown_table, main_table, memory_table, run_stem, ExperimentResult, MachineInfo, ModelInfo,
    ResultsWriter, RunInfo, RuntimeInfo, Settings,
};
use h2o_engine::runtime::Runtime;

use super::{resolve_data, start_runtime, Bars, ModelArgs, Orphaned};

/// What each experiment measures.
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

impl MeasureArgs {
    fn plan(&self) -> Plan {
        Plan {
            ppl: (self.ppl_tokens > 0).then_some(PplPlan {
                tokens: self.ppl_tokens,
                trace: false,
            }),
            speed: Some(SpeedPlan::new(self.prompt, self.gen, self.warmup)),
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// Comma-separated policy specs (default: the seed's ten groups, scaled to the model's positions).
    #[arg(long, value_delimiter = ',')]
    pub exp: Vec<PolicySpec>,
    /// Directory for <time>-<model>.csv and .json.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Run experiments in this process instead of one child each (peak memory is then cumulative).
    #[arg(long)]
    pub in_process: bool,
}

/// Hidden: one experiment; its [`Job`] as JSON on stdin, its [`ExperimentResult`] as JSON on stdout.
#[derive(Args, Debug)]
pub struct BenchOneArgs {
    /// The bench process that started this one: if it dies, the child stops (exit code 3).
    #[arg(long)]
    pub parent_pid: Option<u32>,
}

pub fn run_one(a: BenchOneArgs) -> Result<()> {
    let parent = a.parent_pid;
    let orphaned = move || parent.is_some_and(|p| std::os::unix::process::parent_id() != p);
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the job from stdin")?;
    let job: Job = serde_json::from_str(&text).context("stdin is not a bench job (JSON)")?;
    if orphaned() {
        return Err(Orphaned.into());
    }
    let rt = Runtime::start(&super::project_root())?;
    let mut bars = Bars::new(job.experiment.spec.to_string());
    let outcome = run_job(&rt, &job, PeakMemory::OwnProcess, &mut |p| {
        // A child whose bench parent died stops instead of running on.
        if p.done % 64 == 0 && orphaned() {
            return ControlFlow::Break(());
        }
        bars.show(p)
    });
    bars.clear();
    let outcome = match outcome {
        Err(h2o_engine::Error::Cancelled) => return Err(Orphaned.into()),
        r => r?,
    };
    if orphaned() {
        return Err(Orphaned.into());
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &outcome.result)?;
    out.flush()?;
    Ok(())
}

/// Runs `job` in a child process `exe bench-one` and reads its result.
pub(super) fn run_in_child(exe: &Path, job: &Job) -> Result<ExperimentResult> {
    let mut child = Command::new(exe)
        .arg("bench-one")
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that exits before reading its job is reported by its exit status below.
        let _ = stdin.write_all(serde_json::to_string(job)?.as_bytes());
    }
    let out = child
        .wait_with_output()
        .context("lost the experiment's process")?;
    if !out.status.success() {
        bail!("its process failed ({})", out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "its process wrote no result ({} bytes on stdout)",
            out.stdout.len()
        )
    })
}

/// The experiments to run: `--exp` specs (labelled by the spec) or the scaled seed groups.
fn experiments(exp: &[PolicySpec], max_positions: usize) -> Result<Vec<Experiment>> {
    if exp.is_empty() {
        return Ok(Experiment::seed_groups(max_positions));
    }
    exp.iter()
        .map(|s| {
            s.validate(max_positions)?;
            Ok(Experiment::of(*s))
        })
        .collect()
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Everything about the run except its results.
fn run_info(
    a: &BenchArgs,
    rt: &Runtime,
    man: &Manifest,
    setup: &Setup,
    exps: &[Experiment],
    start: &chrono::DateTime<chrono::Local>,
) -> RunInfo {
    let m = &a.measure;
    RunInfo {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model: ModelInfo {
            name: man.name.clone(),
            dir: setup.model.display().to_string(),
            dtype: man.dtype.name().to_string(),
            layers: man.num_layers,
            heads: man.num_heads,
            head_dim: man.head_dim,
            max_positions: man.max_position_embeddings,
        },
        runtime: RuntimeInfo {
            ort_version: rt.version.clone(),
            execution_provider: setup.session.provider.to_string(),
            intra_op_threads: setup.session.intra_threads,
            inter_op_threads: Some(1),
        },
        settings: Settings {
            ppl_tokens: m.ppl_tokens,
            prompt: m.prompt,
            gen: m.gen,
            warmup: m.warmup,
            data_path: setup.data.display().to_string(),
            batch: 1,
            experiments: exps.iter().map(|e| (e.label.clone(), e.spec)).collect(),
        },
        machine: MachineInfo::collect(),
        git_commit: git_commit(),
        start_time: RunInfo::timestamp(start),
        command_line: std::env::args().collect(),
    }
}

/// Measures one experiment: in this process, or in a child process of its own.
fn measure_one(rt: &Runtime, job: &Job, in_process: bool) -> Result<ExperimentResult> {
    if in_process {
        let mut bars = Bars::new(job.experiment.spec.to_string());
        let outcome = run_job(rt, job, PeakMemory::SharedProcess, &mut |p| bars.show(p));
        bars.clear();
        return Ok(outcome?.result);
    }
    let exe = std::env::current_exe().context("cannot find the h2o binary")?;
    run_in_child(&exe, job)
}

pub fn run(a: BenchArgs) -> Result<()> {
    // Everything that can be refused is refused before the first measurement.
    let setup = a.model.setup(resolve_data(a.measure.data.as_deref())?)?;
    let plan = a.measure.plan();
    let rt = start_runtime(&setup.model)?;
    let man = Lab::load(&rt, &setup, &[plan])?.model().manifest.clone();
    let exps = experiments(&a.exp, man.max_position_embeddings)?;
    let start = chrono::Local::now();
    let info = run_info(&a, &rt, &man, &setup, &exps, &start);
    let mut writer = ResultsWriter::create(&a.results, &run_stem(&start, &man.name), info)?;
    eprintln!(
        "{} experiments on {} ({} threads, onnxruntime {}); results: {}",
        exps.len(),
        man.name,
        setup.session.intra_threads,
        rt.version,
        writer.csv_path().display()
    );
    for (i, exp) in exps.iter().enumerate() {
        eprintln!("[{}/{}] {} ({})", i + 1, exps.len(), exp.label, exp.spec);
        let job = Job {
            setup: setup.clone(),
            plan,
            experiment: exp.clone(),
        };
        let result = measure_one(&rt, &job, a.in_process).with_context(|| {
            format!(
                "experiment {} ({}) failed; finished rows are in {}",
                exp.label,
                exp.spec,
                writer.csv_path().display()
            )
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use h2o_engine::runtime::SessionConfig;

    fn job() -> Job {
        Job {
            setup: Setup {
                model: "models/m".into(),
                session: SessionConfig {
                    intra_threads: 3,
                    spin: false,
                    ..SessionConfig::default()
                },
                data: "text.txt".into(),
            },
            plan: MeasureArgs {
                data: None,
                ppl_tokens: 64,
                prompt: 32,
                gen: 8,
                warmup: 0,
            }
            .plan(),
            experiment: Experiment::of("local:8".parse().unwrap()),
        }
    }

    /// A stand-in for the h2o binary: a shell script run as `SCRIPT bench-one --parent-pid PID`.
    fn fake_child(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("fake-h2o");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_child_gets_the_whole_job_and_its_result_is_read() {
        let d = tempfile::tempdir().unwrap();
        let got = d.path().join("job.json");
        let result = ExperimentResult::new("local 8", "local:8".parse().unwrap());
        let body = format!(
            "test \"$1 $2 $3\" = \"bench-one --parent-pid {}\" || exit 9\ncat > {}\necho '{}'",
            std::process::id(),
            got.display(),
            serde_json::to_string(&result).unwrap()
        );
        let exe = fake_child(d.path(), &body);
        assert_eq!(run_in_child(&exe, &job()).unwrap(), result);
        let sent: Job = serde_json::from_str(&std::fs::read_to_string(&got).unwrap()).unwrap();
        assert_eq!(
            sent,
            job(),
            "every setting, --no-spin included, reaches the child"
        );
    }

    #[test]
    fn a_failing_child_is_an_error_naming_its_exit_status() {
        let d = tempfile::tempdir().unwrap();
        let exe = fake_child(d.path(), "cat > /dev/null\necho 'error: boom' >&2\nexit 5");
        let e = format!("{:#}", run_in_child(&exe, &job()).unwrap_err());
        assert!(e.contains("failed") && e.contains("exit status: 5"), "{e}");
        // one that dies from a signal
        let exe = fake_child(d.path(), "kill -KILL $$");
        let e = format!("{:#}", run_in_child(&exe, &job()).unwrap_err());
        assert!(e.contains("failed") && e.contains("signal: 9"), "{e}");
        // one that exits 0 without a result
        let exe = fake_child(d.path(), "cat > /dev/null\necho not-json");
        let e = format!("{:#}", run_in_child(&exe, &job()).unwrap_err());
        assert!(e.contains("wrote no result"), "{e}");
    }
}
