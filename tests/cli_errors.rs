//! End-to-end CLI tests of bad input: each is refused with one clear message (non-zero exit,
//! a helpful phrase on stderr) before any results file is written.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;

// ---------- helpers ----------

mod common;

use common::cli::{h2o, write_text};
use common::{fixture_dir, root};

/// No results written: the directory is absent or holds no CSV/JSON (hidden or not).
fn assert_no_results(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".csv") && !n.ends_with(".json") && !n.contains(".tmp")),
        "results left in {}: {names:?}",
        dir.display()
    );
}

/// `h2o bench` on the fixture with tiny sizes; `extra` replaces/extends the flags.
fn bench(data: &Path, results: &Path, extra: &[&str]) -> Command {
    let mut c = h2o();
    c.args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .arg("--results")
        .arg(results)
        .args(["--warmup", "0"]);
    let has = |f: &str| extra.contains(&f);
    if !has("--threads") {
        c.args(["--threads", "1"]);
    }
    if !has("--exp") {
        c.args(["--exp", "full"]);
    }
    if !has("--ppl-tokens") {
        c.args(["--ppl-tokens", "64"]);
    }
    if !has("--prompt") {
        c.args(["--prompt", "32"]);
    }
    if !has("--gen") {
        c.args(["--gen", "8"]);
    }
    c.args(extra).timeout(Duration::from_secs(60));
    c
}

/// Runs `c`, expects failure with exit code 2 and every phrase on stderr, and one `error:` line.
fn fails_with(mut c: Command, phrases: &[&str]) -> String {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "expected failure, got success\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{stderr}");
    for p in phrases {
        assert!(stderr.contains(p), "stderr lacks {p:?}:\n{stderr}");
    }
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one error message:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a panic, not an error:\n{stderr}"
    );
    stderr
}

// ---------- data ----------

#[test]
fn data_file_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let missing = tmp.path().join("no-such-file.raw");
    fails_with(
        bench(&missing, &results, &[]),
        &["no-such-file.raw", "file not found", "--data"],
    );
    assert_no_results(&results);
}

#[test]
fn no_data_flag_and_no_env() {
    // A copy of the binary in a folder with no text beside it and no project around it: nothing
    // to fall back on (in the clone, ../shared's text is the default).
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("h2o");
    // a hard link (no open write descriptor for a parallel test's fork to inherit: ETXTBSY)
    let built = assert_cmd::cargo::cargo_bin("h2o");
    if std::fs::hard_link(&built, &bin).is_err() {
        std::fs::copy(&built, &bin).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut c = Command::new(&bin);
    c.current_dir(tmp.path())
        .env_remove("H2O_DATA")
        .args(["ppl", "--model"])
        .arg(fixture_dir())
        .args(["--tokens", "16"]);
    fails_with(
        c,
        &["no data file", "--data", "H2O_DATA", "data/wiki.test.raw"],
    );
    assert_no_results(&tmp.path().join("results"));
}

#[test]
fn the_shared_text_is_the_default_in_a_clone() {
    let mut c = h2o();
    c.args(["info", "--model"]).arg(fixture_dir());
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let shared = root().join(h2o_engine::locate::SHARED_TEXT);
    if shared.is_file() {
        assert!(
            text.contains("wiki.test.raw (used)"),
            "info names the default text:\n{text}"
        );
    }
    assert!(text.contains("library search"), "{text}");
}

/// `info --model X` says X is used, not the default model it would find without the flag.
#[test]
fn info_marks_the_given_model_as_used() {
    let mut c = h2o();
    c.args(["info", "--model"]).arg(fixture_dir());
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let search: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("model search"))
        .take_while(|l| l.starts_with("model search") || l.starts_with(' '))
        .collect();
    assert!(search[0].ends_with("--model (used)"), "{text}");
    assert_eq!(
        search.iter().filter(|l| l.contains("(used)")).count(),
        1,
        "{text}"
    );
}

