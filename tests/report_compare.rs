//! Comparing result CSVs: the seed's file loads as is, rows line up by policy family and budget, unmatched rows are listed.

use std::path::{Path, PathBuf};

use h2o_engine::policy::{PolicyKind, PolicySpec, Scope};
use h2o_engine::report::{
    compare, load_results_csv, MatchKind, ReportError, ResultFormat, TpotDefinition,
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
            ("Baseline", "full".to_string(), MatchKind::Exact),
            (
                "H2O (128+128)",
                "h2o:128+128".to_string(),
                MatchKind::H2oVariant
            ),
            (
                "H2O (64+192)",
                "h2o-layer:192+64".to_string(),
                MatchKind::Exact
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

    let text = c.render();
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
    assert_eq!(c.pairs[0].kind, MatchKind::SameBudget);
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
    assert!(c.pairs.iter().all(|p| p.kind == MatchKind::Exact));
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
        matches!(&err, ReportError::BadValue { line: 2, column, value, .. } if column == "PPL" && value == "eight"),
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
    assert_eq!(kinds, [MatchKind::Exact, MatchKind::SameBudget]);
}
