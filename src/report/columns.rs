//! The result columns, each declared once: its CSV name, what it means, how its value is read from an
//! [`ExperimentResult`] and how a console table shows it. The CSV header and rows, the tables and
//! the README's column list ([`columns_markdown`]) all come from [`COLUMNS`].

use super::figures::{Breakdown, MemoryFigures, PplFigures, SpeedFigures};
use super::record::ExperimentResult;
use super::results::Settings;
use super::text_table::Importance;
use crate::catalogue::Counting;
use crate::catalogue::TextMode;

/// A column, named by what it holds; [`Col::def`] gives its declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Col {
    Experiment,
    Budget,
    KvGb,
    Tpot,
    Throughput,
    Ppl,
    Policy,
    Family,
    Status,
    Predictions,
    MeanNll,
    NllP50,
    NllP90,
    NllMax,
    PromptTokens,
    DecodeSteps,
    Ttft,
    TpotP90,
    TpotP10,
    TpotSpread,
    TpotMean,
    SeedTpot,
    SeedThroughput,
    ModelMs,
    ScoreUpdateMs,
    EvictionMs,
    OtherHostMs,
    ModelShare,
    ScoreUpdateShare,
    EvictionShare,
    OtherHostShare,
    KvBytes,
    FullKvBytes,
    KvRatio,
    PeakRss,
    PeakDevice,
    MemoryMethod,
    PrefillTps,
    HostShare,
}

/// A value of one result in one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Count(Option<u64>),
    Real(Option<f64>),
}

/// How a console table shows a column (the CSV always holds the plain value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Text,
    Count,
    /// A number with this many decimals.
    Fixed(usize),
    /// A percentage (the value is already 0-100) with this many decimals and a `%`.
    Percent(usize),
    /// Bytes shown as MiB with two decimals; the header says `(MiB)`.
    Mib,
}

/// One column's declaration.
pub struct Column {
    pub col: Col,
    /// The CSV header (the first six are the seed's, exactly as in its `pytorch-results.csv`).
    pub name: &'static str,
    /// What the column means (the README's column list).
    pub meaning: &'static str,
    pub show: Show,
    /// How much the column matters when a console table is too wide for the terminal.
    pub importance: Importance,
    value: fn(&ExperimentResult) -> Value,
}

fn ppl(r: &ExperimentResult, f: fn(&PplFigures) -> f64) -> Value {
    Value::Real(r.ppl.as_ref().map(f))
}

fn speed(r: &ExperimentResult, f: fn(&SpeedFigures) -> f64) -> Value {
    Value::Real(r.speed.as_ref().map(f))
}

fn steps(r: &ExperimentResult, f: fn(&SpeedFigures) -> usize) -> Value {
    Value::Count(r.speed.as_ref().map(|s| f(s) as u64))
}

/// A breakdown share as a percentage.
fn share(r: &ExperimentResult, f: fn(&Breakdown) -> f64) -> Value {
    Value::Real(r.speed.as_ref().map(|s| f(&s.breakdown) * 100.0))
}

fn breakdown(r: &ExperimentResult, f: fn(&Breakdown) -> f64) -> Value {
    Value::Real(r.speed.as_ref().map(|s| f(&s.breakdown)))
}

fn memory(r: &ExperimentResult, f: fn(&MemoryFigures) -> Option<u64>) -> Value {
    Value::Count(r.memory.as_ref().and_then(f))
}

