//! `h2o bench`: a list of experiments on one model and data file; each experiment runs in its own child
//! process (`h2o bench-one`, handed one serialised [`Job`]) so its peak memory is its own; rows are
//! appended to results/ as they finish. A failed experiment becomes a `failed: <reason>` row and the
//! suite goes on; an interrupt (SIGINT, SIGTERM) stops it and says where the finished rows are.

use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use h2o_engine::eval::data::TextMode;
use h2o_engine::experiment::{
    group_experiments, run_job, Counting, Experiment, Group, Job, Lab, PeakMemory, Plan, PplPlan,
    Setup, SpeedPlan,
};
use h2o_engine::manifest::Manifest;
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{
    breakdown_table, check_results_dir, main_table, memory_table, run_stem, terminal_width,
    ExperimentResult, ExperimentStatus, MachineInfo, ModelInfo, ReportError, ResultsWriter,
    RunInfo, RuntimeInfo, Settings, Width,
};
use h2o_engine::runtime::Runtime;

use super::numbers;
use super::{
    error_text, in_cli_words, resolve_data, start_runtime, Bars, Interrupted, ModelArgs, Names,
    Orphaned, SomeFailed,
};

/// What each experiment measures.
#[derive(Args, Debug, Clone)]
pub struct MeasureArgs {
    /// Text file (WikiText-2 raw test); default: $H2O_DATA.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which text of the file: `file` (as it is) or `seed` (the seed's: the dataset's rows joined
    /// up to 16,384 characters; see README "Lining up with the seed").
    #[arg(long, value_enum, default_value_t = TextMode::File)]
    pub text: TextMode,
    /// Tokens for streaming perplexity (0 = skip perplexity).
    #[arg(long, default_value_t = 2048, value_parser = numbers::count, allow_hyphen_values = true)]
    pub ppl_tokens: usize,
    /// Prompt tokens for the speed run (from the start of the data).
    #[arg(long, default_value_t = 512, value_parser = numbers::count, allow_hyphen_values = true)]
    pub prompt: usize,
    /// Generated tokens for the speed run (the prefill gives the first; gen-1 timed decode steps).
    #[arg(long, default_value_t = 1024, value_parser = numbers::count, allow_hyphen_values = true)]
    pub gen: usize,
    /// Untimed warm-up runs (prefill + 8 steps) before the timed one.
    #[arg(long, default_value_t = 1, value_parser = numbers::count, allow_hyphen_values = true)]
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
    /// Comma-separated policy specs (instead of --groups).
    #[arg(long, value_delimiter = ',', conflicts_with = "groups")]
    pub exp: Vec<PolicySpec>,
    /// Comma-separated experiment groups: seed (the seed's ten, scaled to the model's positions;
    /// the default; under --counting seed its H2O runs as the seed's, one score per layer),
    /// seed-head (the seed's ten with per-head H2O under either counting), policies (every family at 12.5% and 25% of the text), pyramid (the bounded
    /// families under the pyramid schedule; needs a graph exported with --layer-masks).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<Group>,
    /// Budget counting: `ours` (keep B, attend B + the new token) or `seed` (B counts the new
    /// token: every spec runs with one token less, e.g. the seed's Local (256) as local:255).
    #[arg(long, value_enum, default_value_t = Counting::Ours)]
    pub counting: Counting,
    /// Directory for the results CSV and JSON.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Run name: results go to <results>/<name>.csv and .json (default: <time>-<model>).
    #[arg(long)]
    pub name: Option<String>,
    /// Run experiments in this process instead of one child each (peak memory is then cumulative).
    #[arg(long)]
    pub in_process: bool,
    /// Show every column in the tables (the CSV and JSON always hold every column).
    #[arg(long)]
    pub wide: bool,
}

/// Hidden: one experiment; its [`Job`] as JSON on stdin, its [`ExperimentResult`] as JSON on
/// stdout: measured, or failed with the reason (then exit code 2).
#[derive(Args, Debug)]
pub struct BenchOneArgs {
    /// The bench process that started this one: if it dies, the child stops (exit code 3).
    #[arg(long, value_parser = numbers::pid, allow_hyphen_values = true)]
    pub parent_pid: Option<u32>,
}

/// A result row of an experiment that failed.
fn failed(exp: &Experiment, message: String) -> ExperimentResult {
    let mut r = ExperimentResult::new(exp.label.clone(), exp.spec);
    r.status = ExperimentStatus::Failed { message };
    r
}

