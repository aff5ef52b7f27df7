//! `h2o bench`: a list of experiments on one model and data file; each experiment runs in its own child
//! process (`h2o bench-one`, handed one serialised job) so its peak memory is its own; rows are
//! appended to results/ as they finish. A failed experiment becomes a `failed: <reason>` row and the
//! suite goes on; an interrupt (SIGINT, SIGTERM) stops it and says where the finished rows are. The
//! measuring and the child's side are the library's ([`h2o_engine::runner`]); here: flags, the
//! results' run information, the tables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use h2o_engine::catalogue::Choice;
use h2o_engine::eval::data::TextMode;
use h2o_engine::experiment::{
    Checked, Counting, Experiment, Group, Plan, PplPlan, Setup, SpeedPlan,
};
use h2o_engine::manifest::Manifest;
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{
    breakdown_table, check_results_dir, main_table, memory_table, run_stem, terminal_width,
    ExperimentResult, ExperimentStatus, MachineInfo, ModelInfo, ReportError, ResultsWriter,
    RunInfo, RuntimeInfo, Settings, Width,
};
use h2o_engine::runner::{run_suite, serve, Place, Served, Suite, SuiteEnd};
use h2o_engine::runtime::Runtime;

use super::numbers;
use super::{
    engine_words, project_root, resolve_data, runner_error, Interrupted, JobBars, ModelArgs,
    SomeFailed,
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
    pub(super) fn plan(&self) -> Plan {
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

pub fn run_one(a: BenchOneArgs) -> Result<()> {
    let start = || Runtime::start(&project_root());
    let served = serve(
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        a.parent_pid,
        &start,
        &mut JobBars::new(|job| job.experiment.spec.to_string()),
        &engine_words,
    );
    match served.map_err(runner_error)? {
        Served::Measured => Ok(()),
        // The parent records the reason in the CLI's words; the error also goes to stderr.
        Served::Failed(e) => Err(e.into()),
    }
}

/// The experiments to run: `--exp` specs (labelled by the spec), else the `--groups` (default: the
/// seed's), each under `--counting` and checked against the model before anything is measured.
fn experiments(a: &BenchArgs, checked: &mut Checked, plan: &Plan) -> Result<Vec<Experiment>> {
    let max_positions = checked.manifest().max_position_embeddings;
    let exps = Choice::of(&a.exp, &a.groups).experiments(max_positions, plan.text_tokens());
    exps.into_iter()
        .map(|e| {
            let spec = e.spec;
            let e = e.counted(a.counting).ok_or_else(|| {
                anyhow!("--counting seed: {spec} has a budget of 1, which in the seed's counting attends only the new token and keeps nothing; use a budget of at least 2")
            })?;
            checked
                .check(&e)
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
        model: ModelInfo::of(man, &setup.model),
        runtime: RuntimeInfo {
            ort_version: rt.version.clone(),
            execution_provider: setup.session.provider.to_string(),
            intra_op_threads: setup.session.intra_threads,
            inter_op_threads: Some(1),
            denormals: Some(setup.session.denormals.to_string()),
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
fn run_suite_here(
    a: &BenchArgs,
    place: &mut Place<'_>,
    setup: &Setup,
    exps: &[Experiment],
    writer: &mut ResultsWriter,
) -> Result<()> {
    let stop = stop_on_interrupt()?;
    let mut watch = JobBars::new(|job| job.experiment.spec.to_string());
    let suite = Suite {
        setup,
        plan: a.measure.plan(),
        experiments: exps,
    };
    let end =
        run_suite(place, suite, writer, &stop, &mut watch, &engine_words).map_err(runner_error)?;
    match end {
        SuiteEnd::Finished => Ok(()),
        SuiteEnd::Interrupted { finished, total } => Err(Interrupted {
            finished,
            total,
            csv: writer.csv_path().to_path_buf(),
            json: writer.json_path().to_path_buf(),
        }
        .into()),
    }
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
        .unchecked_setup(resolve_data(a.measure.data.as_deref())?, a.measure.text);
    let rt = h2o_engine::experiment::start(&setup, &project_root())?;
    let plan = a.measure.plan();
    let mut checked = Checked::model(&setup)?;
    checked.read_text(&[plan])?;
    let man = checked.manifest().clone();
    let exps = experiments(&a, &mut checked, &plan)?;
    // Children load their own model; in this process the model is loaded once, here.
    let mut lab = match a.in_process {
        true => Some(checked.open(&rt)?),
        false => None,
    };
    let mut place = Place::of(lab.as_mut()).map_err(runner_error)?;
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
    run_suite_here(&a, &mut place, &setup, &exps, &mut writer)?;
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
            what: "experiments",
            why: format!("their rows in {} say why (Status column)", csv.display()),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use h2o_engine::experiment::Job;
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

    /// Issue 19 item 6: every flag that shapes a measurement is in the job the child receives.
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
            .unchecked_setup(a.measure.data.clone().unwrap(), a.measure.text);
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
        // the job is what the child receives, whole (runner's tests: the job reaches the child)
        assert_eq!(made, want);
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