/// Every column, in CSV order: the seed's six, then ours.
#[rustfmt::skip]
pub const COLUMNS: [Column; 39] = [
    Column { col: Col::Experiment, name: "Experiment", importance: Importance::Essential, show: Show::Text,
        meaning: "label of the experiment, e.g. `H2O (64r+192h)` (r = recent, h = heavy)",
        value: |r| Value::Text(r.label.clone()) },
    Column { col: Col::Budget, name: "Budget (Tokens)", importance: Importance::Normal, show: Show::Text,
        meaning: "tokens kept per head between steps (per layer on average under a budget schedule such as `@pyramid`); `Full` for the full cache",
        value: |r| Value::Text(r.spec.budget().map_or_else(|| "Full".to_string(), |b| b.to_string())) },
    Column { col: Col::KvGb, name: "KV Size (GB)", importance: Importance::Normal, show: Show::Fixed(4),
        meaning: "K+V bytes held at the end of the speed run / 2^30 (the seed's unit)",
        value: |r| Value::Real(r.memory.as_ref().map(MemoryFigures::kv_gb)) },
    Column { col: Col::Tpot, name: "TPOT (ms)", importance: Importance::Essential, show: Show::Fixed(2),
        meaning: "median decode step in ms, prefill excluded (the seed's TPOT is `Seed TPOT (ms)`)",
        value: |r| speed(r, |s| s.tpot_median_ms) },
    Column { col: Col::Throughput, name: "Throughput (T/s)", importance: Importance::Essential, show: Show::Fixed(2),
        meaning: "decode tokens / decode time, prefill excluded",
        value: |r| speed(r, |s| s.throughput_tps) },
    Column { col: Col::Ppl, name: "PPL", importance: Importance::Essential, show: Show::Fixed(2),
        meaning: "streaming perplexity, exp(mean NLL) over all predictions",
        value: |r| ppl(r, |p| p.ppl) },
    Column { col: Col::Policy, name: "Policy", importance: Importance::Essential, show: Show::Text,
        meaning: "policy spec: `full`, `local:R`, `sink:S+R`, `h2o:H+R`, `h2o-layer:H+R`, `tova:B`, `tova-head:B`, `scissor:B`, `knorm:B`, `random:B`, with options such as `@pyramid`",
        value: |r| Value::Text(r.spec.to_string()) },
    Column { col: Col::Family, name: "Family", importance: Importance::Minor, show: Show::Text,
        meaning: "policy family (the spec without numbers and options)",
        value: |r| Value::Text(r.spec.family().to_string()) },
    Column { col: Col::Status, name: "Status", importance: Importance::Essential, show: Show::Text,
        meaning: "`ok` or `failed: <reason>`",
        value: |r| Value::Text(r.status.to_string()) },
    Column { col: Col::Predictions, name: "Predictions", importance: Importance::Minor, show: Show::Count,
        meaning: "number of next-token predictions in the PPL (tokens - 1)",
        value: |r| Value::Count(r.ppl.as_ref().map(|p| p.n_predictions as u64)) },
    Column { col: Col::MeanNll, name: "Mean NLL", importance: Importance::Minor, show: Show::Fixed(4),
        meaning: "mean negative log-likelihood (nats)",
        value: |r| ppl(r, |p| p.mean_nll) },
    Column { col: Col::NllP50, name: "NLL p50", importance: Importance::Minor, show: Show::Fixed(4),
        meaning: "median per-token NLL",
        value: |r| ppl(r, |p| p.nll.p50) },
    Column { col: Col::NllP90, name: "NLL p90", importance: Importance::Minor, show: Show::Fixed(4),
        meaning: "90th percentile per-token NLL",
        value: |r| ppl(r, |p| p.nll.p90) },
    Column { col: Col::NllMax, name: "NLL max", importance: Importance::Minor, show: Show::Fixed(4),
        meaning: "largest per-token NLL",
        value: |r| ppl(r, |p| p.nll.max) },
    Column { col: Col::PromptTokens, name: "Prompt Tokens", importance: Importance::Minor, show: Show::Count,
        meaning: "prompt tokens of the speed run",
        value: |r| steps(r, |s| s.prompt_tokens) },
    Column { col: Col::DecodeSteps, name: "Decode Steps", importance: Importance::Minor, show: Show::Count,
        meaning: "decode steps of the speed run",
        value: |r| steps(r, |s| s.decode_steps) },
    Column { col: Col::Ttft, name: "TTFT (ms)", importance: Importance::Normal, show: Show::Fixed(1),
        meaning: "time to first token: the prefill, ms",
        value: |r| speed(r, |s| s.ttft_ms) },
    Column { col: Col::TpotP90, name: "TPOT p90 (ms)", importance: Importance::Minor, show: Show::Fixed(2),
        meaning: "90th percentile decode step, ms",
        value: |r| speed(r, |s| s.tpot_p90_ms) },
    Column { col: Col::TpotP10, name: "TPOT p10 (ms)", importance: Importance::Minor, show: Show::Fixed(2),
        meaning: "10th percentile decode step, ms",
        value: |r| speed(r, |s| s.tpot_p10_ms) },
    Column { col: Col::TpotSpread, name: "TPOT spread (%)", importance: Importance::Normal, show: Show::Fixed(1),
        meaning: "how steady the decode steps were: (TPOT p90 - TPOT p10) / TPOT, %",
        value: |r| speed(r, |s| s.tpot_spread_pct()) },
    Column { col: Col::TpotMean, name: "TPOT mean (ms)", importance: Importance::Normal, show: Show::Fixed(3),
        meaning: "mean decode step, ms",
        value: |r| speed(r, |s| s.tpot_mean_ms) },
    Column { col: Col::SeedTpot, name: "Seed TPOT (ms)", importance: Importance::Minor, show: Show::Fixed(2),
        meaning: "the seed's TPOT: measured wall time of the whole generate (prefill included) / generated tokens (prefill's token included), ms",
        value: |r| speed(r, |s| s.seed_tpot_ms) },
    Column { col: Col::SeedThroughput, name: "Seed Throughput (T/s)", importance: Importance::Minor, show: Show::Fixed(2),
        meaning: "the seed's throughput: generated tokens / measured wall time of the whole generate",
        value: |r| speed(r, |s| s.seed_throughput_tps) },
    Column { col: Col::ModelMs, name: "Model (ms)", importance: Importance::Essential, show: Show::Fixed(3),
        meaning: "mean ONNX Runtime run per decode step, ms",
        value: |r| breakdown(r, |b| b.model_ms) },
    Column { col: Col::ScoreUpdateMs, name: "Score Update (ms)", importance: Importance::Essential, show: Show::Fixed(3),
        meaning: "mean score update (accumulating attention) per decode step, ms",
        value: |r| breakdown(r, |b| b.score_update_ms) },
    Column { col: Col::EvictionMs, name: "Eviction (ms)", importance: Importance::Essential, show: Show::Fixed(3),
        meaning: "mean eviction (victim choice) per decode step, ms",
        value: |r| breakdown(r, |b| b.eviction_ms) },
    Column { col: Col::OtherHostMs, name: "Other Host (ms)", importance: Importance::Essential, show: Show::Fixed(3),
        meaning: "mean other host work per decode step (inputs, K/V writes, logits), ms",
        value: |r| breakdown(r, |b| b.other_ms) },
    Column { col: Col::ModelShare, name: "Model (%)", importance: Importance::Normal, show: Show::Percent(1),
        meaning: "share of the decode time spent in the model run, %",
        value: |r| share(r, |b| b.model_share) },
    Column { col: Col::ScoreUpdateShare, name: "Score Update (%)", importance: Importance::Normal, show: Show::Percent(1),
        meaning: "share spent in the score update, %",
        value: |r| share(r, |b| b.score_update_share) },
    Column { col: Col::EvictionShare, name: "Eviction (%)", importance: Importance::Normal, show: Show::Percent(1),
        meaning: "share spent in eviction, %",
        value: |r| share(r, |b| b.eviction_share) },
    Column { col: Col::OtherHostShare, name: "Other Host (%)", importance: Importance::Normal, show: Show::Percent(1),
        meaning: "share spent in other host work, %",
        value: |r| share(r, |b| b.other_share) },
    Column { col: Col::KvBytes, name: "KV Bytes", importance: Importance::Essential, show: Show::Mib,
        meaning: "exact K+V bytes held by the store at the end",
        value: |r| memory(r, |m| Some(m.kv_bytes)) },
    Column { col: Col::FullKvBytes, name: "Full KV Bytes", importance: Importance::Minor, show: Show::Mib,
        meaning: "K+V bytes a full cache would hold for the same length: 2*layers*KV heads*head_dim*dtype bytes*tokens*batch",
        value: |r| memory(r, |m| Some(m.kv_bytes_full)) },
    Column { col: Col::KvRatio, name: "KV Ratio", importance: Importance::Normal, show: Show::Fixed(3),
        meaning: "KV Bytes / Full KV Bytes",
        value: |r| Value::Real(r.memory.as_ref().map(|m| m.ratio)) },
    Column { col: Col::PeakRss, name: "Peak RSS (bytes)", importance: Importance::Normal, show: Show::Mib,
        meaning: "peak resident memory of the process during this experiment, bytes",
        value: |r| memory(r, |m| Some(m.peak_rss_bytes)) },
    Column { col: Col::PeakDevice, name: "Peak Device (bytes)", importance: Importance::Minor, show: Show::Mib,
        meaning: "peak device memory (CUDA), bytes, when measured",
        value: |r| memory(r, |m| m.peak_device_bytes) },
    Column { col: Col::MemoryMethod, name: "Memory Method", importance: Importance::Minor, show: Show::Text,
        meaning: "how the peak memory was measured",
        value: |r| Value::Text(r.memory.as_ref().map(|m| m.method.clone()).unwrap_or_default()) },
    Column { col: Col::PrefillTps, name: "Prefill (T/s)", importance: Importance::Minor, show: Show::Fixed(1),
        meaning: "prompt tokens / prefill time",
        value: |r| speed(r, |s| s.prefill_tps) },
    Column { col: Col::HostShare, name: "Host (%)", importance: Importance::Normal, show: Show::Percent(1),
        meaning: "share of the decode time spent on the host (score update + eviction + other host work), %",
        value: |r| share(r, |b| b.score_update_share + b.eviction_share + b.other_share) },
];