fn write_result(r: &ExperimentResult) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, r)?;
    out.flush()?;
    Ok(())
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
    let mut bars = Bars::new(job.experiment.spec.to_string());
    let outcome = Runtime::start(&super::project_root()).and_then(|rt| {
        run_job(&rt, &job, PeakMemory::OwnProcess, &mut |p| {
            // A child whose bench parent died stops instead of running on.
            if p.done % 64 == 0 && orphaned() {
                return ControlFlow::Break(());
            }
            bars.show(p)
        })
    });
    bars.clear();
    if matches!(outcome, Err(h2o_engine::Error::Cancelled)) || orphaned() {
        return Err(Orphaned.into());
    }
    match outcome {
        Ok(o) => write_result(&o.result),
        Err(e) => {
            // The parent records the reason in the CLI's words; the error also goes to stderr.
            let e = in_cli_words(e.into(), &Names::DEFAULT);
            write_result(&failed(&job.experiment, error_text(&e)))?;
            Err(e)
        }
    }
}

/// How one experiment ended: a result row (measured or failed), or the suite was interrupted.
enum Ran {
    Row(Box<ExperimentResult>),
    Interrupted,
}

/// Waits for `child`, killing it when `stop` is set; `None` when it was killed that way.
fn wait_or_stop(child: &mut Child, stop: &AtomicBool) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("lost the experiment's process")? {
            return Ok(Some(status));
        }
        if stop.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `job` in a child process `exe bench-one` and reads its result: measured, or a failed row
/// naming why (the child's own reason, its exit status, or a signal that killed it).
fn run_in_child(exe: &Path, job: &Job, stop: &AtomicBool) -> Result<Ran> {
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
    // Read stdout on the side so a large result never blocks the child while we wait.
    let mut stdout = child.stdout.take().context("no stdout of the child")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let status = wait_or_stop(&mut child, stop)?;
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Ok(Ran::Interrupted);
    };
    if stop.load(Ordering::SeqCst) && !status.success() {
        return Ok(Ran::Interrupted);
    }
    let exp = &job.experiment;
    let row = match serde_json::from_slice::<ExperimentResult>(&out) {
        Ok(r) if status.success() || r.status != ExperimentStatus::Ok => r,
        _ if status.success() => failed(
            exp,
            format!(
                "its process wrote no result ({} bytes on stdout)",
                out.len()
            ),
        ),
        _ => failed(
            exp,
            format!("its process ended without a result ({status})"),
        ),
    };
    Ok(Ran::Row(Box::new(row)))
}

/// Runs `job` in a child of its own and returns its measured result; a failure (its reason, or
/// how its process ended) is an error (`speed`'s batch runs).
pub(super) fn measure_in_child(exe: &Path, job: &Job) -> Result<ExperimentResult> {
    match run_in_child(exe, job, &AtomicBool::new(false))? {
        Ran::Row(r) => match r.status {
            ExperimentStatus::Ok => Ok(*r),
            ExperimentStatus::Failed { message } => bail!("{message}"),
        },
        Ran::Interrupted => bail!("the experiment's process was stopped"),
    }
}

/// The experiments to run: `--exp` specs (labelled by the spec), else the `--groups` (default: the
/// seed's), each under `--counting` and checked against the model before anything is measured.
fn experiments(a: &BenchArgs, lab: &Lab, plan: &Plan) -> Result<Vec<Experiment>> {
    let max_positions = lab.model().manifest.max_position_embeddings;
    let exps: Vec<Experiment> = if !a.exp.is_empty() {
        a.exp.iter().map(|s| Experiment::of(*s)).collect()
    } else if a.groups.is_empty() {
        Experiment::seed_groups(max_positions)
    } else {
        group_experiments(&a.groups, max_positions, plan.text_tokens())
    };
    exps.into_iter()
        .map(|e| {
            let spec = e.spec;
            let e = e.counted(a.counting).ok_or_else(|| {
                anyhow!("--counting seed: {spec} has a budget of 1, which in the seed's counting attends only the new token and keeps nothing; use a budget of at least 2")
            })?;
            lab.check(&e)
                .with_context(|| format!("experiment {} ({})", e.label, e.spec))?;
            Ok(e)
        })
        .collect()
}

/// The commit the binary was built from (build.rs), whatever folder it runs in.
fn git_commit() -> Option<String> {
    let c = env!("H2O_GIT_COMMIT");
    (c != "unknown").then(|| c.to_string())
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
            text: setup.text,
            counting: a.counting,
            batch: 1,
            experiments: exps.iter().map(|e| (e.label.clone(), e.spec)).collect(),
        },
        machine: MachineInfo::collect(),
        git_commit: git_commit(),
        start_time: RunInfo::timestamp(start),
        command_line: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    }
}

