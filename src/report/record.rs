//! The result record of one experiment (what a run measured, or why it failed): written by
//! [`super::results`], read by the tables and comparisons.

use serde::{Deserialize, Serialize};

use super::figures::{MemoryFigures, PplFigures, SpeedFigures};
use crate::policy::PolicySpec;

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
    /// The policy, serialised as its canonical spec, e.g. `h2o:192+64` (family and budget come from it).
    pub spec: PolicySpec,
    /// Streaming perplexity (with the per-token NLL summary), when measured.
    pub ppl: Option<PplFigures>,
    /// Prefill + decode speed, when measured.
    pub speed: Option<SpeedFigures>,
    /// KV and process memory, when measured.
    pub memory: Option<MemoryFigures>,
    /// The whole per-prediction NLL array, when perplexity was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlls: Option<Vec<f64>>,
    pub status: ExperimentStatus,
}

impl ExperimentResult {
    /// A result with no figures yet.
    pub fn new(label: impl Into<String>, spec: PolicySpec) -> ExperimentResult {
        ExperimentResult {
            label: label.into(),
            spec,
            ppl: None,
            speed: None,
            memory: None,
            nlls: None,
            status: ExperimentStatus::Ok,
        }
    }
}
