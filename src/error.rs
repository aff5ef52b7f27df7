//! The library's error type: one variant per user-facing problem, each message names the fix.
//!
//! Messages speak of what the library knows (a model directory, a data file, perplexity tokens), not
//! of command-line flags: the `h2o` binary names its flags where it shows these errors.

use std::fmt;
use std::path::PathBuf;

/// Everything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model directory {0} does not exist; give a directory made by export/export.py (model.onnx, manifest.json, tokenizer.json)")]
    ModelDirMissing(PathBuf),
    #[error("{0} is a file, not a directory; give the model directory made by export/export.py (model.onnx, manifest.json, tokenizer.json)")]
    ModelDirNotADir(PathBuf),
    #[error(
        "{path} is missing from the model directory; re-export the model with export/export.py"
    )]
    ModelFileMissing { path: PathBuf },
    #[error("{path} is not a file (a directory or another kind of entry is in its place); re-export the model with export/export.py")]
    ModelFileNotAFile { path: PathBuf },
    #[error(
        "{path}: cannot read the manifest ({reason}); re-export the model with export/export.py"
    )]
    ManifestInvalid { path: PathBuf, reason: String },
    /// A field of manifest.json the engine cannot use (missing, mistyped, out of bounds, or at
    /// odds with another field).
    #[error("{path}: field `{field}` {problem}; re-export the model with export/export.py")]
    ManifestField {
        path: PathBuf,
        field: String,
        problem: String,
    },
    /// manifest.json says one thing, the graph in model.onnx another.
    #[error("{manifest}: {claim}, but {graph}; manifest.json and model.onnx disagree: re-export the model with export/export.py")]
    ManifestVsGraph {
        manifest: PathBuf,
        claim: String,
        graph: String,
    },
    /// model.onnx's protobuf could not be read for the graph's operators and initializer types.
    #[error(
        "{path}: cannot read the ONNX graph ({reason}); re-export the model with export/export.py"
    )]
    OnnxUnreadable { path: PathBuf, reason: String },
    #[error("{path}: manifest format_version {found}, this engine reads version {expected}; re-export the model with this project's export/export.py")]
    ManifestVersion {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error(
        "the graph (model.onnx) does not match its manifest.json: {0}; re-export the model with export/export.py"
    )]
    GraphMismatch(String),
    #[error("{path}: tokenizer cannot be used with this model: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("ONNX Runtime library not found: {0}")]
    OrtLibraryMissing(String),
    #[error("ONNX Runtime library at {path} cannot be used: {reason}; install the pinned wheel with `make venv` (onnxruntime==1.31.1) or point ORT_DYLIB_PATH at libonnxruntime.so 1.24 or newer")]
    OrtLibraryBad { path: PathBuf, reason: String },
    /// CUDA asked for in a binary built without the `cuda` feature.
    #[error("the cuda execution provider was asked for, but this binary was built without the `cuda` feature; rebuild with `cargo build --release --features cuda` (and an onnxruntime-gpu library), or run on the cpu provider")]
    CudaNotCompiled,
    /// An intra-op thread count of 0 or above the logical cores.
    #[error("{asked} intra-op threads: use 1 to {max}, this machine's logical cores; more threads than cores spin against each other (ONNX Runtime's workers busy-wait) and can hang the run")]
    Threads { asked: usize, max: usize },
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
    /// A policy that ranks by the keys' norms (knorm) with K/V in device memory, where the host
    /// never sees the keys.
    #[error("{family} ranks tokens by their keys' norms, which the host computes from the new keys; with K/V in device memory the keys never reach the host: keep K/V in host memory")]
    KeyNormNeedsHostKv {
        /// The policy's family keyword, e.g. `knorm`.
        family: String,
    },
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// An error of a module built on the engine (the heatmap's `HeatmapError`, converted where
    /// that module defines it), boxed so that this type names no such module; shown as it is.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    /// A length setting the model cannot take (see [`LengthError`]).
    #[error(transparent)]
    Length(#[from] LengthError),
    /// A run that cannot fit in the memory available (see [`MemoryError`]).
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The caller's progress hook asked to stop (e.g. bench's child whose parent died).
    #[error("the experiment was stopped by its caller")]
    Cancelled,
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

