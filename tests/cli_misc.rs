//! End-to-end CLI tests of `h2o compare`, `ppl`, `speed`, `heatmap` and `info` on the tiny fixture.

use std::path::{Path, PathBuf};
use std::time::Duration;

use predicates::prelude::*;

// ---------- helpers ----------

mod common;

use common::cli::{h2o, read_json, success, write_text};
use common::{fixture_dir, root};

/// The seed's pytorch-results.csv as shipped in ../shared/seed (used when that file is absent).
const SEED_CSV_COPY: &str = "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL
Baseline,Full,1.439208984375,89.99727084301412,11.111448054289784,8.2109375
H2O (128+128),256,0.078125,97.55144990049303,10.251000892555119,11.96875
H2O (64+192),256,0.078125,92.3756929114461,10.825358581706421,11.875
Local (256),256,0.078125,80.00751445069909,12.498825977354958,30.328125
";

/// `h2o ppl` on the fixture with a trace and `extra` flags; returns what [`ppl`] returns.
fn ppl_with(
    data: &Path,
    tokens: usize,
    policy: &str,
    extra: &[&str],
) -> (String, serde_json::Value, Option<serde_json::Value>) {
    ppl_run(data, tokens, policy, true, extra)
}

/// `h2o ppl` on the fixture; returns (stdout, --json document, --trace document if asked).
fn ppl(
    data: &Path,
    tokens: usize,
    policy: &str,
    trace: bool,
) -> (String, serde_json::Value, Option<serde_json::Value>) {
    ppl_run(data, tokens, policy, trace, &[])
}

fn ppl_run(
    data: &Path,
    tokens: usize,
    policy: &str,
    trace: bool,
    extra: &[&str],
) -> (String, serde_json::Value, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ppl.json");
    let tr = dir.path().join("trace.json");
    let mut c = h2o();
    c.args(["ppl", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args([
            "--tokens",
            &tokens.to_string(),
            "--policy",
            policy,
            "--threads",
            "1",
        ])
        .arg("--json")
        .arg(&json);
    if trace {
        c.arg("--trace").arg(&tr);
    }
    c.args(extra);
    let stdout = success(c);
    let t = trace.then(|| read_json(&tr));
    (stdout, read_json(&json), t)
}

fn nlls(doc: &serde_json::Value) -> Vec<f64> {
    doc["nll"]
        .as_array()
        .expect("nll array")
        .iter()
        .map(|x| x.as_f64().expect("nll number"))
        .collect()
}

// ---------- compare ----------

/// A bench CSV in our format with full, local:128 and h2o:192+64 at tiny sizes.
fn our_bench_csv(dir: &Path) -> PathBuf {
    let data = write_text(dir, 200);
    let results = dir.join("results");
    let mut c = h2o();
    c.args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--exp", "full,local:128,h2o:192+64"])
        .args([
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
        ])
        .arg("--results")
        .arg(&results);
    success(c);
    let csvs: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("csv"))
        .collect();
    assert_eq!(csvs.len(), 1, "{csvs:?}");
    csvs[0].clone()
}

fn line_with<'a>(text: &'a str, needles: &[&str]) -> Option<&'a str> {
    text.lines().find(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn compare_lines_up_the_seed_csv_with_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = our_bench_csv(tmp.path());
    let shipped = root().join("../shared/seed/pytorch-results.csv");
    let seed = if shipped.is_file() {
        shipped
    } else {
        eprintln!(
            "note: {} is absent; skipping the shipped seed file and using an inline copy of it",
            shipped.display()
        );
        let p = tmp.path().join("pytorch-results.csv");
        std::fs::write(&p, SEED_CSV_COPY).unwrap();
        p
    };
    let mut c = h2o();
    c.arg("compare").arg(&seed).arg(&ours).arg("--wide");
    let out = success(c);
    assert!(out.contains("(seed format;"), "{out}");
    assert!(out.contains("(h2o bench format;"), "{out}");
    for h in [
        "PPL A",
        "PPL B",
        "TPOT A (ms)",
        "TPOT B (ms)",
        "KV A (GB)",
        "KV B (GB)",
    ] {
        assert!(out.contains(h), "header {h:?} missing:\n{out}");
    }
    // Another model on another device: no speed-up or PPL difference, and the head says why.
    assert!(
        out.contains("Model differs: A pythia-2.8b, B tiny-neox"),
        "{out}"
    );
    assert!(out.contains("No Speed-up (A/B)"), "{out}");
    assert!(!out.contains("┆ Speed-up"), "{out}");
    // Matched rows, side by side on one line.
    assert!(
        line_with(&out, &["Baseline [full]", "[full]", "exact"]).is_some(),
        "Baseline matches full:\n{out}"
    );
    assert!(
        line_with(
            &out,
            &[
                "H2O (64+192) [h2o-layer:192+64]",
                "[h2o:192+64]",
                "256",
                "h2o vs h2o-layer, ours +1 token"
            ]
        )
        .is_some(),
        "the seed's H2O (64+192) matches our h2o:192+64, which attends one token more:\n{out}"
    );
    // The seed's PPL shows on the matched line.
    assert!(
        line_with(&out, &["Baseline [full]", "8.21"]).is_some(),
        "{out}"
    );
    // Unmatched rows listed, not dropped.
    let (_, unmatched) = out
        .split_once("Unmatched in A:")
        .expect("unmatched A section");
    let (ua, ub) = unmatched
        .split_once("Unmatched in B:")
        .expect("unmatched B section");
    assert!(ua.contains("Local (256)"), "{out}");
    assert!(ua.contains("H2O (128+128)"), "{out}");
    assert!(!ua.contains("Baseline"), "{out}");
    assert!(ub.contains("local:128"), "{out}");
    assert!(!ub.contains("h2o:192+64"), "{out}");
}

