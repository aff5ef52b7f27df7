//! Subcommands of the `h2o` binary, the flags they share, and the library's errors in the CLI's words.

/// `println!` for results on stdout that ends the process quietly (exit 141, as a SIGPIPE would) when
/// stdout is a pipe its reader closed (`h2o info | head`), instead of panicking. On a terminal,
/// lines wider than it are broken at spaces (see `write_stdout_line`).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` for status lines: on a terminal, lines wider than it are broken at spaces (see
/// `write_stderr_line`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::commands::write_stderr_line(format_args!($($arg)*))
    };
}

mod bench;
mod compare;
mod generate;
mod heatmap;
mod info;
mod numbers;
mod ppl;
mod speed;
mod sweep;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};

use h2o_engine::error::Setting;
use h2o_engine::eval::data::TextMode;
use h2o_engine::experiment::{check_model_dir, Checked, Experiment, Job, Phase, Progress, Setup};
use h2o_engine::heatmap::HeatmapError;
use h2o_engine::model::Model;
use h2o_engine::output::{Outputs, Target};
use h2o_engine::runner::{RunnerError, Watch};
use h2o_engine::runtime::{
    Denormals, ExecutionProvider, KvPlacement, OptLevel, Runtime, SessionConfig,
};

/// `h2o --version`: the version, the commit built from, and the ONNX Runtime it expects.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("H2O_GIT_COMMIT"),
    "; ONNX Runtime ",
    env!("H2O_ORT_PINNED"),
    " expected, 1.24 or newer accepted)"
);

/// Pythia (GPT-NeoX) through ONNX Runtime with a host-managed KV cache and H2O-style eviction.
#[derive(Parser, Debug)]
#[command(name = "h2o", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a model's manifest, the ONNX Runtime library and version, the execution provider and the machine.
    Info(info::InfoArgs),
    /// Streaming perplexity of one policy on a text file (token by token from the first token).
    Ppl(ppl::PplArgs),
    /// Prefill + decode timings (TTFT, TPOT median/p90, throughput, host share, KV bytes), over context lengths or batch sizes, with the largest batch under a K/V cap.
    Speed(speed::SpeedArgs),
    /// The benchmark suite: perplexity, speed and memory per experiment, tables and results/*.csv|json.
    Bench(bench::BenchArgs),
    /// One bench experiment: a job (JSON) on stdin, its result (JSON) on stdout; run by `bench` in a
    /// child process so its peak memory is its own.
    #[command(hide = true)]
    BenchOne(bench::BenchOneArgs),
    /// Line up two result CSVs (ours or the seed's) by policy and budget.
    Compare(compare::CompareArgs),
    /// Log-scale attention heatmaps of chosen layers and what each policy keeps.
    Heatmap(heatmap::HeatmapArgs),
    /// Sweeps: plan a grid as one job a line, run the jobs here with N workers, merge the results.
    Sweep(sweep::SweepArgs),
    /// Continue a prompt under one policy, streamed token by token (greedy, or sampled with a seeded RNG).
    Generate(generate::GenerateArgs),
}

/// Flags every model-running subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Exported model directory (model.onnx, manifest.json, tokenizer.json). Default: `model/`
    /// beside the binary (release archive), else models/pythia-micro/onnx (a clone).
    #[arg(long, default_value_os_t = h2o_engine::locate::default_model())]
    pub model: PathBuf,
    /// Intra-op threads for ONNX Runtime, at most the logical cores (default: physical cores).
    #[arg(long, value_parser = numbers::count, allow_hyphen_values = true)]
    pub threads: Option<usize>,
    /// Execution provider (cuda needs a build with `--features cuda`).
    #[arg(long, value_enum, ignore_case = true, default_value_t = ExecutionProvider::Cpu)]
    pub provider: ExecutionProvider,
    /// Graph optimisation level (or 0-3).
    #[arg(long, value_enum, ignore_case = true, default_value_t = OptLevel::All)]
    pub opt_level: OptLevel,
    /// Stop ONNX Runtime's intra-op workers from spin-waiting between runs.
    #[arg(long)]
    pub no_spin: bool,
    /// Where the KV cache's K/V live: `device` (memory of the provider's device, bound with IoBinding;
    /// the default with cuda) or `host` (the default on cpu).
    #[arg(long, value_enum, ignore_case = true)]
    pub kv: Option<KvPlacement>,
    /// Subnormal floats in ONNX Runtime's threads: `flush` them to zero (fast softmax over masked
    /// scores; outputs differ only below 1.2e-38) or `keep` them (ONNX Runtime's own default).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Denormals::Flush)]
    pub denormals: Denormals,
}