#[test]
fn data_file_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let empty = tmp.path().join("empty.raw");
    std::fs::write(&empty, "").unwrap();
    fails_with(bench(&empty, &results, &[]), &["empty.raw", "empty"]);
    assert_no_results(&results);
    // Whitespace only counts as empty too.
    std::fs::write(&empty, " \n\n  \n").unwrap();
    fails_with(bench(&empty, &results, &[]), &["empty"]);
    assert_no_results(&results);
}

#[test]
fn data_file_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let bad = tmp.path().join("latin1.raw");
    let mut bytes = b"Caf".to_vec();
    bytes.push(0xe9); // Latin-1 e-acute: invalid UTF-8
    bytes.extend_from_slice(b" au lait and more words here.\n");
    std::fs::write(&bad, bytes).unwrap();
    let err = fails_with(bench(&bad, &results, &[]), &["latin1.raw", "not UTF-8"]);
    assert!(err.contains("offset 3"), "names the offset:\n{err}");
    assert_no_results(&results);
}

#[test]
fn data_file_too_short_for_the_tokens_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let short = tmp.path().join("short.txt");
    std::fs::write(
        &short,
        "The quick brown fox jumps over the lazy dog while five tired wizards quietly box jugs of milk.\n",
    )
    .unwrap();
    fails_with(
        bench(&short, &results, &["--ppl-tokens", "2000"]),
        &["short.txt", "2000 asked for", "tokens"],
    );
    assert_no_results(&results);
    // ppl says the same.
    let mut c = h2o();
    c.args(["ppl", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&short)
        .args(["--tokens", "2000", "--threads", "1"]);
    fails_with(c, &["2000 asked for"]);
}

// ---------- policy specs and lengths ----------

#[test]
fn unknown_policy_spec_lists_accepted_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench(&data, &results, &["--exp", "full,streaming:4"]),
        &[
            "streaming:4",
            "accepted forms",
            "full",
            "local:R",
            "h2o:H+R",
        ],
    );
    assert_no_results(&results);
    fails_with(ppl(&data, "h2o:abc"), &["h2o:abc", "accepted forms"]);
}

/// `h2o ppl` of `policy` on the fixture over 16 tokens of `data`.
fn ppl(data: &Path, policy: &str) -> Command {
    let mut c = h2o();
    c.args(["ppl", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args(["--tokens", "16", "--policy", policy, "--threads", "1"]);
    c
}

/// `h2o bench --groups ...` on the fixture with tiny sizes (no `--exp`).
fn bench_groups(data: &Path, results: &Path, groups: &str) -> Command {
    let mut c = h2o();
    c.args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .arg("--results")
        .arg(results)
        .args(["--threads", "1", "--warmup", "0", "--ppl-tokens", "64"])
        .args(["--prompt", "32", "--gen", "8", "--groups", groups])
        .timeout(Duration::from_secs(60));
    c
}

#[test]
fn unknown_group_and_groups_with_exp_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench_groups(&data, &results, "seed,nope"),
        &[
            "unknown experiment group 'nope'",
            "seed, seed-head, policies, pyramid",
        ],
    );
    let mut c = bench_groups(&data, &results, "policies");
    c.args(["--exp", "full"]);
    fails_with(c, &["--exp", "--groups", "cannot be used with"]);
    assert_no_results(&results);
}

/// Per-layer budgets need a graph with one mask per layer: refused before anything is measured
/// on the fixture (one shared mask), naming the export option.
#[test]
fn pyramid_on_a_shared_mask_graph_is_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench_groups(&data, &results, "policies,pyramid"),
        &[
            "local:8@pyramid",
            "one attention mask for every layer",
            "--layer-masks",
        ],
    );
    assert_no_results(&results);
    fails_with(
        ppl(&data, "h2o:8+8@pyramid"),
        &["different budgets", "--layer-masks"],
    );
    // options that do not belong to the family are refused with the grammar
    fails_with(
        ppl(&data, "h2o:8+8@rng=3"),
        &["`@rng` applies to random only", "accepted forms"],
    );
}

#[test]
fn zero_budget_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench(&data, &results, &["--exp", "local:0"]),
        &["local:0", "budget is 0"],
    );
    fails_with(
        bench(&data, &results, &["--exp", "h2o:0+0"]),
        &["budget is 0"],
    );
    assert_no_results(&results);
}

