//! Subcommands of the `h2o` binary and the flags they share.

mod bench;
mod compare;
mod heatmap;
mod info;
mod ppl;
mod speed;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use h2o_engine::model::Model;
use h2o_engine::policy::{Policy, PolicySpec};
use h2o_engine::runtime::{physical_cores, ExecutionProvider, OptLevel, Runtime, SessionConfig};

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
    /// Prefill + decode timings (TTFT, TPOT median/p90, throughput, host share, KV bytes), optionally over context lengths.
    Speed(speed::SpeedArgs),
    /// The benchmark suite: perplexity, speed and memory per experiment, tables and results/*.csv|json.
    Bench(bench::BenchArgs),
    /// One bench experiment (run by `bench` in a child process so its peak memory is its own).
    #[command(hide = true)]
    BenchOne(bench::BenchOneArgs),
    /// Line up two result CSVs (ours or the seed's) by policy and budget.
    Compare(compare::CompareArgs),
    /// Log-scale attention heatmaps of chosen layers and what each policy keeps.
    Heatmap(heatmap::HeatmapArgs),
}

/// Flags every model-running subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Exported model directory (model.onnx, manifest.json, tokenizer.json).
    #[arg(long, default_value = "models/pythia-micro/onnx")]
    pub model: PathBuf,
    /// Intra-op threads for ONNX Runtime (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Execution provider: cpu or cuda (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub provider: String,
    /// Graph optimisation level: disable, basic, extended, all.
    #[arg(long, default_value = "all")]
    pub opt_level: String,
    /// Stop ONNX Runtime's intra-op workers from spin-waiting between runs.
    #[arg(long)]
    pub no_spin: bool,
}

impl ModelArgs {
    pub fn session_config(&self) -> Result<SessionConfig> {
        let provider: ExecutionProvider = self.provider.parse()?;
        h2o_engine::runtime::check_provider(provider)?;
        let intra_threads = match self.threads {
            Some(0) => anyhow::bail!("--threads must be at least 1"),
            Some(n) => n,
            None => physical_cores(),
        };
        Ok(SessionConfig {
            provider,
            intra_threads,
            opt_level: self.opt_level.parse::<OptLevel>()?,
            spin: !self.no_spin,
        })
    }

    /// Start ONNX Runtime and load the model.
    pub fn load(&self) -> Result<(Runtime, Model)> {
        let config = self.session_config()?;
        if !self.model.is_dir() {
            return Err(h2o_engine::Error::ModelDirMissing(self.model.clone()).into());
        }
        let rt = Runtime::start(&project_root())?;
        let model = Model::load(&rt, &self.model, config)?;
        Ok((rt, model))
    }

    /// Load the model on an already started runtime (one ONNX Runtime environment per process).
    pub fn load_on(&self, rt: &Runtime) -> Result<Model> {
        let config = self.session_config()?;
        if !self.model.is_dir() {
            return Err(h2o_engine::Error::ModelDirMissing(self.model.clone()).into());
        }
        Ok(Model::load(rt, &self.model, config)?)
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

/// Parse and check a policy spec against the model's positions.
pub fn parse_policy(spec: &str, max_positions: usize) -> Result<(PolicySpec, Box<dyn Policy>)> {
    let parsed: PolicySpec = spec.parse()?;
    parsed.validate(max_positions)?;
    let policy = parsed.build();
    Ok((parsed, policy))
}

/// Write `bytes` to `path` atomically (see [`h2o_engine::report::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(h2o_engine::report::write_atomic(path, bytes)?)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Ppl(a) => ppl::run(a),
        Command::Speed(a) => speed::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchOne(a) => bench::run_one(a),
        Command::Compare(a) => compare::run(a),
        Command::Heatmap(a) => heatmap::run(a),
    }
}
