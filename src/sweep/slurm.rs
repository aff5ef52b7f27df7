//! A sweep as one Slurm array: an sbatch script whose task I runs job I of the JOBS file through
//! the same per-job entry as the local runner (`h2o sweep run JOBS --results DIR --index I`).

use std::path::Path;

use crate::runtime::ExecutionProvider;

use super::SweepJob;

/// Memory every task asks for on top of its job's certain need (ONNX Runtime's library, arena
/// and activations, the process itself), a margin, not a measurement.
pub const RUNTIME_MARGIN_BYTES: u64 = 1 << 30;

/// What each task of the array asks for: the most any job of the sweep needs (one array has one
/// request; plan the jobs of different needs into JOBS files of their own to ask each less).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlurmRequest {
    pub tasks: usize,
    pub cpus: usize,
    /// MiB: the largest certain need x 1.5 + [`RUNTIME_MARGIN_BYTES`], rounded up.
    pub mem_mib: u64,
    /// One GPU when any job runs on CUDA.
    pub gpu: bool,
    /// Whether the jobs differ in what they need (so some tasks ask for more than theirs).
    pub mixed: bool,
}

impl SlurmRequest {
    pub fn of(jobs: &[SweepJob]) -> SlurmRequest {
        let cpus = jobs.iter().map(|j| j.needs.cpus.max(1)).max().unwrap_or(1);
        let memory = jobs.iter().map(|j| j.needs.memory_bytes).max().unwrap_or(0);
        let bytes = memory.saturating_add(memory / 2) + RUNTIME_MARGIN_BYTES;
        let gpu = jobs
            .iter()
            .any(|j| j.needs.provider == ExecutionProvider::Cuda);
        let first = jobs.first().map(|j| &j.needs);
        SlurmRequest {
            tasks: jobs.len(),
            cpus,
            mem_mib: bytes.div_ceil(1 << 20),
            gpu,
            mixed: jobs.iter().any(|j| Some(&j.needs) != first),
        }
    }
}

/// `path` as one shell word: single-quoted, a `'` inside written `'\''`.
pub fn shell_word(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The sbatch script of `jobs` (read from `jobs_file`): one array task per job (`--array=0-(N-1)`),
/// each asking for [`SlurmRequest::of`], its log `slurm-<array job>_<task>.log` in `results`, its
/// body `exe sweep run jobs_file --results results --index $SLURM_ARRAY_TASK_ID` (a task whose
/// job has its result file skips it, so a resubmission runs only the jobs left). Paths are
/// written as given: make them absolute and visible to the compute nodes.
pub fn sbatch_script(jobs: &[SweepJob], exe: &Path, jobs_file: &Path, results: &Path) -> String {
    let r = SlurmRequest::of(jobs);
    let mut s = String::from("#!/bin/bash\n");
    s += &format!(
        "# h2o sweep: {} jobs of {}, one array task each (task I runs job I, from 0).\n",
        r.tasks,
        jobs_file.display()
    );
    s += if r.mixed {
        "# The jobs differ in what they need: every task asks for the most any job needs.\n"
    } else {
        "# Every job needs the same: each task asks for it.\n"
    };
    s += "# Memory: the largest job's certain need x 1.5 + 1 GiB for ONNX Runtime.\n";
    s += "#SBATCH --job-name=h2o-sweep\n";
    s += &format!("#SBATCH --array=0-{}\n", r.tasks.saturating_sub(1));
    s += "#SBATCH --ntasks=1\n";
    s += &format!("#SBATCH --cpus-per-task={}\n", r.cpus);
    s += &format!("#SBATCH --mem={}M\n", r.mem_mib);
    if r.gpu {
        s += "#SBATCH --gres=gpu:1\n";
    }
    let log = results.join("slurm-%A_%a.log");
    s += &format!("#SBATCH --output={}\n", log.display());
    s += "set -eu\n";
    s += &format!(
        "exec {} sweep run {} --results {} --index \"$SLURM_ARRAY_TASK_ID\"\n",
        shell_word(exe),
        shell_word(jobs_file),
        shell_word(results)
    );
    s
}