#[test]
fn budget_beyond_model_positions_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench(&data, &results, &["--exp", "full,local:4096"]),
        &["--exp: policy local:4096", "4096", "2048 positions"],
    );
    // speed names the flag too
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args([
            "--exp",
            "local:4096",
            "--prompt",
            "8",
            "--gen",
            "2",
            "--threads",
            "1",
        ]);
    fails_with(c, &["--exp: policy local:4096", "2048 positions"]);
    fails_with(
        bench(&data, &results, &["--exp", "h2o:2000+100"]),
        &["2100", "2048 positions"],
    );
    assert_no_results(&results);
}

#[test]
fn prompt_plus_gen_beyond_model_positions_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench(&data, &results, &["--prompt", "2000", "--gen", "100"]),
        &["--prompt 2000", "--gen 100", "2100", "2048 positions"],
    );
    assert_no_results(&results);
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args([
            "--prompt",
            "2040",
            "--gen",
            "16",
            "--warmup",
            "0",
            "--threads",
            "1",
        ]);
    fails_with(c, &["2048 positions"]);
}

/// `h2o speed` on the fixture writing --json and --plot into `dir`, with `extra` flags.
fn speed(data: &Path, dir: &Path, extra: &[&str]) -> Command {
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args([
            "--prompt",
            "16",
            "--gen",
            "4",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--no-floor",
        ])
        .arg("--json")
        .arg(dir.join("speed.json"))
        .arg("--plot")
        .arg(dir.join("speed.png"))
        .args(extra)
        .timeout(Duration::from_secs(60));
    c
}

#[test]
fn bad_batch_and_cap_values_are_refused_without_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let out = tmp.path().join("out");
    // the output folder exists (a missing one is refused on its own, see cli_outputs.rs)
    std::fs::create_dir(&out).unwrap();
    fails_with(
        speed(&data, &out, &["--batch", "2,0"]),
        &["--batch is 0", "at least 1"],
    );
    fails_with(
        speed(&data, &out, &["--kv-cap", "1KiB"]),
        &["--kv-cap", "less than one row of full", "raise the cap"],
    );
    fails_with(
        speed(&data, &out, &["--kv-cap", "0"]),
        &["--kv-cap", "holds nothing"],
    );
    fails_with(
        speed(&data, &out, &["--kv-cap", "4 parsecs"]),
        &["--kv-cap", "not a byte size"],
    );
    fails_with(
        speed(&data, &out, &["--prefill-chunk", "0"]),
        &["--prefill-chunk is 0"],
    );
    fails_with(
        speed(&data, &out, &["--contexts", "8,16", "--batch", "1,2"]),
        &["--contexts", "--batch"],
    );
    // more rows than the text has prompts for: the batch is named, with the most that fits
    fails_with(
        speed(&data, &out, &["--batch", "1000"]),
        &["--batch 1000", "tokens of text", "is the most that fits"],
    );
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "no --json or --plot file written"
    );
}

#[test]
fn bad_sampling_values_are_refused() {
    let generate = |extra: &[&str]| {
        let mut c = h2o();
        c.args(["generate", "--model"])
            .arg(fixture_dir())
            .args(["--threads", "1", "--prompt", "The river"])
            .args(extra)
            .timeout(Duration::from_secs(60));
        c
    };
    for t in ["-0.5", "nan", "inf"] {
        fails_with(
            generate(&["--temperature", t]),
            &["--temperature", "not allowed"],
        );
    }
    for p in ["0", "1.5", "-1"] {
        fails_with(generate(&["--top-p", p]), &["--top-p", "outside (0, 1]"]);
    }
    fails_with(generate(&["--max-new", "0"]), &["--max-new is 0"]);
    fails_with(
        generate(&["--max-new", "2048"]),
        &["prompt tokens", "--max-new 2048", "2048 positions"],
    );
    fails_with(
        generate(&["--policy", "local:0"]),
        &["--policy", "budget is 0"],
    );
}