/// Measures one experiment, in this process or in a child of its own; an error becomes a
/// failed row (in the CLI's words).
fn measure_one(rt: &Runtime, job: &Job, in_process: bool, stop: &AtomicBool) -> Result<Ran> {
    if !in_process {
        let exe = std::env::current_exe().context("cannot find the h2o binary")?;
        return run_in_child(&exe, job, stop);
    }
    let mut bars = Bars::new(job.experiment.spec.to_string());
    let outcome = run_job(rt, job, PeakMemory::SharedProcess, &mut |p| {
        if stop.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        bars.show(p)
    });
    bars.clear();
    Ok(match outcome {
        Err(_) if stop.load(Ordering::SeqCst) => Ran::Interrupted,
        Err(e) => {
            let e = in_cli_words(e.into(), &Names::DEFAULT);
            Ran::Row(Box::new(failed(&job.experiment, error_text(&e))))
        }
        Ok(o) => Ran::Row(Box::new(o.result)),
    })
}

/// A run name as given by `--name`: letters, digits, `.`, `_`, `-`, not starting with `.`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("--name {name:?}: use 1 to 200 letters, digits, '.', '_' or '-', not starting with '.' (it names <results>/<name>.csv and .json)");
    }
    Ok(())
}

/// Creates the results files, naming `--name` and `--results` when a file of that name exists.
fn create_writer(a: &BenchArgs, stem: &str, info: RunInfo) -> Result<ResultsWriter> {
    ResultsWriter::create(&a.results, stem, info).map_err(|e| match e {
        ReportError::AlreadyExists { path } => anyhow!(
            "results file {} already exists; results are never overwritten. Fix: pass --name with another run name, another --results directory, or move the file away",
            path.display()
        ),
        e @ (ReportError::NotAFolder { .. } | ReportError::DirNotWritable { .. }) => {
            anyhow!("--results: {e}")
        }
        e => e.into(),
    })
}

/// Sets `stop` on SIGINT, SIGTERM or SIGHUP, so the suite ends cleanly between rows.
fn stop_on_interrupt() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the interrupt handler")?;
    Ok(stop)
}

/// Runs every experiment, appending each row as it finishes; `Err(Interrupted)` when stopped.
fn run_suite(
    a: &BenchArgs,
    rt: &Runtime,
    setup: &Setup,
    exps: &[Experiment],
    writer: &mut ResultsWriter,
) -> Result<()> {
    let stop = stop_on_interrupt()?;
    let plan = a.measure.plan();
    for (i, exp) in exps.iter().enumerate() {
        errln!("[{}/{}] {} ({})", i + 1, exps.len(), exp.label, exp.spec);
        let job = Job {
            setup: setup.clone(),
            plan,
            experiment: exp.clone(),
        };
        let interrupted = Interrupted {
            finished: writer.results().len(),
            total: exps.len(),
            csv: writer.csv_path().to_path_buf(),
            json: writer.json_path().to_path_buf(),
        };
        if stop.load(Ordering::SeqCst) {
            return Err(interrupted.into());
        }
        match measure_one(rt, &job, a.in_process, &stop)? {
            Ran::Interrupted => return Err(interrupted.into()),
            Ran::Row(r) => {
                if let ExperimentStatus::Failed { message } = &r.status {
                    errln!("[{}/{}] {} failed: {message}", i + 1, exps.len(), exp.label);
                }
                writer.append(*r)?;
            }
        }
    }
    Ok(())
}

/// The tables, fitted to the terminal when standard output is one.
fn print_tables(results: &[ExperimentResult], width: Width) {
    let fit = terminal_width();
    let tables = [
        ("", main_table(results, width)),
        (
            "Per-step breakdown (decode steps)\n",
            breakdown_table(results, width),
        ),
        ("Memory\n", memory_table(results, width)),
    ];
    for (title, t) in tables {
        outln!("{title}{}", t.fit(fit));
    }
}

