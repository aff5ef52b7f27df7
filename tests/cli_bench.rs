//! End-to-end CLI tests of `h2o bench` on the tiny fixture: the CSV (seed's columns first, one row
//! per experiment), the JSON document, the console table, and a bench killed mid-run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------- helpers ----------

mod common;

use common::cli::{h2o, write_text};
use common::{fixture_dir, root};

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()) == Some(ext)
                        && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Hidden leftovers: `.exp-*.json` child results and `*.tmp*` atomic-write temporaries.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".exp-") || n.contains(".tmp") || n.contains("write-test"))
        .collect()
}

/// The seed's column names, first in every results CSV.
fn seed_columns() -> Vec<String> {
    h2o_engine::report::SEED_COLUMNS
        .map(|c| c.name().to_string())
        .to_vec()
}

/// (header, rows) of a CSV; panics with the file text if it does not parse.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .unwrap_or_else(|e| panic!("{}: bad header: {e}\n{text}", path.display()))
        .iter()
        .map(str::to_string)
        .collect();
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| {
            rec.unwrap_or_else(|e| panic!("{}: bad row: {e}\n{text}", path.display()))
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "row width:\n{text}");
    }
    (header, rows)
}

fn col(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name:?} in {header:?}"))
}

// ---------- tests ----------

#[test]
fn bench_two_experiments_writes_csv_json_and_table() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let results = tmp.path().join("results");
    let t0 = Instant::now();
    let out = h2o()
        .args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--exp", "full,h2o:16+16"])
        .args([
            "--ppl-tokens",
            "64",
            "--prompt",
            "32",
            "--gen",
            "8",
            "--warmup",
            "0",
        ])
        .args(["--threads", "1"])
        .arg("--results")
        .arg(&results)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed ({:?}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    eprintln!("bench with 2 experiments took {:?}", t0.elapsed());

    // Exactly one CSV and one JSON, no leftovers.
    let csvs = files_with_ext(&results, "csv");
    let jsons = files_with_ext(&results, "json");
    assert_eq!(csvs.len(), 1, "{csvs:?}");
    assert_eq!(jsons.len(), 1, "{jsons:?}");
    assert_eq!(csvs[0].file_stem(), jsons[0].file_stem());
    assert!(
        csvs[0]
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .ends_with("tiny-neox"),
        "stem names the model: {csvs:?}"
    );
    assert!(
        leftovers(&results).is_empty(),
        "leftovers: {:?}",
        leftovers(&results)
    );

    // CSV: the seed's columns first, one row per experiment, numbers where numbers belong.
    let (header, rows) = read_csv(&csvs[0]);
    assert_eq!(header[..6], seed_columns(), "header: {header:?}");
    assert_eq!(rows.len(), 2, "one row per experiment: {rows:?}");
    let policy = col(&header, "Policy");
    let status = col(&header, "Status");
    assert_eq!(rows[0][policy], "full");
    assert_eq!(rows[1][policy], "h2o:16+16");
    assert_eq!(rows[0][1], "Full", "full cache budget cell");
    assert_eq!(rows[1][1], "32", "h2o:16+16 budget");
    for row in &rows {
        assert_eq!(row[status], "ok");
        for c in 2..6 {
            let v: f64 = row[c]
                .parse()
                .unwrap_or_else(|_| panic!("{} = {:?} is not a number", header[c], row[c]));
            assert!(v.is_finite() && v > 0.0, "{} = {v}", header[c]);
        }
        assert_eq!(row[col(&header, "Predictions")], "63");
        assert_eq!(row[col(&header, "Prompt Tokens")], "32");
        assert_eq!(row[col(&header, "Decode Steps")], "7");
    }
    let kv = |r: &Vec<String>| r[col(&header, "KV Bytes")].parse::<u64>().unwrap();
    assert!(kv(&rows[1]) < kv(&rows[0]), "h2o holds less KV than full");

    // JSON: run information, both experiments, complete.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jsons[0]).unwrap()).expect("JSON parses");
    let run = &doc["run"];
    assert_eq!(run["model"]["name"], "tiny-neox", "{run}");
    assert_eq!(run["model"]["layers"], 2);
    assert_eq!(run["model"]["max_positions"], 2048);
    assert_eq!(run["model"]["kv_heads"], 4);
    assert_eq!(run["model"]["weights"], "fp32");
    let ort = run["runtime"]["ort_version"].as_str().expect("ort_version");
    assert!(ort.starts_with("1."), "ort_version {ort}");
    assert_eq!(run["runtime"]["execution_provider"], "cpu");
    assert_eq!(run["runtime"]["intra_op_threads"], 1);
    assert_eq!(
        run["runtime"]["denormals"], "flush",
        "the default, recorded"
    );
    let s = &run["settings"];
    assert_eq!(s["ppl_tokens"], 64);
    assert_eq!(s["prompt"], 32);
    assert_eq!(s["gen"], 8);
    assert_eq!(s["warmup"], 0);
    assert!(run["machine"].is_object(), "machine: {}", run["machine"]);
    assert!(run.get("git_commit").is_some(), "git_commit key present");
    let start = run["start_time"].as_str().expect("start_time");
    assert!(
        start.len() >= 19 && start.contains('T'),
        "start_time {start}"
    );
    let exps = doc["experiments"].as_array().expect("experiments");
    assert_eq!(exps.len(), 2);
    assert_eq!(exps[0]["spec"], "full");
    assert_eq!(exps[1]["spec"], "h2o:16+16");
    for e in exps {
        for k in ["ppl", "speed", "memory"] {
            assert!(e[k].is_object(), "experiment {} lacks {k}: {e}", e["spec"]);
        }
    }
    // CSV PPL and JSON PPL agree.
    let csv_ppl: f64 = rows[0][5].parse().unwrap();
    let json_ppl = exps[0]["ppl"]["ppl"].as_f64().expect("ppl.ppl");
    assert!(
        (csv_ppl - json_ppl).abs() <= 1e-9 * json_ppl,
        "{csv_ppl} vs {json_ppl}"
    );
    assert_eq!(doc["complete"], true);

    // Table on stdout.
    for needle in ["Experiment", "Budget (Tokens)", "PPL", "full", "h2o:16+16"] {
        assert!(
            stdout.contains(needle),
            "stdout lacks {needle:?}:\n{stdout}"
        );
    }
}