/// A measurement setting that errors name. The library calls it by what it is
/// ([`Setting::words`]); the CLI shows its flag instead (see [`LengthError::describe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// Tokens streamed for perplexity.
    PplTokens,
    /// Prompt tokens of a speed run.
    PromptTokens,
    /// Generated tokens of a speed run (the prefill gives the first).
    GenTokens,
    /// Tokens `generate` adds to a prompt (the prefill gives the first).
    NewTokens,
    /// Sequences decoded together.
    Batch,
    /// Most prompt tokens per row in one prefill run of the graph.
    PrefillChunk,
    /// The BOS a model declares (`prepend_bos_token_id`), fed before the text: one position.
    Bos,
}

impl Setting {
    /// The setting in words, e.g. `perplexity tokens`.
    pub fn words(self) -> &'static str {
        match self {
            Setting::PplTokens => "perplexity tokens",
            Setting::PromptTokens => "prompt tokens",
            Setting::GenTokens => "generated tokens",
            Setting::NewTokens => "new tokens",
            Setting::Batch => "batch",
            Setting::PrefillChunk => "prefill chunk",
            Setting::Bos => "the model's declared BOS",
        }
    }

    /// Why the setting has its minimum, shown after it.
    fn why_minimum(self) -> &'static str {
        match self {
            Setting::PplTokens => " (N tokens give N-1 predictions)",
            Setting::PromptTokens => " (the prefill needs a token)",
            Setting::GenTokens => " (the prefill gives the first, then at least one decode step)",
            Setting::NewTokens => " (the prefill gives the first)",
            Setting::Batch => " (one sequence or more)",
            Setting::PrefillChunk => " (tokens per prefill run)",
            Setting::Bos => "",
        }
    }
}

/// Lengths the model cannot take, refused before anything is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LengthError {
    /// A setting below its minimum.
    TooFew {
        setting: Setting,
        value: usize,
        min: usize,
    },
    /// Settings whose sum is beyond the model's positions.
    BeyondPositions {
        parts: Vec<(Setting, usize)>,
        max_positions: usize,
    },
    /// Perplexity tokens beyond the model's positions on absolute positions (rolling positions,
    /// `@rolling`, stream any length).
    PplBeyondPositions { tokens: usize, max_positions: usize },
    /// A batch of more rows than the text has prompts for (each row is prompted with its own
    /// tokens; one prompt fits).
    BatchBeyondText {
        batch: usize,
        prompt: usize,
        /// Tokens the text gives.
        available: usize,
        /// The text file.
        path: PathBuf,
    },
}

impl LengthError {
    /// The message with each setting called `name(setting)` (its words in the library, its flag in the CLI).
    pub fn describe(&self, name: &dyn Fn(Setting) -> String) -> String {
        match self {
            LengthError::TooFew {
                setting,
                value,
                min,
            } => format!(
                "{} is {value}; it must be at least {min}{}",
                name(*setting),
                setting.why_minimum()
            ),
            LengthError::BeyondPositions {
                parts,
                max_positions,
            } => {
                let terms: Vec<String> = parts
                    .iter()
                    .map(|(s, v)| format!("{} {v}", name(*s)))
                    .collect();
                let sum: usize = parts.iter().map(|(_, v)| v).sum();
                if parts.len() == 1 {
                    format!(
                        "{} is beyond the model's {max_positions} positions; lower it",
                        terms[0]
                    )
                } else {
                    format!(
                        "{} = {sum} is beyond the model's {max_positions} positions; lower them",
                        terms.join(" + ")
                    )
                }
            }
            LengthError::PplBeyondPositions {
                tokens,
                max_positions,
            } => format!(
                "{} {tokens} is beyond the model's {max_positions} positions: on absolute positions the tokens past them would sit at positions the model was never trained on; lower it, or stream with rolling positions (a bounded policy with @rolling, such as sink:4+252@rolling, on a graph exported with --key-cache unrotated)",
                name(Setting::PplTokens)
            ),
            LengthError::BatchBeyondText {
                batch,
                prompt,
                available,
                path,
            } => format!(
                "{} {batch} x {} {prompt} = {} tokens of text (each row is prompted with its own), but {} gives only {available}; {} {} is the most that fits at this prompt length (or use a longer text file)",
                name(Setting::Batch),
                name(Setting::PromptTokens),
                *batch as u128 * *prompt as u128,
                path.display(),
                name(Setting::Batch),
                available / prompt.max(&1),
            ),
        }
    }
}

