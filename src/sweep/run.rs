//! Runs a sweep's jobs on this machine: N workers, each job in a `h2o bench-one` child of its own,
//! one result file per job written atomically; a job whose result file exists is skipped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::output::replace_file;
use crate::report::{check_results_dir, ExperimentStatus, ReportError};
use crate::runner::{run_in_child, Ran};

use super::{record_path, Host, JobRecord, SweepError, SweepJob};

/// How a run of a sweep ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Jobs measured now (failed ones included).
    pub ran: usize,
    /// Of those, the ones that failed (their records say why).
    pub failed: usize,
    /// Jobs whose result file was there already.
    pub skipped: usize,
    /// Stopped (`stop` set) before every job had its result.
    pub interrupted: bool,
}

/// Runs every job of `jobs` that has no result file in `dir` yet with `workers` children at a time
/// (`exe bench-one`, see [`crate::runner::run_in_child`]), writing each record as its job ends
/// (`<dir>/<id>.json`, atomically); a failed job is a record with a failed result. `done` is told
/// of each record written. Stops starting jobs once `stop` is set (running children are killed).
pub fn run(
    exe: &Path,
    jobs: &[SweepJob],
    workers: usize,
    dir: &Path,
    host: &Host,
    stop: &AtomicBool,
    done: &(dyn Fn(&JobRecord) + Sync),
) -> Result<RunSummary, SweepError> {
    if workers == 0 {
        return Err(SweepError::NoWorkers);
    }
    check_results_dir(dir)?;
    std::fs::create_dir_all(dir).map_err(|source| ReportError::DirNotWritable {
        dir: dir.to_path_buf(),
        source,
    })?;
    let (todo, finished): (Vec<&SweepJob>, Vec<&SweepJob>) = jobs
        .iter()
        .partition(|j| std::fs::symlink_metadata(record_path(dir, &j.id)).is_err());
    let next = AtomicUsize::new(0);
    let halt = AtomicBool::new(false);
    let error: Mutex<Option<SweepError>> = Mutex::new(None);
    let summary = Mutex::new(RunSummary {
        skipped: finished.len(),
        ..RunSummary::default()
    });
    let worker = || loop {
        if stop.load(Ordering::SeqCst) || halt.load(Ordering::SeqCst) {
            return;
        }
        let Some(job) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
            return;
        };
        match run_one(exe, job, dir, host, stop) {
            Ok(Some(record)) => {
                let mut s = summary.lock().unwrap();
                s.ran += 1;
                s.failed += usize::from(record.result.status != ExperimentStatus::Ok);
                drop(s);
                done(&record);
            }
            Ok(None) => return,
            Err(e) => {
                halt.store(true, Ordering::SeqCst);
                error.lock().unwrap().get_or_insert(e);
                return;
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..workers.min(todo.len()) {
            s.spawn(worker);
        }
    });
    if let Some(e) = error.into_inner().unwrap() {
        return Err(e);
    }
    let mut summary = summary.into_inner().unwrap();
    summary.interrupted = summary.ran + summary.skipped < jobs.len();
    Ok(summary)
}

/// Measures one job in a child and writes its record; `None` when it was stopped.
fn run_one(
    exe: &Path,
    job: &SweepJob,
    dir: &Path,
    host: &Host,
    stop: &AtomicBool,
) -> Result<Option<JobRecord>, SweepError> {
    let result = match run_in_child(exe, &job.job, stop)? {
        Ran::Row(r) => *r,
        Ran::Interrupted => return Ok(None),
    };
    let record = JobRecord {
        job: job.clone(),
        host: host.clone(),
        result,
    };
    let path: PathBuf = record_path(dir, &job.id);
    let mut text = serde_json::to_string_pretty(&record)?;
    text.push('\n');
    replace_file(&path, text.as_bytes()).map_err(|source| SweepError::Write { path, source })?;
    Ok(Some(record))
}