impl ModelArgs {
    pub fn session_config(&self) -> Result<SessionConfig> {
        h2o_engine::runtime::check_provider(self.provider)?;
        let config = self.unchecked_setup(PathBuf::new(), TextMode::File).session;
        config.check()?;
        Ok(config)
    }

    /// The model, its session settings and the text of an experiment.
    pub fn setup(&self, data: PathBuf, text: TextMode) -> Result<Setup> {
        Ok(Setup {
            session: self.session_config()?,
            ..self.unchecked_setup(data, text)
        })
    }

    /// [`ModelArgs::setup`] for a command whose checks are the library's entry's
    /// ([`h2o_engine::experiment::start`]): nothing is checked here.
    pub fn unchecked_setup(&self, data: PathBuf, text: TextMode) -> Setup {
        Setup {
            model: self.model.clone(),
            session: SessionConfig {
                provider: self.provider,
                intra_threads: self
                    .threads
                    .unwrap_or(SessionConfig::default().intra_threads),
                opt_level: self.opt_level,
                spin: !self.no_spin,
                kv: self
                    .kv
                    .unwrap_or_else(|| KvPlacement::default_for(self.provider)),
                denormals: self.denormals,
            },
            data,
            text,
        }
    }

    /// Start ONNX Runtime and load the model, each check once ([`h2o_engine::experiment::start`],
    /// then [`Checked`]).
    pub fn load(&self) -> Result<(Runtime, Model)> {
        let setup = self.unchecked_setup(PathBuf::new(), TextMode::File);
        let rt = h2o_engine::experiment::start(&setup, &project_root())?;
        let model = Checked::model(&setup)?.open_model(&rt)?;
        Ok((rt, model))
    }
}

/// Start ONNX Runtime, once the model directory is known to hold the model's files (so a
/// mistyped `--model` is named before the runtime is looked for).
pub fn start_runtime(model: &Path) -> Result<Runtime> {
    check_model_dir(model)?;
    Ok(Runtime::start(&project_root())?)
}

pub use h2o_engine::locate::{project_root, DATA_ENV};

/// The data path: `--data`, else $H2O_DATA, else the text beside the binary or the shared data
/// beside the project ([`h2o_engine::locate`]), else an error that says where it looked.
pub fn resolve_data(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os(DATA_ENV) {
        Some(p) if !p.is_empty() => return Ok(PathBuf::from(p)),
        _ => {}
    }
    if let Some(p) = h2o_engine::locate::default_text() {
        return Ok(p);
    }
    let looked: Vec<String> = h2o_engine::locate::text_places()
        .iter()
        .map(|p| p.path.display().to_string())
        .collect();
    Err(anyhow!(
        "no data file: pass --data PATH (a WikiText-2 raw test file such as wiki.test.raw) or set {DATA_ENV}; none at {}",
        looked.join(" or ")
    ))
}

/// Refuses the outputs of a run before anything runs (see [`h2o_engine::output`]): a path that
/// cannot be written, one that is a file of `inputs` (a file, or a folder such as the model
/// directory whose every file is read), two that are one file. Each pair is (flag, path); errors
/// name the output's flag. Returns the outputs prepared (a FIFO open); keep them to the writes.
pub fn check_outputs(
    outputs: &[(&str, &Option<PathBuf>)],
    inputs: &[(&str, &Path)],
) -> Result<Outputs> {
    use h2o_engine::output::{check_run, Named};
    let outs: Vec<Named<'_>> = outputs
        .iter()
        .filter_map(|&(flag, p)| p.as_deref().map(|path| Named { flag, path }))
        .collect();
    let ins: Vec<Named<'_>> = inputs
        .iter()
        .map(|&(flag, path)| Named { flag, path })
        .collect();
    Ok(check_run(&outs, &ins)?)
}

