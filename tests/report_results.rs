//! Results writer, JSON and tables of the report module, on hand-built experiment results.

use std::path::Path;
use std::time::Duration;

use h2o_engine::eval::data::TextMode;
use h2o_engine::experiment::Counting;
use h2o_engine::output::write_output;
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{
    breakdown_table, columns_markdown, csv_header, load_results_csv, main_table, memory_table,
    run_stem, Aspect, ExperimentResult, ExperimentStatus, FactSource, MachineInfo, MemoryFigures,
    ModelInfo, PplFigures, ReportError, ResultFormat, ResultsWriter, RunDocument, RunInfo,
    RuntimeInfo, Settings, SpeedFigures, Width, SEED_COLUMNS,
};
use h2o_engine::timing::StepTiming;

fn run_info() -> RunInfo {
    RunInfo {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model: ModelInfo {
            name: "pythia-micro".into(),
            dir: "models/pythia-micro".into(),
            dtype: "f32".into(),
            layers: 4,
            heads: 4,
            kv_heads: Some(4),
            head_dim: 32,
            max_positions: 512,
            weights: Some("fp32".into()),
        },
        runtime: RuntimeInfo {
            ort_version: "1.23.0".into(),
            execution_provider: "cpu".into(),
            intra_op_threads: 2,
            inter_op_threads: None,
            denormals: Some("flush".into()),
        },
        settings: Settings {
            ppl_tokens: 64,
            prompt: 16,
            gen: 8,
            warmup: 1,
            data_path: "wiki.test.raw".into(),
            text: TextMode::File,
            counting: Counting::Ours,
            batch: 1,
            experiments: vec![("Baseline".into(), PolicySpec::FULL)],
        },
        machine: MachineInfo::collect(),
        git_commit: Some("abc123".into()),
        start_time: "2026-11-27T03:15:00+00:00".into(),
        command_line: vec!["h2o".into(), "bench".into()],
    }
}

fn spec(s: &str) -> PolicySpec {
    s.parse().unwrap()
}

fn result(label: &str, spec_text: &str, kv_bytes: u64) -> ExperimentResult {
    let mut r = ExperimentResult::new(label, spec(spec_text));
    r.ppl = Some(PplFigures::from_nlls(&[1.0, 2.0, 3.0]));
    let step = StepTiming {
        model: Duration::from_millis(4),
        score_update: Duration::from_micros(500),
        eviction: Duration::from_micros(250),
        other: Duration::from_micros(250),
    };
    r.speed = Some(SpeedFigures::from_run(
        Duration::from_millis(20),
        Duration::from_millis(60),
        16,
        1,
        &[step; 8],
    ));
    r.memory = Some(MemoryFigures::new(
        kv_bytes,
        1 << 20,
        64 << 20,
        "VmHWM of a child process",
    ));
    r
}

fn read_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let header = rdr.headers().unwrap().iter().map(String::from).collect();
    let rows = rdr
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn csv_appended_and_readable_after_each_experiment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("results");
    let mut w = ResultsWriter::create(&dir, "20261127-031500-pythia-micro", run_info()).unwrap();
    let csv_path = dir.join("20261127-031500-pythia-micro.csv");
    assert_eq!(w.csv_path(), csv_path);

    // header only, already on disk
    let (header, rows) = read_rows(&csv_path);
    assert_eq!(
        &header[..6],
        &SEED_COLUMNS.map(|c| c.name().to_string())[..]
    );
    assert_eq!(
        &header[..6],
        [
            "Experiment",
            "Budget (Tokens)",
            "KV Size (GB)",
            "TPOT (ms)",
            "Throughput (T/s)",
            "PPL"
        ]
    );
    assert_eq!(header, csv_header());
    assert!(rows.is_empty());

    let specs = [
        ("Baseline", "full"),
        ("Local (32)", "local:32"),
        ("H2O (16r+48h)", "h2o:48+16"),
    ];
    for (n, (label, spec)) in specs.iter().enumerate() {
        w.append(result(label, spec, 1 << 18)).unwrap();
        let text = std::fs::read_to_string(&csv_path).unwrap();
        assert_eq!(
            text.matches("Experiment,").count(),
            1,
            "header written once"
        );
        let (_, rows) = read_rows(&csv_path);
        assert_eq!(rows.len(), n + 1);
        let last = &rows[n];
        assert_eq!(last[0], *label);
        assert_eq!(last[6], *spec);
        // readable by our own loader too
        let f = load_results_csv(&csv_path).unwrap();
        assert_eq!(f.format, ResultFormat::Ours);
        assert_eq!(f.rows.len(), n + 1);
    }
    let (header, rows) = read_rows(&csv_path);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows[0][col("Budget (Tokens)")], "Full");
    assert_eq!(rows[1][col("Budget (Tokens)")], "32");
    assert_eq!(rows[2][col("Budget (Tokens)")], "64");
    assert_eq!(rows[2][col("Family")], "h2o");
    assert_eq!(
        rows[0][col("KV Size (GB)")],
        (0.000244140625f64).to_string()
    );
    assert_eq!(rows[0][col("PPL")], 2f64.exp().to_string());
    assert_eq!(rows[0][col("TPOT (ms)")], "5");
    assert_eq!(rows[0][col("TTFT (ms)")], "20");
    assert_eq!(rows[0][col("Seed TPOT (ms)")], (60.0f64 / 9.0).to_string());
    assert_eq!(rows[0][col("Model (%)")], "80");
    assert_eq!(rows[0][col("KV Bytes")], "262144");
    assert_eq!(rows[0][col("Full KV Bytes")], "1048576");
    assert_eq!(rows[0][col("KV Ratio")], "0.25");
    assert_eq!(rows[0][col("Status")], "ok");
    // the run columns, the same in every row
    for r in &rows {
        assert_eq!(
            [&r[col("Text")], &r[col("Data")], &r[col("Counting")]],
            ["file", "wiki.test.raw", "ours"]
        );
    }
}