#[test]
fn compare_ours_with_itself_matches_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = our_bench_csv(tmp.path());
    let mut c = h2o();
    c.arg("compare").arg(&ours).arg(&ours).arg("--wide");
    let out = success(c);
    assert!(out.contains("both files ours"), "{out}");
    assert!(!out.contains("Unmatched"), "{out}");
    let header = cells(line_with(&out, &["ΔPPL (B−A)"]).expect("header"));
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    for spec in ["[full]", "[local:128]", "[h2o:192+64]"] {
        let l = line_with(&out, &[spec, "exact"]).unwrap_or_else(|| panic!("{spec}:\n{out}"));
        assert_eq!(l.matches(spec).count(), 2, "{l}");
        let row = cells(l);
        assert_eq!(row.len(), header.len(), "{l}");
        let ppl: f64 = row[at("PPL A")].parse().expect("a PPL");
        assert!(ppl > 1.0, "{l}");
        assert_eq!(row[at("PPL A")], row[at("PPL B")], "{l}");
        assert_eq!(row[at("ΔPPL (B−A)")], "0.00", "zero PPL difference: {l}");
        assert_eq!(row[at("Speed-up (A/B)")], "1.00", "same TPOT: {l}");
        assert_eq!(row[at("KV A (GB)")], row[at("KV B (GB)")], "{l}");
    }
}

/// The cells of one line of a comfy-table table, trimmed.
fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('│')
        .split(['│', '┆'])
        .map(|c| c.trim().to_string())
        .collect()
}

// ---------- ppl ----------

#[test]
fn ppl_json_has_nll_per_prediction_and_ppl_is_exp_mean_nll() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let (stdout, doc, _) = ppl(&data, 64, "local:8", false);
    assert_eq!(doc["policy"], "local:8");
    assert_eq!(doc["model"], "tiny-neox");
    assert_eq!(doc["n_tokens"], 64);
    let nll = nlls(&doc);
    assert_eq!(nll.len(), 63, "N tokens give N-1 predictions");
    assert!(nll.iter().all(|x| x.is_finite() && *x > 0.0));
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    let p = doc["ppl"].as_f64().unwrap();
    assert!(
        ((p - mean.exp()) / p).abs() <= 1e-9,
        "ppl {p} vs exp(mean nll) {}",
        mean.exp()
    );
    assert!(
        doc["kv_bytes"].as_u64().unwrap() <= 8 * 1024,
        "local:8 holds at most 8 tokens of 1024 B"
    );
    assert!(doc["onnxruntime"].as_str().unwrap().starts_with("1."));
    assert!(
        stdout.contains("local:8") && stdout.contains("PPL"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{p:.4}")),
        "printed PPL {p:.4}: {stdout}"
    );
}