pub fn run(a: BenchArgs) -> Result<()> {
    // Everything that can be refused is refused before the first measurement.
    if let Some(n) = &a.name {
        check_name(n)?;
    }
    check_results_dir(&a.results).map_err(|e| anyhow!("--results: {e}"))?;
    let setup = a
        .model
        .setup(resolve_data(a.measure.data.as_deref())?, a.measure.text)?;
    let rt = start_runtime(&setup.model)?;
    let plan = a.measure.plan();
    let lab = Lab::load(&rt, &setup, &[plan])?;
    let man = lab.model().manifest.clone();
    let exps = experiments(&a, &lab, &plan)?;
    drop(lab);
    let start = chrono::Local::now();
    let info = run_info(&a, &rt, &man, &setup, &exps, &start);
    let stem = a
        .name
        .clone()
        .unwrap_or_else(|| run_stem(&start, &man.name));
    let mut writer = create_writer(&a, &stem, info)?;
    errln!(
        "{} experiments on {} ({} threads, onnxruntime {}); results: {}",
        exps.len(),
        man.name,
        setup.session.intra_threads,
        rt.version,
        writer.csv_path().display()
    );
    run_suite(&a, &rt, &setup, &exps, &mut writer)?;
    let results = writer.results().to_vec();
    let (csv, json) = (
        writer.csv_path().to_path_buf(),
        writer.json_path().to_path_buf(),
    );
    writer.finish()?;
    print_tables(&results, if a.wide { Width::Wide } else { Width::Compact });
    outln!("results: {}\n         {}", csv.display(), json.display());
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.status {
            ExperimentStatus::Failed { message } => {
                Some(format!("  {} ({}): {message}", r.label, r.spec))
            }
            ExperimentStatus::Ok => None,
        })
        .collect();
    if !failures.is_empty() {
        outln!(
            "Failed ({} of {}):\n{}",
            failures.len(),
            results.len(),
            failures.join("\n")
        );
        return Err(SomeFailed {
            failed: failures.len(),
            total: results.len(),
            csv,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use h2o_engine::runtime::{OptLevel, SessionConfig};

    fn job() -> Job {
        Job {
            setup: Setup {
                model: "models/m".into(),
                session: SessionConfig {
                    intra_threads: 1,
                    spin: false,
                    ..SessionConfig::default()
                },
                data: "text.txt".into(),
                text: TextMode::Seed,
            },
            plan: MeasureArgs {
                data: None,
                text: TextMode::Seed,
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

    fn row(ran: Ran) -> ExperimentResult {
        match ran {
            Ran::Row(r) => *r,
            Ran::Interrupted => panic!("interrupted"),
        }
    }

    fn go() -> AtomicBool {
        AtomicBool::new(false)
    }

    /// Issue 19 item 6: every flag that shapes a measurement reaches the child, through the job.
    #[test]
    fn every_measurement_flag_reaches_the_child_in_its_job() {
        let args = "h2o bench --model models/m --data text.txt --text seed --threads 1 \
                    --opt-level basic --no-spin --ppl-tokens 64 --prompt 32 --gen 8 --warmup 0";
        let cli = super::super::Cli::try_parse_from(args.split_whitespace()).unwrap();
        let super::super::Command::Bench(a) = cli.command else {
            panic!("not bench")
        };
        let setup = a
            .model
            .setup(a.measure.data.clone().unwrap(), a.measure.text)
            .unwrap();
        let want = Job {
            setup: Setup {
                session: SessionConfig {
                    opt_level: OptLevel::Basic,
                    ..job().setup.session
                },
                ..job().setup
            },
            ..job()
        };
        let made = Job {
            setup,
            plan: a.measure.plan(),
            experiment: job().experiment,
        };
        assert_eq!(made, want);

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
        assert_eq!(row(run_in_child(&exe, &made, &go()).unwrap()), result);
        let sent: Job = serde_json::from_str(&std::fs::read_to_string(&got).unwrap()).unwrap();
        assert_eq!(
            sent, want,
            "every setting (--no-spin, --opt-level, --text, ...) reaches the child"
        );
    }

    /// Issue 19 item 5: a child that fails or dies gives a `failed: <reason>` row, never an abort.
    #[test]
    fn a_failing_or_killed_child_gives_a_failed_row_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let reason = |body: &str| {
            let exe = fake_child(d.path(), body);
            match row(run_in_child(&exe, &job(), &go()).unwrap()).status {
                ExperimentStatus::Failed { message } => message,
                ExperimentStatus::Ok => panic!("ok from {body}"),
            }
        };
        // the child's own reason, as bench-one writes it
        let own = serde_json::to_string(&failed(&job().experiment, "--data: gone".into())).unwrap();
        let m = reason(&format!("cat > /dev/null\necho '{own}'\nexit 2"));
        assert_eq!(m, "--data: gone");
        let m = reason("cat > /dev/null\necho 'error: boom' >&2\nexit 5");
        assert!(
            m.contains("without a result") && m.contains("exit status: 5"),
            "{m}"
        );
        let m = reason("kill -KILL $$");
        assert!(m.contains("signal: 9"), "{m}");
        let m = reason("cat > /dev/null\necho not-json");
        assert!(m.contains("wrote no result"), "{m}");
    }

    /// An interrupt while a child runs stops it and reports the suite interrupted.
    #[test]
    fn an_interrupt_stops_the_running_child() {
        let d = tempfile::tempdir().unwrap();
        let exe = fake_child(d.path(), "cat > /dev/null\nexec sleep 30");
        let stop = AtomicBool::new(true);
        assert!(matches!(
            run_in_child(&exe, &job(), &stop).unwrap(),
            Ran::Interrupted
        ));
    }

    #[test]
    fn run_names() {
        for ok in ["seed-counting", "run_1.2", "A"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(201)] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("--name"), "{e}");
        }
    }
}
