//! Run information (serde), the CSV row of an [`ExperimentResult`], and the writer of
//! `<stem>.csv` (appended, fsynced per experiment) and `<stem>.json` (rewritten atomically per
//! experiment).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::columns;
use super::machine::MachineInfo;
use super::record::ExperimentResult;
use super::ReportError;
use crate::catalogue::Counting;
use crate::catalogue::TextMode;
use crate::manifest::Manifest;
use crate::output::{replace_file, FileId};
use crate::policy::PolicySpec;

impl ExperimentResult {
    /// One CSV row of a run with `settings`, in the order of [`columns::csv_header`]; unmeasured
    /// or non-finite values are empty.
    pub fn csv_record(&self, settings: &Settings) -> Vec<String> {
        columns::csv_record(self, settings)
    }
}

/// The model a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub dir: String,
    /// e.g. `f32`, `f16`.
    pub dtype: String,
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// K/V heads (fewer than `heads` under grouped-query attention); absent in files written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    pub head_dim: usize,
    pub max_positions: usize,
    /// The linears' weight format (manifest `weights.format`: fp32, int8, int4, int8-dq; with a
    /// prefill copy e.g. int4+int8-dq-prefill); absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
}

impl ModelInfo {
    /// The model of manifest `man` exported to `dir`.
    pub fn of(man: &Manifest, dir: &Path) -> ModelInfo {
        ModelInfo {
            name: man.name.clone(),
            dir: dir.display().to_string(),
            dtype: man.dtype.name().to_string(),
            layers: man.num_layers,
            heads: man.num_heads,
            kv_heads: Some(man.kv_heads()),
            head_dim: man.head_dim,
            max_positions: man.max_position_embeddings,
            weights: Some(man.weights.label()),
        }
    }
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
    /// Subnormal floats in ONNX Runtime's threads: `flush` or `keep` (`--denormals`); absent in
    /// files written before the flag, whose runs kept them.
    #[serde(default)]
    pub denormals: Option<String>,
}

/// Command-line settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub ppl_tokens: usize,
    pub prompt: usize,
    pub gen: usize,
    pub warmup: usize,
    pub data_path: String,
    /// Which text of the data file was read (the file as it is, or the seed's rows).
    #[serde(default)]
    pub text: TextMode,
    /// How budgets were counted (ours, or the seed's: every spec one token less).
    #[serde(default)]
    pub counting: Counting,
    #[serde(default = "one")]
    pub batch: usize,
    /// The experiments asked for, as `(label, spec)`.
    #[serde(default)]
    pub experiments: Vec<(String, PolicySpec)>,
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
/// Neither file may exist before (results are never overwritten). The CSV is created
/// exclusively, gets its header at creation and one row per experiment, flushed and fsynced at
/// once, so a killed run leaves every finished row; it is written through the descriptor opened
/// at creation, never reopened. The JSON is rewritten after each experiment through a temporary
/// file in the same directory (write, fsync, rename; [`replace_file`]), so it is always either
/// the previous or the new complete document, never half written. Before each write the path
/// must still name the very file this run wrote last (device and inode; a link there is never
/// followed): a file moved, replaced or turned into a link stops the run
/// ([`ReportError::Replaced`]) instead of writing rows where no one will find them.
pub struct ResultsWriter {
    csv_path: PathBuf,
    json_path: PathBuf,
    csv: csv::Writer<File>,
    csv_id: FileId,
    /// The JSON last written (`None` before the first write: nothing may be at the path).
    json_id: Option<FileId>,
    doc: RunDocument,
}

/// Refuses a results path that is, or lies under, something else than a folder (a missing folder
/// is created later).
pub fn check_results_dir(dir: &Path) -> Result<(), ReportError> {
    match crate::output::blocks_folder(dir) {
        None => Ok(()),
        Some((blocker, kind)) => Err(ReportError::NotAFolder {
            dir: dir.to_path_buf(),
            blocker,
            kind,
        }),
    }
}

/// Refuses to write `path` unless it is still the file `id` (`None`: nothing may be there).
fn still_ours(path: &Path, id: Option<FileId>) -> Result<(), ReportError> {
    let now = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| m.file_type().is_file().then(|| FileId::of(&m)));
    match (id, now) {
        (None, None) => Ok(()),
        (Some(id), Some(Some(now))) if id == now => Ok(()),
        _ => Err(ReportError::Replaced {
            path: path.to_path_buf(),
        }),
    }
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
        check_results_dir(dir)?;
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
            // anything at the path, a dangling link included, is refused
            if p.symlink_metadata().is_ok() {
                return Err(ReportError::AlreadyExists { path: p.clone() });
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&csv_path)
            .map_err(not_writable(dir))?;
        let csv_id = file
            .metadata()
            .map(|m| FileId::of(&m))
            .map_err(not_writable(dir))?;
        let mut writer = ResultsWriter {
            csv: csv::Writer::from_writer(file),
            csv_id,
            csv_path,
            json_id: None,
            json_path,
            doc: RunDocument {
                run,
                experiments: Vec::new(),
                complete: false,
            },
        };
        writer.write_csv_record(
            columns::csv_header()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )?;
        writer.write_json()?;
        Ok(writer)
    }

    /// Appends one finished experiment: a CSV row (flushed and fsynced), then the JSON rewritten atomically.
    pub fn append(&mut self, result: ExperimentResult) -> Result<(), ReportError> {
        self.write_csv_record(result.csv_record(&self.doc.run.settings))?;
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
        still_ours(&self.csv_path, Some(self.csv_id))?;
        let path = self.csv_path.clone();
        let io = |source| ReportError::Write {
            path: path.clone(),
            source,
        };
        self.csv.write_record(&record).map_err(|e| io(e.into()))?;
        self.csv.flush().map_err(io)?;
        self.csv.get_ref().sync_all().map_err(io)
    }

    fn write_json(&mut self) -> Result<(), ReportError> {
        still_ours(&self.json_path, self.json_id)?;
        let mut text = serde_json::to_string_pretty(&self.doc)?;
        text.push('\n');
        let id = replace_file(&self.json_path, text.as_bytes()).map_err(|source| {
            ReportError::Write {
                path: self.json_path.clone(),
                source,
            }
        })?;
        self.json_id = Some(id);
        Ok(())
    }
}
