//! Comparing result CSVs: the seed's file loads as is, rows line up by policy family and budget, unmatched rows are listed.

use std::path::{Path, PathBuf};

use h2o_engine::policy::{PolicyKind, PolicySpec, Scope};
use h2o_engine::report::{
    compare, load_results_csv, MatchKind, PolicyMatch, ReportError, ResultFormat, TokenMatch,
    TpotDefinition, SEED_COUNTING_NOTE,
};

/// Copy of ../shared/seed/pytorch-results.csv (used when the shared folder is absent); the
/// original has CRLF line ends, see [`seed_copy`].
const SEED_CSV: &str = "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL
Baseline,Full,1.439208984375,89.99727084301412,11.111448054289784,8.2109375
H2O (128+128),256,0.078125,97.55144990049303,10.251000892555119,11.96875
H2O (64+192),256,0.078125,92.3756929114461,10.825358581706421,11.875
Local (256),256,0.078125,80.00751445069909,12.498825977354958,30.328125
";

fn shared_seed_csv() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seed/pytorch-results.csv");
    p.exists().then_some(p)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The seed's file byte for byte (CRLF line ends, as in its repository).
fn seed_copy(dir: &Path) -> PathBuf {
    write(dir, "pytorch-results.csv", &SEED_CSV.replace('\n', "\r\n"))
}

fn seed_csv(dir: &Path) -> PathBuf {
    shared_seed_csv().unwrap_or_else(|| seed_copy(dir))
}

const OURS_CSV: &str = "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy,Family,Seed TPOT (ms)
Baseline,Full,1.439208984375,40,25,8.25,full,full,45
H2O (128r+128h),256,0.078125,30,33.3,12.5,h2o:128+128,h2o,36
H2O-layer (64r+192h),256,0.078125,30,33.3,11.5,h2o-layer:192+64,h2o-layer,46.1878464557
Local (128),128,0.0390625,28,35.7,40.0,local:128,local,32
H2O (32r+224h),256,0.078125,30,33.3,13.0,h2o:224+32,h2o,35
";

#[test]
fn seed_csv_loads_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    for path in [
        shared_seed_csv(),
        Some(seed_copy(tmp.path())),
        Some(write(tmp.path(), "lf.csv", SEED_CSV)),
    ]
    .into_iter()
    .flatten()
    {
        let f = load_results_csv(&path).unwrap();
        assert_eq!(f.format, ResultFormat::Seed);
        let specs: Vec<String> = f.rows.iter().map(|r| r.spec.to_string()).collect();
        assert_eq!(
            specs,
            ["full", "h2o-layer:128+128", "h2o-layer:192+64", "local:256"]
        );
        let budgets: Vec<Option<usize>> = f.rows.iter().map(|r| r.spec.budget()).collect();
        assert_eq!(budgets, [None, Some(256), Some(256), Some(256)]);
        assert_eq!(f.rows[0].ppl, Some(8.2109375));
        assert_eq!(f.rows[0].kv_gb, Some(1.439208984375));
        assert_eq!(f.rows[3].tpot_ms, Some(80.00751445069909));
        assert_eq!(f.rows[3].seed_tpot_ms, f.rows[3].tpot_ms);
        assert_eq!(
            f.rows[2].spec,
            PolicySpec::from(PolicyKind::H2o {
                heavy: 192,
                recent: 64,
                scope: Scope::Layer
            })
        );
        let lines: Vec<u64> = f.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4, 5], "{}", path.display());
    }
}

#[test]
fn seed_vs_ours_lines_up_and_lists_unmatched() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = seed_csv(tmp.path());
    let ours = write(tmp.path(), "ours.csv", OURS_CSV);
    let c = compare(&seed, &ours).unwrap();
    assert_eq!(
        (c.a_format, c.b_format),
        (ResultFormat::Seed, ResultFormat::Ours)
    );
    assert_eq!(c.tpot_definition, TpotDefinition::SeedTotal);

    let got: Vec<(&str, String, MatchKind)> = c
        .pairs
        .iter()
        .map(|p| (p.a.experiment.as_str(), p.b.spec.to_string(), p.kind))
        .collect();
    assert_eq!(
        got,
        [
            ("Baseline", "full".to_string(), MatchKind::EXACT),
            (
                "H2O (128+128)",
                "h2o:128+128".to_string(),
                MatchKind::of(PolicyMatch::H2oVariant, TokenMatch::OursOneMore)
            ),
            (
                "H2O (64+192)",
                "h2o-layer:192+64".to_string(),
                MatchKind::of(PolicyMatch::Same, TokenMatch::OursOneMore)
            ),
        ]
    );
    let base = &c.pairs[0];
    assert!((base.ppl_diff.unwrap() - (8.25 - 8.2109375)).abs() < 1e-12);
    // seed TPOT definition on both sides: 89.997... / 45
    assert_eq!(base.tpot_b_ms, Some(45.0));
    assert!((base.speedup.unwrap() - 89.99727084301412 / 45.0).abs() < 1e-12);
    assert_eq!(base.b.kv_gb, Some(1.439208984375));
    assert!((c.pairs[2].speedup.unwrap() - 2.0).abs() < 1e-9);

    let ua: Vec<&str> = c
        .unmatched_a
        .iter()
        .map(|r| r.experiment.as_str())
        .collect();
    let ub: Vec<String> = c.unmatched_b.iter().map(|r| r.spec.to_string()).collect();
    assert_eq!(ua, ["Local (256)"]);
    assert_eq!(ub, ["local:128", "h2o:224+32"]);

    let text = c.render(&c.table(true), None);
    for s in [
        "Unmatched in A",
        "Local (256)",
        "Unmatched in B",
        "h2o:224+32",
        "h2o vs h2o-layer",
        "seed's definition",
        "Speed-up",
        "2.00",
    ] {
        assert!(text.contains(s), "{s} not in\n{text}");
    }
}

