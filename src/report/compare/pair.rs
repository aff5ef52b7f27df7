//! Lining up the rows of two results files by policy family and budget (best match first), with
//! the derived figures of each pair, and what differs between the two runs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::facts::{differences, withheld, Difference, Figure, RunFacts, Withheld};
use super::read::{ResultFile, ResultFormat, ResultRow};
use crate::policy::{PolicyKind, PolicySpec};

/// Which policies two matched rows run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyMatch {
    /// The same policy.
    Same,
    /// `h2o` (per head) against `h2o-layer` (the seed's H2O) with the same heavy+recent split.
    H2oVariant,
    /// The same policy under another per-layer budget schedule (`@pyramid` against uniform).
    OtherSchedule,
    /// Same method (h2o and h2o-layer count as one, tova and tova-head too) and budget, another
    /// heavy/recent split or options.
    OtherSplit,
}

/// Whether two matched rows attend the same number of tokens a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenMatch {
    /// The same tokens: both files count budgets alike, or ours is the seed's budget - 1.
    Same,
    /// Our spec has the seed's numbers, so ours attends one token more a step (our `local:256`
    /// against the seed's `Local (256)`, which attends 255 + the new token).
    OursOneMore,
}

/// How two rows were matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchKind {
    pub policy: PolicyMatch,
    pub tokens: TokenMatch,
}

impl MatchKind {
    /// The same policy attending the same tokens.
    pub const EXACT: MatchKind = MatchKind {
        policy: PolicyMatch::Same,
        tokens: TokenMatch::Same,
    };

    /// The kinds in the order they are tried: best first.
    const ORDER: [MatchKind; 8] = [
        MatchKind::EXACT,
        MatchKind::of(PolicyMatch::H2oVariant, TokenMatch::Same),
        MatchKind::of(PolicyMatch::OtherSchedule, TokenMatch::Same),
        MatchKind::of(PolicyMatch::Same, TokenMatch::OursOneMore),
        MatchKind::of(PolicyMatch::H2oVariant, TokenMatch::OursOneMore),
        MatchKind::of(PolicyMatch::OtherSchedule, TokenMatch::OursOneMore),
        MatchKind::of(PolicyMatch::OtherSplit, TokenMatch::Same),
        MatchKind::of(PolicyMatch::OtherSplit, TokenMatch::OursOneMore),
    ];

    pub const fn of(policy: PolicyMatch, tokens: TokenMatch) -> MatchKind {
        MatchKind { policy, tokens }
    }
}

impl std::fmt::Display for MatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.policy {
            PolicyMatch::Same if self.tokens == TokenMatch::Same => "exact",
            PolicyMatch::Same => "seed's numbers",
            PolicyMatch::H2oVariant => "h2o vs h2o-layer",
            PolicyMatch::OtherSchedule => "other schedule",
            PolicyMatch::OtherSplit => "other split",
        })?;
        if self.tokens == TokenMatch::OursOneMore {
            f.write_str(", ours +1 token")?;
        }
        Ok(())
    }
}

/// Which TPOT the comparison shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TpotDefinition {
    /// Both files are ours: median decode step (prefill excluded).
    DecodeMedian,
    /// A seed file is involved: the seed's definition, total generate time (prefill included) /
    /// generated tokens, read from our `Seed TPOT (ms)` column.
    SeedTotal,
}

/// Two rows lined up, with the derived figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedPair {
    pub a: ResultRow,
    pub b: ResultRow,
    pub kind: MatchKind,
    /// TPOT of A and B under [`Comparison::tpot_definition`].
    pub tpot_a_ms: Option<f64>,
    pub tpot_b_ms: Option<f64>,
    /// PPL of B minus PPL of A (`None` as well when [`Comparison::withheld`] holds it).
    pub ppl_diff: Option<f64>,
    /// TPOT of A / TPOT of B: above 1 means B decodes faster (`None` as well when
    /// [`Comparison::withheld`] holds it).
    pub speedup: Option<f64>,
}

/// Two result files lined up; unmatched and failed rows are kept, not dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a_path: PathBuf,
    pub b_path: PathBuf,
    pub a_format: ResultFormat,
    pub b_format: ResultFormat,
    pub tpot_definition: TpotDefinition,
    pub pairs: Vec<MatchedPair>,
    pub unmatched_a: Vec<ResultRow>,
    pub unmatched_b: Vec<ResultRow>,
    /// Rows of failed experiments (no figures), listed as such.
    pub failed_a: Vec<ResultRow>,
    pub failed_b: Vec<ResultRow>,
    /// What each file says about its run.
    pub a_run: RunFacts,
    pub b_run: RunFacts,
    /// What both files record with different values (model, device, text, counting, ...).
    pub differences: Vec<Difference>,
    /// Derived figures left out because of [`Comparison::differences`] (a speed-up between
    /// different models or machines is not a policy's speed-up).
    pub withheld: Vec<Withheld>,
}