impl fmt::Display for LengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&|s| s.words().to_string()))
    }
}

impl std::error::Error for LengthError {}

/// A run whose certain memory (the K/V arrays it allocates, the logits of its largest graph run,
/// the weights) is more than the machine has available: refused before it starts, so nothing is
/// killed half-way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryError {
    /// What is refused, e.g. `full at batch 91`.
    pub what: String,
    /// Bytes the run certainly needs (a lower bound: ONNX Runtime's activations come on top).
    pub need: u64,
    /// (what, bytes) of each part of `need`.
    pub parts: Vec<(&'static str, u64)>,
    /// MemAvailable of the machine.
    pub available: u64,
    /// The largest prefill chunk under which the run would fit, if a smaller chunk helps.
    pub chunk_hint: Option<usize>,
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl MemoryError {
    /// The message, with the prefill chunk setting called `name(Setting::PrefillChunk)`.
    pub fn describe(&self, name: &dyn Fn(Setting) -> String) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(what, b)| format!("{what} {}", gib(*b)))
            .collect();
        let fix = match self.chunk_hint {
            Some(c) => format!(
                "set {} well below {c} (the prefill's logits shrink with it; at {c} what is counted just fits, and ONNX Runtime's activations come on top), or lower the batch",
                name(Setting::PrefillChunk)
            ),
            None => "lower the batch (or the memory cap)".to_string(),
        };
        format!(
            "{} needs at least {} of memory ({}) but {} is available; {fix}",
            self.what,
            gib(self.need),
            parts.join(" + "),
            gib(self.available)
        )
    }
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&|s| s.words().to_string()))
    }
}

impl std::error::Error for MemoryError {}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_errors_in_words_and_in_flags() {
        let e = LengthError::BeyondPositions {
            parts: vec![(Setting::PromptTokens, 2000), (Setting::GenTokens, 100)],
            max_positions: 2048,
        };
        assert_eq!(
            e.to_string(),
            "prompt tokens 2000 + generated tokens 100 = 2100 is beyond the model's 2048 positions; lower them"
        );
        let flag = |s: Setting| match s {
            Setting::PromptTokens => "--prompt".to_string(),
            _ => "--gen".to_string(),
        };
        assert_eq!(
            e.describe(&flag),
            "--prompt 2000 + --gen 100 = 2100 is beyond the model's 2048 positions; lower them"
        );
        let e = LengthError::TooFew {
            setting: Setting::PplTokens,
            value: 1,
            min: 2,
        };
        assert_eq!(
            e.to_string(),
            "perplexity tokens is 1; it must be at least 2 (N tokens give N-1 predictions)"
        );
        let e = LengthError::PplBeyondPositions {
            tokens: 4000,
            max_positions: 2048,
        };
        assert_eq!(
            e.to_string(),
            "perplexity tokens 4000 is beyond the model's 2048 positions: on absolute positions the tokens past them would sit at positions the model was never trained on; lower it, or stream with rolling positions (a bounded policy with @rolling, such as sink:4+252@rolling, on a graph exported with --key-cache unrotated)"
        );
    }
}
