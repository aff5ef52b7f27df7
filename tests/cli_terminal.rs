//! End-to-end: `h2o speed`, `bench` and `compare` on a real terminal (a pseudo-terminal of 60, 80
//! and 120 columns, the binary's controlling terminal): no printed line is wider than the terminal,
//! and every number and policy spec of the data appears whole on some line, unless its column is
//! named as left out. Error lines on a narrow terminal are wrapped at spaces, a path kept whole.

use std::io::Read;
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use rustix::termios::{tcsetwinsize, Winsize};

mod common;

use common::cli::write_text;
use common::{fixture_dir, root};

const WIDTHS: [u16; 3] = [60, 80, 120];

/// What a command printed on a terminal of some width.
struct Screen {
    cols: u16,
    stdout: String,
    stderr: String,
    ok: bool,
}

/// Runs `h2o args` with stdout on a new pseudo-terminal of `cols` columns, the process's
/// controlling terminal in a session of its own (so its size is what the binary reads, whatever
/// terminal runs the tests); stderr too when `stderr_on_terminal`, else piped. The terminal's
/// `\r\n` line ends are returned as `\n`.
fn run_on_terminal(args: &[&str], cols: u16, stderr_on_terminal: bool) -> Screen {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let size = Winsize {
        ws_row: 50,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    tcsetwinsize(&master, size).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("h2o"));
    cmd.args(args)
        .current_dir(root())
        .env_remove("H2O_DATA")
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap());
    if stderr_on_terminal {
        cmd.stderr(slave.try_clone().unwrap());
    } else {
        cmd.stderr(Stdio::piped());
    }
    // SAFETY: between fork and exec only two system calls (setsid, ioctl) run.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(1))?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("h2o starts");
    drop(cmd); // the parent's copies of the terminal's side: reading ends when the child's close
    drop(slave);
    let mut err = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            e.read_to_string(&mut s).unwrap();
        }
        s
    });
    let mut out = Vec::new();
    let mut master = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // Linux answers EIO once every process has closed the terminal's other side
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    let status = child.wait().unwrap();
    let terminal = String::from_utf8_lossy(&out).replace("\r\n", "\n");
    let stderr = err_reader.join().unwrap();
    let (stdout, stderr) = if stderr_on_terminal {
        (String::new(), terminal)
    } else {
        (terminal, stderr)
    };
    Screen {
        cols,
        stdout,
        stderr,
        ok: status.success(),
    }
}