#[test]
fn ppl_tokens_beyond_model_positions_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench(&data, &results, &["--ppl-tokens", "4000"]),
        &["--ppl-tokens", "2048 positions"],
    );
    assert_no_results(&results);
}

// ---------- results, model, runtime ----------

/// Issue 28: the message names `--results` and the file in the way (it used to say "not
/// writable").
#[test]
fn results_dir_under_a_file_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    // A path under a regular file: cannot be created even as root.
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a directory\n").unwrap();
    let results = file.join("sub");
    fails_with(
        bench(&data, &results, &[]),
        &["--results", "file/sub", "file is a file, not a folder"],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory\n");
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["file", "text.txt"], "nothing else written");
}

#[test]
fn model_dir_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    let mut c = h2o();
    c.args(["bench", "--model"])
        .arg(tmp.path().join("no-model"))
        .arg("--data")
        .arg(&data)
        .arg("--results")
        .arg(&results)
        .args([
            "--exp",
            "full",
            "--ppl-tokens",
            "16",
            "--prompt",
            "8",
            "--gen",
            "4",
        ]);
    fails_with(c, &["no-model", "does not exist", "--model"]);
    assert_no_results(&results);
    let mut c = h2o();
    c.args(["info", "--model"]).arg(tmp.path().join("no-model"));
    fails_with(c, &["does not exist"]);
}

#[test]
fn cuda_provider_without_the_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    if cfg!(feature = "cuda") {
        eprintln!("skipped: built with the cuda feature");
        return;
    }
    fails_with(
        bench(&data, &results, &["--provider", "cuda"]),
        &["cuda", "feature", "--provider cpu"],
    );
    assert_no_results(&results);
    let mut c = h2o();
    c.args(["info", "--model"])
        .arg(fixture_dir())
        .args(["--provider", "rocm"]);
    fails_with(c, &["rocm", "--provider", "possible values: cpu, cuda"]);
    let mut c = h2o();
    c.args(["info", "--model"])
        .arg(fixture_dir())
        .args(["--opt-level", "max"]);
    fails_with(
        c,
        &[
            "max",
            "--opt-level",
            "possible values: disable, basic, extended, all",
        ],
    );
}

#[test]
fn ort_dylib_path_pointing_to_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    let lib = tmp.path().join("libonnxruntime.so.missing");
    let mut c = bench(&data, &results, &[]);
    c.env("ORT_DYLIB_PATH", &lib);
    fails_with(
        c,
        &[
            "ONNX Runtime library not found",
            "libonnxruntime.so.missing",
            "ORT_DYLIB_PATH",
            "onnxruntime wheel",
            "capi",
        ],
    );
    assert_no_results(&results);
    let mut c = h2o();
    c.args(["info", "--model"])
        .arg(fixture_dir())
        .env("ORT_DYLIB_PATH", &lib);
    fails_with(c, &["ONNX Runtime library not found"]);
}

#[test]
fn threads_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    let mut c = h2o();
    c.args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .arg("--results")
        .arg(&results)
        .args(["--exp", "full", "--threads", "0"]);
    fails_with(c, &["--threads: 0 intra-op threads: use 1 to"]);
    assert_no_results(&results);
}

/// Issue 19 item 2: more threads than logical cores hung (`info --threads 1000` never returned);
/// now refused at once, naming the machine's limit. The command has a minute before it is killed.
#[test]
fn threads_above_the_logical_cores_are_refused_promptly() {
    let logical = std::thread::available_parallelism().unwrap().get();
    let too_many = (logical * 500).to_string();
    let mut c = h2o();
    c.args(["info", "--model"])
        .arg(fixture_dir())
        .args(["--threads", &too_many])
        .timeout(Duration::from_secs(60));
    fails_with(
        c,
        &[
            &format!("--threads: {too_many} intra-op threads: use 1 to {logical}"),
            "logical cores",
        ],
    );
    // the limit itself is accepted
    let mut c = h2o();
    c.args(["info", "--model"])
        .arg(fixture_dir())
        .args(["--threads", &logical.to_string()])
        .timeout(Duration::from_secs(60))
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "intra threads    {logical}"
        )));
    // and a bench is refused before any results file
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    fails_with(
        bench(&data, &results, &["--threads", &too_many]),
        &["--threads"],
    );
    assert_no_results(&results);
}