/// The seed's six columns, first in every results CSV.
pub const SEED_COLUMNS: [Col; 6] = [
    Col::Experiment,
    Col::Budget,
    Col::KvGb,
    Col::Tpot,
    Col::Throughput,
    Col::Ppl,
];

impl Col {
    /// The column's declaration.
    pub fn def(self) -> &'static Column {
        let c = &COLUMNS[self as usize];
        debug_assert_eq!(c.col, self, "COLUMNS is in the order of Col");
        c
    }

    /// The CSV header.
    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn value(self, r: &ExperimentResult) -> Value {
        (self.def().value)(r)
    }

    /// The CSV cell: numbers in full precision; unmeasured or non-finite values are empty.
    pub fn csv(self, r: &ExperimentResult) -> String {
        match self.value(r) {
            Value::Text(t) => t,
            Value::Count(n) => n.map(|n| n.to_string()).unwrap_or_default(),
            Value::Real(Some(x)) if x.is_finite() => x.to_string(),
            Value::Real(_) => String::new(),
        }
    }

    /// The table header: the name, or for bytes shown as MiB the name with `(MiB)` for its unit.
    pub fn header(self) -> String {
        let name = self.name();
        match self.def().show {
            Show::Mib => {
                let base = name
                    .strip_suffix(" (bytes)")
                    .or_else(|| name.strip_suffix(" Bytes"))
                    .unwrap_or(name);
                format!("{base} (MiB)")
            }
            _ => name.to_string(),
        }
    }

    /// The table cell; `-` where nothing was measured.
    pub fn cell(self, r: &ExperimentResult) -> String {
        let show = self.def().show;
        match (self.value(r), show) {
            (Value::Text(t), _) if t.is_empty() => "-".to_string(),
            (Value::Text(t), _) => t,
            (Value::Count(Some(b)), Show::Mib) => format!("{:.2}", b as f64 / (1u64 << 20) as f64),
            (Value::Count(Some(n)), _) => n.to_string(),
            (Value::Real(Some(x)), Show::Fixed(d)) if x.is_finite() => format!("{x:.d$}"),
            (Value::Real(Some(x)), Show::Percent(d)) if x.is_finite() => format!("{x:.d$}%"),
            (Value::Real(Some(x)), _) if x.is_finite() => x.to_string(),
            _ => "-".to_string(),
        }
    }

    /// How much the column matters in a console table ([`Importance`]).
    pub fn importance(self) -> Importance {
        self.def().importance
    }

    /// Whether tables align the column left (text) rather than right (numbers).
    pub fn is_text(self) -> bool {
        self.def().show == Show::Text
    }
}