#[test]
fn same_budget_other_split_is_the_last_resort() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = seed_csv(tmp.path());
    let ours = write(
        tmp.path(),
        "ours.csv",
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy
H2O,256,0.078125,30,33.3,13.0,h2o:224+32
",
    );
    let c = compare(&ours, &seed).unwrap();
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(
        c.pairs[0].kind,
        MatchKind::of(PolicyMatch::OtherSplit, TokenMatch::OursOneMore)
    );
    assert_eq!(c.pairs[0].b.experiment, "H2O (128+128)");
    // ours has no seed-TPOT column: no like-for-like TPOT, no speed-up (never a wrong one)
    assert_eq!(c.pairs[0].tpot_a_ms, None);
    assert_eq!(c.pairs[0].speedup, None);
    assert_eq!(c.unmatched_b.len(), 3);
}

#[test]
fn ours_vs_ours_uses_median_tpot() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write(tmp.path(), "a.csv", OURS_CSV);
    let b = write(tmp.path(), "b.csv", &OURS_CSV.replace(",40,25,", ",20,50,"));
    let c = compare(&a, &b).unwrap();
    assert_eq!(c.tpot_definition, TpotDefinition::DecodeMedian);
    assert_eq!(c.pairs.len(), 5);
    assert!(c.pairs.iter().all(|p| p.kind == MatchKind::EXACT));
    assert_eq!(c.pairs[0].speedup, Some(2.0));
    assert!(c.unmatched_a.is_empty() && c.unmatched_b.is_empty());
}

#[test]
fn unknown_columns_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write(tmp.path(), "bad.csv", "Name,Score\nx,1\n");
    let err = load_results_csv(&bad).unwrap_err();
    match &err {
        ReportError::MissingColumns { missing, found, .. } => {
            assert_eq!(missing.len(), 6);
            assert_eq!(found, &["Name", "Score"]);
        }
        e => panic!("{e:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("bad.csv") && msg.contains("\"Budget (Tokens)\""),
        "{msg}"
    );

    let no_ppl = write(
        tmp.path(),
        "no-ppl.csv",
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s)\nBaseline,Full,1,2,3\n",
    );
    let seed = seed_csv(tmp.path());
    let err = compare(&seed, &no_ppl).unwrap_err();
    let ReportError::MissingColumns { missing, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(missing, &["PPL"]);
    assert!(err.to_string().contains("no-ppl.csv"));
}

#[test]
fn bad_cells_and_missing_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write(
        tmp.path(),
        "bad-num.csv",
        &SEED_CSV.replace("8.2109375", "eight"),
    );
    let err = load_results_csv(&bad).unwrap_err();
    assert!(
        matches!(&err, ReportError::BadValue { line: 2, column, value, reason, .. } if column == "PPL" && value == "eight" && reason == "not a number"),
        "{err:?}"
    );
    let bad_budget = write(
        tmp.path(),
        "bad-budget.csv",
        &SEED_CSV.replace(",Full,", ",lots,"),
    );
    assert!(matches!(
        load_results_csv(&bad_budget).unwrap_err(),
        ReportError::BadValue { .. }
    ));
    let missing = tmp.path().join("nope.csv");
    let err = load_results_csv(&missing).unwrap_err();
    assert!(matches!(err, ReportError::Read { .. }));
    assert!(err.to_string().contains("nope.csv"));
    let empty = write(tmp.path(), "empty.csv", "");
    assert!(matches!(
        load_results_csv(&empty).unwrap_err(),
        ReportError::MissingColumns { .. }
    ));
}

