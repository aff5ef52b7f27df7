//! Experiment results and run information (serde), and the writer of `<stem>.csv` (appended,
//! fsynced per experiment) and `<stem>.json` (rewritten atomically per experiment).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::experiments::parse_spec;
use super::figures::{MemoryFigures, PplFigures, SpeedFigures};
use super::machine::MachineInfo;
use super::ReportError;

/// The seed's CSV columns, exactly as in its `pytorch-results.csv`; always first in ours.
///
/// In our files `TPOT (ms)` is the median decode step and `Throughput (T/s)` is decode tokens /
/// decode time (prefill excluded); the seed's definitions are in `Seed TPOT (ms)` and
/// `Seed Throughput (T/s)`. `KV Size (GB)` is bytes / 2^30, as the seed computed it.
pub const SEED_COLUMNS: [&str; 6] = [
    "Experiment",
    "Budget (Tokens)",
    "KV Size (GB)",
    "TPOT (ms)",
    "Throughput (T/s)",
    "PPL",
];

/// Our columns, after the seed's.
pub const OUR_COLUMNS: [&str; 30] = [
    "Policy",
    "Family",
    "Status",
    "Predictions",
    "Mean NLL",
    "NLL p50",
    "NLL p90",
    "NLL max",
    "Prompt Tokens",
    "Decode Steps",
    "TTFT (ms)",
    "TPOT p90 (ms)",
    "TPOT mean (ms)",
    "Seed TPOT (ms)",
    "Seed Throughput (T/s)",
    "Model (ms)",
    "Score Update (ms)",
    "Eviction (ms)",
    "Other Host (ms)",
    "Model (%)",
    "Score Update (%)",
    "Eviction (%)",
    "Other Host (%)",
    "KV Bytes",
    "Full KV Bytes",
    "KV Ratio",
    "Peak RSS (bytes)",
    "Peak Device (bytes)",
    "Memory Method",
    "Prefill (T/s)",
];

/// What each CSV column means, in header order (for the README and `--help`).
pub fn column_meanings() -> Vec<(&'static str, &'static str)> {
    let meanings = [
        "label of the experiment, e.g. `H2O (64r+192h)` (r = recent, h = heavy)",
        "tokens kept per head between steps; `Full` for the full cache",
        "K+V bytes held at the end of the speed run / 2^30 (the seed's unit)",
        "median decode step in ms, prefill excluded (the seed's TPOT is `Seed TPOT (ms)`)",
        "decode tokens / decode time, prefill excluded",
        "streaming perplexity, exp(mean NLL) over all predictions",
        "policy spec: `full`, `local:R`, `h2o:H+R`, `h2o-layer:H+R`",
        "policy family",
        "`ok` or `failed: <reason>`",
        "number of next-token predictions in the PPL (tokens - 1)",
        "mean negative log-likelihood (nats)",
        "median per-token NLL",
        "90th percentile per-token NLL",
        "largest per-token NLL",
        "prompt tokens of the speed run",
        "decode steps of the speed run",
        "time to first token: the prefill, ms",
        "90th percentile decode step, ms",
        "mean decode step, ms",
        "the seed's TPOT: (prefill + all decode steps) / generated tokens (prefill's token included), ms",
        "the seed's throughput: generated tokens / (prefill + all decode steps)",
        "mean ONNX Runtime run per decode step, ms",
        "mean score update (accumulating attention) per decode step, ms",
        "mean eviction (victim choice) per decode step, ms",
        "mean other host work per decode step (inputs, K/V writes, logits), ms",
        "share of the decode time spent in the model run, %",
        "share spent in the score update, %",
        "share spent in eviction, %",
        "share spent in other host work, %",
        "exact K+V bytes held by the store at the end",
        "K+V bytes a full cache would hold for the same length: 2*layers*heads*head_dim*dtype bytes*tokens*batch",
        "KV Bytes / Full KV Bytes",
        "peak resident memory of the process during this experiment, bytes",
        "peak device memory (CUDA), bytes, when measured",
        "how the peak memory was measured",
        "prompt tokens / prefill time",
    ];
    csv_header().into_iter().zip(meanings).collect()
}

/// The full CSV header: [`SEED_COLUMNS`] then [`OUR_COLUMNS`].
pub fn csv_header() -> Vec<&'static str> {
    SEED_COLUMNS
        .iter()
        .chain(OUR_COLUMNS.iter())
        .copied()
        .collect()
}

/// Whether an experiment finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ExperimentStatus {
    Ok,
    Failed { message: String },
}

impl std::fmt::Display for ExperimentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExperimentStatus::Ok => f.write_str("ok"),
            ExperimentStatus::Failed { message } => write!(f, "failed: {message}"),
        }
    }
}