/// A column of the run rather than of one experiment: the same value in every row of a file,
/// after [`COLUMNS`], so a results CSV says on its own which text it read and how it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunCol {
    Text,
    Data,
    Counting,
}

/// One run column's declaration.
pub struct RunColumn {
    pub col: RunCol,
    /// The CSV header.
    pub name: &'static str,
    /// What the column means (the README's column list).
    pub meaning: &'static str,
    value: fn(&Settings) -> String,
}

/// The text mode as the CLI spells it (`--text file|seed`).
pub fn text_mode_name(t: TextMode) -> &'static str {
    match t {
        TextMode::File => "file",
        TextMode::Seed => "seed",
    }
}

/// The budget counting as the CLI spells it (`--counting ours|seed`).
pub fn counting_name(c: Counting) -> &'static str {
    match c {
        Counting::Ours => "ours",
        Counting::Seed => "seed",
    }
}

/// Every run column, in CSV order (after [`COLUMNS`]).
#[rustfmt::skip]
pub const RUN_COLUMNS: [RunColumn; 3] = [
    RunColumn { col: RunCol::Text, name: "Text",
        meaning: "which text of the data file was read: `file` (the file as it is) or `seed` (the seed's: the dataset's rows joined up to 16,384 characters)",
        value: |s| text_mode_name(s.text).to_string() },
    RunColumn { col: RunCol::Data, name: "Data",
        meaning: "the data file the text was read from, as given",
        value: |s| s.data_path.clone() },
    RunColumn { col: RunCol::Counting, name: "Counting",
        meaning: "budget counting: `ours` (budget B keeps B tokens, a step attends B + the new one) or `seed` (B counts the new token: every spec ran one token less, the `Policy` column holds the spec as run)",
        value: |s| counting_name(s.counting).to_string() },
];