// ---------- compare ----------

#[test]
fn compare_with_unknown_columns_names_the_missing_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.csv");
    std::fs::write(
        &good,
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL\nBaseline,Full,1.4,90.0,11.1,8.2\n",
    )
    .unwrap();
    let odd = tmp.path().join("odd.csv");
    std::fs::write(&odd, "name,score,latency\nfoo,1.0,2.0\n").unwrap();
    let mut c = h2o();
    c.arg("compare").arg(&good).arg(&odd);
    let err = fails_with(
        c,
        &[
            "odd.csv",
            "missing column",
            "\"Experiment\"",
            "\"Budget (Tokens)\"",
            "\"PPL\"",
            "\"TPOT (ms)\"",
            "\"KV Size (GB)\"",
        ],
    );
    assert!(
        err.contains("found") && err.contains("\"latency\""),
        "names what it found:\n{err}"
    );
    // A file that lacks only some columns names just those.
    let partial = tmp.path().join("partial.csv");
    std::fs::write(
        &partial,
        "Experiment,Budget (Tokens),PPL\nBaseline,Full,8.2\n",
    )
    .unwrap();
    let mut c = h2o();
    c.arg("compare").arg(&partial).arg(&good);
    let err = fails_with(
        c,
        &[
            "partial.csv",
            "\"KV Size (GB)\"",
            "\"TPOT (ms)\"",
            "\"Throughput (T/s)\"",
        ],
    );
    let missing_part = err.split("found").next().unwrap();
    assert!(
        !missing_part.contains("\"Experiment\""),
        "Experiment is not missing:\n{err}"
    );
    // A missing file.
    let mut c = h2o();
    c.arg("compare").arg(tmp.path().join("nope.csv")).arg(&good);
    fails_with(c, &["nope.csv"]);
}

// ---------- heatmap ----------

#[test]
fn heatmap_layer_out_of_range_names_the_valid_range() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("maps");
    let mut c = h2o();
    c.args(["heatmap", "--model"])
        .arg(fixture_dir())
        .args(["--layers", "5", "--threads", "1"])
        .arg("--out")
        .arg(&out);
    fails_with(c, &["layer 5 is out of range", "2 layers", "0..=1"]);
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn heatmap_empty_text_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("maps");
    let mut c = h2o();
    c.args(["heatmap", "--model"])
        .arg(fixture_dir())
        .args(["--text", "", "--threads", "1"])
        .arg("--out")
        .arg(&out);
    fails_with(c, &["empty text", "--text"]);
    let mut c = h2o();
    c.args(["heatmap", "--model"])
        .arg(fixture_dir())
        .args(["--text", "  \n ", "--threads", "1"])
        .arg("--out")
        .arg(&out);
    fails_with(c, &["empty text"]);
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn clap_rejects_unknown_flags_with_usage() {
    h2o()
        .args(["bench", "--no-such-flag"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--no-such-flag").and(predicate::str::contains("Usage")));
}

// ---------- issue 19: messages that name the right flag and the real problem ----------

/// Issue 19 item 4: a colour floor outside (0, 1) drew a blank picture; now refused, naming
/// --floor, before the model is loaded or any picture is written.
#[test]
fn heatmap_floor_outside_zero_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("maps");
    for floor in ["2", "1", "0", "-0.5", "NaN"] {
        let mut c = h2o();
        c.args(["heatmap", "--model"])
            .arg(fixture_dir())
            .args(["--threads", "1", &format!("--floor={floor}")])
            .arg("--out")
            .arg(&out);
        fails_with(c, &["--floor", "between 0 and 1"]);
        assert!(!out.exists(), "nothing written for --floor {floor}");
    }
}

/// Issue 19 item 10: each message names the flag the user gave and what is really wrong.
#[test]
fn messages_name_the_flag_given_and_the_real_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let out = tmp.path().join("maps");
    let heatmap = |extra: &[&str]| {
        let mut c = h2o();
        c.args(["heatmap", "--model"])
            .arg(fixture_dir())
            .args(["--threads", "1"])
            .args(extra)
            .arg("--out")
            .arg(&out);
        c
    };
    // speed --prompt 0: the prompt's minimum, not the positions limit
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--prompt", "0", "--no-floor", "--threads", "1"]);
    let e = fails_with(c, &["--prompt is 0", "at least 1"]);
    assert!(!e.contains("positions"), "{e}");
    // heatmap --budget 0 and --max-tokens 0 name their own flags
    let e = fails_with(heatmap(&["--budget", "0"]), &["--budget 0", "at least 1"]);
    assert!(!e.contains("h2o:0+0") && !e.contains("--policies"), "{e}");
    let e = fails_with(heatmap(&["--max-tokens", "0"]), &["--max-tokens 0"]);
    assert!(!e.contains("--text STR or --file"), "{e}");
    // heatmap --file names --file, never --data
    let missing = tmp.path().join("missing.txt");
    let mut c = heatmap(&[]);
    c.arg("--file").arg(&missing);
    let e = fails_with(c, &["--file", "missing.txt", "not found"]);
    assert!(!e.contains("--data"), "{e}");
    assert!(!out.exists(), "nothing written");
    // a file given as --model is a file, not a missing directory
    let mut c = h2o();
    c.args(["info", "--model"]).arg(&data);
    let e = fails_with(c, &["--model", "text.txt", "is a file, not a directory"]);
    assert!(!e.contains("does not exist"), "{e}");
    // model.onnx that is a directory is not "missing"
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["manifest.json", "tokenizer.json"] {
        std::fs::copy(fixture_dir().join(f), model.join(f)).unwrap();
    }
    std::fs::create_dir(model.join("model.onnx")).unwrap();
    let mut c = h2o();
    c.args(["info", "--model"]).arg(&model);
    let e = fails_with(c, &["--model", "model.onnx is not a file", "directory"]);
    assert!(!e.contains("missing"), "{e}");
}

