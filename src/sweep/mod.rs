//! Sweeps: a grid of experiments planned as self-contained jobs (one JSON line each, with the machine
//! each needs), run by N child processes on this machine into one result file per job (resumable),
//! and merged into one run document + CSV in bench's formats.
//!
//! [`plan`] turns a [`Grid`] into [`SweepJob`]s, checked as bench checks its suite (no session);
//! [`run`] measures each job in a `h2o bench-one` child ([`crate::runner::run_in_child`]) and writes
//! `<id>.json` ([`JobRecord`]) atomically; [`merge`] joins the records of one or more folders.
//! The same per-job entry (`h2o sweep run JOBS --results DIR --index I`) is what a Ray task
//! (export/h2o_export/commands/sweep_ray.py) and a Slurm array task ([`sbatch_script`]) run.

mod merge;
mod plan;
mod run;
mod slurm;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::catalogue::Choice;
pub use merge::{merge, Merged, MixedFact, RowOrigin, SweepDocument, ORIGIN_COLUMNS};
pub use plan::{plan, Grid};
pub use run::{run, RunSummary};
pub use slurm::{sbatch_script, SlurmRequest};

use crate::catalogue::Counting;
use crate::experiment::Job;
use crate::report::{ExperimentResult, MachineInfo, ModelInfo, ReportError};
use crate::runtime::ExecutionProvider;

/// What a job needs of the machine that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    pub provider: ExecutionProvider,
    /// CPU cores: the job's intra-op threads (a scheduler's task asks for this many).
    pub cpus: usize,
    /// Memory the job certainly needs (K/V from the store's own sizing, logits, weights); ONNX
    /// Runtime's activations come on top.
    pub memory_bytes: u64,
}

/// One job of a sweep, self-contained: one line of a JOBS file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepJob {
    /// [`job_id`] of `job`: names its result file.
    pub id: String,
    pub needs: Needs,
    /// The model as its manifest describes it (the merged run's model facts).
    pub model: ModelInfo,
    /// How the experiment's budget was counted (its spec is already counted so).
    pub counting: Counting,
    pub job: Job,
}

impl SweepJob {
    pub fn new(job: Job, needs: Needs, model: ModelInfo, counting: Counting) -> SweepJob {
        SweepJob {
            id: job_id(&job),
            needs,
            model,
            counting,
            job,
        }
    }
}

/// Where and on what a job ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub machine: MachineInfo,
    pub ort_version: String,
}

/// A job's result file `<id>.json`: the job, the host that ran it and its result (measured or
/// failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: SweepJob,
    pub host: Host,
    pub result: ExperimentResult,
}

/// What planning, running or merging a sweep can fail at. Paths are named; the CLI names its flags.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: not a sweep job ({source})", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} line {line}: id {id} is not its job's ({expected}); the job was edited after planning; plan again", path.display())]
    IdMismatch {
        path: PathBuf,
        line: usize,
        id: String,
        expected: String,
    },
    #[error("{} line {line}: the same job as line {first} (id {id})", path.display())]
    DuplicateJob {
        path: PathBuf,
        line: usize,
        first: usize,
        id: String,
    },
    #[error("{} holds no jobs", path.display())]
    NoJobs { path: PathBuf },
    #[error("{} is not a job result ({source})", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} holds the result of job {id}, not of {expected}", path.display())]
    RecordMisnamed {
        path: PathBuf,
        id: String,
        expected: String,
    },
    #[error("workers must be at least 1")]
    NoWorkers,
    #[error("nothing to merge: no job results in {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))]
    NothingToMerge { dirs: Vec<PathBuf> },
    #[error("--counting seed: {spec} has a budget of 1, which in the seed's counting attends only the new token and keeps nothing; use a budget of at least 2")]
    Counting { spec: String },
    #[error("experiment {label} ({spec}) on {}: {source}", model.display())]
    Experiment {
        label: String,
        spec: String,
        model: PathBuf,
        #[source]
        source: Box<crate::Error>,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Results(#[from] ReportError),
    #[error(transparent)]
    Runner(#[from] crate::runner::RunnerError),
    #[error(transparent)]
    Engine(#[from] crate::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The stable id of a job: FNV-1a (64 bits) of its JSON, in hex. Any setting that shapes the
/// measurement changes it; the same job planned twice has the same id.
pub fn job_id(job: &Job) -> String {
    let text = serde_json::to_string(job).expect("a job serialises");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A JOBS file's text: one job a line.
pub fn jobs_text(jobs: &[SweepJob]) -> String {
    jobs.iter()
        .map(|j| serde_json::to_string(j).expect("a job serialises") + "\n")
        .collect()
}

/// Reads a JOBS file: one [`SweepJob`] a line (blank lines skipped); a line that is not a job,
/// whose id is not its job's, or that repeats a job is refused, naming the line.
pub fn read_jobs(path: &Path) -> Result<Vec<SweepJob>, SweepError> {
    let read = |source| SweepError::Read {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(read)?.is_dir() {
        return Err(read(std::io::Error::other("it is a folder")));
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let mut jobs: Vec<(usize, SweepJob)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let job: SweepJob = serde_json::from_str(line).map_err(|source| SweepError::Malformed {
            path: path.to_path_buf(),
            line: line_no,
            source,
        })?;
        let expected = job_id(&job.job);
        if job.id != expected {
            return Err(SweepError::IdMismatch {
                path: path.to_path_buf(),
                line: line_no,
                id: job.id,
                expected,
            });
        }
        if let Some((first, _)) = jobs.iter().find(|(_, j)| j.id == job.id) {
            return Err(SweepError::DuplicateJob {
                path: path.to_path_buf(),
                line: line_no,
                first: *first,
                id: job.id,
            });
        }
        jobs.push((line_no, job));
    }
    if jobs.is_empty() {
        return Err(SweepError::NoJobs {
            path: path.to_path_buf(),
        });
    }
    Ok(jobs.into_iter().map(|(_, j)| j).collect())
}

/// The result file of job `id` in `dir`.
pub fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

#[cfg(test)]
mod tests;
