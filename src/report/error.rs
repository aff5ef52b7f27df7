//! The reporting module's error type: one clear message per failure, naming the file or directory.

use std::path::PathBuf;

/// Everything that can go wrong while writing or reading results.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The results directory cannot be created or written to.
    #[error("results directory {dir} is not writable: {source}. Fix: create it with write permission for this user, or choose another results directory")]
    DirNotWritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The results path is a file (or another non-folder), where a folder is expected.
    #[error("results folder {} {}; the results go into a folder as <run name>.csv and .json. Fix: give the path of a folder (it is created if missing), or move the {kind} away", dir.display(), crate::output::blocked(dir, blocker, kind))]
    NotAFolder {
        dir: PathBuf,
        blocker: PathBuf,
        kind: &'static str,
    },
    /// A results file of this run was replaced, moved or turned into a link while the run went on.
    #[error("results file {path} is no longer the file this run created (it was moved, replaced or turned into a link during the run); stopping rather than write anywhere else. Fix: leave the results files alone while bench runs, then run again")]
    Replaced { path: PathBuf },
    /// A results file of this run already exists (results are never overwritten).
    #[error("results file {path} already exists; results are never overwritten. Fix: choose another run name or move the file away")]
    AlreadyExists { path: PathBuf },
    /// Writing a results file failed after the up-front check passed (disk full, removed dir, ...).
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A results CSV cannot be opened or read.
    #[error("cannot read results file {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// A results CSV lacks columns that every results file must have.
    #[error("{path}: not a results CSV: missing column(s) {missing}. Expected the seed's columns (Experiment, Budget (Tokens), KV Size (GB), TPOT (ms), Throughput (T/s), PPL), as written by `h2o bench` or the seed's main.py; found: {found}", missing = quoted(.missing), found = quoted(.found))]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        found: Vec<String>,
    },
    /// A cell whose value cannot be right: not a number, not finite, negative, ...
    #[error("{path}: line {line}, column {column:?}: {value:?} is {reason}")]
    BadValue {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
        /// What is wrong, e.g. `not a finite number`.
        reason: String,
    },
    /// A row with more or fewer fields than the header.
    #[error("{path}: line {line} has {found} fields, the header has {expected}; the row is cut short or has extra fields (quote a name that holds a comma)")]
    FieldCount {
        path: PathBuf,
        line: u64,
        found: usize,
        expected: usize,
    },
    /// A row's policy cannot be read: not a policy spec (ours) or not one of the seed's experiment names.
    #[error("{path}: line {line}, column {column:?}: cannot read {value:?} as a policy: {reason}")]
    BadSpec {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
        reason: String,
    },
    /// An output file cannot be written (see [`crate::output`]).
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// Serialising the JSON document failed.
    #[error("cannot serialise results to JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A results file larger than any results file (read no further than the limit).
    #[error("{path}: more than {limit_mib} MiB; a results CSV is a few KB (one row per experiment). Fix: give the CSV written by `h2o bench` or the seed's pytorch-results.csv")]
    TooLarge { path: PathBuf, limit_mib: u64 },
    /// A cell longer than any figure, name or policy spec.
    #[error("{path}: line {line}, column {column:?}: a cell of {bytes} bytes (at most {limit}); a results CSV holds names, specs and numbers. Fix: give the CSV written by `h2o bench` or the seed's pytorch-results.csv")]
    CellTooLong {
        path: PathBuf,
        line: u64,
        column: String,
        bytes: usize,
        limit: usize,
    },
}

fn quoted(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