#[test]
fn ppl_trace_has_steps_for_an_evicting_policy_and_none_for_full() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let (_, _, tr) = ppl(&data, 64, "local:8", true);
    let tr = tr.unwrap();
    assert_eq!(tr["format"], "h2o-evict-trace/1");
    assert_eq!(tr["policy"], "local:8");
    assert_eq!(tr["layers"], 2);
    assert_eq!(tr["heads"], 4);
    assert_eq!(tr["tokens"].as_array().unwrap().len(), 64);
    let steps = tr["steps"].as_array().unwrap();
    // local:8 over 64 tokens evicts one position per step once the window is full.
    assert!(
        (50..=56).contains(&steps.len()),
        "local:8 over 64 tokens: {} eviction steps",
        steps.len()
    );
    let first = &steps[0];
    assert!(first["pos"].as_u64().is_some(), "{first}");
    let ev = first["evicted"].as_array().expect("evicted per layer");
    assert_eq!(ev.len(), 2, "per layer: {first}");
    assert_eq!(ev[0].as_array().unwrap().len(), 4, "per head: {first}");

    let (_, _, tr) = ppl(&data, 64, "full", true);
    let tr = tr.unwrap();
    assert_eq!(tr["format"], "h2o-evict-trace/1");
    assert_eq!(tr["policy"], "full");
    assert_eq!(
        tr["steps"].as_array().unwrap().len(),
        0,
        "full never evicts"
    );
}

#[test]
fn h2o_budget_beyond_the_text_equals_the_full_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 400);
    let (_, full, _) = ppl(&data, 512, "full", false);
    let (_, h2o_doc, _) = ppl(&data, 512, "h2o:600+600", false);
    assert_eq!(full["n_tokens"], 512);
    assert_eq!(h2o_doc["n_tokens"], 512);
    let (a, b) = (
        full["ppl"].as_f64().unwrap(),
        h2o_doc["ppl"].as_f64().unwrap(),
    );
    assert!(((a - b) / a).abs() <= 1e-9, "full {a} vs h2o:600+600 {b}");
    let (na, nb) = (nlls(&full), nlls(&h2o_doc));
    assert_eq!(na.len(), 511);
    let worst = na
        .iter()
        .zip(&nb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 1e-9, "per-token NLL differs by {worst}");
    assert_eq!(full["kv_bytes"], h2o_doc["kv_bytes"], "nothing evicted");
}

// ---------- heatmap ----------

fn check_png(p: &Path) {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(bytes.len() > 1000, "{}: {} bytes", p.display(), bytes.len());
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        p.display()
    );
    let img = image::load_from_memory(&bytes).expect("decodes").to_rgb8();
    assert!(
        img.width() >= 200 && img.height() >= 200,
        "{}: {}x{}",
        p.display(),
        img.width(),
        img.height()
    );
    let first = *img.get_pixel(0, 0);
    let distinct = img.pixels().filter(|px| **px != first).count();
    assert!(distinct > 100, "{}: nearly uniform", p.display());
}

#[test]
fn heatmap_writes_log_heatmaps_and_kept_pictures_for_default_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("maps");
    let mut c = h2o();
    c.args(["heatmap", "--model"])
        .arg(fixture_dir())
        .args(["--threads", "1"])
        .arg("--out")
        .arg(&out_dir);
    let stdout = success(c);
    // default_layers(2) = [min(2, 2/4)=0, 2/2=1, 2-2=0] sorted, deduplicated = [0, 1].
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "heatmap_layer_00_log.png",
            "heatmap_layer_01_log.png",
            "kept_layer_00.png",
            "kept_layer_01.png"
        ]
    );
    for n in &names {
        check_png(&out_dir.join(n));
        assert!(stdout.contains(n.as_str()), "stdout lists {n}:\n{stdout}");
    }
}

