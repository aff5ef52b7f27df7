//! Helpers shared by the CLI end-to-end tests (tests/cli_*.rs): the `h2o` command and generated text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

use super::root;

/// `h2o` from this build, run in the project root; ORT_DYLIB_PATH and the rest of the environment
/// pass through, H2O_DATA is removed so only `--data` counts.
pub fn h2o() -> Command {
    let mut c = Command::cargo_bin("h2o").expect("h2o binary");
    c.current_dir(root()).env_remove("H2O_DATA");
    c
}

/// Deterministic English-like text of `sentences` sentences (a few KB gives ~1000+ tokens on the
/// fixture's 500-id BPE).
fn english_text(sentences: usize) -> String {
    const SUBJ: [&str; 10] = [
        "The river",
        "A small town",
        "The old museum",
        "Her brother",
        "The committee",
        "This song",
        "The ship",
        "The army",
        "A young teacher",
        "The company",
    ];
    const VERB: [&str; 10] = [
        "was built",
        "moved north",
        "released an album",
        "won the election",
        "opened in 1921",
        "was destroyed",
        "returned home",
        "signed the treaty",
        "was praised by critics",
        "lost the game",
    ];
    const TAIL: [&str; 8] = [
        "after the war.",
        "in the spring of 1887.",
        ", and the people cheered.",
        "; nobody expected it.",
        "during a long storm.",
        "with great success.",
        "near the border.",
        "before the winter came.",
    ];
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as usize) % n
    };
    let mut out = String::from(" = Test Article = \n\n");
    for i in 0..sentences {
        out.push_str(SUBJ[next(SUBJ.len())]);
        out.push(' ');
        out.push_str(VERB[next(VERB.len())]);
        out.push(' ');
        out.push_str(TAIL[next(TAIL.len())]);
        out.push(if i % 6 == 5 { '\n' } else { ' ' });
    }
    out
}

pub fn write_text(dir: &Path, sentences: usize) -> PathBuf {
    let p = dir.join("text.txt");
    std::fs::write(&p, english_text(sentences)).unwrap();
    p
}

/// Runs `c` (at most 180 s) and returns its stdout; a failure shows the exit status, stdout and stderr.
pub fn success(mut c: Command) -> String {
    let out = c.timeout(Duration::from_secs(180)).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "failed ({:?}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The JSON document at `p` (a panic naming the file and the text when it is not JSON).
pub fn read_json(p: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()))
}
