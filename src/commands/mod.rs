//! Subcommands of the `h2o` binary, the flags they share, and the library's errors in the CLI's words.

/// `println!` for results on stdout that ends the process quietly (exit 141, as a SIGPIPE would) when
/// stdout is a pipe its reader closed (`h2o info | head`), instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout_line(format_args!($($arg)*))
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

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};

use h2o_engine::error::Setting;
use h2o_engine::eval::data::TextMode;
use h2o_engine::experiment::{check_model_dir, Phase, Progress, Setup};
use h2o_engine::heatmap::HeatmapError;
use h2o_engine::model::Model;
use h2o_engine::runtime::{ExecutionProvider, KvPlacement, OptLevel, Runtime, SessionConfig};

/// Pythia (GPT-NeoX) through ONNX Runtime with a host-managed KV cache and H2O-style eviction.
#[derive(Parser, Debug)]
#[command(name = "h2o", version, about, propagate_version = true)]
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
    /// Continue a prompt under one policy, streamed token by token (greedy, or sampled with a seeded RNG).
    Generate(generate::GenerateArgs),
}

/// Flags every model-running subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Exported model directory (model.onnx, manifest.json, tokenizer.json).
    #[arg(long, default_value = "models/pythia-micro/onnx")]
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
}

impl ModelArgs {
    pub fn session_config(&self) -> Result<SessionConfig> {
        h2o_engine::runtime::check_provider(self.provider)?;
        let config = SessionConfig {
            provider: self.provider,
            intra_threads: self
                .threads
                .unwrap_or(SessionConfig::default().intra_threads),
            opt_level: self.opt_level,
            spin: !self.no_spin,
            kv: self
                .kv
                .unwrap_or_else(|| KvPlacement::default_for(self.provider)),
        };
        config.check()?;
        Ok(config)
    }

    /// The model, its session settings and the text of an experiment.
    pub fn setup(&self, data: PathBuf, text: TextMode) -> Result<Setup> {
        Ok(Setup {
            model: self.model.clone(),
            session: self.session_config()?,
            data,
            text,
        })
    }

    /// Start ONNX Runtime and load the model.
    pub fn load(&self) -> Result<(Runtime, Model)> {
        let config = self.session_config()?;
        let rt = start_runtime(&self.model)?;
        let model = Model::load(&rt, &self.model, config)?;
        Ok((rt, model))
    }
}

/// Start ONNX Runtime, once the model directory is known to hold the model's files (so a
/// mistyped `--model` is named before the runtime is looked for).
pub fn start_runtime(model: &Path) -> Result<Runtime> {
    check_model_dir(model)?;
    Ok(Runtime::start(&project_root())?)
}

/// Environment variable naming the WikiText-2 raw test file when `--data` is not given.
pub const DATA_ENV: &str = "H2O_DATA";

/// The data path: `--data`, else $H2O_DATA, else an error that says both.
pub fn resolve_data(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os(DATA_ENV) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(anyhow!(
            "no data file: pass --data PATH (a WikiText-2 raw test file such as wiki.test.raw) or set {DATA_ENV}"
        )),
    }
}

/// Where .venv is looked for: the current directory, else the directory above the binary's target/.
pub fn project_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if cwd.join(".venv").is_dir() {
        return cwd;
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/release/h2o -> project root
        if let Some(root) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            if root.join(".venv").is_dir() {
                return root.to_path_buf();
            }
        }
    }
    cwd
}

/// Refuses output paths that cannot be written (see [`h2o_engine::output`]) before any work is done.
pub fn check_outputs<'a>(paths: impl IntoIterator<Item = &'a Option<PathBuf>>) -> Result<()> {
    for p in paths.into_iter().flatten() {
        h2o_engine::output::check_output(p)?;
    }
    Ok(())
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

/// `bench` finished with failed experiments: their rows say why (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} experiments failed; their rows in {} say why (Status column)", csv.display())]
pub struct SomeFailed {
    pub failed: usize,
    pub total: usize,
    pub csv: PathBuf,
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
    fn names(&self) -> Names {
        let d = Names::DEFAULT;
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
    let text = match lib {
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
        E::Heatmap(h) => heatmap_words(h),
        _ => return e,
    };
    anyhow!(text)
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
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
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
    }
    .map_err(|e| in_cli_words(e, &names))
}

/// One line on stdout (see `outln!`): a closed pipe ends the process quietly with exit code 141; any
/// other write error is reported and ends it with exit code 1.
pub fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
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
