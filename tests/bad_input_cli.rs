//! Issue 28, the CLI's own classes as one table: compare reads a bounded amount in linear time and
//! names lines as the file has them; paths that are not UTF-8 work; a text from $H2O_DATA is
//! named as such; conflicting or ignored flags are refused.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use common::bad_input::{check_all, Case, Scratch};

const SEED_HEADER: &str =
    "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL\n";
const SEED_ROW: &str = "Baseline,Full,1.439208984375,89.99,11.11,8.2109375\n";

#[test]
fn compare_reads_bounded_input_in_linear_time() {
    let s = Scratch::new();
    let good = s.path("good.csv");
    std::fs::write(&good, format!("{SEED_HEADER}{SEED_ROW}")).unwrap();
    let big_cell = s.path("big-cell.csv");
    let cell = "1".repeat(8 << 20);
    std::fs::write(
        &big_cell,
        format!("{SEED_HEADER}Baseline,Full,1.4,83.9,11.9,{cell}\n"),
    )
    .unwrap();
    let big_name = s.path("big-name.csv");
    let name = "a".repeat(10 << 20);
    std::fs::write(
        &big_name,
        format!("{SEED_HEADER}B{name},Full,1.4,83.9,11.9,8.2\n"),
    )
    .unwrap();
    let big_file = s.path("big-file.csv");
    std::fs::write(
        &big_file,
        format!("{SEED_HEADER}{}", SEED_ROW.repeat(400_000)),
    )
    .unwrap();
    // ours: the label is free text, so a quoted label may span lines
    let newline = s.path("newline.csv");
    let ours =
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy,Status\n";
    std::fs::write(
        &newline,
        format!("{ours}\"full,\nall of it\",Full,1.4,83.9,11.9,8.2,full,ok\nlocal,8,1,-1,1,9,local:8,ok\n"),
    )
    .unwrap();
    let quick = Duration::from_secs(20);
    check_all(&[
        Case::new("compare /dev/zero", &[&"compare", &"/dev/zero", &good])
            .words(&["/dev/zero", "more than 16 MiB"])
            .timeout(quick),
        Case::new("compare an 8 MB cell", &[&"compare", &big_cell, &good])
            .words(&["big-cell.csv", "line 2", "a cell of 8388608 bytes"])
            .timeout(quick)
            .unchanged(&[big_cell.clone(), good.clone()]),
        Case::new("compare a 10 MB name", &[&"compare", &good, &big_name])
            .words(&["big-name.csv", "\"Experiment\"", "a cell of"])
            .timeout(quick),
        Case::new("compare a 40 MB file", &[&"compare", &big_file, &good])
            .words(&["big-file.csv", "more than 16 MiB"])
            .timeout(quick),
        Case::new(
            "compare names the line, not the record",
            &[&"compare", &newline, &good],
        )
        .words(&["newline.csv", "line 4", "\"TPOT (ms)\"", "\"-1\""])
        .timeout(quick),
    ]);
}

#[test]
fn an_endless_text_is_refused_after_a_bounded_read() {
    let s = Scratch::new();
    let model = s.model();
    let quick = Duration::from_secs(30);
    let words = ["/dev/zero", "more than 256 MiB of text"];
    check_all(&[
        Case::new(
            "ppl --data /dev/zero",
            &[
                &"ppl",
                &"--model",
                &model,
                &"--data",
                &"/dev/zero",
                &"--tokens",
                &"16",
            ],
        )
        .words(&words)
        .timeout(quick),
        Case::new(
            "generate --file /dev/zero",
            &[&"generate", &"--model", &model, &"--file", &"/dev/zero"],
        )
        .words(&words)
        .timeout(quick),
        Case::new(
            "heatmap --file /dev/zero",
            &[
                &"heatmap",
                &"--model",
                &model,
                &"--file",
                &"/dev/zero",
                &"--out",
                &s.path("heat"),
            ],
        )
        .words(&words)
        .timeout(quick),
    ]);
}

