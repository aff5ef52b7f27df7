//! End-to-end CLI tests of `h2o sweep plan | run | merge` on the tiny fixture: the grid's jobs, two
//! workers, one result file per job, a rerun that skips them, a failing job's row, the merged PPL
//! equal bit for bit to bench's, duplicates and missing jobs named, and bad input named by flag.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::cli::{h2o, write_text};
use common::fixture_dir;

const SMALL: [&str; 8] = [
    "--ppl-tokens",
    "32",
    "--prompt",
    "16",
    "--gen",
    "4",
    "--warmup",
    "0",
];

fn plan(data: &Path, exps: &str, out: &Path) {
    let o = h2o()
        .args(["sweep", "plan", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args(["--exp", exps, "--threads", "1"])
        .args(SMALL)
        .arg("--out")
        .arg(out)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `h2o sweep ARGS`: (exit code, stdout, stderr).
fn sweep(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let o = h2o()
        .arg("sweep")
        .args(args)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn os<'a>(args: &'a [&'a str]) -> Vec<&'a std::ffi::OsStr> {
    args.iter().map(std::ffi::OsStr::new).collect()
}

fn record_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn plan_run_merge_matches_bench_skips_finished_and_records_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = write_text(t, 200);
    let short_dir = t.join("short");
    std::fs::create_dir(&short_dir).unwrap();
    let short = write_text(&short_dir, 200);
    let jobs = t.join("jobs.jsonl");
    plan(&data, "full,h2o:8+8,local:16", &jobs);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jobs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["needs"]["provider"], "cpu", "{l}");
        assert!(l["needs"]["memory_bytes"].as_u64().unwrap() > 0, "{l}");
        assert_eq!(l["job"]["plan"]["ppl"]["tokens"], 32);
    }
    // a fourth job on a text that is cut short after planning: it fails in its child
    let failing = t.join("failing.jsonl");
    plan(&short, "tova:8", &failing);
    let mut all = std::fs::read_to_string(&jobs).unwrap();
    all.push_str(&std::fs::read_to_string(&failing).unwrap());
    std::fs::write(&jobs, &all).unwrap();
    std::fs::write(&short, "Too short.").unwrap();

    let results = t.join("results");
    let (j, r) = (jobs.to_str().unwrap(), results.to_str().unwrap());
    let (code, out, err) = sweep(&os(&["run", j, "--workers", "2", "--results", r]));
    assert_eq!(code, 1, "one job failed:\n{out}\n{err}");
    assert!(out.contains("4 ran (1 failed), 0 skipped"), "{out}");
    assert!(
        err.contains("error: 1 of 4 jobs failed; their records in")
            && err.contains("delete a job's record to run it again"),
        "{err}"
    );
    let files = record_files(&results);
    assert_eq!(files.len(), 4, "one file per job, no leftovers: {files:?}");
    let failed_id =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&failing).unwrap())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
    let failed = json(&results.join(format!("{failed_id}.json")));
    assert_eq!(failed["result"]["status"]["state"], "failed", "{failed}");

    // a rerun skips every finished job (the failed one too: its record is its result)
    let before = std::fs::read(&files[0]).unwrap();
    let (code, out, _) = sweep(&os(&["run", j, "--workers", "2", "--results", r]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 ran (0 failed), 4 skipped"), "{out}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), before, "untouched");

    // merge: one run, JOBS order, the failed row, origins; twice gives the same bytes
    let merged = t.join("merged");
    let m = merged.to_str().unwrap();
    let (code, out, err) = sweep(&os(&["merge", r, "--jobs", j, "--out", m]));
    assert_eq!(code, 0, "{out}\n{err}");
    let csv1 = std::fs::read(t.join("merged.csv")).unwrap();
    let json1 = std::fs::read(t.join("merged.json")).unwrap();
    let (code, ..) = sweep(&os(&["merge", r, "--jobs", j, "--out", m]));
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(t.join("merged.csv")).unwrap(),
        csv1,
        "idempotent CSV"
    );
    assert_eq!(
        std::fs::read(t.join("merged.json")).unwrap(),
        json1,
        "idempotent JSON"
    );
    let doc = json(&t.join("merged.json"));
    let exps = doc["experiments"].as_array().unwrap();
    let specs: Vec<&str> = exps.iter().map(|e| e["spec"].as_str().unwrap()).collect();
    assert_eq!(specs, ["full", "h2o:8+8", "local:16", "tova:8"]);
    assert_eq!(exps[3]["status"]["state"], "failed");
    assert!(doc["complete"].as_bool().unwrap());
    let origins = doc["origins"].as_array().unwrap();
    assert_eq!(origins.len(), 4);
    assert!(origins[0]["ort_version"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    let csv_text = String::from_utf8(csv1).unwrap();
    let header = csv_text.lines().next().unwrap();
    assert!(
        header.ends_with("Job ID,Host,CPU,GPU,ONNX Runtime"),
        "{header}"
    );
    assert_eq!(csv_text.lines().count(), 5);

    // bench on the same experiments: the same NLLs, bit for bit
    let bench_dir = t.join("bench");
    let o = h2o()
        .args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args([
            "--exp",
            "full,h2o:8+8,local:16",
            "--threads",
            "1",
            "--name",
            "b",
        ])
        .args(SMALL)
        .arg("--results")
        .arg(&bench_dir)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bench = json(&bench_dir.join("b.json"));
    for (i, b) in bench["experiments"].as_array().unwrap().iter().enumerate() {
        let bits = |e: &serde_json::Value| -> Vec<u64> {
            e["nlls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap().to_bits())
                .collect()
        };
        assert_eq!(bits(&exps[i]), bits(b), "{} NLLs", b["spec"]);
        assert_eq!(
            exps[i]["ppl"]["ppl"].as_f64().unwrap().to_bits(),
            b["ppl"]["ppl"].as_f64().unwrap().to_bits()
        );
    }

    // duplicates and missing jobs are named
    let copy = t.join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(&files[0], copy.join(files[0].file_name().unwrap())).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    let c = copy.to_str().unwrap();
    let (code, _, err) = sweep(&os(&["merge", r, c, "--jobs", j, "--out", m]));
    assert_eq!(code, 2, "{err}");
    let dup_id = files[0].file_stem().unwrap().to_str().unwrap();
    let gone_id = files[1].file_stem().unwrap().to_str().unwrap();
    assert!(err.contains(&format!("duplicate: job {dup_id}")), "{err}");
    assert!(err.contains(&format!("missing: job {gone_id}")), "{err}");
    assert!(err.contains("1 of 4 jobs have no result"), "{err}");
    assert!(!json(&t.join("merged.json"))["complete"].as_bool().unwrap());
}

#[test]
fn bad_input_is_one_error_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = |n: &str| t.join(n).to_str().unwrap().to_string();
    let file = p("file");
    std::fs::write(&file, "x").unwrap();
    let bad = p("bad.jsonl");
    std::fs::write(&bad, "{\"id\":1}\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), p("none.jsonl"), "--results".into(), p("r")],
            "JOBS: cannot read",
        ),
        (
            vec!["run".into(), bad.clone(), "--results".into(), p("r")],
            "JOBS: ",
        ),
        (
            vec!["run".into(), file.clone(), "--results".into(), p("r")],
            "line 1: not a sweep job",
        ),
        (
            vec![
                "merge".into(),
                p("r"),
                "--jobs".into(),
                p("none"),
                "--out".into(),
                p("m"),
            ],
            "--jobs: cannot read",
        ),
        (
            vec!["merge".into(), file.clone(), "--out".into(), p("m")],
            "results folder: cannot read",
        ),
    ];
    for (args, want) in cases {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let (code, _, err) = sweep(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // a results path that is a file: named by --results, before anything runs
    let jobs = t.join("jobs.jsonl");
    let data = write_text(t, 200);
    plan(&data, "full", &jobs);
    let (code, _, err) = sweep(&os(&["run", jobs.to_str().unwrap(), "--results", &file]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--results:"), "{err}");
    let (code, _, err) = sweep(&os(&[
        "run",
        jobs.to_str().unwrap(),
        "--workers",
        "0",
        "--results",
        &p("r"),
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("--workers 0"), "{err}");
}