/// Whether `figure` appears in `line` whole: not inside a longer number, word or spec.
fn contains_whole(line: &str, figure: &str) -> bool {
    let part = |c: char| c.is_alphanumeric() || ".:+@-_=".contains(c);
    line.match_indices(figure).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + figure.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// The column names the output says it left out ("Left out to fit N columns: A, B; --wide ...").
fn left_out(text: &str) -> Vec<String> {
    let joined = text.replace('\n', " ");
    joined
        .split("Left out to fit ")
        .skip(1)
        .filter_map(|rest| {
            let (_, names) = rest.split_once("columns: ")?;
            let (names, _) = names.split_once("; --wide")?;
            Some(names.split(", ").map(str::to_string).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// Every line fits the terminal, and each (column, figure) appears whole on some line or its
/// column is named as left out.
fn check_screen(what: &str, s: &Screen, figures: &[(&str, String)]) {
    let text = &s.stdout;
    assert!(s.ok, "{what} at {} failed:\n{text}\n{}", s.cols, s.stderr);
    for line in text.lines() {
        assert!(
            line.chars().count() <= usize::from(s.cols),
            "{what} at {} columns: a line of {}:\n{line}\n\n{text}",
            s.cols,
            line.chars().count()
        );
    }
    let dropped = left_out(text);
    for (column, figure) in figures {
        assert!(
            text.lines().any(|l| contains_whole(l, figure)) || dropped.iter().any(|d| d == column),
            "{what} at {} columns: {column} {figure:?} is not whole on any line (left out: \
             {dropped:?}):\n{text}",
            s.cols
        );
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1u64 << 20) as f64)
}

#[test]
fn the_oracle_helpers() {
    assert!(contains_whole("│ 636.2 ┆", "636.2"));
    assert!(!contains_whole("│ 636.25 ┆", "636.2"));
    assert!(!contains_whole("│ 1636.2 ┆", "636.2"));
    assert!(!contains_whole("│ local:2 ┆", "local:256"));
    assert!(!contains_whole("│ h2o:192+64@pyramid ┆", "h2o:192+64"));
    assert!(contains_whole("[h2o:192+64]", "h2o:192+64"));
    assert_eq!(
        left_out("x\nLeft out to fit 60 columns: TTFT (ms), Peak\nRSS (MiB); --wide shows"),
        ["TTFT (ms)", "Peak RSS (MiB)"]
    );
}

/// `h2o speed` on the default model (models/pythia-micro): both tables, compact and `--wide`.
#[test]
fn speed_tables_fit_60_80_and_120_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("speed.json");
    let specs = ["full", "h2o-layer:32+16", "local:40"];
    for wide in [false, true] {
        for cols in WIDTHS {
            let mut args = vec![
                "speed",
                "--exp",
                "full,h2o-layer:32+16,local:40",
                "--prompt",
                "64",
                "--gen",
                "8",
                "--warmup",
                "0",
                "--threads",
                "1",
                "--no-floor",
                "--in-process",
                "--json",
                json.to_str().unwrap(),
            ];
            if wide {
                args.push("--wide");
            }
            let screen = run_on_terminal(&args, cols, false);
            assert!(screen.ok, "{}\n{}", screen.stdout, screen.stderr);
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            let mut figures: Vec<(&str, String)> =
                specs.iter().map(|s| ("Policy", s.to_string())).collect();
            for r in doc["runs"].as_array().unwrap() {
                let s = &r["speed"];
                let f = |k: &str| s[k].as_f64().unwrap();
                let b = |k: &str| r[k].as_u64().unwrap();
                figures.extend([
                    ("TTFT (ms)", format!("{:.1}", f("ttft_ms"))),
                    ("TPOT (ms)", format!("{:.2}", f("tpot_median_ms"))),
                    ("Throughput (T/s)", format!("{:.2}", f("throughput_tps"))),
                    ("KV (MiB)", mib(b("kv_bytes"))),
                    ("KV alloc (MiB)", mib(b("kv_allocated_bytes"))),
                    ("Peak RSS (MiB)", mib(b("peak_rss_bytes"))),
                    ("TPOT mean (ms)", format!("{:.3}", f("tpot_mean_ms"))),
                ]);
            }
            let what = if wide { "speed --wide" } else { "speed" };
            check_screen(what, &screen, &figures);
        }
    }
}

/// The results CSV of a bench run, as (header, rows).
fn read_csv(dir: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let csv = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "csv"))
        .expect("a results CSV");
    let mut r = csv::Reader::from_path(&csv).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

/// `h2o bench` on the tiny fixture at quick settings: its three tables, compact and `--wide`.
#[test]
fn bench_tables_fit_60_80_and_120_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let fixture = fixture_dir();
    for wide in [false, true] {
        for cols in WIDTHS {
            let results = tmp.path().join(format!("r{cols}{wide}"));
            let mut args = vec![
                "bench",
                "--model",
                fixture.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--exp",
                "full,h2o-layer:24+8,local:20",
                "--ppl-tokens",
                "64",
                "--prompt",
                "32",
                "--gen",
                "8",
                "--warmup",
                "0",
                "--threads",
                "1",
                "--in-process",
                "--results",
                results.to_str().unwrap(),
            ];
            if wide {
                args.push("--wide");
            }
            let screen = run_on_terminal(&args, cols, false);
            assert!(screen.ok, "{}\n{}", screen.stdout, screen.stderr);
            let (header, rows) = read_csv(&results);
            let at = |name: &str| header.iter().position(|h| h == name).unwrap();
            let real = |row: &[String], name: &str, decimals: usize| {
                format!("{:.decimals$}", row[at(name)].parse::<f64>().unwrap())
            };
            let mut figures: Vec<(&str, String)> = Vec::new();
            for row in &rows {
                figures.extend([
                    ("Policy", row[at("Policy")].clone()),
                    ("Budget (Tokens)", row[at("Budget (Tokens)")].clone()),
                    ("TPOT (ms)", real(row, "TPOT (ms)", 2)),
                    ("Throughput (T/s)", real(row, "Throughput (T/s)", 2)),
                    ("PPL", real(row, "PPL", 2)),
                    ("KV Size (GB)", real(row, "KV Size (GB)", 4)),
                    ("Model (ms)", real(row, "Model (ms)", 3)),
                    ("KV (MiB)", mib(row[at("KV Bytes")].parse().unwrap())),
                    (
                        "Peak RSS (MiB)",
                        mib(row[at("Peak RSS (bytes)")].parse().unwrap()),
                    ),
                ]);
            }
            let what = if wide { "bench --wide" } else { "bench" };
            check_screen(what, &screen, &figures);
        }
    }
}

/// Two result files in our format with wide figures and long specs.
fn compare_files(dir: &Path) -> (String, String) {
    let head = "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy\n";
    let a = format!(
        "{head}Baseline,Full,1.2500,636.25,1.57,29.80,full
\"H2O (64r+192h)\",256,0.0781,29.80,33.56,31.25,h2o:192+64@pyramid
\"Local (256)\",256,0.0781,9.00,111.11,1234.56,local:256
"
    );
    let b = a
        .replace("636.25", "512.75")
        .replace("29.80,33.56,31.25", "28.40,35.21,31.90")
        .replace("1234.56", "987.65");
    let (pa, pb) = (dir.join("a.csv"), dir.join("b.csv"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    (
        pa.to_str().unwrap().to_string(),
        pb.to_str().unwrap().to_string(),
    )
}

#[test]
fn compare_table_fits_60_80_and_120_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = compare_files(tmp.path());
    let mut figures: Vec<(&str, String)> = Vec::new();
    for (col, v) in [
        ("PPL A", "29.80"),
        ("PPL A", "31.25"),
        ("PPL A", "1234.56"),
        ("PPL B", "31.90"),
        ("PPL B", "987.65"),
        ("TPOT A (ms)", "636.25"),
        ("TPOT A (ms)", "9.00"),
        ("TPOT B (ms)", "512.75"),
        ("TPOT B (ms)", "28.40"),
        ("KV A (GB)", "1.2500"),
        ("KV B (GB)", "0.0781"),
        ("A: Experiment", "full"),
        ("A: Experiment", "h2o:192+64@pyramid"),
        ("A: Experiment", "local:256"),
    ] {
        figures.push((col, v.to_string()));
    }
    for wide in [false, true] {
        for cols in WIDTHS {
            let mut args = vec!["compare", a.as_str(), b.as_str()];
            if wide {
                args.push("--wide");
            }
            let screen = run_on_terminal(&args, cols, false);
            let what = if wide { "compare --wide" } else { "compare" };
            // the KV columns are only in the wide table
            let shown: Vec<(&str, String)> = figures
                .iter()
                .filter(|(c, _)| wide || !c.starts_with("KV"))
                .cloned()
                .collect();
            check_screen(what, &screen, &shown);
        }
    }
}

/// An error line longer than the terminal is wrapped at spaces; the path in it stays whole.
#[test]
fn error_lines_wrap_at_spaces() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-results-file.csv");
    let missing = missing.to_str().unwrap();
    let s = run_on_terminal(&["compare", missing, missing], 60, true);
    assert!(!s.ok);
    let text = s.stderr.trim_end();
    assert!(text.starts_with("error: "), "{text}");
    assert!(text.lines().count() > 1, "a long error is wrapped:\n{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 60, "{line}\n\n{text}");
    }
    assert!(text.lines().any(|l| l.contains(missing)), "{text}");
}

/// `--help` is wrapped to the terminal at spaces: at 60, 80 and 120 columns no line of a
/// subcommand's help is wider, and a long flag description (`--denormals`) stays whole words.
#[test]
fn help_wraps_to_the_terminal() {
    for cols in WIDTHS {
        for sub in ["ppl", "speed", "bench"] {
            let s = run_on_terminal(&[sub, "--help"], cols, false);
            assert!(s.ok, "{sub} --help: {}", s.stderr);
            let text = without_styles(&s.stdout);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= cols as usize,
                    "{sub} --help at {cols}: {line:?}\n\n{text}"
                );
            }
            assert!(text.contains("Subnormal floats"), "{text}");
            assert!(
                !text
                    .lines()
                    .any(|l| l.ends_with("Runti") || l.ends_with("devi")),
                "words split:\n{text}"
            );
        }
    }
}

/// `text` without its terminal styles (`ESC [ ... m`, clap's bold and underline on a terminal).
fn without_styles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