#[test]
fn conflicting_or_ignored_flags_are_refused() {
    let s = Scratch::new();
    let (model, text, out) = (s.model(), s.text(), s.path("heat"));
    check_all(&[
        Case::new(
            "heatmap --budget with --policies",
            &[
                &"heatmap",
                &"--model",
                &model,
                &"--budget",
                &"8",
                &"--policies",
                &"local:4",
                &"--out",
                &out,
            ],
        )
        .words(&["--budget", "--policies"])
        .unchanged(std::slice::from_ref(&out)),
        Case::new(
            "speed --prompt with --contexts",
            &[
                &"speed",
                &"--model",
                &model,
                &"--data",
                &text,
                &"--prompt",
                &"16",
                &"--contexts",
                &"32",
            ],
        )
        .words(&["--prompt", "--contexts"]),
        Case::new(
            "generate --rng-seed without sampling",
            &[
                &"generate",
                &"--model",
                &model,
                &"--prompt",
                &"The river",
                &"--rng-seed",
                &"5",
            ],
        )
        .words(&["--rng-seed 5", "greedy"]),
        Case::new(
            "generate --top-p without sampling",
            &[
                &"generate",
                &"--model",
                &model,
                &"--prompt",
                &"The river",
                &"--top-p",
                &"0.9",
            ],
        )
        .words(&["--top-p 0.9", "greedy"]),
        Case::new(
            "knorm with K/V in device memory",
            &[
                &"ppl",
                &"--model",
                &model,
                &"--data",
                &text,
                &"--policy",
                &"knorm:8",
                &"--kv",
                &"device",
            ],
        )
        .words(&["knorm ranks tokens by their keys' norms", "use --kv host"]),
    ]);
}

#[test]
fn paths_are_os_strings_and_named_by_where_they_came_from() {
    let s = Scratch::new();
    let odd_text = s
        .path("text")
        .join(OsString::from_vec(b"wiki-\xff.raw".to_vec()));
    std::fs::create_dir(s.path("text")).unwrap();
    std::fs::copy(s.text(), &odd_text).unwrap();
    let odd_results = s
        .path("results")
        .join(OsString::from_vec(b"run-\xfe".to_vec()));
    std::fs::create_dir(&odd_results).unwrap();
    let model = s.model();
    let missing = s.path("no-such-text.raw");
    let tiny_bench: [&dyn AsRef<std::ffi::OsStr>; 13] = [
        &"--exp",
        &"full",
        &"--ppl-tokens",
        &"32",
        &"--prompt",
        &"16",
        &"--gen",
        &"4",
        &"--warmup",
        &"0",
        &"--threads",
        &"1",
        &"--in-process",
    ];
    let mut bench_args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"bench",
        &"--model",
        &model,
        &"--data",
        &odd_text,
        &"--results",
        &odd_results,
    ];
    bench_args.extend_from_slice(&tiny_bench);
    // a child process per experiment: the job carries the paths as bytes
    let mut child_args = bench_args.clone();
    child_args.pop();
    child_args.extend_from_slice(&[&"--name", &"child"]);
    bench_args.extend_from_slice(&[&"--name", &"in-process"]);
    check_all(&[
        Case::new("bench, non-UTF-8 --data and --results", &bench_args)
            .exit(0)
            .unchanged(&[model.clone(), odd_text.clone()]),
        Case::new("bench in a child, non-UTF-8 paths", &child_args)
            .exit(0)
            .unchanged(&[model.clone(), odd_text.clone()]),
        Case::new(
            "ppl, text from $H2O_DATA",
            &[&"ppl", &"--model", &model, &"--tokens", &"16"],
        )
        .env("H2O_DATA", missing.clone())
        .words(&["$H2O_DATA", "no-such-text.raw"]),
    ]);
    let written: Vec<_> = std::fs::read_dir(&odd_results).unwrap().flatten().collect();
    assert_eq!(
        written.len(),
        4,
        "two runs' CSV and JSON in {}",
        odd_results.display()
    );
}
