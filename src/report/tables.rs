//! Console tables (comfy-table, laid out by [`TextTable`]) of results, built from the declared
//! columns ([`super::columns`]): main results, per-step breakdown (like the seed's Table 2) and
//! memory; and the terminal's width they are fitted to.

use super::columns::Col;
use super::record::ExperimentResult;
use super::text_table::{Importance, TextTable};

pub(crate) fn fmt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_string(),
    }
}

pub(crate) fn new_table<S: ToString>(header: &[S]) -> TextTable {
    TextTable::new(header)
}

pub(crate) fn right_align_from(t: &mut TextTable, first: usize) {
    for i in first..t.header().len() {
        t.align_right(i);
    }
}

/// A column of a console table of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A result column.
    Col(Col),
    /// A time column with its share of the step beside it, e.g. `4.000 (80.0%)`.
    WithShare(Col, Col),
    /// A figure the caller gives per row (in the order of these columns), under this header, of
    /// this importance.
    Given(&'static str, Importance),
}

impl Shown {
    fn header(self) -> String {
        match self {
            Shown::Col(c) | Shown::WithShare(c, _) => c.header(),
            Shown::Given(h, _) => h.to_string(),
        }
    }

    fn importance(self) -> Importance {
        match self {
            Shown::Col(c) | Shown::WithShare(c, _) => c.importance(),
            Shown::Given(_, i) => i,
        }
    }

    fn is_text(self) -> bool {
        matches!(self, Shown::Col(c) if c.is_text())
    }
}

/// A table of `rows`, each a result and the figures of its [`Shown::Given`] columns, in order.
pub fn results_table(columns: &[Shown], rows: &[(&ExperimentResult, Vec<String>)]) -> TextTable {
    let header: Vec<String> = columns.iter().map(|c| c.header()).collect();
    let mut t = TextTable::new(&header);
    t.set_importance(columns.iter().map(|c| c.importance()));
    for (r, given) in rows {
        let mut given = given.iter();
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match *c {
                Shown::Col(c) => c.cell(r),
                Shown::WithShare(ms, share) => match (ms.cell(r), share.cell(r)) {
                    (a, b) if a == "-" || b == "-" => "-".to_string(),
                    (a, b) => format!("{a} ({b})"),
                },
                Shown::Given(..) => given.next().cloned().unwrap_or_else(|| "-".into()),
            })
            .collect();
        t.add_row(cells);
    }
    for (i, _) in columns.iter().enumerate().filter(|(_, c)| !c.is_text()) {
        t.align_right(i);
    }
    t
}

/// The table of `results` in `columns`; with every column asked for (`Width::Wide`) none is left
/// out to fit the terminal.
fn table_of(columns: &[Shown], results: &[ExperimentResult], width: Width) -> TextTable {
    let rows: Vec<(&ExperimentResult, Vec<String>)> =
        results.iter().map(|r| (r, Vec::new())).collect();
    let mut t = results_table(columns, &rows);
    t.every_column(width == Width::Wide);
    t
}

/// Which columns a console table shows: a compact set that fits a terminal, or every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// The columns that matter most (the default).
    Compact,
    /// Every column of the table (`--wide`).
    Wide,
}

/// The main table. Compact: the seed's columns (Experiment, Budget (Tokens), KV Size (GB),
/// TPOT (ms) = median decode step, Throughput (T/s) = decode tokens / decode time, PPL), the
/// policy spec and the seed's TPOT, and the status when an experiment failed. Wide adds TTFT,
/// TPOT p90, KV ratio, peak RSS and the status.
pub fn main_table(results: &[ExperimentResult], width: Width) -> TextTable {
    use Col::*;
    let mut cols = match width {
        Width::Compact => vec![
            Experiment, Budget, KvGb, Tpot, Throughput, Ppl, Policy, SeedTpot,
        ],
        Width::Wide => vec![
            Experiment, Budget, KvGb, Tpot, Throughput, Ppl, Policy, Ttft, TpotP90, SeedTpot,
            KvRatio, PeakRss,
        ],
    };
    let failed = results
        .iter()
        .any(|r| r.status != super::record::ExperimentStatus::Ok);
    if width == Width::Wide || failed {
        cols.push(Status);
    }
    let cols: Vec<Shown> = cols.into_iter().map(Shown::Col).collect();
    table_of(&cols, results, width)
}

/// Per-step breakdown like the seed's Table 2, one row per experiment: mean ms per decode step
/// of model run, score update, eviction and other host work, each with its share of the step,
/// and the host's share; wide adds the policy spec and the mean step.
pub fn breakdown_table(results: &[ExperimentResult], width: Width) -> TextTable {
    use Col::*;
    let mut cols = vec![
        Shown::Col(Experiment),
        Shown::WithShare(ModelMs, ModelShare),
        Shown::WithShare(ScoreUpdateMs, ScoreUpdateShare),
        Shown::WithShare(EvictionMs, EvictionShare),
        Shown::WithShare(OtherHostMs, OtherHostShare),
        Shown::Col(HostShare),
    ];
    if width == Width::Wide {
        cols.insert(1, Shown::Col(Policy));
        cols.insert(6, Shown::Col(TpotMean));
    }
    table_of(&cols, results, width)
}