/// Writes `bytes` to the output `out` given by `flag` (see [`h2o_engine::output`]); an error
/// names the flag.
pub fn write_to(flag: &str, out: &Target<'_>, bytes: &[u8]) -> Result<()> {
    out.write(bytes).map_err(|e| e.flag(flag))?;
    Ok(())
}

/// What named the data file: `--data`, or the environment variable when the flag was not given.
pub fn data_flag(given: &Option<PathBuf>) -> &'static str {
    if given.is_some() {
        "--data"
    } else {
        "$H2O_DATA"
    }
}

/// A bench child whose parent died: it stops without a result and exits with code 3.
#[derive(Debug, thiserror::Error)]
#[error("the bench process that started this experiment is gone; stopping without a result")]
pub struct Orphaned;

/// `bench` stopped by SIGINT/SIGTERM: where the finished rows are (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted after {finished} of {total} experiments; the finished rows are in {} and {} (\"complete\": false)", csv.display(), json.display())]
pub struct Interrupted {
    pub finished: usize,
    pub total: usize,
    pub csv: PathBuf,
    pub json: PathBuf,
}

/// `bench` or `sweep run` finished with failed experiments or jobs; `why` says where the reasons
/// are (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} {what} failed; {why}")]
pub struct SomeFailed {
    pub failed: usize,
    pub total: usize,
    /// `experiments` or `jobs`.
    pub what: &'static str,
    pub why: String,
}

/// The exit code of an error: 1 a bench suite that ran with failed experiments, 3 a bench child
/// whose parent died, 130 an interrupted bench, 2 anything refused or failed otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.is::<SomeFailed>() {
        1
    } else if e.is::<Orphaned>() {
        3
    } else if e.is::<Interrupted>() {
        130
    } else {
        2
    }
}

/// Progress bars of a run: one per phase, labelled, cleared when the phase is done.
pub struct Bars {
    label: String,
    bar: Option<(Phase, indicatif::ProgressBar)>,
}

impl Bars {
    pub fn new(label: impl Into<String>) -> Bars {
        Bars {
            label: label.into(),
            bar: None,
        }
    }

