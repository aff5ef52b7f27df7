//! Every sample of tool output in the docs is what the binary prints for that command (numbers
//! excepted), so a sample cannot go stale.
//!
//! A sample is a fenced block right after a marker line
//! `<!-- sample [cols=N]: h2o ARGS -->`: the test runs `h2o ARGS` in a pseudo-terminal N columns
//! wide (`script` from util-linux; default 80), replaces `{model}` (the default model), `{text}`
//! (the committed WikiText-2 excerpt), `{seed_csv}` (the seed's results CSV) and `{results}` (an
//! empty temporary folder), and checks that the block's lines appear in the output, consecutively
//! and in order, once numbers and column padding are set aside. A line `...` in a block stands for
//! any number of output lines. Historical output, kept as a record of a past run, is marked
//! `<!-- recorded: WHEN, WHAT -->` instead; a block that looks like tool output (a table) with
//! neither marker fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;

/// The markdown files whose samples are checked.
fn doc_files() -> Vec<PathBuf> {
    let r = root();
    let mut files = vec![r.join("README.md"), r.join("export/README.md")];
    for dir in ["docs", "docs/perf"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(r.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// One marked fenced block of a markdown file.
#[derive(Debug, PartialEq)]
struct Sample {
    /// 1-based line of the marker.
    line: usize,
    cols: usize,
    /// The arguments after `h2o`, split on whitespace.
    args: Vec<String>,
    body: Vec<String>,
}

/// A fenced block that looks like tool output (box-drawing table characters).
fn looks_like_output(body: &[String]) -> bool {
    body.iter()
        .any(|l| l.contains('┌') || l.contains('╞') || l.contains('┆'))
}

/// The marked samples of `text`, and the 1-based lines of table-like blocks that carry no marker.
fn parse(text: &str) -> Result<(Vec<Sample>, Vec<usize>), String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut samples = Vec::new();
    let mut unmarked = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].trim_start().starts_with("```") {
            i += 1;
            continue;
        }
        let open = i;
        let end = (open + 1..lines.len())
            .find(|&j| lines[j].trim_start().starts_with("```"))
            .ok_or_else(|| format!("line {}: a fenced block is never closed", open + 1))?;
        let body: Vec<String> = lines[open + 1..end].iter().map(|s| s.to_string()).collect();
        let marker = (0..open)
            .rev()
            .map(|j| lines[j].trim())
            .find(|l| !l.is_empty())
            .filter(|l| l.starts_with("<!--"));
        match marker {
            Some(m) if m.starts_with("<!-- sample") => {
                let inner = m
                    .trim_start_matches("<!-- sample")
                    .trim_end_matches("-->")
                    .trim();
                let (opts, cmd) = inner
                    .split_once(':')
                    .ok_or_else(|| format!("line {open}: a sample marker needs `: h2o ARGS`"))?;
                let cols = match opts.trim().strip_prefix("cols=") {
                    Some(n) => n.parse().map_err(|_| format!("line {open}: bad cols"))?,
                    None if opts.trim().is_empty() => 80,
                    None => return Err(format!("line {open}: unknown sample option {opts:?}")),
                };
                let mut words = cmd.split_whitespace().map(str::to_string);
                if words.next().as_deref() != Some("h2o") {
                    return Err(format!("line {open}: a sample's command starts with h2o"));
                }
                samples.push(Sample {
                    line: open,
                    cols,
                    args: words.collect(),
                    body,
                });
            }
            Some(m) if m.starts_with("<!-- recorded:") => {}
            _ if looks_like_output(&body) => unmarked.push(open + 1),
            _ => {}
        }
        i = end + 1;
    }
    Ok((samples, unmarked))
}

/// A line with every number replaced by `#` and the padding of table cells and rules set aside:
/// runs of spaces become one space, runs of `─`/`═` one character, and trailing space goes.
fn normalize(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_digit() || *d == '.' || *d == ',')
            {
                chars.next();
            }
            // a trailing `.` or `,` ends the sentence, not the number
            out.push('#');
            continue;
        }
        let squeeze = matches!(c, ' ' | '─' | '═');
        if squeeze && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// Where `want` (with `...` for any run of lines) matches `got`, consecutively; the first line of
/// `want` that cannot be matched otherwise.
fn find_in(want: &[String], got: &[String]) -> Result<(), String> {
    let want: Vec<String> = want.iter().map(|l| normalize(l)).collect();
    let got: Vec<String> = got.iter().map(|l| normalize(l)).collect();
    fn matches(want: &[String], got: &[String]) -> bool {
        match want.split_first() {
            None => true,
            Some((w, rest)) if w == "..." => (0..=got.len()).any(|k| matches(rest, &got[k..])),
            Some((w, rest)) => got.first() == Some(w) && matches(rest, &got[1..]),
        }
    }
    if (0..got.len()).any(|start| matches(&want, &got[start..])) {
        return Ok(());
    }
    // report the longest prefix of `want` that matched somewhere
    let mut best = 0;
    for n in 1..=want.len() {
        if (0..got.len()).any(|s| matches(&want[..n], &got[s..])) {
            best = n;
        }
    }
    Err(format!(
        "sample line {} does not follow: {:?}",
        best + 1,
        want.get(best)
    ))
}

