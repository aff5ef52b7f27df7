//! Console tables (comfy-table) of results, built from the declared columns ([`super::columns`]):
//! main results, per-step breakdown (like the seed's Table 2) and memory.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

use super::columns::Col;
use super::record::ExperimentResult;

pub(crate) fn fmt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_string(),
    }
}

pub(crate) fn new_table<S: ToString>(header: &[S]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

pub(crate) fn right_align_from(t: &mut Table, first: usize) {
    let n = t.column_count();
    right_align(t, first..n);
}

fn right_align(t: &mut Table, columns: impl IntoIterator<Item = usize>) {
    for i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// A column of a console table of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A result column.
    Col(Col),
    /// A time column with its share of the step beside it, e.g. `4.000 (80.0%)`.
    WithShare(Col, Col),
    /// A figure the caller gives per row (in the order of these columns), under this header.
    Given(&'static str),
}

impl Shown {
    fn header(self) -> String {
        match self {
            Shown::Col(c) | Shown::WithShare(c, _) => c.header(),
            Shown::Given(h) => h.to_string(),
        }
    }

    fn is_text(self) -> bool {
        matches!(self, Shown::Col(c) if c.is_text())
    }
}

/// A table of `rows`, each a result and the figures of its [`Shown::Given`] columns, in order.
pub fn results_table(columns: &[Shown], rows: &[(&ExperimentResult, Vec<String>)]) -> Table {
    let header: Vec<String> = columns.iter().map(|c| c.header()).collect();
    let mut t = new_table(&header);
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
                Shown::Given(_) => given.next().cloned().unwrap_or_else(|| "-".into()),
            })
            .collect();
        t.add_row(cells);
    }
    let numbers = columns.iter().enumerate().filter(|(_, c)| !c.is_text());
    right_align(&mut t, numbers.map(|(i, _)| i));
    t
}

fn table_of(columns: &[Shown], results: &[ExperimentResult]) -> Table {
    let rows: Vec<(&ExperimentResult, Vec<String>)> =
        results.iter().map(|r| (r, Vec::new())).collect();
    results_table(columns, &rows)
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
pub fn main_table(results: &[ExperimentResult], width: Width) -> Table {
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
    table_of(&cols, results)
}

/// Per-step breakdown like the seed's Table 2, one row per experiment: mean ms per decode step
/// of model run, score update, eviction and other host work, each with its share of the step,
/// and the host's share; wide adds the policy spec and the mean step.
pub fn breakdown_table(results: &[ExperimentResult], width: Width) -> Table {
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
    table_of(&cols, results)
}

/// Memory table: exact KV bytes held, their ratio to a full cache's and the peak process memory;
/// wide adds the policy spec, the full-cache bytes, peak device memory and how the peak was
/// measured.
pub fn memory_table(results: &[ExperimentResult], width: Width) -> Table {
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
    table_of(&cols, results)
}

/// The terminal's width in columns when standard output is a terminal, else `None`.
pub fn terminal_width() -> Option<u16> {
    Table::new().width()
}

/// Lays `t` out within `width` columns (cells wrap, comfy-table's dynamic arrangement); `None`
/// leaves every line at its natural length (output to a file or a pipe).
pub fn fit_width(t: &mut Table, width: Option<u16>) {
    if let Some(w) = width {
        t.set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(w);
    }
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

    fn header(t: &Table) -> Vec<String> {
        t.header()
            .unwrap()
            .cell_iter()
            .map(|c| c.content())
            .collect()
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
        for width in [80u16, 120] {
            for (kind, mut t) in [
                ("main wide", main_table(&r, Width::Wide)),
                ("main", main_table(&r, Width::Compact)),
                ("breakdown", breakdown_table(&r, Width::Wide)),
                ("memory", memory_table(&r, Width::Wide)),
            ] {
                fit_width(&mut t, Some(width));
                let text = t.to_string();
                for line in text.lines() {
                    assert!(
                        line.chars().count() <= width as usize,
                        "{kind} at {width}: {} chars:\n{text}",
                        line.chars().count()
                    );
                }
            }
        }
        // no width: lines keep their natural length
        let mut t = main_table(&r, Width::Wide);
        fit_width(&mut t, None);
        assert!(t.to_string().lines().any(|l| l.chars().count() > 120));
    }
}