/// Issue 29 item 6: a label with a comma or a quote is quoted as RFC 4180 says (the cell in
/// double quotes, a quote doubled), byte for byte, and `compare`'s reader reads it back whole;
/// the run columns record the text and the counting, and the run document beside the CSV gives
/// the rest of the run.
#[test]
fn labels_with_commas_and_quotes_are_quoted_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = run_info();
    run.settings.text = TextMode::Seed;
    run.settings.counting = Counting::Seed;
    run.settings.data_path = "data/wiki, test.raw".into();
    let mut w = ResultsWriter::create(tmp.path(), "quoted", run).unwrap();
    let labels = ["Baseline, seed counting", "Local \"255\", seed counting"];
    w.append(ExperimentResult::new(labels[0], spec("full")))
        .unwrap();
    w.append(ExperimentResult::new(labels[1], spec("local:255")))
        .unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(tmp.path().join("quoted.csv")).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    // 39 experiment columns (nothing measured: 30 empty after Status), then Text, Data, Counting
    let empty = ",".repeat(30);
    assert_eq!(
        rows,
        [
            format!("\"Baseline, seed counting\",Full,,,,,full,full,ok{empty},seed,\"data/wiki, test.raw\",seed"),
            format!("\"Local \"\"255\"\", seed counting\",255,,,,,local:255,local,ok{empty},seed,\"data/wiki, test.raw\",seed"),
        ]
    );
    assert!(text.ends_with("seed\n") && !text.contains('\r'));
    let f = load_results_csv(&tmp.path().join("quoted.csv")).unwrap();
    let read: Vec<&str> = f.rows.iter().map(|r| r.experiment.as_str()).collect();
    assert_eq!(read, labels);
    assert_eq!(
        f.run.source,
        FactSource::RunDocument {
            path: tmp.path().join("quoted.json")
        }
    );
    for (aspect, value) in [
        (Aspect::Text, "seed"),
        (Aspect::Counting, "seed"),
        (Aspect::DataFile, "wiki, test.raw"),
        (Aspect::Model, "pythia-micro"),
    ] {
        assert_eq!(f.run.get(aspect), Some(value), "{aspect:?}");
    }
}

#[test]
fn json_rewritten_atomically_and_complete_at_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let stem = "run";
    let mut w = ResultsWriter::create(dir, stem, run_info()).unwrap();
    let json = dir.join("run.json");
    let doc: RunDocument = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc.experiments.is_empty() && !doc.complete);
    assert_eq!(doc.run, run_info_without_machine_change(&doc.run));

    let mut failed = ExperimentResult::new("Broken", spec("h2o:1+1"));
    failed.status = ExperimentStatus::Failed {
        message: "out of memory".into(),
    };
    failed.ppl = Some(PplFigures::from_nlls(&[])); // NaN figures must survive as null
    w.append(result("Baseline", "full", 1 << 20)).unwrap();
    w.append(failed.clone()).unwrap();
    assert_eq!(
        dir_entries(dir),
        ["run.csv", "run.json"],
        "no temp file left"
    );
    let doc: RunDocument = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc.experiments.len(), 2);
    assert_eq!(doc.experiments[0], result("Baseline", "full", 1 << 20));
    assert_eq!(doc.experiments[1].status, failed.status);
    assert!(doc.experiments[1].ppl.as_ref().unwrap().ppl.is_nan());
    assert!(!doc.complete);
    // the documented fields are there by name
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for path in [
        "/run/model/name",
        "/run/runtime/ort_version",
        "/run/runtime/execution_provider",
        "/run/runtime/intra_op_threads",
        "/run/machine/cpu_brand",
        "/run/machine/logical_cores",
        "/run/machine/total_memory_bytes",
        "/run/git_commit",
        "/run/start_time",
        "/run/settings/ppl_tokens",
        "/experiments/0/spec",
        "/experiments/0/ppl/nll/p90",
        "/experiments/0/ppl/nll/buckets",
        "/experiments/0/speed/tpot_median_ms",
        "/experiments/0/speed/seed_tpot_ms",
        "/experiments/0/speed/breakdown/eviction_share",
        "/experiments/0/memory/kv_bytes_full",
    ] {
        assert!(v.pointer(path).is_some(), "{path} missing");
    }
    assert!(
        v.pointer("/experiments/0/nlls").is_none(),
        "NLL array only when asked"
    );

    let doc = w.finish().unwrap();
    assert!(doc.complete);
    let on_disk: RunDocument =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(on_disk.complete);
    assert_eq!(dir_entries(dir), ["run.csv", "run.json"]);
}