/// Memory table: exact KV bytes held, their ratio to a full cache's and the peak process memory;
/// wide adds the policy spec, the full-cache bytes, peak device memory and how the peak was
/// measured.
pub fn memory_table(results: &[ExperimentResult], width: Width) -> TextTable {
    use Col::*;
    let cols = match width {
        Width::Compact => vec![Experiment, KvBytes, KvRatio, PeakRss],
        Width::Wide => vec![
            Experiment,
            Policy,
            KvBytes,
            FullKvBytes,
            KvRatio,
            PeakRss,
            PeakDevice,
            MemoryMethod,
        ],
    };
    let cols: Vec<Shown> = cols.into_iter().map(Shown::Col).collect();
    table_of(&cols, results, width)
}

/// The terminal's width in columns when standard output is a terminal, else `None`.
pub fn terminal_width() -> Option<u16> {
    comfy_table::Table::new().width()
}

/// The terminal's width in columns when standard error is a terminal, else `None`.
pub fn stderr_width() -> Option<u16> {
    comfy_table::Table::new().use_stderr().width()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ExperimentStatus;

    fn results() -> Vec<ExperimentResult> {
        let spec = |s: &str| s.parse().unwrap();
        let mut v = vec![
            ExperimentResult::new("H2O (64r+192h)", spec("h2o:192+64")),
            ExperimentResult::new("Local (256)", spec("local:256")),
        ];
        v[1].status = ExperimentStatus::Failed {
            message: "its process was killed by signal 9 (SIGKILL)".into(),
        };
        v
    }

    fn header(t: &TextTable) -> Vec<String> {
        t.header().to_vec()
    }

    #[test]
    fn compact_tables_show_the_seed_columns_and_the_few_that_matter_wide_shows_all() {
        let r = results();
        let compact = header(&main_table(&r, Width::Compact));
        assert_eq!(
            compact,
            [
                "Experiment",
                "Budget (Tokens)",
                "KV Size (GB)",
                "TPOT (ms)",
                "Throughput (T/s)",
                "PPL",
                "Policy",
                "Seed TPOT (ms)",
                "Status"
            ]
        );
        // without a failure, no status column
        assert!(!header(&main_table(&r[..1], Width::Compact)).contains(&"Status".to_string()));
        let wide = header(&main_table(&r[..1], Width::Wide));
        assert_eq!(wide.len(), 13);
        assert!(
            wide.contains(&"Peak RSS (MiB)".to_string()) && wide.contains(&"Status".to_string())
        );
        assert_eq!(header(&breakdown_table(&r, Width::Compact)).len(), 6);
        assert_eq!(header(&breakdown_table(&r, Width::Wide)).len(), 8);
        assert_eq!(header(&memory_table(&r, Width::Compact)).len(), 4);
        assert_eq!(header(&memory_table(&r, Width::Wide)).len(), 8);
    }

    #[test]
    fn tables_fit_the_width_they_are_given() {
        let r = results();
        for width in [60u16, 80, 120] {
            for (kind, t) in [
                ("main wide", main_table(&r, Width::Wide)),
                ("main", main_table(&r, Width::Compact)),
                ("breakdown", breakdown_table(&r, Width::Wide)),
                ("memory", memory_table(&r, Width::Wide)),
            ] {
                let text = t.fit(Some(width));
                for line in text.lines() {
                    assert!(
                        line.chars().count() <= width as usize,
                        "{kind} at {width}: {} chars:\n{text}",
                        line.chars().count()
                    );
                }
                for spec in ["h2o:192+64", "local:256"] {
                    assert!(text.contains(spec), "{kind} at {width}:\n{text}");
                }
            }
        }
        // no width: lines keep their natural length
        let t = main_table(&r, Width::Wide);
        assert!(t.fit(None).lines().any(|l| l.chars().count() > 120));
    }

    #[test]
    fn columns_declare_their_importance_and_given_ones_carry_theirs() {
        let given = Shown::Given("Context", Importance::Essential);
        assert_eq!(given.importance(), Importance::Essential);
        assert_eq!(Shown::Col(Col::TpotP90).importance(), Importance::Minor);
        assert_eq!(
            Shown::WithShare(Col::ModelMs, Col::ModelShare).importance(),
            Importance::Essential
        );
        // a compact main table at 60 columns leaves out its least important columns and says so
        let r = results();
        let text = main_table(&r[..1], Width::Compact).fit(Some(60));
        assert!(text.contains("Left out to fit 60 columns:"), "{text}");
        assert!(text.contains("--wide shows every column"), "{text}");
    }
}
