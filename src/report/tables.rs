//! Console tables (comfy-table) of results, built from the declared columns ([`super::columns`]):
//! main results, per-step breakdown (like the seed's Table 2) and memory.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use super::columns::Col;
use super::results::ExperimentResult;

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

/// The main table: the seed's columns first (Experiment, Budget (Tokens), KV Size (GB),
/// TPOT (ms) = median decode step, Throughput (T/s) = decode tokens / decode time, PPL), then
/// policy spec, TTFT, TPOT p90, the seed's TPOT, KV ratio, peak RSS and status.
pub fn main_table(results: &[ExperimentResult]) -> Table {
    use Col::*;
    let cols = [
        Experiment, Budget, KvGb, Tpot, Throughput, Ppl, Policy, Ttft, TpotP90, SeedTpot, KvRatio,
        PeakRss, Status,
    ];
    table_of(&cols.map(Shown::Col), results)
}

/// Per-step breakdown like the seed's Table 2, one row per experiment: mean ms per decode step
/// of model run, score update, eviction and other host work, each with its share of the step,
/// then the mean step and the host's share.
pub fn breakdown_table(results: &[ExperimentResult]) -> Table {
    use Col::*;
    let cols = [
        Shown::Col(Experiment),
        Shown::Col(Policy),
        Shown::WithShare(ModelMs, ModelShare),
        Shown::WithShare(ScoreUpdateMs, ScoreUpdateShare),
        Shown::WithShare(EvictionMs, EvictionShare),
        Shown::WithShare(OtherHostMs, OtherHostShare),
        Shown::Col(TpotMean),
        Shown::Col(HostShare),
    ];
    table_of(&cols, results)
}

/// Memory table: exact KV bytes held, the full-cache bytes for the same length, their ratio,
/// peak process (and device) memory and how the peak was measured.
pub fn memory_table(results: &[ExperimentResult]) -> Table {
    use Col::*;
    let cols = [
        Experiment,
        Policy,
        KvBytes,
        FullKvBytes,
        KvRatio,
        PeakRss,
        PeakDevice,
        MemoryMethod,
    ];
    table_of(&cols.map(Shown::Col), results)
}