    /// Shows `p`; always lets the run go on.
    pub fn show(&mut self, p: Progress) -> ControlFlow<()> {
        if self.bar.as_ref().is_none_or(|(phase, _)| *phase != p.phase) {
            self.clear();
            let bar = indicatif::ProgressBar::new(p.total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(format!("{} {}", self.label, p.phase));
            self.bar = Some((p.phase, bar));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_position(p.done as u64);
        }
        ControlFlow::Continue(())
    }

    pub fn clear(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Progress bars of the jobs the runner measures in this process (labelled by `label`), and the
/// suite's lines on stderr.
pub struct JobBars {
    label: fn(&Job) -> String,
    bars: Option<Bars>,
}

impl JobBars {
    pub fn new(label: fn(&Job) -> String) -> JobBars {
        JobBars { label, bars: None }
    }
}

impl Watch for JobBars {
    fn start(&mut self, job: &Job) {
        self.bars = Some(Bars::new((self.label)(job)));
    }

    fn progress(&mut self, p: Progress) -> ControlFlow<()> {
        match &mut self.bars {
            Some(bars) => bars.show(p),
            None => ControlFlow::Continue(()),
        }
    }

    fn end(&mut self) {
        if let Some(mut bars) = self.bars.take() {
            bars.clear();
        }
    }

    fn experiment(&mut self, i: usize, n: usize, exp: &Experiment) {
        errln!("[{}/{n}] {} ({})", i + 1, exp.label, exp.spec);
    }

    fn failed(&mut self, i: usize, n: usize, exp: &Experiment, message: &str) {
        errln!("[{}/{n}] {} failed: {message}", i + 1, exp.label);
    }
}

/// The runner's error as the CLI shows it: an engine error as the engine's (so that it is put in
/// the CLI's words), an orphaned child as [`Orphaned`] (exit code 3).
pub fn runner_error(e: RunnerError) -> anyhow::Error {
    match e {
        RunnerError::Engine(e) => e.into(),
        RunnerError::Orphaned => Orphaned.into(),
        e => e.into(),
    }
}

/// An engine error's text in the CLI's words (flags named as in bench), the reason a failed row
/// gives.
pub fn engine_words(e: &h2o_engine::Error) -> String {
    lib_words(e, &Names::DEFAULT).unwrap_or_else(|| chain_text(e))
}

/// How a subcommand names what the library's errors speak of.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// The flag of the text file (`--data`, or heatmap's `--file`).
    pub data: &'static str,
    /// The flag of the policy specs.
    pub policy: &'static str,
    pub ppl_tokens: &'static str,
    pub prompt: &'static str,
    pub gen: &'static str,
    pub new_tokens: &'static str,
    pub batch: &'static str,
    pub prefill_chunk: &'static str,
}

impl Names {
    pub const DEFAULT: Names = Names {
        data: "--data",
        policy: "--exp",
        ppl_tokens: "--ppl-tokens",
        prompt: "--prompt",
        gen: "--gen",
        new_tokens: "--max-new",
        batch: "--batch",
        prefill_chunk: "--prefill-chunk",
    };

    fn of(&self, s: Setting) -> &'static str {
        match s {
            Setting::PplTokens => self.ppl_tokens,
            Setting::PromptTokens => self.prompt,
            Setting::GenTokens => self.gen,
            Setting::NewTokens => self.new_tokens,
            Setting::Batch => self.batch,
            Setting::PrefillChunk => self.prefill_chunk,
            Setting::Bos => Setting::Bos.words(),
        }
    }
}

impl Command {
    /// Whether the command reads its text from `$H2O_DATA` (a data-reading command without `--data`).
    fn data_from_env(&self) -> bool {
        let flag = match self {
            Command::Ppl(a) => &a.data,
            Command::Speed(a) => &a.data,
            Command::Bench(a) => &a.measure.data,
            _ => return false,
        };
        flag.is_none() && std::env::var_os(DATA_ENV).is_some_and(|v| !v.is_empty())
    }