#[test]
fn bench_killed_after_first_experiment_leaves_valid_csv_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    // Long enough for 2000 tokens.
    let data = write_text(tmp.path(), 1200);
    let results = tmp.path().join("results");
    // Each experiment streams 2000 tokens: slow enough that the kill lands in experiment 2 or 3;
    // its own process group, so the test can clean up the orphaned bench-one child afterwards.
    let mut child = slow_bench(&data, &results, &[]);
    let pgid = child.id();

    let count_rows = |p: &Path| -> usize {
        std::fs::read_to_string(p)
            .map(|t| t.lines().skip(1).filter(|l| !l.is_empty()).count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut csv_path = None;
    let mut exited_early = None;
    loop {
        if let Some(p) = files_with_ext(&results, "csv").into_iter().next() {
            if count_rows(&p) >= 1 {
                csv_path = Some(p);
                break;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            exited_early = Some(st);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill(); // SIGKILL to the bench process only
    let status = child.wait().unwrap();
    let killed = exited_early.is_none() && !status.success();
    eprintln!("bench killed: {killed}; exit {status:?}");

    let csv_path = csv_path
        .or_else(|| files_with_ext(&results, "csv").into_iter().next())
        .unwrap_or_else(|| panic!("no CSV within the deadline (early exit: {exited_early:?})"));

    // Inspect the files the bench process left (its child, if any, is still ours to clean up).
    let (header, rows) = read_csv(&csv_path);
    assert_eq!(header[..6], seed_columns());
    assert!(!rows.is_empty(), "at least the first experiment's row");
    assert!(rows.len() <= 3);
    let policy = col(&header, "Policy");
    let expected = ["full", "h2o:64+64", "local:128"];
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[policy], expected[i]);
        assert_eq!(row[col(&header, "Status")], "ok");
        let ppl: f64 = row[5].parse().expect("PPL is a number");
        assert!(ppl.is_finite() && ppl > 1.0);
    }
    let jsons = files_with_ext(&results, "json");
    assert!(jsons.len() <= 1, "{jsons:?}");
    if let Some(j) = jsons.first() {
        let text = std::fs::read_to_string(j).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("half-written JSON ({e}):\n{text}"));
        let n = doc["experiments"].as_array().expect("experiments").len();
        assert!(
            n <= rows.len() && n + 1 >= rows.len(),
            "JSON {n} vs CSV {} rows",
            rows.len()
        );
        if killed {
            assert_eq!(doc["complete"], false, "a killed run is not complete");
        } else {
            // The run finished before the kill landed (a very fast machine): then it is complete.
            assert_eq!(doc["complete"], true);
            assert_eq!(rows.len(), 3);
        }
    }

    // Clean up the orphaned `bench-one` child of the killed bench (same process group).
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status();
    std::thread::sleep(Duration::from_millis(100));
}

/// The benchmark's real data when present ($H2O_DATA, else ../shared/data/.../wiki.test.raw),
/// else generated text: bench reads it and records the path in the JSON settings.
#[test]
fn bench_reads_wikitext_or_generated_text_and_records_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = root().join("../shared/data/wikitext-2-raw-v1/wiki.test.raw");
    let data = match std::env::var_os("H2O_DATA").map(PathBuf::from) {
        Some(p) if p.is_file() => p,
        _ if shipped.is_file() => shipped,
        _ => {
            eprintln!("note: no WikiText-2 file found; using generated text");
            write_text(tmp.path(), 300)
        }
    };
    let results = tmp.path().join("results");
    let out = h2o()
        .args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--exp", "local:32"])
        .args([
            "--ppl-tokens",
            "128",
            "--prompt",
            "32",
            "--gen",
            "8",
            "--warmup",
            "0",
        ])
        .args(["--threads", "1"])
        .arg("--results")
        .arg(&results)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jsons = files_with_ext(&results, "json");
    assert_eq!(jsons.len(), 1);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jsons[0]).unwrap()).unwrap();
    assert_eq!(doc["complete"], true);
    assert_eq!(
        doc["run"]["settings"]["data_path"].as_str().unwrap(),
        data.display().to_string()
    );
    let e = &doc["experiments"][0];
    assert_eq!(e["spec"], "local:32");
    assert!(
        e["memory"]["kv_bytes"].as_u64().unwrap_or(u64::MAX) <= 32 * 1024,
        "local:32 holds at most 32 tokens of 1024 B: {}",
        e["memory"]
    );
    let (_, rows) = read_csv(&files_with_ext(&results, "csv")[0]);
    assert_eq!(rows.len(), 1);
    assert!(leftovers(&results).is_empty(), "{:?}", leftovers(&results));
}