#[test]
fn a_policy_that_is_not_a_spec_is_named_by_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write(
        tmp.path(),
        "bad-policy.csv",
        &OURS_CSV.replace(",local:128,", ",local:12x,"),
    );
    let err = load_results_csv(&bad).unwrap_err();
    assert!(
        matches!(&err, ReportError::BadSpec { line: 5, column, value, .. } if column == "Policy" && value == "local:12x"),
        "{err:?}"
    );
    assert!(err.to_string().contains("accepted forms"), "{err}");
    let odd_seed = write(
        tmp.path(),
        "odd-seed.csv",
        &SEED_CSV.replace("Local (256)", "Mystery (256)"),
    );
    let err = load_results_csv(&odd_seed).unwrap_err();
    assert!(
        matches!(&err, ReportError::BadSpec { line: 5, column, .. } if column == "Experiment"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("Baseline, Local (R), H2O (R+H)"),
        "{err}"
    );
}

#[test]
fn every_policy_family_gets_its_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy
sink 4+252,256,0.078125,30,33.3,13.0,sink:4+252
sink 4+124,128,0.0390625,30,33.3,14.0,sink:4+124
";
    let a = write(tmp.path(), "a.csv", text);
    let f = load_results_csv(&a).unwrap();
    let budgets: Vec<Option<usize>> = f.rows.iter().map(|r| r.spec.budget()).collect();
    assert_eq!(budgets, [Some(256), Some(128)]);
    let b = write(
        tmp.path(),
        "b.csv",
        &text.replace("sink:4+124", "sink:8+120"),
    );
    let c = compare(&a, &b).unwrap();
    let kinds: Vec<MatchKind> = c.pairs.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            MatchKind::EXACT,
            MatchKind::of(PolicyMatch::OtherSplit, TokenMatch::Same)
        ]
    );
    // the table shows each row's budget (never "Full" for a sink) and calls only equal specs exact
    let table = c.table(false).to_string();
    let line = |spec: &str| {
        table
            .lines()
            .find(|l| l.contains(spec))
            .unwrap()
            .to_string()
    };
    assert!(line("sink:4+252").contains("256") && line("sink:4+252").contains("exact"));
    assert!(line("sink:8+120").contains("128") && line("sink:8+120").contains("other split"));
    assert!(!table.contains("Full"), "{table}");
}

/// Issue 19 item 11: the seed's budget counts the new token. Our `local:255` attends what the
/// seed's `Local (256)` attends (exact); our `local:256` has the seed's numbers but attends one
/// token more, and is labelled so, never "exact".
#[test]
fn seed_budgets_are_lined_up_by_the_tokens_attended() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = seed_csv(tmp.path());
    let ours = write(
        tmp.path(),
        "ours.csv",
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy
Local (256),256,0.078125,30,33.3,30.0,local:256
\"Local (256), seed counting\",255,0.078,30,33.3,30.5,local:255
\"H2O (64r+192h), seed counting\",255,0.078,30,33.3,12.0,h2o-layer:192+63
\"H2O (128r+128h), seed counting\",255,0.078,30,33.3,12.0,h2o:128+127
",
    );
    let c = compare(&seed, &ours).unwrap();
    let got: Vec<(&str, String, MatchKind)> = c
        .pairs
        .iter()
        .map(|p| (p.a.experiment.as_str(), p.b.spec.to_string(), p.kind))
        .collect();
    let same = TokenMatch::Same;
    assert_eq!(
        got,
        [
            (
                "H2O (128+128)",
                "h2o:128+127".to_string(),
                MatchKind::of(PolicyMatch::H2oVariant, same)
            ),
            (
                "H2O (64+192)",
                "h2o-layer:192+63".to_string(),
                MatchKind::EXACT
            ),
            ("Local (256)", "local:255".to_string(), MatchKind::EXACT),
        ]
    );
    // the seed's Baseline and our local:256 are left over
    assert_eq!(c.unmatched_a.len(), 1);
    assert_eq!(c.unmatched_b[0].spec.to_string(), "local:256");
    let text = c.render(&c.table(false), None);
    assert!(text.contains(SEED_COUNTING_NOTE), "{text}");
    assert!(text.contains("256 / 255"), "{text}");
    // issue 19 item 13: fitted to an 80-column terminal, every line of the output fits
    let text = c.render(&c.table(false), Some(80));
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{line:?}\n{text}");
    }
    assert!(
        text.contains("Unmatched in A:\n  line 2: Baseline [full]"),
        "{text}"
    );

    // with only local:256 on our side: matched, and labelled as attending one token more
    let only = write(
        tmp.path(),
        "only.csv",
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy
Local (256),256,0.078125,30,33.3,30.0,local:256
",
    );
    let c = compare(&seed, &only).unwrap();
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(
        c.pairs[0].kind,
        MatchKind::of(PolicyMatch::Same, TokenMatch::OursOneMore)
    );
    let label = c.pairs[0].kind.to_string();
    assert_eq!(label, "seed's numbers, ours +1 token");
    let table = c.table(false).to_string();
    assert!(
        table.contains("ours +1 token") && !table.contains("exact"),
        "{table}"
    );
}

