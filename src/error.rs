//! The library's error type: one variant per user-facing problem, each message names the fix.

use std::path::PathBuf;

/// Everything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model directory {0} does not exist; pass --model a directory made by export/export.py (model.onnx, manifest.json, tokenizer.json)")]
    ModelDirMissing(PathBuf),
    #[error(
        "{path} is missing from the model directory; re-export the model with export/export.py"
    )]
    ModelFileMissing { path: PathBuf },
    #[error(
        "{path}: cannot read the manifest ({reason}); re-export the model with export/export.py"
    )]
    ManifestInvalid { path: PathBuf, reason: String },
    #[error("{path}: manifest format_version {found}, this engine reads version {expected}; re-export the model with this project's export/export.py")]
    ManifestVersion {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error(
        "the graph does not match its manifest: {0}; re-export the model with export/export.py"
    )]
    GraphMismatch(String),
    #[error("{path}: tokenizer cannot be used with this model: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("ONNX Runtime library not found: {0}")]
    OrtLibraryMissing(String),
    #[error("ONNX Runtime library at {path} cannot be used: {reason}; install the pinned wheel with `make venv` (onnxruntime==1.31.1) or point ORT_DYLIB_PATH at libonnxruntime.so 1.24 or newer")]
    OrtLibraryBad { path: PathBuf, reason: String },
    #[error("execution provider {0}")]
    ExecutionProvider(String),
    #[error("ONNX Runtime: {context}: {source}")]
    Ort {
        context: String,
        #[source]
        source: ort::Error,
    },
    #[error("KV store: {0}")]
    Store(String),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Heatmap(#[from] crate::heatmap::HeatmapError),
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("bad input: {0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ort::Error> for Error {
    fn from(source: ort::Error) -> Self {
        Error::ort("call failed", source)
    }
}

impl Error {
    /// ONNX Runtime failed while doing `context`; its error is kept as the source.
    pub fn ort(context: impl Into<String>, source: impl Into<ort::Error>) -> Self {
        Error::Ort {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