#[test]
fn heatmap_with_chosen_layer_text_and_head() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("maps");
    let mut c = h2o();
    c.args(["heatmap", "--model"])
        .arg(fixture_dir())
        .args(["--layers", "1", "--head", "2", "--threads", "1"])
        .args([
            "--text",
            "Hello, world. The cat sat; the dog ran! Why? Because, of course, it could.",
        ])
        .arg("--out")
        .arg(&out_dir);
    success(c);
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["heatmap_layer_01_log.png", "kept_layer_01.png"]);
    for n in &names {
        check_png(&out_dir.join(n));
    }
}

// ---------- speed ----------

#[test]
fn speed_sweeps_contexts_and_writes_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let json = tmp.path().join("speed.json");
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args([
            "--exp",
            "full,local:16",
            "--contexts",
            "32,64",
            "--gen",
            "8",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--wide",
        ])
        .arg("--json")
        .arg(&json);
    let stdout = success(c);
    for h in [
        "Policy",
        "Context",
        "TTFT (ms)",
        "TPOT (ms)",
        "TPOT p90 (ms)",
        "Throughput (T/s)",
        "Host (%)",
        "KV (MiB)",
        "Floor (ms)",
        "full",
        "local:16",
    ] {
        assert!(stdout.contains(h), "stdout lacks {h:?}:\n{stdout}");
    }
    let doc = read_json(&json);
    assert_eq!(doc["model"], "tiny-neox");
    assert_eq!(doc["threads"], 1);
    assert_eq!(doc["provider"], "cpu");
    assert_eq!(doc["denormals"], "flush", "the default");
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "2 policies x 2 contexts");
    let mut seen: Vec<(String, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap().to_string(),
                r["context"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("full".to_string(), 32),
            ("full".to_string(), 64),
            ("local:16".to_string(), 32),
            ("local:16".to_string(), 64)
        ]
    );
    for r in runs {
        assert_eq!(r["gen"], 8);
        assert!(r["speed"].is_object(), "{r}");
        let kv = r["kv_bytes"].as_u64().unwrap();
        let full = r["kv_bytes_full"].as_u64().unwrap();
        // 1024 bytes per token on the fixture (2 layers x K,V x 4 heads x 16 x 4 B).
        assert_eq!(full, 1024 * (r["context"].as_u64().unwrap() + 8 - 1), "{r}");
        if r["policy"] == "full" {
            assert_eq!(kv, full, "{r}");
        } else {
            assert!(kv <= 16 * 1024, "local:16 holds at most 16 tokens: {r}");
        }
    }
}

/// Issue 19 item 9: without the bandwidth measurement the floor columns show `-`, never NaN;
/// the JSON has null for them.
#[test]
fn speed_no_floor_shows_a_dash() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let json = tmp.path().join("speed.json");
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args([
            "--prompt",
            "8",
            "--gen",
            "4",
            "--warmup",
            "0",
            "--threads",
            "1",
        ])
        .arg("--no-floor")
        .arg("--json")
        .arg(&json);
    let stdout = success(c);
    assert!(!stdout.to_lowercase().contains("nan"), "{stdout}");
    let row = stdout.lines().find(|l| l.contains(" full ")).unwrap();
    let cells = cells(row);
    assert_eq!(cells[cells.len() - 2..], ["-", "-"], "{stdout}");
    let doc = read_json(&json);
    assert!(doc["read_bandwidth_bytes_per_s"].is_null());
    assert!(doc["runs"][0]["floor_ms"].is_null());
}