impl Comparison {
    /// Whether `figure` is left out (see [`Comparison::withheld`]).
    pub fn withholds(&self, figure: Figure) -> bool {
        self.withheld.iter().any(|w| w.figure == figure)
    }
}

/// Families compared as one method: `h2o` and `h2o-layer` are both H2O, `tova` and `tova-head`
/// both TOVA.
fn method(s: &PolicySpec) -> &'static str {
    match s.kind {
        PolicyKind::H2o { .. } => "h2o",
        PolicyKind::Tova { .. } => "tova",
        _ => s.family(),
    }
}

fn policies_match(a: &PolicySpec, b: &PolicySpec, m: PolicyMatch) -> bool {
    match (m, a.kind, b.kind) {
        (PolicyMatch::Same, _, _) => a == b,
        (
            PolicyMatch::H2oVariant,
            PolicyKind::H2o {
                heavy,
                recent,
                scope,
            },
            PolicyKind::H2o {
                heavy: h,
                recent: r,
                scope: s,
            },
        ) => scope != s && (heavy, recent) == (h, r) && a.schedule == b.schedule,
        (PolicyMatch::H2oVariant, _, _) => false,
        (PolicyMatch::OtherSchedule, _, _) => a.kind == b.kind && a.schedule != b.schedule,
        (PolicyMatch::OtherSplit, _, _) => method(a) == method(b) && a.budget() == b.budget(),
    }
}

/// Whether `a` and `b` match as `kind` says: by the specs in our counting (same tokens attended),
/// or, between a seed file and ours, by the specs as written (ours attends one more).
fn rows_match(a: &ResultRow, b: &ResultRow, kind: MatchKind, cross_format: bool) -> bool {
    match kind.tokens {
        TokenMatch::Same => policies_match(&a.counted, &b.counted, kind.policy),
        TokenMatch::OursOneMore => {
            cross_format
                && a.spec != PolicySpec::FULL
                && policies_match(&a.spec, &b.spec, kind.policy)
        }
    }
}

/// Pairs `(index in a, index in b, kind)`, each row used once, best kinds first.
fn pair_up(a: &[ResultRow], b: &[ResultRow], cross_format: bool) -> Vec<(usize, usize, MatchKind)> {
    let mut used_a: Vec<bool> = a.iter().map(|r| r.failed.is_some()).collect();
    let mut used_b: Vec<bool> = b.iter().map(|r| r.failed.is_some()).collect();
    let mut pairs = Vec::new();
    for kind in MatchKind::ORDER {
        for (i, ra) in a.iter().enumerate() {
            if used_a[i] {
                continue;
            }
            let found =
                (0..b.len()).find(|&j| !used_b[j] && rows_match(ra, &b[j], kind, cross_format));
            if let Some(j) = found {
                used_a[i] = true;
                used_b[j] = true;
                pairs.push((i, j, kind));
            }
        }
    }
    pairs.sort_by_key(|&(i, j, _)| (i, j));
    pairs
}

