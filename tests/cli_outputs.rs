//! Issue 19 item 1, end to end: every file the CLI writes follows one rule. A regular file is
//! replaced atomically, a symlink is followed (its target replaced, the link kept), a character
//! device or FIFO is written through (`--json /dev/stdout` works), a directory is refused before
//! anything is measured. Issue 28: a FIFO is opened before the run without waiting, and one with
//! no reader is refused then.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

mod common;

use common::cli::{h2o, write_text};
use common::fixture_dir;

/// `h2o ppl` on the fixture, 16 tokens, with `args` (e.g. `--json PATH`).
fn ppl(data: &Path, args: &[&Path]) -> Command {
    let mut c = h2o();
    c.args(["ppl", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args(["--tokens", "16", "--policy", "local:4", "--threads", "1"]);
    for pair in args.chunks(2) {
        c.arg(pair[0]).arg(pair[1]);
    }
    c.timeout(Duration::from_secs(60));
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json_ok(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// A character device in `dir` (root can make one: the same device as /dev/null), else /dev/null.
fn char_device(dir: &Path) -> PathBuf {
    let p = dir.join("mynull");
    let made = Process::new("mknod")
        .args(["-m", "666"])
        .arg(&p)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if made {
        p
    } else {
        PathBuf::from("/dev/null")
    }
}

fn is_char_device(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false)
}

#[test]
fn a_character_device_is_written_through_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let dev = char_device(tmp.path());
    let json = PathBuf::from("--json");
    let trace = PathBuf::from("--trace");
    ok(ppl(&data, &[&json, &dev, &trace, &dev]));
    assert!(is_char_device(&dev), "{} was replaced", dev.display());
    assert!(is_char_device(Path::new("/dev/null")));
}

/// `--json /dev/stdout`, through a link of its own in a temporary folder (`/dev/stdout` is a link
/// to `/proc/self/fd/1`): a writer that replaced links would replace this one, never the
/// machine's `/dev/stdout`.
#[test]
fn json_to_dev_stdout_lands_on_stdout_after_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let stdout_link = tmp.path().join("stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &stdout_link).unwrap();
    let stdout = ok(ppl(&data, &[Path::new("--json"), &stdout_link]));
    let (summary, doc) = stdout.split_once('\n').unwrap();
    assert!(summary.contains("PPL"), "{stdout}");
    assert_eq!(json_ok(doc)["n_tokens"], 16);
    assert!(std::fs::symlink_metadata(&stdout_link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A named pipe `pipe` in `dir`.
fn mkfifo(dir: &Path) -> PathBuf {
    let fifo = dir.join("pipe");
    assert!(Process::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    fifo
}

/// A FIFO with a reader is written through. The reader is this test, its end opened (without
/// waiting) before the run starts: `h2o` refuses a FIFO that has no reader when it checks its
/// outputs, so a reader started beside it (`cat FIFO &`) would race that check.
#[test]
fn a_fifo_is_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let fifo = mkfifo(tmp.path());
    let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK;
    let reader =
        std::fs::File::from(rustix::fs::open(&fifo, flags, rustix::fs::Mode::empty()).unwrap());
    let mut cmd = ppl(&data, &[Path::new("--json"), &fifo]);
    let run = std::thread::spawn(move || cmd.output().unwrap());
    // Read as the run writes (a replaced FIFO would leave this reader with nothing).
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match (&reader).read(&mut buf) {
            Ok(0) if run.is_finished() => break,
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let run = run.join().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let t = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(t.is_fifo(), "the FIFO was replaced");
    assert_eq!(json_ok(&String::from_utf8_lossy(&got))["n_tokens"], 16);
}

/// A FIFO with no reader: refused before anything is measured, at once (it used to block the
/// end of the run until someone read it).
#[test]
fn a_fifo_without_a_reader_is_refused_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let fifo = mkfifo(tmp.path());
    let mut c = ppl(&data, &[Path::new("--json"), &fifo]);
    c.timeout(Duration::from_secs(20));
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--json") && stderr.contains("no process is reading"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "measured before refusing");
}

#[test]
fn a_symlink_is_followed_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let real = tmp.path().join("real.json");
    std::fs::write(&real, "old").unwrap();
    let link = tmp.path().join("link.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    // and a dangling one: its target is created
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    let dangling = tmp.path().join("trace-link.json");
    std::os::unix::fs::symlink("sub/trace.json", &dangling).unwrap();
    ok(ppl(
        &data,
        &[Path::new("--json"), &link, Path::new("--trace"), &dangling],
    ));
    for (l, target) in [(&link, "real.json"), (&dangling, "sub/trace.json")] {
        let m = std::fs::symlink_metadata(l).unwrap();
        assert!(m.file_type().is_symlink(), "{} was replaced", l.display());
        assert_eq!(std::fs::read_link(l).unwrap(), Path::new(target));
    }
    assert_eq!(
        json_ok(&std::fs::read_to_string(&real).unwrap())["n_tokens"],
        16
    );
    let trace = json_ok(&std::fs::read_to_string(tmp.path().join("sub/trace.json")).unwrap());
    assert_eq!(trace["format"], "h2o-evict-trace/1");

    // speed's plot through a link: the target gets the PNG
    let png = tmp.path().join("plot.png");
    std::fs::write(&png, "old").unwrap();
    let plot_link = tmp.path().join("plot-link.png");
    std::os::unix::fs::symlink(&png, &plot_link).unwrap();
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--prompt", "8", "--gen", "4", "--warmup", "0", "--no-floor"])
        .args(["--threads", "1", "--plot"])
        .arg(&plot_link)
        .timeout(Duration::from_secs(60));
    ok(c);
    assert!(std::fs::symlink_metadata(&plot_link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
}

#[test]
fn a_directory_is_refused_before_anything_is_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    for flag in ["--json", "--trace"] {
        let out = ppl(&data, &[Path::new(flag), &dir]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is a directory"), "{stderr}");
        assert!(out.stdout.is_empty(), "measured before refusing");
    }
    assert!(dir.is_dir() && std::fs::read_dir(&dir).unwrap().next().is_none());

    // a directory where one of heatmap's pictures goes: refused before any picture is drawn
    let maps = tmp.path().join("maps");
    std::fs::create_dir_all(maps.join("kept_layer_01.png")).unwrap();
    let out = h2o()
        .args(["heatmap", "--model"])
        .arg(fixture_dir())
        .args(["--threads", "1", "--layers", "0,1", "--out"])
        .arg(&maps)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kept_layer_01.png is a directory"),
        "{stderr}"
    );
    let names: Vec<_> = std::fs::read_dir(&maps).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "no picture drawn: {names:?}");
}

/// Tables on stdout read by a pipe whose reader is gone (`h2o info | head -0`): the process ends
/// quietly with exit code 141 (as a SIGPIPE would), not with a Rust panic.
#[test]
fn a_closed_stdout_pipe_ends_the_process_quietly() {
    let bin = assert_cmd::cargo::cargo_bin("h2o");
    let mut child = Process::new(bin)
        .current_dir(common::root())
        .args(["info", "--model"])
        .arg(fixture_dir())
        .args(["--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is printed
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