/// Everything measured for one experiment (one policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentResult {
    /// Display label, e.g. `H2O (64r+192h)`.
    pub label: String,
    /// Canonical policy spec, e.g. `h2o:192+64`.
    pub spec: String,
    /// Policy family: `full`, `local`, `h2o`, `h2o-layer`, ...
    pub family: String,
    /// Tokens kept (None for the full cache).
    pub budget: Option<usize>,
    /// Streaming perplexity (with the per-token NLL summary), when measured.
    pub ppl: Option<PplFigures>,
    /// Prefill + decode speed, when measured.
    pub speed: Option<SpeedFigures>,
    /// KV and process memory, when measured.
    pub memory: Option<MemoryFigures>,
    /// The whole per-prediction NLL array, only when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlls: Option<Vec<f64>>,
    pub status: ExperimentStatus,
}

impl ExperimentResult {
    /// A result with no figures yet; family and budget are read from the spec
    /// (family = the text before `:` and no budget when the spec is not of a known grammar).
    pub fn new(label: impl Into<String>, spec: impl Into<String>) -> ExperimentResult {
        let spec = spec.into();
        let (family, budget) = match parse_spec(&spec) {
            Some(k) => (k.family, k.budget),
            None => (
                spec.split(':').next().unwrap_or("").trim().to_string(),
                None,
            ),
        };
        ExperimentResult {
            label: label.into(),
            spec,
            family,
            budget,
            ppl: None,
            speed: None,
            memory: None,
            nlls: None,
            status: ExperimentStatus::Ok,
        }
    }

    /// The budget as the seed wrote it: a number, or `Full`.
    pub fn budget_cell(&self) -> String {
        match self.budget {
            Some(b) => b.to_string(),
            None if self.family == "full" => "Full".to_string(),
            None => String::new(),
        }
    }

    /// One CSV row, in the order of [`csv_header`]; unmeasured or non-finite values are empty.
    pub fn csv_record(&self) -> Vec<String> {
        let p = self.ppl.as_ref();
        let s = self.speed.as_ref();
        let m = self.memory.as_ref();
        let b = s.map(|s| &s.breakdown);
        let pct = |x: Option<f64>| num(x.map(|v| v * 100.0));
        vec![
            self.label.clone(),
            self.budget_cell(),
            num(m.map(|m| m.kv_gb())),
            num(s.map(|s| s.tpot_median_ms)),
            num(s.map(|s| s.throughput_tps)),
            num(p.map(|p| p.ppl)),
            self.spec.clone(),
            self.family.clone(),
            self.status.to_string(),
            opt(p.map(|p| p.n_predictions)),
            num(p.map(|p| p.mean_nll)),
            num(p.map(|p| p.nll.p50)),
            num(p.map(|p| p.nll.p90)),
            num(p.map(|p| p.nll.max)),
            opt(s.map(|s| s.prompt_tokens)),
            opt(s.map(|s| s.decode_steps)),
            num(s.map(|s| s.ttft_ms)),
            num(s.map(|s| s.tpot_p90_ms)),
            num(s.map(|s| s.tpot_mean_ms)),
            num(s.map(|s| s.seed_tpot_ms)),
            num(s.map(|s| s.seed_throughput_tps)),
            num(b.map(|b| b.model_ms)),
            num(b.map(|b| b.score_update_ms)),
            num(b.map(|b| b.eviction_ms)),
            num(b.map(|b| b.other_ms)),
            pct(b.map(|b| b.model_share)),
            pct(b.map(|b| b.score_update_share)),
            pct(b.map(|b| b.eviction_share)),
            pct(b.map(|b| b.other_share)),
            opt(m.map(|m| m.kv_bytes)),
            opt(m.map(|m| m.kv_bytes_full)),
            num(m.map(|m| m.ratio)),
            opt(m.map(|m| m.peak_rss_bytes)),
            opt(m.and_then(|m| m.peak_device_bytes)),
            m.map(|m| m.method.clone()).unwrap_or_default(),
            num(s.map(|s| s.prefill_tps)),
        ]
    }
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => v.to_string(),
        _ => String::new(),
    }
}

fn opt<T: ToString>(x: Option<T>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// The model a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub dir: String,
    /// e.g. `f32`, `f16`.
    pub dtype: String,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub max_positions: usize,
}

/// The ONNX Runtime side of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub ort_version: String,
    /// e.g. `cpu`, `cuda`.
    pub execution_provider: String,
    pub intra_op_threads: usize,
    #[serde(default)]
    pub inter_op_threads: Option<usize>,
}

/// Command-line settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub ppl_tokens: usize,
    pub prompt: usize,
    pub gen: usize,
    pub warmup: usize,
    pub data_path: String,
    #[serde(default = "one")]
    pub batch: usize,
    /// The experiments asked for, as `(label, spec)`.
    #[serde(default)]
    pub experiments: Vec<(String, String)>,
}

fn one() -> usize {
    1
}

/// Everything about a run except its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// This crate's version.
    pub tool_version: String,
    pub model: ModelInfo,
    pub runtime: RuntimeInfo,
    pub settings: Settings,
    pub machine: MachineInfo,
    pub git_commit: Option<String>,
    /// Start time, RFC 3339 with offset (see [`RunInfo::timestamp`]).
    pub start_time: String,
    /// The command line as given.
    #[serde(default)]
    pub command_line: Vec<String>,
}

