//! End-to-end CLI tests of `h2o compare` on results of real `h2o bench` runs: what differs
//! between the runs is said in the head, one line each with both values, and ratios between
//! different models are left out (issue 29 items 3 and 6).

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::cli::{h2o, write_text};
use common::{fixture_dir, fixture_fp16_dir, root};

/// `h2o bench` of `model` on `data` into `results/<name>.{csv,json}` with `extra` flags.
fn bench(model: &Path, data: &Path, results: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = h2o()
        .args(["bench", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .args(["--ppl-tokens", "32", "--prompt", "16", "--gen", "4"])
        .args(["--warmup", "0", "--threads", "1", "--name", name])
        .arg("--results")
        .arg(results)
        .args(extra)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    results.join(format!("{name}.csv"))
}

fn compare(a: &Path, b: &Path, wide: bool) -> String {
    let mut c = h2o();
    c.arg("compare").arg(a).arg(b);
    if wide {
        c.arg("--wide");
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The lines before the table (its top border starts with a box character).
fn head(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.starts_with(['┌', '╭', '+']))
        .collect()
}

/// The wide table's header row, its cells trimmed.
fn header_cells(text: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.contains("A: Experiment"))
        .expect("a table");
    line.split(['│', '┆', '|'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn compare_names_what_differs_between_two_real_runs_and_leaves_out_their_ratios() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 300);
    let results = tmp.path().join("results");
    // A: the f32 fixture on the file's text, our counting; B: its f16 export on the seed's
    // text, the seed's counting (its local:9 and h2o:4+5 run as local:8 and h2o:4+4, A's specs)
    let a = bench(
        &fixture_dir(),
        &data,
        &results,
        "a",
        &["--exp", "local:8,h2o:4+4"],
    );
    let b = bench(
        &fixture_fp16_dir(),
        &data,
        &results,
        "b",
        &[
            "--exp",
            "local:9,h2o:4+5",
            "--text",
            "seed",
            "--counting",
            "seed",
        ],
    );
    let text = compare(&a, &b, true);
    assert_eq!(
        head(&text),
        [
            format!("A: {} (h2o bench format; run document {})", a.display(), results.join("a.json").display()),
            format!("B: {} (h2o bench format; run document {})", b.display(), results.join("b.json").display()),
            "Model differs: A tiny-neox, B tiny-neox-fp16".to_string(),
            "Dtype differs: A float32, B float16".to_string(),
            "Text differs: A file, B seed".to_string(),
            "Counting differs: A ours, B seed".to_string(),
            "No Speed-up (A/B): A and B differ in model, dtype; a TPOT ratio between them is not a policy's speed-up.".to_string(),
            "No ΔPPL (B−A): A and B differ in model, dtype, text; a PPL difference between them is not a policy's cost.".to_string(),
            "TPOT: median decode step, prefill excluded (both files ours)".to_string(),
        ],
        "{text}"
    );
    assert_eq!(
        header_cells(&text),
        [
            "A: Experiment",
            "B: Experiment",
            "Budget (A / B)",
            "Match",
            "PPL A",
            "PPL B",
            "TPOT A (ms)",
            "TPOT B (ms)",
            "KV A (GB)",
            "KV B (GB)"
        ],
        "{text}"
    );
    // the rows still line up, by the tokens their specs attend
    for pair in [
        "local 8 [local:8]",
        "local 9, seed counting [local:8]",
        "h2o 4+5, seed counting [h2o:4+4]",
    ] {
        assert!(text.contains(pair), "{pair} not in\n{text}");
    }
    assert!(!text.contains("Unmatched"), "{text}");

    // against the seed's file: its published setup, unknowns named, not taken for differences
    let seed = root().join("../shared/seed/pytorch-results.csv");
    let seed = if seed.exists() {
        seed
    } else {
        let p = tmp.path().join("pytorch-results.csv");
        std::fs::write(&p, "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL\r\nBaseline,Full,1.439208984375,89.99727084301412,11.111448054289784,8.2109375\r\n").unwrap();
        p
    };
    let text = compare(&seed, &a, true);
    let lines = head(&text);
    assert_eq!(
        lines[..10],
        [
            format!(
                "A: {} (seed format; the file records no run; the seed's published setup)",
                seed.display()
            ),
            format!(
                "B: {} (h2o bench format; run document {})",
                a.display(),
                results.join("a.json").display()
            ),
            "Model differs: A pythia-2.8b, B tiny-neox".to_string(),
            "Size differs: A 32 layers x 32 heads x 80, B 2 layers x 4 heads x 16".to_string(),
            "Dtype differs: A float16, B float32".to_string(),
            "Device differs: A GPU (CUDA), B CPU".to_string(),
            "Text differs: A seed, B file".to_string(),
            "Counting differs: A seed, B ours".to_string(),
            "PPL tokens differs: A 2048, B 32".to_string(),
            "Generated tokens differs: A 1024, B 4".to_string(),
        ],
        "{text}"
    );
    assert_eq!(
        lines[10],
        "Unknown for A (not counted as differences): processor, threads, subnormals, data file, prompt tokens"
    );
    assert!(
        lines[11].starts_with(
            "No Speed-up (A/B): A and B differ in model, size, dtype, device, generated tokens;"
        ) && lines[12]
            .starts_with("No ΔPPL (B−A): A and B differ in model, size, dtype, text, PPL tokens;"),
        "{text}"
    );
    assert!(
        !text.contains("Speed-up (A/B) ") && !text.contains("┆ ΔPPL"),
        "{text}"
    );
}

/// The CSV alone (its run document moved away): text and counting from its run columns, the
/// rest unknown and said so, and the ratios stay (unknown is no difference).
#[test]
fn a_csv_without_its_run_document_compares_on_what_it_records() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 300);
    let results = tmp.path().join("results");
    let a = bench(&fixture_dir(), &data, &results, "a", &["--exp", "local:8"]);
    std::fs::rename(results.join("a.json"), tmp.path().join("elsewhere.json")).unwrap();
    let text = compare(&a, &a, true);
    let lines = head(&text);
    assert_eq!(
        lines[..3],
        [
            format!("A: {} (h2o bench format; no run document {} beside it)", a.display(), results.join("a.json").display()),
            format!("B: {} (h2o bench format; no run document {} beside it)", a.display(), results.join("a.json").display()),
            "Unknown for A (not counted as differences): model, size, dtype, device, processor, threads, subnormals, PPL tokens, prompt tokens, generated tokens, batch".to_string(),
        ],
        "{text}"
    );
    assert!(
        header_cells(&text).iter().any(|c| c == "Speed-up (A/B)"),
        "{text}"
    );
}

/// `h2o ppl` has bench's `--counting` (the spec runs one token less under `seed`) and records
/// the text, the data file and the counting in `--json`, as bench's run document does.
#[test]
fn ppl_counts_budgets_as_bench_and_records_text_and_counting() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 300);
    let ppl = |policy: &str, extra: &[&str], json: &Path| {
        let out = h2o()
            .args(["ppl", "--model"])
            .arg(fixture_dir())
            .arg("--data")
            .arg(&data)
            .args(["--tokens", "32", "--threads", "1", "--policy", policy])
            .args(extra)
            .arg("--json")
            .arg(json)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        (String::from_utf8(out.stdout).unwrap(), doc)
    };
    let (seed_out, seed) = ppl(
        "local:8",
        &["--counting", "seed", "--text", "seed"],
        &tmp.path().join("seed.json"),
    );
    let (ours_out, ours) = ppl("local:7", &[], &tmp.path().join("ours.json"));
    assert_eq!(seed["policy"], "local:7");
    assert_eq!(seed["label"], "local 8, seed counting");
    assert_eq!(
        (&seed["text"], &seed["counting"]),
        (&"seed".into(), &"seed".into())
    );
    assert_eq!(seed["data"], data.display().to_string());
    assert_eq!(ours["policy"], "local:7");
    assert_eq!(ours["label"], "local 7");
    assert_eq!(
        (&ours["text"], &ours["counting"]),
        (&"file".into(), &"ours".into())
    );
    assert!(
        seed_out.starts_with("tiny-neox  local:7 (local 8, seed counting)  tokens 32  PPL "),
        "{seed_out}"
    );
    assert!(
        ours_out.starts_with("tiny-neox  local:7  tokens 32  PPL "),
        "{ours_out}"
    );
    // the seed's text on the same spec as run: other text, same tokens kept
    let (_, seed_text_ours) = ppl("local:7", &["--text", "seed"], &tmp.path().join("st.json"));
    assert_eq!(seed["nll"], seed_text_ours["nll"]);
    // a budget of 1 keeps nothing in the seed's counting: one clear error, before any run
    let out = h2o()
        .args(["ppl", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args(["--policy", "local:1", "--counting", "seed"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--counting seed: local:1 has a budget of 1"),
        "{stderr}"
    );
}

/// Runs that differ only in `--denormals`: compare names it and leaves out the speed-up (a
/// prefill and a masked softmax run at other speeds), but keeps ΔPPL (the outputs are the same).
#[test]
fn runs_that_differ_in_subnormals_compare_their_ppl_but_not_their_speed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text(tmp.path(), 300);
    let results = tmp.path().join("results");
    let a = bench(&fixture_dir(), &data, &results, "a", &["--exp", "local:8"]);
    let b = bench(
        &fixture_dir(),
        &data,
        &results,
        "b",
        &["--exp", "local:8", "--denormals", "keep"],
    );
    let text = compare(&a, &b, true);
    let lines = head(&text);
    assert_eq!(lines[2], "Subnormals differs: A flush, B keep", "{text}");
    assert!(
        lines[3].starts_with("No Speed-up (A/B): A and B differ in subnormals;"),
        "{text}"
    );
    let cells = header_cells(&text);
    assert!(!cells.iter().any(|c| c == "Speed-up (A/B)"), "{text}");
    assert!(cells.iter().any(|c| c == "ΔPPL (B−A)"), "{text}");
}