/// `--in-process` runs the experiments in the bench process itself (no child per experiment).
/// `h2o bench --in-process` on the fixture, 64 perplexity tokens, no warm-up, `extra` flags;
/// panics with its stderr if it fails.
fn bench_in_process(data: &Path, results: &Path, extra: &[&str]) {
    let out = h2o()
        .args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args([
            "--ppl-tokens",
            "64",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--in-process",
        ])
        .args(extra)
        .arg("--results")
        .arg(results)
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench --in-process {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bench_in_process_runs_every_experiment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let results = tmp.path().join("results");
    bench_in_process(
        &data,
        &results,
        &["--exp", "full,local:32", "--prompt", "32", "--gen", "8"],
    );
    let (header, rows) = read_csv(&files_with_ext(&results, "csv")[0]);
    assert_eq!(rows.len(), 2);
    let method = col(&header, "Memory Method");
    assert!(
        rows[0][method].contains("in-process"),
        "{:?}",
        rows[0][method]
    );
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&files_with_ext(&results, "json")[0]).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["complete"], true);
    assert_eq!(doc["experiments"].as_array().unwrap().len(), 2);
}

/// `--groups policies`: every family at 12.5% and 25% of the text, the experiment list the library
/// makes for the group, each row labelled by its spec.
#[test]
fn bench_groups_policies_runs_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let results = tmp.path().join("results");
    bench_in_process(
        &data,
        &results,
        &["--groups", "policies", "--prompt", "16", "--gen", "4"],
    );
    let (header, rows) = read_csv(&files_with_ext(&results, "csv")[0]);
    let want = h2o_engine::experiment::Group::Policies.experiments(2048, 64);
    let policy = col(&header, "Policy");
    let got: Vec<&str> = rows.iter().map(|r| r[policy].as_str()).collect();
    let want_specs: Vec<String> = want.iter().map(|e| e.spec.to_string()).collect();
    assert_eq!(got, want_specs);
    let family = col(&header, "Family");
    let families: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r[family].as_str()).collect();
    assert_eq!(
        families.into_iter().collect::<Vec<_>>(),
        [
            "full",
            "h2o",
            "h2o-layer",
            "knorm",
            "local",
            "random",
            "scissor",
            "sink",
            "tova"
        ]
    );
    let ppl = col(&header, "PPL");
    assert!(rows
        .iter()
        .all(|r| r[ppl].parse::<f64>().is_ok_and(f64::is_finite)));
}