/// `speed --rounds N` measures every point N times, the points alternating, and reports each
/// point's median round with every round's TPOT and their spread; `--rounds 0` is refused.
#[test]
fn speed_rounds_report_the_median_round() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let json = tmp.path().join("speed.json");
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args([
            "--exp",
            "full,local:8",
            "--prompt",
            "8",
            "--gen",
            "4",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--rounds",
            "3",
            "--no-floor",
            "--wide",
        ])
        .arg("--json")
        .arg(&json);
    let stdout = success(c);
    assert!(stdout.contains("Round spread (%)"), "{stdout}");
    assert!(stdout.contains("TPOT spread (%)"), "{stdout}");
    let doc = read_json(&json);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "one point per policy, not per round");
    for r in runs {
        let mut rounds: Vec<f64> = r["rounds_tpot_median_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 3, "{r}");
        rounds.sort_by(f64::total_cmp);
        assert_eq!(
            r["speed"]["tpot_median_ms"].as_f64(),
            Some(rounds[1]),
            "{r}"
        );
        let s = &r["speed"];
        assert!(s["tpot_p10_ms"].as_f64().unwrap() <= s["tpot_median_ms"].as_f64().unwrap());
        assert_eq!(
            r["steady"],
            serde_json::Value::Bool(true),
            "two points: no neighbours"
        );
    }
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--rounds", "0"]);
    let out = c.assert().code(2).get_output().stderr.clone();
    let err = String::from_utf8_lossy(&out);
    assert!(
        err.contains("--rounds") && err.contains("0 rounds"),
        "{err}"
    );
}

/// Issue 19 item 12: `--text seed` scores the seed's token stream: the dataset's rows (blank
/// lines empty) joined with nothing between them, not the file as it is.
#[test]
fn ppl_text_seed_reads_the_seed_rows() {
    use h2o_engine::eval::data::{seed_text, tokenize};
    let excerpt = root().join("tests/data/wiki.test.excerpt.raw");
    let tok = tokenizers::Tokenizer::from_file(fixture_dir().join("tokenizer.json")).unwrap();
    let raw = std::fs::read_to_string(&excerpt).unwrap();
    let tokens = |mode: &str| -> Vec<u64> {
        let (_, _, trace) = ppl_with(&excerpt, 256, "local:8", &["--text", mode]);
        trace.unwrap()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect()
    };
    let want: Vec<u64> = tokenize(&tok, &seed_text(&raw)).unwrap()[..256]
        .iter()
        .map(|&t| u64::from(t))
        .collect();
    let seed = tokens("seed");
    assert_eq!(seed, want);
    let file = tokens("file");
    let whole: Vec<u64> = tokenize(&tok, &raw).unwrap()[..256]
        .iter()
        .map(|&t| u64::from(t))
        .collect();
    assert_eq!(file, whole);
    assert_ne!(seed, file, "the two texts differ from the first line on");
}

