//! The table-driven bad-input check (issue 28): each case runs the real `h2o` binary in a scratch
//! folder holding its own copy of the tiny fixture and a text file, then checks the exit code,
//! the words of the message, and that every named file is unchanged byte for byte (and every named
//! path still absent). Failures of all cases are collected and reported together.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cli::{h2o, write_text};
use super::fixture_dir;

/// A scratch folder: `model/` (a copy of tests/fixtures/tiny), `text.txt` (English-like text),
/// `results/` (empty). Cases may create more in it before they run.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        copy_dir(&fixture_dir(), &model);
        write_text(dir.path(), 400);
        std::fs::create_dir(dir.path().join("results")).unwrap();
        Scratch { dir }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn model(&self) -> PathBuf {
        self.path("model")
    }
    pub fn text(&self) -> PathBuf {
        self.path("text.txt")
    }
    pub fn results(&self) -> PathBuf {
        self.path("results")
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

/// What a path held before a case ran: its bytes, a link's target, a folder's files, or nothing.
#[derive(Debug, PartialEq, Eq)]
enum Snapshot {
    Absent,
    File(Vec<u8>),
    Link(PathBuf),
    Dir(BTreeMap<OsString, Snapshot>),
}

fn snapshot(p: &Path) -> Snapshot {
    match std::fs::symlink_metadata(p) {
        Err(_) => Snapshot::Absent,
        Ok(m) if m.file_type().is_symlink() => Snapshot::Link(std::fs::read_link(p).unwrap()),
        Ok(m) if m.is_dir() => Snapshot::Dir(
            std::fs::read_dir(p)
                .unwrap()
                .flatten()
                .map(|e| (e.file_name(), snapshot(&e.path())))
                .collect(),
        ),
        Ok(m) if m.is_file() => Snapshot::File(std::fs::read(p).unwrap_or_default()),
        // a FIFO, device or socket: its kind only (reading a FIFO would block)
        Ok(_) => Snapshot::Link(PathBuf::from("<special file>")),
    }
}

/// One bad input: the command line, its environment, and what must hold afterwards.
pub struct Case {
    /// A short name reported on failure.
    pub name: String,
    /// `h2o` arguments (subcommand first).
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(String, OsString)>,
    /// The expected exit code.
    pub exit: i32,
    /// Phrases that must all appear in stderr (case-insensitive).
    pub words: Vec<String>,
    /// Paths (files or folders) that must be byte for byte as before (absent stays absent).
    pub unchanged: Vec<PathBuf>,
    /// The wall-clock limit: a case that runs longer has hung.
    pub timeout: Duration,
}

impl Case {
    /// A case expecting exit code 2 (refused) with `words` in the message.
    pub fn new(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Case {
        Case {
            name: name.to_string(),
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            env: Vec::new(),
            exit: 2,
            words: Vec::new(),
            unchanged: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
    pub fn exit(mut self, code: i32) -> Case {
        self.exit = code;
        self
    }
    pub fn words(mut self, words: &[&str]) -> Case {
        self.words = words.iter().map(|w| w.to_string()).collect();
        self
    }
    pub fn unchanged(mut self, paths: &[PathBuf]) -> Case {
        self.unchanged.extend_from_slice(paths);
        self
    }
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Case {
        self.env.push((key.to_string(), value.into()));
        self
    }
    pub fn timeout(mut self, t: Duration) -> Case {
        self.timeout = t;
        self
    }

    /// Runs the case; `Err` says what did not hold.
    pub fn check(&self) -> Result<(), String> {
        let before: Vec<Snapshot> = self.unchanged.iter().map(|p| snapshot(p)).collect();
        let mut cmd = h2o();
        cmd.args(&self.args).timeout(self.timeout);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().map_err(|e| format!("could not run: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let mut problems = Vec::new();
        match out.status.code() {
            Some(c) if c == self.exit => {}
            Some(c) => problems.push(format!("exit {c}, expected {}", self.exit)),
            None => problems.push(format!(
                "no exit code (killed: a hang past {:?} or a signal), expected {}",
                self.timeout, self.exit
            )),
        }
        let lower = stderr.to_lowercase();
        for w in &self.words {
            if !lower.contains(&w.to_lowercase()) {
                problems.push(format!("stderr lacks {w:?}"));
            }
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push("panicked".to_string());
        }
        for (p, b) in self.unchanged.iter().zip(&before) {
            if snapshot(p) != *b {
                problems.push(format!("{} changed", p.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}\n    args: {:?}\n    stderr: {}",
                self.name,
                problems.join("; "),
                self.args,
                stderr.trim()
            ))
        }
    }
}

/// Runs every case and fails once, listing every case that did not hold.
pub fn check_all(cases: &[Case]) {
    let failures: Vec<String> = cases.iter().filter_map(|c| c.check().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}