// ---------- bench-one: the child process ----------

/// A job on the fixture: perplexity over `ppl_tokens` and a short speed run of h2o:16+16 at batch 2.
fn job(model: &Path, data: &Path, ppl_tokens: usize) -> String {
    let kv = h2o_engine::runtime::SessionConfig::default().kv;
    job_with_kv(model, data, ppl_tokens, kv)
}

/// [`job`] with the K/V where `kv` says.
fn job_with_kv(
    model: &Path,
    data: &Path,
    ppl_tokens: usize,
    kv: h2o_engine::runtime::KvPlacement,
) -> String {
    use h2o_engine::experiment::{Experiment, Job, Plan, PplPlan, Setup, SpeedPlan};
    let job = Job {
        setup: Setup {
            model: model.to_path_buf(),
            session: h2o_engine::runtime::SessionConfig {
                intra_threads: 1,
                kv,
                ..Default::default()
            },
            data: data.to_path_buf(),
            text: Default::default(),
        },
        plan: Plan {
            ppl: Some(PplPlan {
                tokens: ppl_tokens,
                trace: false,
            }),
            speed: Some(SpeedPlan {
                batch: 2,
                ..SpeedPlan::new(32, 8, 0)
            }),
        },
        experiment: Experiment::of("h2o:16+16".parse().unwrap()),
    };
    serde_json::to_string(&job).unwrap()
}

fn bench_one(stdin: String, parent_pid: Option<u32>) -> std::process::Output {
    let mut c = h2o();
    c.arg("bench-one");
    if let Some(p) = parent_pid {
        c.args(["--parent-pid", &p.to_string()]);
    }
    c.write_stdin(stdin)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap()
}

#[test]
fn bench_one_measures_the_job_on_stdin_and_writes_the_result_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let out = bench_one(job(&fixture_dir(), &data, 64), Some(std::process::id()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: h2o_engine::report::ExperimentResult =
        serde_json::from_slice(&out.stdout).expect("a result on stdout");
    assert_eq!(r.spec.to_string(), "h2o:16+16");
    assert_eq!(r.ppl.as_ref().unwrap().n_predictions, 63);
    assert_eq!(r.speed.as_ref().unwrap().decode_steps, 7);
    assert_eq!(
        r.speed.as_ref().unwrap().batch,
        2,
        "the batch reaches the child"
    );
    let m = r.memory.unwrap();
    assert!(m.method.contains("child process"), "{}", m.method);
    // 1024 bytes per slot on the fixture; two rows of 32 slots (the budget 16 + 16)
    assert_eq!(m.kv_allocated_bytes, Some(2 * 32 * 1024), "{m:?}");
    assert!(m.kv_bytes <= 2 * 32 * 1024 && m.peak_rss_bytes > 0, "{m:?}");
}

/// The job's K/V placement reaches the child: the device store gives the host store's NLLs and sends
/// no K/V to the device (per decode step: ids, positions, mask and slot indices only).
#[test]
fn bench_one_runs_the_job_with_its_kv_placement() {
    use h2o_engine::runtime::KvPlacement;
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let result = |kv| {
        let out = bench_one(job_with_kv(&fixture_dir(), &data, 64, kv), None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<h2o_engine::report::ExperimentResult>(&out.stdout).unwrap()
    };
    let (host, device) = (result(KvPlacement::Host), result(KvPlacement::Device));
    assert_eq!(host.nlls, device.nlls);
    let sent = |r: &h2o_engine::report::ExperimentResult| {
        r.speed.as_ref().unwrap().traffic.unwrap().step_to_device
    };
    // fixture, batch 2: 2 rows x 2 layers x 4 heads x 16 x fp32 over 32 slots = 64 KiB of past K/V
    // a step; the device store sends ids, positions, mask and 16 bytes per kept K or V row (1 KiB)
    assert!(sent(&host) > 64 * 1024, "{}", sent(&host));
    assert!(sent(&device) < 2 * 1024, "{}", sent(&device));
}

/// Exit code 3 and no result when the bench process that started the child is gone.
#[test]
fn bench_one_whose_parent_died_stops_with_exit_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 1200);
    // Its parent (this test) is not the process it was told to watch: as if that one had died.
    let out = bench_one(job(&fixture_dir(), &data, 2000), Some(u32::MAX));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(out.stdout.is_empty(), "no result");
    assert!(
        stderr.contains("is gone") && stderr.contains("error:"),
        "{stderr}"
    );

    // A real parent that exits at once: the orphan stops without writing a result.
    let job_file = tmp.path().join("job.json");
    std::fs::write(&job_file, job(&fixture_dir(), &data, 2000)).unwrap();
    let (out_file, err_file) = (tmp.path().join("out"), tmp.path().join("err"));
    let bin = assert_cmd::cargo::cargo_bin("h2o");
    let script = format!(
        "'{}' bench-one --parent-pid $$ < '{}' > '{}' 2> '{}' & echo $!",
        bin.display(),
        job_file.display(),
        out_file.display(),
        err_file.display()
    );
    let sh = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(root())
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&sh.stdout).trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    while running() {
        assert!(
            Instant::now() < deadline,
            "the orphaned child {pid} runs on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(err.contains("is gone"), "{err}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "", "no result");
}