/// Runs `h2o args` in a pseudo-terminal `cols` wide; its output (stdout and stderr), lines.
fn run_in_pty(args: &[String], cols: usize, results: &Path) -> Vec<String> {
    let bin = assert_cmd::cargo::cargo_bin("h2o");
    let r = root();
    // the seed's results as shipped beside the project (as `make test-dist` needs it too)
    let seed_csv = r.join("../shared/seed/pytorch-results.csv");
    if args.iter().any(|a| a.contains("{seed_csv}")) {
        assert!(seed_csv.is_file(), "{} is absent", seed_csv.display());
    }
    let subst = |a: &str| {
        a.replace(
            "{model}",
            &r.join("models/pythia-micro/onnx").to_string_lossy(),
        )
        .replace(
            "{text}",
            &r.join("tests/data/wiki.test.excerpt.raw").to_string_lossy(),
        )
        .replace("{seed_csv}", &seed_csv.to_string_lossy())
        .replace("{results}", &results.to_string_lossy())
    };
    let quoted: Vec<String> = std::iter::once(bin.to_string_lossy().to_string())
        .chain(args.iter().map(|a| subst(a)))
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let script = format!("stty cols {cols} rows 50; exec {}", quoted.join(" "));
    let out = Command::new("script")
        .args(["-qec", &script, "/dev/null"])
        .current_dir(&r)
        .env_remove("H2O_DATA")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("`script` (util-linux) runs the binary in a pseudo-terminal");
    String::from_utf8_lossy(&out.stdout)
        .replace('\r', "")
        .lines()
        .map(after_escapes)
        .collect()
}

/// What a terminal shows of a line that progress bars redrew: the text after its last escape
/// sequence (`ESC [ params letter`), or the line itself when it has none.
fn after_escapes(line: &str) -> String {
    let Some(esc) = line.rfind('\x1b') else {
        return line.to_string();
    };
    let rest = &line[esc + 1..];
    let end = rest
        .strip_prefix('[')
        .and_then(|r| r.find(|c: char| c.is_ascii_alphabetic()).map(|i| i + 2))
        .unwrap_or(1);
    rest[end.min(rest.len())..].to_string()
}

#[test]
fn every_sample_in_the_docs_is_what_the_binary_prints() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        let (samples, unmarked) = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for line in unmarked {
            failures.push(format!(
                "{name}:{line}: a block of tool output without `<!-- sample: h2o ... -->` (or `<!-- recorded: ... -->`) above it"
            ));
        }
        for s in samples {
            let results = tempfile::tempdir().unwrap();
            let got = run_in_pty(&s.args, s.cols, results.path());
            checked += 1;
            if let Err(e) = find_in(&s.body, &got) {
                failures.push(format!(
                    "{name}:{}: `h2o {}` at {} columns: {e}\n--- the binary printed:\n{}",
                    s.line,
                    s.args.join(" "),
                    s.cols,
                    got.join("\n")
                ));
            }
        }
    }
    assert!(
        checked >= 2,
        "expected the README's and docs/cli.md's samples, found {checked}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn progress_bar_redraws_are_set_aside() {
    assert_eq!(after_escapes("bar 3/9\x1b[1A\x1b[2K┌──┐"), "┌──┐");
    assert_eq!(after_escapes("plain │ a │"), "plain │ a │");
    assert_eq!(after_escapes("x\x1b[2K"), "");
}

#[test]
fn normalize_sets_numbers_and_padding_aside() {
    assert_eq!(
        normalize("│ Baseline ┆   29.89 ┆ 1,535 ┆ h2o:192+64 │  "),
        "│ Baseline ┆ # ┆ # ┆ h#o:#+# │"
    );
    assert_eq!(normalize("┌────┬──┐"), "┌─┬─┐");
    assert_eq!(normalize("╞═══╪═╡"), "╞═╪═╡");
    assert_eq!(normalize("took 57 s."), "took # s.");
    assert_ne!(normalize("│ Local (256) ┆"), normalize("│ Local (256) │"));
}

#[test]
fn find_in_needs_consecutive_lines_unless_told() {
    let got: Vec<String> = ["a 1", "b 2", "c 3", "d"].map(String::from).to_vec();
    let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(find_in(&w(&["b 7", "c 9"]), &got).is_ok());
    assert!(find_in(&w(&["a 1", "c 3"]), &got).is_err());
    assert!(find_in(&w(&["a 1", "...", "d"]), &got).is_ok());
    assert!(find_in(&w(&["d", "a"]), &got).is_err());
    assert!(find_in(&w(&["x"]), &got).is_err());
}

#[test]
fn parse_finds_markers_and_unmarked_tables() {
    let md = "text\n<!-- sample cols=60: h2o compare {seed_csv} x.csv -->\n```\n┌─┐\n```\n\n```\n│ a ┆ b │\n```\n<!-- recorded: 2026-12-02 -->\n```\n┌─┐\n```\n```bash\nmake bench\n```\n";
    let (samples, unmarked) = parse(md).unwrap();
    assert_eq!(
        samples,
        vec![Sample {
            line: 2,
            cols: 60,
            args: vec!["compare".into(), "{seed_csv}".into(), "x.csv".into()],
            body: vec!["┌─┐".into()],
        }]
    );
    assert_eq!(unmarked, vec![7]);
}