/// `h2o speed` on the fixture with one context and a batch sweep under a K/V cap.
#[test]
fn speed_sweeps_batches_and_measures_the_largest_batch_under_a_kv_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    let (json, png) = (tmp.path().join("batch.json"), tmp.path().join("batch.png"));
    let mut c = h2o();
    c.args(["speed", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--exp", "full,local:16", "--prompt", "32", "--gen", "8"])
        .args([
            "--batch",
            "1,3",
            "--kv-cap",
            "160KiB",
            "--prefill-chunk",
            "12",
        ])
        .args(["--warmup", "0", "--threads", "1", "--no-floor", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&png);
    let stdout = success(c);
    for h in [
        "Batch",
        "KV alloc (MiB)",
        "Peak RSS (MiB)",
        "Per-step breakdown",
        "Batch under cap",
        "Best T/s under cap",
        "2 (cap)",
        "10 (cap)",
    ] {
        assert!(stdout.contains(h), "stdout lacks {h:?}:\n{stdout}");
    }
    check_png(&png);
    let doc = read_json(&json);
    assert_eq!(doc["prefill_chunk"], 12);
    // 1024 bytes per slot on the fixture; 39 tokens held: the full cache has 64 slots per row
    // (64 KiB), local:16 has 16 (16 KiB); 160 KiB holds 2 rows of full, 10 of local:16.
    let fits = doc["kv_cap"]["fits"].as_array().unwrap();
    let fit = |i: usize| {
        (
            fits[i]["batch"].as_u64().unwrap(),
            fits[i]["row_bytes"].as_u64().unwrap(),
        )
    };
    assert_eq!((fit(0), fit(1)), ((2, 64 * 1024), (10, 16 * 1024)));
    let runs = doc["runs"].as_array().unwrap();
    let seen: Vec<(String, u64, bool)> = runs
        .iter()
        .map(|r| {
            let batch = r["batch"].as_u64().unwrap();
            assert_eq!(r["speed"]["batch"].as_u64(), Some(batch), "{r}");
            assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0, "{r}");
            let row = if r["policy"] == "full" { 64 } else { 16 } * 1024;
            assert_eq!(r["kv_allocated_bytes"].as_u64(), Some(batch * row), "{r}");
            let spec = r["policy"].as_str().unwrap().to_string();
            (spec, batch, r["at_cap"].as_bool().unwrap())
        })
        .collect();
    let want = [
        ("full", 1, false),
        ("full", 2, true),
        ("full", 3, false),
        ("local:16", 1, false),
        ("local:16", 3, false),
        ("local:16", 10, true),
    ];
    let want: Vec<(String, u64, bool)> = want
        .iter()
        .map(|(s, b, c)| (s.to_string(), *b, *c))
        .collect();
    assert_eq!(seen, want);
    let best = doc["kv_cap"]["best"].as_array().unwrap();
    assert!(best
        .iter()
        .all(|b| b["kv_allocated_bytes"].as_u64().unwrap() <= 160 * 1024));
}

/// `h2o generate` on the fixture with `extra` flags: (stdout, stderr).
fn generate(extra: &[&str]) -> (String, String) {
    let out = h2o()
        .args(["generate", "--model"])
        .arg(fixture_dir())
        .args(["--threads", "1", "--max-new", "24"])
        .args(extra)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn generate_greedy_is_deterministic_and_sampling_reproducible_from_its_rng_seed() {
    let prompt = ["--prompt", "The river was built after the war. The ship"];
    let (greedy, summary) = generate(&[&prompt[..], &["--policy", "h2o:6+2"]].concat());
    assert!(!greedy.trim().is_empty());
    assert_eq!(
        generate(&[&prompt[..], &["--policy", "h2o:6+2"]].concat()).0,
        greedy
    );
    let line = summary.lines().last().unwrap();
    for w in ["24 tokens", "TPOT", "K/V held", "h2o:6+2", "greedy"] {
        assert!(line.contains(w), "summary lacks {w:?}: {summary}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("prompt.txt");
    std::fs::write(&file, prompt[1]).unwrap();
    let from_file = generate(&["--file", file.to_str().unwrap(), "--policy", "h2o:6+2"]);
    assert_eq!(from_file.0, greedy, "--file reads the same prompt");
    let sample = |seed: &str| {
        let flags = [
            "--temperature",
            "1.0",
            "--top-p",
            "0.95",
            "--rng-seed",
            seed,
        ];
        generate(&[&prompt[..], &flags[..]].concat())
    };
    let (a, summary) = sample("5");
    assert_eq!(sample("5").0, a, "same rng seed, same text");
    assert_ne!(sample("6").0, a, "another rng seed, other text");
    assert!(summary.contains("rng seed 5"), "{summary}");
}

// ---------- info ----------

#[test]
fn info_prints_model_ort_version_and_machine() {
    let mut c = h2o();
    c.args(["info", "--model"])
        .arg(fixture_dir())
        .args(["--threads", "1"]);
    let out = success(c);
    assert!(out.contains("tiny-neox"), "{out}");
    assert!(
        out.contains("2 layers") && out.contains("2048 positions"),
        "{out}"
    );
    let ort = line_with(&out, &["onnxruntime"]).expect("onnxruntime line");
    assert!(
        ort.contains(" 1.") && ort.contains("libonnxruntime"),
        "{ort}"
    );
    assert!(line_with(&out, &["provider", "cpu"]).is_some(), "{out}");
    assert!(line_with(&out, &["intra threads", "1"]).is_some(), "{out}");
    // flush by default, and ONNX Runtime did set it on the thread that runs the model
    assert!(
        line_with(
            &out,
            &["denormals", "flush", "this thread flushes them to zero"]
        )
        .is_some(),
        "{out}"
    );
    let machine = line_with(&out, &["machine"]).expect("machine line");
    assert!(
        machine.contains("cores") && machine.contains("GiB"),
        "{machine}"
    );
}

/// `--denormals keep`: ONNX Runtime leaves the thread computing subnormals (info says so), and
/// the perplexity is the default's (flush) bit for bit: every NLL, and h2o's evictions (trace).
#[test]
fn denormals_keep_is_reported_and_gives_the_flushed_nlls_bit_for_bit() {
    let mut c = h2o();
    c.args(["info", "--model"])
        .arg(fixture_dir())
        .args(["--threads", "1", "--denormals", "keep"]);
    let out = success(c);
    assert!(
        line_with(&out, &["denormals", "keep", "this thread computes them"]).is_some(),
        "{out}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 100);
    for policy in ["full", "h2o:4+4"] {
        let (_, flushed, flushed_trace) = ppl_run(&data, 64, policy, true, &[]);
        let (_, kept, kept_trace) = ppl_run(&data, 64, policy, true, &["--denormals", "keep"]);
        assert_eq!(nlls(&flushed), nlls(&kept), "{policy}");
        assert_eq!(flushed["ppl"], kept["ppl"], "{policy}");
        assert_eq!(flushed_trace, kept_trace, "{policy}: the same evictions");
    }
}

#[test]
fn help_and_version() {
    let out = h2o()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8_lossy(&out);
    for sub in ["info", "ppl", "speed", "bench", "compare", "heatmap"] {
        assert!(help.contains(sub), "--help lists {sub}:\n{help}");
    }
    assert!(
        !help.contains("bench-one"),
        "the internal subcommand is hidden:\n{help}"
    );
    h2o()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
}

/// `ppl --windows W --csv`: each window's PPL is exp(mean NLL) of its W predictions, recomputed
/// here from the per-token NLLs of `--json` (the last window shorter); its end counts the text
/// tokens streamed; the table on stdout holds the same rows and, with three policies, fits 80
/// columns.
#[test]
fn ppl_windows_are_the_mean_nll_of_their_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let text = write_text(tmp.path(), 40);
    let (csv, json) = (tmp.path().join("w.csv"), tmp.path().join("w.json"));
    let mut c = h2o();
    c.arg("ppl")
        .arg("--model")
        .arg(fixture_dir())
        .arg("--data")
        .arg(&text);
    c.args([
        "--tokens",
        "50",
        "--policy",
        "local:16",
        "--windows",
        "16",
        "--csv",
    ])
    .arg(&csv)
    .arg("--json")
    .arg(&json);
    success(c);
    let nll: Vec<f64> = read_json(&json)["nll"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(nll.len(), 49);
    let body = std::fs::read_to_string(&csv).unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("window_end,local:16"));
    let rows: Vec<(usize, f64)> = lines
        .map(|l| {
            let (end, ppl) = l.split_once(',').unwrap();
            (end.parse().unwrap(), ppl.parse().unwrap())
        })
        .collect();
    let want: Vec<(usize, f64)> = nll
        .chunks(16)
        .enumerate()
        .map(|(k, w)| {
            let mean = w.iter().sum::<f64>() / w.len() as f64;
            (k * 16 + w.len() + 1, mean.exp())
        })
        .collect();
    assert_eq!(rows.len(), want.len(), "{body}");
    for ((end, ppl), (want_end, want_ppl)) in rows.iter().zip(&want) {
        assert_eq!(end, want_end, "{body}");
        assert!(
            (ppl / want_ppl - 1.0).abs() < 1e-5,
            "{ppl} vs {want_ppl}\n{body}"
        );
    }

    // three policies: the table's rows, each within 80 columns
    let mut c = h2o();
    c.arg("ppl")
        .arg("--model")
        .arg(fixture_dir())
        .arg("--data")
        .arg(&text);
    c.args(["--tokens", "50", "--windows", "16"]);
    for p in [
        "scissor:16@window=8",
        "scissor:16@sinks=4@normalized",
        "sink:4+12",
    ] {
        c.args(["--policy", p]);
    }
    let out = success(c);
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("window end"))
        .collect();
    assert_eq!(table.len(), 1 + want.len(), "{out}");
    for line in &table {
        assert!(line.len() <= 80, "{} columns: {line}", line.len());
    }
    let ends: Vec<usize> = table[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ends, want.iter().map(|w| w.0).collect::<Vec<_>>());
}