/// A child whose experiment fails exits 2 with one error naming the problem on stderr, and
/// writes a failed result with the same reason on stdout (the row bench records).
#[test]
fn bench_one_with_a_failing_job_exits_2_with_a_failed_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let failed = |out: &std::process::Output| -> String {
        let r: h2o_engine::report::ExperimentResult =
            serde_json::from_slice(&out.stdout).expect("a failed result on stdout");
        assert!(r.ppl.is_none() && r.speed.is_none());
        match r.status {
            h2o_engine::report::ExperimentStatus::Failed { message } => message,
            s => panic!("{s:?}"),
        }
    };
    let missing = tmp.path().join("no-model");
    let out = bench_one(job(&missing, &data, 64), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no-model") && stderr.contains("does not exist"),
        "{stderr}"
    );
    let reason = failed(&out);
    assert!(
        reason.starts_with("--model: ") && stderr.contains(&reason),
        "{reason}"
    );
    let out = bench_one(job(&fixture_dir(), &tmp.path().join("gone.txt"), 64), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gone.txt") && stderr.contains("not found"),
        "{stderr}"
    );
    assert!(failed(&out).starts_with("--data: "));
    let out = bench_one("not a job".into(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a bench job"), "{stderr}");
    assert!(out.stdout.is_empty(), "no job, no result");
}

// ---------- issue 19: failed experiments, interrupts, seed counting, compact tables ----------

/// The pids whose parent is `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit(')').next()?.split_whitespace().nth(1)?.to_string();
                    rest.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// `h2o bench` on the fixture in its own process group: three experiments of 2000 tokens each.
fn slow_bench(data: &Path, results: &Path, extra: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("h2o"));
    cmd.current_dir(root())
        .env_remove("H2O_DATA")
        .args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args(["--exp", "full,h2o:64+64,local:128", "--ppl-tokens", "2000"])
        .args([
            "--prompt",
            "32",
            "--gen",
            "8",
            "--warmup",
            "0",
            "--threads",
            "1",
        ])
        .args(["--name", "run"])
        .arg("--results")
        .arg(results)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    cmd.spawn().expect("spawn h2o bench")
}

fn wait_with_output(child: std::process::Child) -> std::process::Output {
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(240);
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("bench did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    waiter.join().unwrap()
}

/// Issue 19 item 5: a child killed mid-experiment becomes a `failed: <reason>` row (CSV and
/// JSON), the suite goes on with the next experiments, the summary lists the failure and the
/// exit code is 1 at the end.
#[test]
fn a_killed_experiment_becomes_a_failed_row_and_the_suite_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 1200);
    let results = tmp.path().join("results");
    let bench = slow_bench(&data, &results, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let bench_one = |p: &u32| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("bench-one"))
    };
    let first_child = loop {
        if let Some(c) = children_of(bench.id()).into_iter().find(bench_one) {
            break c;
        }
        assert!(Instant::now() < deadline, "no child process appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    std::process::Command::new("kill")
        .args(["-KILL", &first_child.to_string()])
        .status()
        .unwrap();
    let out = wait_with_output(bench);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: 1 of 3 experiments failed") && stderr.contains("run.csv"),
        "{stderr}"
    );
    assert!(
        stdout.contains("Failed (1 of 3):")
            && stdout.contains("full (full): its process ended without a result (signal: 9"),
        "{stdout}"
    );
    let (header, rows) = read_csv(&results.join("run.csv"));
    assert_eq!(rows.len(), 3, "every experiment has its row");
    let status = col(&header, "Status");
    assert!(rows[0][status].starts_with("failed: "), "{:?}", rows[0]);
    assert!(rows[0][status].contains("SIGKILL") || rows[0][status].contains("signal: 9"));
    assert_eq!(rows[0][5], "", "no PPL for a failed experiment");
    for r in &rows[1..] {
        assert_eq!(r[status], "ok");
        assert!(r[5].parse::<f64>().unwrap() > 1.0);
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("run.json")).unwrap()).unwrap();
    assert_eq!(doc["complete"], true);
    assert_eq!(doc["experiments"][0]["status"]["state"], "failed");
    assert!(doc["experiments"][0]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("signal: 9"));
    assert_eq!(doc["experiments"][2]["status"]["state"], "ok");
    // and compare lists the failed row as failed, never as numbers
    let out = h2o()
        .arg("compare")
        .arg(results.join("run.csv"))
        .arg(results.join("run.csv"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Failed in A (no figures):\n  line 2: full [full]: failed: "),
        "{text}"
    );
}