    fn names(&self) -> Names {
        let d = if self.data_from_env() {
            Names {
                data: "$H2O_DATA (no --data given)",
                ..Names::DEFAULT
            }
        } else {
            Names::DEFAULT
        };
        match self {
            Command::Ppl(_) => Names {
                policy: "--policy",
                ppl_tokens: "--tokens",
                ..d
            },
            Command::Speed(a) if !a.contexts.is_empty() => Names {
                prompt: "context",
                ..d
            },
            Command::Generate(_) => Names {
                data: "--file",
                policy: "--policy",
                prompt: "prompt tokens",
                ..d
            },
            Command::Heatmap(_) => Names {
                data: "--file",
                policy: "--policies",
                ..d
            },
            _ => d,
        }
    }
}

/// The library's error in the CLI's words: settings by their flags, inputs with the flag they
/// came from. Other errors pass as they are.
pub fn in_cli_words(e: anyhow::Error, names: &Names) -> anyhow::Error {
    use h2o_engine::Error as E;
    if let Some(h) = e.downcast_ref::<HeatmapError>() {
        return anyhow!(heatmap_words(h));
    }
    let Some(lib) = e.downcast_ref::<E>() else {
        return e;
    };
    match lib_words(lib, names) {
        Some(text) => anyhow!(text),
        None => e,
    }
}

/// The library's error in the CLI's words; `None` for an error shown as it is.
fn lib_words(lib: &h2o_engine::Error, names: &Names) -> Option<String> {
    use h2o_engine::Error as E;
    Some(match lib {
        E::Length(l) => l.describe(&|s| names.of(s).to_string()),
        E::Memory(m) => m.describe(&|s| names.of(s).to_string()),
        E::ModelDirMissing(_)
        | E::ModelDirNotADir(_)
        | E::ModelFileMissing { .. }
        | E::ModelFileNotAFile { .. }
        | E::ManifestInvalid { .. }
        | E::ManifestVersion { .. }
        | E::ManifestField { .. }
        | E::ManifestVsGraph { .. }
        | E::OnnxUnreadable { .. }
        | E::GraphMismatch(_)
        | E::Tokenizer { .. } => format!("--model: {lib}"),
        E::CudaNotCompiled => "--provider cuda: this binary was built without the `cuda` feature; rebuild with `cargo build --release --features cuda` (and an onnxruntime-gpu library), or use --provider cpu".to_string(),
        E::Data { .. } => format!("{}: {lib}", names.data),
        E::Threads { .. } => format!("--threads: {lib}"),
        E::ExecutionProvider(_) => format!("--provider: {lib}"),
        E::Policy(_) => format!("{}: {lib}", names.policy),
        E::KeyNormNeedsHostKv { family } => format!(
            "{family} ranks tokens by their keys' norms, which the host computes from the new keys; with K/V in device memory (--kv device, the default with --provider cuda) the keys never reach the host: use --kv host"
        ),
        E::Other(other) => heatmap_words(other.downcast_ref::<HeatmapError>()?),
        _ => return None,
    })
}

/// A heatmap error with the flag it came from.
fn heatmap_words(h: &HeatmapError) -> String {
    match h {
        HeatmapError::EmptyText => format!("{h} (--text STR or --file PATH)"),
        HeatmapError::Head(_) | HeatmapError::HeadOutOfRange { .. } => format!("--head: {h}"),
        HeatmapError::LayerOutOfRange { .. } | HeatmapError::BadLayerSpec { .. } => {
            format!("--layers: {h}")
        }
        HeatmapError::Floor(_) => format!("--floor: {h}"),
        _ => h.to_string(),
    }
}

/// `error: ...` text of an error chain, each cause once (a cause already quoted by its parent is skipped).
pub fn error_text(e: &anyhow::Error) -> String {
    chain_text(e.as_ref())
}

/// [`error_text`] of a library error and its causes.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let causes = std::iter::successors(e.source(), |c| c.source());
    for cause in causes {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// One line on stderr (see `errln!` and main's error line), fitted to the terminal when stderr is
/// one.
pub fn write_stderr_line(args: std::fmt::Arguments<'_>) {
    let text = fit_to_terminal(args.to_string(), h2o_engine::report::stderr_width());
    eprintln!("{text}");
}

pub fn run(cli: Cli) -> Result<()> {
    let names = cli.command.names();
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Ppl(a) => ppl::run(a),
        Command::Speed(a) => speed::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchOne(a) => bench::run_one(a),
        Command::Compare(a) => compare::run(a),
        Command::Heatmap(a) => heatmap::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Sweep(a) => sweep::run(a),
    }
    .map_err(|e| in_cli_words(e, &names))
}

/// `text` fitted to a terminal of `width` columns: lines wider than it broken at spaces, never
/// inside a number, spec or number with its unit, the continuation lines indented two spaces
/// (`h2o_engine::report::wrap_hanging`); as it is when not a terminal (`None`).
fn fit_to_terminal(text: String, width: Option<u16>) -> String {
    match width {
        Some(w) => h2o_engine::report::wrap_hanging(&text, usize::from(w)),
        None => text,
    }
}

/// One line on stdout (see `outln!`), fitted to the terminal when stdout is one: a closed pipe ends
/// the process quietly with exit code 141; any other write error is reported and ends it with
/// exit code 1.
pub fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = fit_to_terminal(args.to_string(), h2o_engine::report::terminal_width());
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1)
        }
    }
}