fn run_info_without_machine_change(r: &RunInfo) -> RunInfo {
    let mut expected = run_info();
    expected.machine = r.machine.clone();
    expected
}

/// A results folder under a file cannot be created: the message names the file in the way
/// (issue 28: it used to say "not writable").
#[test]
fn a_results_dir_under_a_file_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let dir = file.join("results");
    let err = ResultsWriter::create(&dir, "run", run_info())
        .err()
        .unwrap();
    assert!(matches!(err, ReportError::NotAFolder { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    let blocker = format!("{} is a file, not a folder", file.display());
    assert!(msg.contains(&blocker) && msg.contains("Fix"), "{msg}");
}

/// A `--results` path that is a regular file is named as a file where a folder is expected (not
/// "not writable"), and is left as it was.
#[test]
fn a_results_path_that_is_a_file_is_refused_as_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("results");
    std::fs::write(&file, "mine").unwrap();
    let err = ResultsWriter::create(&file, "run", run_info())
        .err()
        .unwrap();
    assert!(matches!(err, ReportError::NotAFolder { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("is a file, not a folder") && msg.contains("Fix"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

fn doc_at(path: &Path) -> RunDocument {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The results JSON is replaced by a rename, never rewritten in place: a hard link to the
/// document before an update keeps the old document whole, and the path names a new file
/// (another inode) after each update.
#[test]
fn the_results_json_is_replaced_never_written_in_place() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut w = ResultsWriter::create(tmp.path(), "run", run_info()).unwrap();
    let json = tmp.path().join("run.json");
    let old = tmp.path().join("old.json");
    std::fs::hard_link(&json, &old).unwrap();
    let before = std::fs::read(&json).unwrap();
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let first = inode(&json);
    w.append(result("Baseline", "full", 1 << 20)).unwrap();
    assert!(
        std::fs::read(&old).unwrap() == before,
        "the JSON was written in place: the old document changed under a hard link"
    );
    assert_ne!(
        inode(&json),
        first,
        "the JSON path still names the old file"
    );
    assert_eq!(doc_at(&json).experiments.len(), 1);
    let second = inode(&json);
    let doc = w.finish().unwrap();
    assert!(doc.complete && doc_at(&json).complete);
    assert_ne!(inode(&json), second);
    assert_eq!(doc_at(&old).experiments.len(), 0);
    assert_eq!(dir_entries(tmp.path()), ["old.json", "run.csv", "run.json"]);
}

/// A link (or another file) that takes the place of a results file during the run is never
/// written through: the run stops with an error naming the file, and the link's target is
/// unchanged.
#[test]
fn a_results_file_swapped_for_a_link_during_the_run_is_never_written_through() {
    for ext in ["csv", "json"] {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let mut w = ResultsWriter::create(tmp.path(), "run", run_info()).unwrap();
        let path = tmp.path().join(format!("run.{ext}"));
        std::fs::rename(&path, tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = w.append(result("Baseline", "full", 1 << 20)).unwrap_err();
        assert!(
            matches!(err, ReportError::Replaced { .. }),
            "{ext}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("run.{ext}")), "{err}");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious",
            "{ext}"
        );
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

/// Creating a results file in `dir` fails: refused up front, nothing written there.
fn refused_up_front(dir: &Path) {
    let stem = format!("h2o-test-run-{}", std::process::id());
    let err = ResultsWriter::create(dir, &stem, run_info()).err().unwrap();
    assert!(matches!(err, ReportError::DirNotWritable { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    for ext in ["csv", "json"] {
        assert!(!dir.join(format!("{stem}.{ext}")).exists());
    }
}

#[cfg(unix)]
#[test]
fn read_only_dir_is_refused_up_front() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root writes into a 0o555 directory, so there that directory proves nothing; the one below
    // refuses everyone.
    if std::fs::write(dir.join("probe"), "x").is_err() {
        refused_up_front(&dir);
        assert!(dir_entries(&dir).is_empty());
    }
    // A directory no one may create files in, root included: procfs's /proc/self.
    let proc_self = Path::new("/proc/self");
    if cfg!(target_os = "linux") {
        assert!(proc_self.is_dir(), "/proc is mounted on Linux");
        refused_up_front(proc_self);
    }
}

#[test]
fn existing_results_are_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let w = ResultsWriter::create(tmp.path(), "run", run_info()).unwrap();
    drop(w);
    let err = ResultsWriter::create(tmp.path(), "run", run_info())
        .err()
        .unwrap();
    assert!(matches!(err, ReportError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("run.csv"));
}

#[test]
fn stem_from_time_and_model() {
    use chrono::TimeZone;
    let t = chrono::Local
        .with_ymd_and_hms(2026, 11, 27, 3, 15, 0)
        .unwrap();
    assert_eq!(run_stem(&t, "pythia-micro"), "20261127-031500-pythia-micro");
    assert_eq!(run_stem(&t, "a/b c"), "20261127-031500-a-b-c");
    assert!(RunInfo::timestamp(&t).starts_with("2026-11-27T03:15:00"));
}

#[test]
fn tables_show_seed_columns_first_and_breakdown() {
    let rs = vec![
        result("Baseline", "full", 1 << 20),
        result("H2O (16r+48h)", "h2o:48+16", 1 << 18),
        ExperimentResult::new("Not measured", spec("local:8")),
    ];
    let main = main_table(&rs, Width::Compact).to_string();
    let first_line = main.lines().nth(1).unwrap();
    let pos = |s: &str| {
        first_line
            .find(s)
            .unwrap_or_else(|| panic!("{s} not in {first_line}"))
    };
    assert!(pos("Experiment") < pos("Budget (Tokens)"));
    assert!(pos("Budget (Tokens)") < pos("KV Size (GB)"));
    assert!(pos("Throughput (T/s)") < pos("PPL"));
    assert!(pos("PPL") < pos("Policy"));
    assert!(main.contains("h2o:48+16") && main.contains("Full") && main.contains("7.39"));

    let b = breakdown_table(&rs, Width::Compact).to_string();
    assert!(b.contains("Model (ms)") && b.contains("Score Update (ms)"));
    assert!(b.contains("4.000 (80.0%)"), "{b}");
    assert!(
        b.contains("0.500 (10.0%)") && b.contains("0.250 (5.0%)"),
        "{b}"
    );
    assert!(b.contains("20.0%"), "host share: {b}");

    let m = memory_table(&rs, Width::Wide).to_string();
    assert!(
        m.contains("0.25") && m.contains("1.00") && m.contains("VmHWM"),
        "{m}"
    );
}

/// A reader that opened the file before `write_output` reads the whole old document afterwards
/// (the new one is a new file renamed over the path), new readers the whole new one; an
/// in-place write would change what the first reader sees.
#[test]
fn write_output_replaces_the_file_and_never_writes_into_it() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("doc.json");
    let old = format!("{{\"old\": \"{}\"}}", "a".repeat(100_000));
    let new = format!("{{\"new\": \"{}\"}}", "b".repeat(50_000));
    write_output(&path, old.as_bytes()).unwrap();
    let mut reader = std::fs::File::open(&path).unwrap();
    write_output(&path, new.as_bytes()).unwrap();
    let mut seen = String::new();
    reader.read_to_string(&mut seen).unwrap();
    assert!(
        seen == old,
        "the earlier reader saw {} bytes of something else",
        seen.len()
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
    assert_eq!(
        dir_entries(tmp.path()),
        ["doc.json"],
        "no temporary file left"
    );
}

/// Readers polling the file while it is rewritten again and again see one complete document or
/// the other, never a truncated or mixed one.
#[test]
fn write_output_readers_never_see_a_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("doc.txt");
    let docs = ["x".repeat(300_000), "y".repeat(200_000)];
    write_output(&path, docs[0].as_bytes()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    docs.contains(&text),
                    "a partial file of {} bytes",
                    text.len()
                );
                reads += 1;
            }
            reads
        });
        for i in 0..200 {
            write_output(&path, docs[i % 2].as_bytes()).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
}

/// docs/cli.md's column list is the one the code declares.
#[test]
fn readme_lists_the_declared_columns() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let table = columns_markdown();
    assert!(
        readme.contains(&table),
        "docs/cli.md's column list differs from the declared columns; replace it with:\n{table}"
    );
    for name in csv_header() {
        assert!(table.contains(&format!("| {name} |")), "{name}");
    }
}