/// Issue 19 item 10: a results-name clash says how to choose another name (`--name`), and
/// `--name` sets the run's file names.
#[test]
fn a_results_name_clash_points_to_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let results = tmp.path().join("results");
    std::fs::create_dir(&results).unwrap();
    // anything at the path counts, a dangling link included (issue 19 item 1)
    std::os::unix::fs::symlink("gone.json", results.join("mine.json")).unwrap();
    let e = fails_with(
        bench(&data, &results, &["--name", "mine"]),
        &["mine.json", "already exists", "--name"],
    );
    assert!(!e.contains("choose another run name"), "{e}");
    assert!(!results.join("mine.csv").exists() && !results.join("gone.json").exists());
    fails_with(
        bench(&data, &results, &["--name", "../escape"]),
        &["--name", "letters, digits"],
    );
    // another name runs
    let out = bench(&data, &results, &["--name", "other", "--ppl-tokens", "16"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(results.join("other.csv").is_file() && results.join("other.json").is_file());
}

/// Issue 19 item 3, end to end: a malformed results row is one error naming the file, the line
/// and the column (exit 2), never a table with `-` in it.
#[test]
fn compare_refuses_a_malformed_row() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.csv");
    let header = "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL\n";
    std::fs::write(&good, format!("{header}Baseline,Full,1.4,90,11,8.2\n")).unwrap();
    for (name, row, phrases) in [
        (
            "short.csv",
            "Baseline,Full,1.4",
            vec!["line 2 has 3 fields, the header has 6"],
        ),
        (
            "nan.csv",
            "Baseline,Full,1.4,90,11,NaN",
            vec!["line 2", "\"PPL\"", "not a finite number"],
        ),
        (
            "neg.csv",
            "Local (256),256,-0.1,90,11,30",
            vec!["line 2", "\"KV Size (GB)\"", "negative"],
        ),
    ] {
        let bad = tmp.path().join(name);
        std::fs::write(&bad, format!("{header}{row}\n")).unwrap();
        let mut c = h2o();
        c.arg("compare").arg(&good).arg(&bad);
        let mut all = vec![name];
        all.extend(phrases);
        fails_with(c, &all);
    }
}