/// Lines up two result files already read (see [`super::compare`]); a derived figure that a
/// difference between the runs makes meaningless is left out ([`Comparison::withheld`]).
pub fn compare_files(a: ResultFile, b: ResultFile) -> Comparison {
    let differences = differences(&a.run, &b.run);
    let withheld = withheld(&differences);
    let shows = |figure: Figure| !withheld.iter().any(|w| w.figure == figure);
    let (show_speedup, show_ppl_diff) = (shows(Figure::Speedup), shows(Figure::PplDiff));
    let tpot_definition = if a.format == ResultFormat::Ours && b.format == ResultFormat::Ours {
        TpotDefinition::DecodeMedian
    } else {
        TpotDefinition::SeedTotal
    };
    let tpot = |r: &ResultRow| match tpot_definition {
        TpotDefinition::DecodeMedian => r.tpot_ms,
        TpotDefinition::SeedTotal => r.seed_tpot_ms,
    };
    let pairs = pair_up(&a.rows, &b.rows, a.format != b.format);
    let in_pairs = |side: usize, i: usize| {
        pairs
            .iter()
            .any(|p| if side == 0 { p.0 == i } else { p.1 == i })
    };
    let rest = |rows: &[ResultRow], side: usize, failed: bool| -> Vec<ResultRow> {
        rows.iter()
            .enumerate()
            .filter(|(i, r)| r.failed.is_some() == failed && !in_pairs(side, *i))
            .map(|(_, r)| r.clone())
            .collect()
    };
    let matched = pairs
        .iter()
        .map(|&(i, j, kind)| {
            let (ra, rb) = (a.rows[i].clone(), b.rows[j].clone());
            let (ta, tb) = (tpot(&ra), tpot(&rb));
            MatchedPair {
                ppl_diff: ra
                    .ppl
                    .zip(rb.ppl)
                    .filter(|_| show_ppl_diff)
                    .map(|(x, y)| y - x),
                speedup: ta
                    .zip(tb)
                    .filter(|&(_, y)| y > 0.0 && show_speedup)
                    .map(|(x, y)| x / y),
                tpot_a_ms: ta,
                tpot_b_ms: tb,
                a: ra,
                b: rb,
                kind,
            }
        })
        .collect();
    Comparison {
        unmatched_a: rest(&a.rows, 0, false),
        unmatched_b: rest(&b.rows, 1, false),
        failed_a: rest(&a.rows, 0, true),
        failed_b: rest(&b.rows, 1, true),
        a_path: a.path,
        b_path: b.path,
        a_format: a.format,
        b_format: b.format,
        tpot_definition,
        pairs: matched,
        a_run: a.run,
        b_run: b.run,
        differences,
        withheld,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::report::compare::facts::{Aspect, FactSource};

    /// One of our rows: `spec` with its PPL and TPOT (median and the seed's alike).
    pub fn row(line: u64, spec: &str, ppl: f64, tpot: f64) -> ResultRow {
        let spec: PolicySpec = spec.parse().unwrap();
        ResultRow {
            line,
            experiment: spec.label(),
            spec,
            counted: spec,
            kv_gb: Some(0.5),
            tpot_ms: Some(tpot),
            seed_tpot_ms: Some(tpot),
            throughput_tps: Some(1000.0 / tpot),
            ppl: Some(ppl),
            failed: None,
        }
    }

    /// Our file `name` with `rows` and run facts `facts`.
    pub fn file(name: &str, rows: Vec<ResultRow>, facts: &[(Aspect, &str)]) -> ResultFile {
        ResultFile {
            path: PathBuf::from(name),
            format: ResultFormat::Ours,
            rows,
            run: RunFacts {
                source: FactSource::RunDocument {
                    path: PathBuf::from(name).with_extension("json"),
                },
                values: facts.iter().map(|(a, v)| (*a, v.to_string())).collect(),
            },
        }
    }

    fn figures(c: &Comparison) -> Vec<(Option<f64>, Option<f64>)> {
        c.pairs.iter().map(|p| (p.speedup, p.ppl_diff)).collect()
    }

    #[test]
    fn differences_leave_out_the_figures_they_make_meaningless() {
        let a = || {
            file(
                "a.csv",
                vec![row(2, "full", 8.0, 40.0), row(3, "local:8", 12.0, 20.0)],
                &[
                    (Aspect::Model, "tiny"),
                    (Aspect::Device, "CPU"),
                    (Aspect::Text, "file"),
                ],
            )
        };
        let b = |facts: &[(Aspect, &str)]| {
            file(
                "b.csv",
                vec![row(2, "local:8", 15.0, 10.0), row(3, "full", 9.0, 20.0)],
                facts,
            )
        };
        // the same run: every figure
        let same = compare_files(
            a(),
            b(&[
                (Aspect::Model, "tiny"),
                (Aspect::Device, "CPU"),
                (Aspect::Text, "file"),
            ]),
        );
        assert_eq!(
            figures(&same),
            [(Some(2.0), Some(1.0)), (Some(2.0), Some(3.0))]
        );
        assert!(same.differences.is_empty() && same.withheld.is_empty());
        // unknown is no difference
        let unknown = compare_files(a(), b(&[]));
        assert_eq!(figures(&unknown), figures(&same));
        // another device: no speed-up, the PPL difference stays
        let gpu = compare_files(
            a(),
            b(&[
                (Aspect::Model, "tiny"),
                (Aspect::Device, "GPU (CUDA)"),
                (Aspect::Text, "file"),
            ]),
        );
        assert_eq!(figures(&gpu), [(None, Some(1.0)), (None, Some(3.0))]);
        assert_eq!(
            gpu.differences,
            [Difference {
                aspect: Aspect::Device,
                a: "CPU".into(),
                b: "GPU (CUDA)".into()
            }]
        );
        assert!(gpu.withholds(Figure::Speedup) && !gpu.withholds(Figure::PplDiff));
        // the raw figures stay whatever differs
        assert_eq!(
            (gpu.pairs[0].tpot_a_ms, gpu.pairs[0].tpot_b_ms),
            (Some(40.0), Some(20.0))
        );
        // another text: no PPL difference, the speed-up stays
        let text = compare_files(
            a(),
            b(&[
                (Aspect::Model, "tiny"),
                (Aspect::Device, "CPU"),
                (Aspect::Text, "seed"),
            ]),
        );
        assert_eq!(figures(&text), [(Some(2.0), None), (Some(2.0), None)]);
        // another model: neither
        let model = compare_files(
            a(),
            b(&[
                (Aspect::Model, "pythia-2.8b"),
                (Aspect::Device, "CPU"),
                (Aspect::Text, "file"),
            ]),
        );
        assert_eq!(figures(&model), [(None, None), (None, None)]);
        assert_eq!(model.withheld.len(), 2);
        // pairs are the same whatever differs
        let pairs = |c: &Comparison| -> Vec<(u64, u64)> {
            c.pairs.iter().map(|p| (p.a.line, p.b.line)).collect()
        };
        assert_eq!(pairs(&model), [(2, 3), (3, 2)]);
        assert_eq!(pairs(&model), pairs(&same));
    }
}