impl RunInfo {
    /// RFC 3339 text of a time, as stored in `start_time`.
    pub fn timestamp(t: &chrono::DateTime<chrono::Local>) -> String {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    }
}

/// The run stem `YYYYMMDD-HHMMSS-<model>`; the model name is reduced to `[A-Za-z0-9._-]`.
pub fn run_stem(start: &chrono::DateTime<chrono::Local>, model_name: &str) -> String {
    let model: String = model_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let model = if model.is_empty() {
        "model".to_string()
    } else {
        model
    };
    format!("{}-{}", start.format("%Y%m%d-%H%M%S"), model)
}

/// The JSON document: run information and every finished experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDocument {
    pub run: RunInfo,
    pub experiments: Vec<ExperimentResult>,
    /// True once the run ended normally ([`ResultsWriter::finish`]); false while running or when interrupted.
    pub complete: bool,
}

/// Writes `<dir>/<stem>.csv` and `<dir>/<stem>.json` as experiments finish.
///
/// The CSV gets its header at creation and one row per experiment, flushed and fsynced at once,
/// so a killed run leaves every finished row. The JSON is rewritten after each experiment
/// through a temporary file in the same directory (write, fsync, rename), so it is always
/// either the previous or the new complete document, never half written.
pub struct ResultsWriter {
    csv_path: PathBuf,
    json_path: PathBuf,
    csv: csv::Writer<File>,
    doc: RunDocument,
}

fn not_writable(dir: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::DirNotWritable {
        dir: dir.to_path_buf(),
        source,
    }
}

impl ResultsWriter {
    /// Creates the directory if needed, checks that it is writable (a test file is written and
    /// removed), refuses to overwrite existing results of the same stem, and writes the CSV
    /// header and an initial JSON document (no experiments) — so a bad results directory fails
    /// before any measurement.
    pub fn create(dir: &Path, stem: &str, run: RunInfo) -> Result<ResultsWriter, ReportError> {
        std::fs::create_dir_all(dir).map_err(not_writable(dir))?;
        let probe = dir.join(format!(".{stem}.write-test-{}", std::process::id()));
        let probe_result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)?;
            f.write_all(b"h2o write test\n")?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        probe_result.map_err(not_writable(dir))?;

        let csv_path = dir.join(format!("{stem}.csv"));
        let json_path = dir.join(format!("{stem}.json"));
        for p in [&csv_path, &json_path] {
            if p.exists() {
                return Err(ReportError::AlreadyExists { path: p.clone() });
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&csv_path)
            .map_err(not_writable(dir))?;
        let mut writer = ResultsWriter {
            csv: csv::Writer::from_writer(file),
            csv_path,
            json_path,
            doc: RunDocument {
                run,
                experiments: Vec::new(),
                complete: false,
            },
        };
        writer.write_csv_record(csv_header().iter().map(|s| s.to_string()).collect())?;
        writer.write_json()?;
        Ok(writer)
    }

    /// Appends one finished experiment: a CSV row (flushed and fsynced), then the JSON rewritten atomically.
    pub fn append(&mut self, result: ExperimentResult) -> Result<(), ReportError> {
        self.write_csv_record(result.csv_record())?;
        self.doc.experiments.push(result);
        self.write_json()
    }

    /// Marks the run complete in the JSON (rewritten atomically) and returns the document.
    pub fn finish(mut self) -> Result<RunDocument, ReportError> {
        self.doc.complete = true;
        self.write_json()?;
        Ok(self.doc)
    }

    pub fn csv_path(&self) -> &Path {
        &self.csv_path
    }

    pub fn json_path(&self) -> &Path {
        &self.json_path
    }

    /// The experiments written so far.
    pub fn results(&self) -> &[ExperimentResult] {
        &self.doc.experiments
    }

    pub fn run_info(&self) -> &RunInfo {
        &self.doc.run
    }

    fn write_csv_record(&mut self, record: Vec<String>) -> Result<(), ReportError> {
        let path = self.csv_path.clone();
        let io = |source| ReportError::Write {
            path: path.clone(),
            source,
        };
        self.csv.write_record(&record).map_err(|e| io(e.into()))?;
        self.csv.flush().map_err(io)?;
        self.csv.get_ref().sync_all().map_err(io)
    }

    fn write_json(&self) -> Result<(), ReportError> {
        let mut text = serde_json::to_string_pretty(&self.doc)?;
        text.push('\n');
        write_atomic(&self.json_path, text.as_bytes())
    }
}

/// Write `bytes` to `path` so that a reader never sees a half-written file: a temporary file in the
/// same directory, fsync, rename, then (best effort) fsync of the directory. Creates the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename durable; not every platform can open a directory, so best effort.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        ReportError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_column_has_a_meaning() {
        let m = super::column_meanings();
        assert_eq!(m.len(), super::csv_header().len());
        assert!(m.iter().all(|(c, d)| !c.is_empty() && !d.is_empty()));
    }
}