/// Issue 19 item 3: malformed rows are refused, naming the file, the line and the column; a
/// failed experiment's row is listed as failed, never as a number.
#[test]
fn malformed_rows_are_refused_by_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |name: &str, text: &str| -> (ReportError, String) {
        let p = write(tmp.path(), name, text);
        let e = load_results_csv(&p).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(name), "{msg}");
        (e, msg)
    };
    let (e, msg) = err(
        "short.csv",
        &SEED_CSV.replace(
            "Local (256),256,0.078125,80.00751445069909,12.498825977354958,30.328125",
            "Local (256),256,0.078125",
        ),
    );
    assert!(
        matches!(
            e,
            ReportError::FieldCount {
                line: 5,
                found: 3,
                expected: 6,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("line 5 has 3 fields, the header has 6"),
        "{msg}"
    );
    let (e, _) = err(
        "long.csv",
        &SEED_CSV.replace(",8.2109375", ",8.2109375,extra"),
    );
    assert!(
        matches!(
            e,
            ReportError::FieldCount {
                line: 2,
                found: 7,
                ..
            }
        ),
        "{e:?}"
    );
    for (value, reason) in [
        ("NaN", "not a finite number"),
        ("inf", "not a finite number"),
        ("-inf", "not a finite number"),
        ("0.5", "below 1"),
        ("", "empty"),
    ] {
        let (e, msg) = err(
            "ppl.csv",
            &SEED_CSV.replace(",8.2109375", &format!(",{value}")),
        );
        assert!(
            matches!(&e, ReportError::BadValue { line: 2, column, .. } if column == "PPL"),
            "{value}: {e:?}"
        );
        assert!(
            msg.contains(reason) && msg.contains("line 2") && msg.contains("\"PPL\""),
            "{msg}"
        );
    }
    let (e, msg) = err(
        "kv.csv",
        &SEED_CSV.replace("0.078125,97.55", "-0.078125,97.55"),
    );
    assert!(
        matches!(&e, ReportError::BadValue { line: 3, column, .. } if column == "KV Size (GB)"),
        "{e:?}"
    );
    assert!(msg.contains("negative"), "{msg}");
    let (_, msg) = err("tpot.csv", &OURS_CSV.replace(",40,25,", ",inf,25,"));
    assert!(
        msg.contains("\"TPOT (ms)\"") && msg.contains("not a finite number"),
        "{msg}"
    );
    // a Budget column that is not the policy's budget
    let (e, msg) = err(
        "budget.csv",
        &OURS_CSV.replace("Local (128),128,", "Local (128),256,"),
    );
    assert!(
        matches!(&e, ReportError::BadValue { line: 5, column, .. } if column == "Budget (Tokens)"),
        "{e:?}"
    );
    assert!(msg.contains("keeps 128"), "{msg}");
    let (_, msg) = err(
        "seed-budget.csv",
        &SEED_CSV.replace("H2O (64+192),256", "H2O (64+192),128"),
    );
    assert!(msg.contains("line 4") && msg.contains("keeps 256"), "{msg}");
    // a status that is neither ok nor failed
    let status =
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy,Status
full,Full,1,2,3,8,full,maybe
";
    let (_, msg) = err("status.csv", status);
    assert!(
        msg.contains("\"Status\"") && msg.contains("`ok` or `failed: <reason>`"),
        "{msg}"
    );

    // a failed experiment: listed as such, with its reason, never matched or shown as a number
    let with_failed = write(
        tmp.path(),
        "failed.csv",
        "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy,Status
Baseline,Full,1.4,40,25,8.25,full,ok
Local (256),256,,,,,local:256,\"failed: its process ended without a result (signal: 9 (SIGKILL))\"
",
    );
    let f = load_results_csv(&with_failed).unwrap();
    assert_eq!(
        f.rows[1].failed.as_deref(),
        Some("its process ended without a result (signal: 9 (SIGKILL))")
    );
    let c = compare(&seed_csv(tmp.path()), &with_failed).unwrap();
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(c.failed_b.len(), 1);
    assert!(c.unmatched_b.is_empty());
    let text = c.render(&c.table(false), None);
    assert!(text.contains("Failed in B (no figures):\n  line 3: Local (256) [local:256]: failed: its process ended"), "{text}");
}