impl RunCol {
    /// The column's declaration.
    pub fn def(self) -> &'static RunColumn {
        let c = &RUN_COLUMNS[self as usize];
        debug_assert_eq!(c.col, self, "RUN_COLUMNS is in the order of RunCol");
        c
    }

    /// The CSV header.
    pub fn name(self) -> &'static str {
        self.def().name
    }
}

/// The full CSV header: [`COLUMNS`], then [`RUN_COLUMNS`].
pub fn csv_header() -> Vec<&'static str> {
    COLUMNS
        .iter()
        .map(|c| c.name)
        .chain(RUN_COLUMNS.iter().map(|c| c.name))
        .collect()
}

/// One CSV row of a result of a run with `settings`, in [`csv_header`] order.
pub fn csv_record(r: &ExperimentResult, settings: &Settings) -> Vec<String> {
    COLUMNS
        .iter()
        .map(|c| c.col.csv(r))
        .chain(RUN_COLUMNS.iter().map(|c| (c.value)(settings)))
        .collect()
}

/// What each CSV column means, in header order.
pub fn column_meanings() -> Vec<(&'static str, &'static str)> {
    COLUMNS
        .iter()
        .map(|c| (c.name, c.meaning))
        .chain(RUN_COLUMNS.iter().map(|c| (c.name, c.meaning)))
        .collect()
}

/// The README's column list: a markdown table of every column and its meaning.
pub fn columns_markdown() -> String {
    let mut s = String::from("| Column | Meaning |\n| --- | --- |\n");
    for (name, meaning) in column_meanings() {
        s.push_str(&format!("| {name} | {meaning} |\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_in_the_order_of_col_each_once() {
        for (i, c) in COLUMNS.iter().enumerate() {
            assert_eq!(c.col as usize, i, "{}", c.name);
            assert!(!c.name.is_empty() && !c.meaning.is_empty());
        }
        let mut names = csv_header();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            COLUMNS.len() + RUN_COLUMNS.len(),
            "names are unique"
        );
        assert_eq!(column_meanings().len(), names.len());
        for (i, c) in RUN_COLUMNS.iter().enumerate() {
            assert_eq!(c.col as usize, i, "{}", c.name);
        }
    }

    #[test]
    fn headers_of_byte_columns_in_tables() {
        assert_eq!(Col::PeakRss.header(), "Peak RSS (MiB)");
        assert_eq!(Col::KvBytes.header(), "KV (MiB)");
        assert_eq!(Col::FullKvBytes.header(), "Full KV (MiB)");
        assert_eq!(Col::Tpot.header(), "TPOT (ms)");
    }
}