/// Issue 19 item 5: SIGINT (Ctrl-C at a terminal: the whole process group) stops the suite,
/// says where the finished rows are, leaves the JSON marked incomplete and no child running.
#[test]
fn an_interrupted_bench_says_where_the_finished_rows_are() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 1200);
    let results = tmp.path().join("results");
    // more experiments, so the interrupt lands mid-suite even on a fast machine
    let more = [
        "--exp",
        "local:32,local:48,local:64,local:96,h2o:32+32,h2o:48+48",
    ];
    let bench = slow_bench(&data, &results, &more);
    let pid = bench.id();
    let csv = results.join("run.csv");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()) < 2 {
        assert!(Instant::now() < deadline, "no row within the deadline");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    let out = wait_with_output(bench);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted after ")
            && stderr.contains(&csv.display().to_string())
            && stderr.contains("run.json")
            && stderr.contains("\"complete\": false"),
        "{stderr}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("run.json")).unwrap()).unwrap();
    assert_eq!(doc["complete"], false);
    let (header, rows) = read_csv(&csv);
    assert!(!rows.is_empty() && rows.len() < 9, "{rows:?}");
    assert!(
        rows.iter().all(|r| r[col(&header, "Status")] == "ok"),
        "an interrupt is not a failure"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(children_of(pid).is_empty(), "a child runs on");
}

/// Issue 19 item 11: `--counting seed` runs every spec with one token less (the seed's budget
/// counts the new token) and records it. Item 13: the table on stdout is the compact one;
/// `--wide` shows every column.
#[test]
fn bench_counting_seed_runs_one_token_less_and_tables_are_compact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 200);
    let results = tmp.path().join("results");
    let run = |extra: &[&str]| {
        let out = h2o()
            .args(["bench", "--model"])
            .arg(fixture_dir())
            .arg("--data")
            .arg(&data)
            .args([
                "--exp",
                "local:8,h2o:4+4",
                "--ppl-tokens",
                "32",
                "--prompt",
                "16",
            ])
            .args(["--gen", "4", "--warmup", "0", "--threads", "1"])
            .arg("--results")
            .arg(&results)
            .args(extra)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let stdout = run(&["--counting", "seed", "--name", "seed"]);
    let (header, rows) = read_csv(&results.join("seed.csv"));
    let policies: Vec<&str> = rows
        .iter()
        .map(|r| r[col(&header, "Policy")].as_str())
        .collect();
    assert_eq!(policies, ["local:7", "h2o:4+3"]);
    assert_eq!(rows[0][0], "local 8, seed counting");
    assert_eq!(rows[0][1], "7");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("seed.json")).unwrap()).unwrap();
    assert_eq!(doc["run"]["settings"]["counting"], "seed");
    // compact by default: the seed's columns, Policy, Seed TPOT; not TTFT or Peak RSS
    let main = stdout.split("Per-step").next().unwrap();
    assert!(
        main.contains("Seed TPOT (ms)") && main.contains("local:7"),
        "{stdout}"
    );
    assert!(
        !main.contains("TTFT (ms)") && !main.contains("Peak RSS"),
        "{stdout}"
    );
    let wide = run(&["--name", "ours", "--wide"]);
    let main = wide.split("Per-step").next().unwrap();
    assert!(
        main.contains("TTFT (ms)") && main.contains("Peak RSS") && main.contains("local:8"),
        "{wide}"
    );
    // the CSV keeps every column either way
    let (h2, _) = read_csv(&results.join("ours.csv"));
    assert_eq!(h2, header);
    assert_eq!(header, h2o_engine::report::csv_header());
}
