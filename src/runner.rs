//! Runs experiments for `bench` and `speed`: each [`Job`] in a child process of its own (`h2o
//! bench-one`: the job as JSON on its stdin, its [`ExperimentResult`] as JSON on its stdout, so its
//! peak memory is its own) or in this process ([`Place`]); the child's side of that protocol
//! ([`serve`]); and bench's suite loop ([`run_suite`]: rows appended as they finish, a failed
//! experiment a failed row, stopped between rows).
//!
//! Nothing here prints: the caller draws progress and says what happens through a [`Watch`].

use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::catalogue::Experiment;
use crate::error::Error;
use crate::experiment::{run_job, Job, Lab, PeakMemory, Plan, Progress, Setup};
use crate::report::{ExperimentResult, ExperimentStatus, ReportError, ResultsWriter};
use crate::runtime::Runtime;

/// What running an experiment away from the engine can fail at.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot find the h2o binary")]
    NoBinary(#[source] std::io::Error),
    #[error("cannot start {}", exe.display())]
    Start {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no stdout of the child")]
    NoStdout,
    #[error("lost the experiment's process")]
    Lost(#[source] std::io::Error),
    #[error("cannot read the job from stdin")]
    ReadJob(#[source] std::io::Error),
    #[error("stdin is not a bench job (JSON)")]
    NotAJob(#[source] serde_json::Error),
    /// The child's process was stopped before it gave a result.
    #[error("the experiment's process was stopped")]
    Stopped,
    /// A job measured in a child failed: the reason its row gives.
    #[error("{0}")]
    Failed(String),
    /// A child whose parent died: it stops without a result.
    #[error("the bench process that started this experiment is gone; stopping without a result")]
    Orphaned,
    /// A job measured in this process failed.
    #[error(transparent)]
    Engine(#[from] Error),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Progress of a job measured in this process, and what the suite does (the caller draws it).
pub trait Watch {
    /// A job starts in this process; [`Watch::progress`] reports follow.
    fn start(&mut self, _job: &Job) {}
    /// Progress of the job; `Break` stops it.
    fn progress(&mut self, _p: Progress) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// The job of the last [`Watch::start`] ended.
    fn end(&mut self) {}
    /// Experiment `i` (from 0) of `n` starts (bench's suite).
    fn experiment(&mut self, _i: usize, _n: usize, _exp: &Experiment) {}
    /// Experiment `i` of `n` failed, for `message` (its row says so too).
    fn failed(&mut self, _i: usize, _n: usize, _exp: &Experiment, _message: &str) {}
}

/// A watch that shows nothing.
pub struct Quiet;

impl Watch for Quiet {}

/// How one experiment ended: a result row (measured or failed), or the run was stopped.
#[derive(Debug)]
pub enum Ran {
    Row(Box<ExperimentResult>),
    Interrupted,
}

/// A result row of an experiment that failed.
pub fn failed(exp: &Experiment, message: String) -> ExperimentResult {
    let mut r = ExperimentResult::new(exp.label.clone(), exp.spec);
    r.status = ExperimentStatus::Failed { message };
    r
}

/// Where jobs are measured.
pub enum Place<'a> {
    /// Each job in a child process `exe bench-one` of its own (its peak memory its own).
    Child { exe: PathBuf },
    /// Every job in this process, on the model and text loaded once (peak memory cumulative).
    Loaded(&'a mut Lab),
}

impl Place<'_> {
    /// Each job in a child process running this very binary.
    pub fn child() -> Result<Place<'static>, RunnerError> {
        let exe = std::env::current_exe().map_err(RunnerError::NoBinary)?;
        Ok(Place::Child { exe })
    }
}

impl<'a> Place<'a> {
    /// On `lab` when one was loaded (`--in-process`), else each job in a child process.
    pub fn of(lab: Option<&'a mut Lab>) -> Result<Place<'a>, RunnerError> {
        match lab {
            Some(lab) => Ok(Place::Loaded(lab)),
            None => Place::child(),
        }
    }

    /// Measures `job`; a failed experiment is a failed row (an engine error in the words of
    /// `describe`), `Interrupted` once `stop` is set (a running child is killed).
    pub fn run(
        &mut self,
        job: &Job,
        stop: &AtomicBool,
        watch: &mut dyn Watch,
        describe: &dyn Fn(&Error) -> String,
    ) -> Result<Ran, RunnerError> {
        let lab = match self {
            Place::Child { exe } => return run_in_child(exe, job, stop),
            Place::Loaded(lab) => lab,
        };
        let outcome = measure_here(lab, job, watch, &|| stop.load(Ordering::SeqCst));
        Ok(match outcome {
            Err(_) if stop.load(Ordering::SeqCst) => Ran::Interrupted,
            Err(e) => Ran::Row(Box::new(failed(&job.experiment, describe(&e)))),
            Ok(r) => Ran::Row(Box::new(r)),
        })
    }

    /// Measures `job` and returns its measured result; a failure (its reason, how its process
    /// ended, or the engine's error in this process) is an error (`speed`'s points).
    pub fn measure(
        &mut self,
        job: &Job,
        watch: &mut dyn Watch,
    ) -> Result<ExperimentResult, RunnerError> {
        match self {
            Place::Child { exe } => measure_in_child(exe, job),
            Place::Loaded(lab) => Ok(measure_here(lab, job, watch, &|| false)?),
        }
    }
}

/// Measures `job` on `lab`; `stopped` is asked at every progress report.
fn measure_here(
    lab: &mut Lab,
    job: &Job,
    watch: &mut dyn Watch,
    stopped: &dyn Fn() -> bool,
) -> Result<ExperimentResult, Error> {
    watch.start(job);
    let mut hook = |p: Progress| {
        if stopped() {
            return ControlFlow::Break(());
        }
        watch.progress(p)
    };
    let peak = PeakMemory::SharedProcess;
    let outcome = lab.run(&job.experiment, &job.plan, peak, &mut hook);
    watch.end();
    outcome.map(|o| o.result)
}

/// Waits for `child`, killing it when `stop` is set; `None` when it was killed that way.
fn wait_or_stop(child: &mut Child, stop: &AtomicBool) -> Result<Option<ExitStatus>, RunnerError> {
    loop {
        if let Some(status) = child.try_wait().map_err(RunnerError::Lost)? {
            return Ok(Some(status));
        }
        if stop.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `job` in a child process `exe bench-one` and reads its result: measured, or a failed row
/// naming why (the child's own reason, its exit status, or a signal that killed it).
pub fn run_in_child(exe: &Path, job: &Job, stop: &AtomicBool) -> Result<Ran, RunnerError> {
    let mut child = Command::new(exe)
        .arg("bench-one")
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| RunnerError::Start {
            exe: exe.to_path_buf(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that exits before reading its job is reported by its exit status below.
        let _ = stdin.write_all(serde_json::to_string(job)?.as_bytes());
    }
    // Read stdout on the side so a large result never blocks the child while we wait.
    let mut stdout = child.stdout.take().ok_or(RunnerError::NoStdout)?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let status = wait_or_stop(&mut child, stop)?;
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Ok(Ran::Interrupted);
    };
    if stop.load(Ordering::SeqCst) && !status.success() {
        return Ok(Ran::Interrupted);
    }
    let exp = &job.experiment;
    let row = match serde_json::from_slice::<ExperimentResult>(&out) {
        Ok(r) if status.success() || r.status != ExperimentStatus::Ok => r,
        _ if status.success() => failed(
            exp,
            format!(
                "its process wrote no result ({} bytes on stdout)",
                out.len()
            ),
        ),
        _ => failed(
            exp,
            format!("its process ended without a result ({status})"),
        ),
    };
    Ok(Ran::Row(Box::new(row)))
}

/// Runs `job` in a child of its own and returns its measured result; a failure (its reason, or
/// how its process ended) is an error.
pub fn measure_in_child(exe: &Path, job: &Job) -> Result<ExperimentResult, RunnerError> {
    match run_in_child(exe, job, &AtomicBool::new(false))? {
        Ran::Row(r) => match r.status {
            ExperimentStatus::Ok => Ok(*r),
            ExperimentStatus::Failed { message } => Err(RunnerError::Failed(message)),
        },
        Ran::Interrupted => Err(RunnerError::Stopped),
    }
}

/// How a child's job ended once its result is written.
#[derive(Debug)]
pub enum Served {
    Measured,
    /// The job failed: its row (written) gives the reason in the words of `describe`.
    Failed(Error),
}

/// The child's side: reads one [`Job`] (JSON) from `input`, starts ONNX Runtime with `start`,
/// measures the job and writes its result (JSON) to `output`: measured, or failed with the reason
/// in the words of `describe`. `parent`: the bench process that started this one; when it is
/// gone the child stops without a result ([`RunnerError::Orphaned`]).
pub fn serve(
    input: &mut dyn Read,
    output: &mut dyn Write,
    parent: Option<u32>,
    start: &dyn Fn() -> Result<Runtime, Error>,
    watch: &mut dyn Watch,
    describe: &dyn Fn(&Error) -> String,
) -> Result<Served, RunnerError> {
    let orphaned = || parent.is_some_and(|p| std::os::unix::process::parent_id() != p);
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(RunnerError::ReadJob)?;
    let job: Job = serde_json::from_str(&text).map_err(RunnerError::NotAJob)?;
    if orphaned() {
        return Err(RunnerError::Orphaned);
    }
    watch.start(&job);
    let outcome = start().and_then(|rt| {
        run_job(&rt, &job, PeakMemory::OwnProcess, &mut |p| {
            // A child whose bench parent died stops instead of running on.
            if p.done % 64 == 0 && orphaned() {
                return ControlFlow::Break(());
            }
            watch.progress(p)
        })
    });
    watch.end();
    if matches!(outcome, Err(Error::Cancelled)) || orphaned() {
        return Err(RunnerError::Orphaned);
    }
    match outcome {
        Ok(o) => {
            write_result(output, &o.result)?;
            Ok(Served::Measured)
        }
        Err(e) => {
            write_result(output, &failed(&job.experiment, describe(&e)))?;
            Ok(Served::Failed(e))
        }
    }
}

fn write_result(out: &mut dyn Write, r: &ExperimentResult) -> Result<(), RunnerError> {
    serde_json::to_writer(&mut *out, r)?;
    out.flush()?;
    Ok(())
}

/// How a suite ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteEnd {
    /// Every experiment has its row (measured or failed).
    Finished,
    /// Stopped between rows: `finished` of `total` rows are written.
    Interrupted { finished: usize, total: usize },
}

/// Experiments measured under one setup and plan (bench's suite).
#[derive(Debug, Clone, Copy)]
pub struct Suite<'a> {
    pub setup: &'a Setup,
    pub plan: Plan,
    pub experiments: &'a [Experiment],
}

/// Measures every experiment of `suite` where `place` says, appending each row to `writer` as it
/// finishes; a failed experiment is a failed row (an engine error in the words of `describe`) and
/// the suite goes on. Stops between rows (a running child is killed) once `stop` is set.
pub fn run_suite(
    place: &mut Place<'_>,
    suite: Suite<'_>,
    writer: &mut ResultsWriter,
    stop: &AtomicBool,
    watch: &mut dyn Watch,
    describe: &dyn Fn(&Error) -> String,
) -> Result<SuiteEnd, RunnerError> {
    let (setup, plan, exps) = (suite.setup, suite.plan, suite.experiments);
    for (i, exp) in exps.iter().enumerate() {
        watch.experiment(i, exps.len(), exp);
        let job = Job {
            setup: setup.clone(),
            plan,
            experiment: exp.clone(),
        };
        let interrupted = SuiteEnd::Interrupted {
            finished: writer.results().len(),
            total: exps.len(),
        };
        if stop.load(Ordering::SeqCst) {
            return Ok(interrupted);
        }
        match place.run(&job, stop, watch, describe)? {
            Ran::Interrupted => return Ok(interrupted),
            Ran::Row(r) => {
                if let ExperimentStatus::Failed { message } = &r.status {
                    watch.failed(i, exps.len(), exp, message);
                }
                writer.append(*r)?;
            }
        }
    }
    Ok(SuiteEnd::Finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::data::TextMode;
    use crate::experiment::{PplPlan, SpeedPlan};
    use crate::runtime::SessionConfig;

    fn job() -> Job {
        Job {
            setup: Setup {
                model: "models/m".into(),
                session: SessionConfig {
                    intra_threads: 1,
                    spin: false,
                    ..SessionConfig::default()
                },
                data: "text.txt".into(),
                text: TextMode::Seed,
            },
            plan: Plan {
                ppl: Some(PplPlan {
                    tokens: 64,
                    trace: false,
                }),
                speed: Some(SpeedPlan::new(32, 8, 0)),
            },
            experiment: Experiment::of("local:8".parse().unwrap()),
        }
    }

    /// A stand-in for the h2o binary: a shell script run as `SCRIPT bench-one --parent-pid PID`.
    /// An executable script `fake-h2o` in `dir`, written by another process: had this one held
    /// it open for writing, a child forked meanwhile by another test thread would keep that
    /// descriptor until its exec, and running the script would fail with ETXTBSY ("text file busy").
    fn fake_child(dir: &Path, body: &str) -> PathBuf {
        use std::io::Write;
        let p = dir.join("fake-h2o");
        let mut w = std::process::Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(&p)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let script = format!("#!/bin/sh\n{body}\n");
        w.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(w.wait().unwrap().success());
        p
    }

    fn row(ran: Ran) -> ExperimentResult {
        match ran {
            Ran::Row(r) => *r,
            Ran::Interrupted => panic!("interrupted"),
        }
    }

    fn go() -> AtomicBool {
        AtomicBool::new(false)
    }

    /// Issue 19 item 6: the job reaches the child whole, on its stdin, and the child's result
    /// comes back as it wrote it.
    #[test]
    fn the_job_reaches_the_child_and_its_result_comes_back() {
        let d = tempfile::tempdir().unwrap();
        let got = d.path().join("job.json");
        let result = ExperimentResult::new("local 8", "local:8".parse().unwrap());
        let body = format!(
            "test \"$1 $2 $3\" = \"bench-one --parent-pid {}\" || exit 9\ncat > {}\necho '{}'",
            std::process::id(),
            got.display(),
            serde_json::to_string(&result).unwrap()
        );
        let exe = fake_child(d.path(), &body);
        assert_eq!(row(run_in_child(&exe, &job(), &go()).unwrap()), result);
        let sent: Job = serde_json::from_str(&std::fs::read_to_string(&got).unwrap()).unwrap();
        assert_eq!(sent, job());
        assert_eq!(measure_in_child(&exe, &job()).unwrap(), result);
    }

    /// Issue 19 item 5: a child that fails or dies gives a `failed: <reason>` row, never an abort.
    #[test]
    fn a_failing_or_killed_child_gives_a_failed_row_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let reason = |body: &str| {
            let exe = fake_child(d.path(), body);
            match row(run_in_child(&exe, &job(), &go()).unwrap()).status {
                ExperimentStatus::Failed { message } => message,
                ExperimentStatus::Ok => panic!("ok from {body}"),
            }
        };
        // the child's own reason, as bench-one writes it
        let own = serde_json::to_string(&failed(&job().experiment, "--data: gone".into())).unwrap();
        let m = reason(&format!("cat > /dev/null\necho '{own}'\nexit 2"));
        assert_eq!(m, "--data: gone");
        let m = reason("cat > /dev/null\necho 'error: boom' >&2\nexit 5");
        assert_eq!(m, "its process ended without a result (exit status: 5)");
        let m = reason("kill -KILL $$");
        assert!(m.contains("signal: 9"), "{m}");
        let m = reason("cat > /dev/null\necho not-json");
        assert_eq!(m, "its process wrote no result (9 bytes on stdout)");
        // speed's points: the failure is an error with the child's reason
        let exe = fake_child(d.path(), &format!("cat > /dev/null\necho '{own}'\nexit 2"));
        let e = measure_in_child(&exe, &job()).unwrap_err();
        assert!(
            matches!(&e, RunnerError::Failed(m) if m == "--data: gone"),
            "{e}"
        );
        assert_eq!(e.to_string(), "--data: gone");
    }

    /// An interrupt while a child runs stops it and reports the suite interrupted.
    #[test]
    fn an_interrupt_stops_the_running_child() {
        let d = tempfile::tempdir().unwrap();
        let exe = fake_child(d.path(), "cat > /dev/null\nexec sleep 30");
        let stop = AtomicBool::new(true);
        assert!(matches!(
            run_in_child(&exe, &job(), &stop).unwrap(),
            Ran::Interrupted
        ));
    }

    /// The child's side: a job that cannot be measured gives a failed row in the caller's words
    /// on the output, and the error; bad input on stdin is named.
    #[test]
    fn a_child_writes_a_failed_row_in_the_callers_words() {
        let text = serde_json::to_string(&job()).unwrap();
        let mut out = Vec::new();
        let start = || -> Result<Runtime, Error> { Err(Error::Input("no runtime here".into())) };
        let served = serve(
            &mut text.as_bytes(),
            &mut out,
            None,
            &start,
            &mut Quiet,
            &|e| format!("in words: {e}"),
        )
        .unwrap();
        assert!(
            matches!(served, Served::Failed(Error::Input(_))),
            "{served:?}"
        );
        let r: ExperimentResult = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            r.status,
            ExperimentStatus::Failed {
                message: "in words: bad input: no runtime here".into()
            }
        );
        assert_eq!(
            (r.label.as_str(), r.spec),
            ("local 8", job().experiment.spec)
        );
        let e = serve(
            &mut "{".as_bytes(),
            &mut Vec::new(),
            None,
            &start,
            &mut Quiet,
            &|e| e.to_string(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "stdin is not a bench job (JSON)");
        // a parent that is not ours: orphaned before anything runs, nothing written
        let mut out = Vec::new();
        let e = serve(
            &mut text.as_bytes(),
            &mut out,
            Some(u32::MAX),
            &start,
            &mut Quiet,
            &|e| e.to_string(),
        )
        .unwrap_err();
        assert!(matches!(e, RunnerError::Orphaned), "{e}");
        assert!(out.is_empty());
    }
}
