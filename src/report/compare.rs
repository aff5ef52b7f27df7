//! Loading result CSVs (ours or the seed's format) and lining two of them up by policy family and budget.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use comfy_table::Table;
use serde::{Deserialize, Serialize};

use super::columns::{Col, SEED_COLUMNS};
use super::seed::parse_seed_name;
use super::tables::{fmt, new_table, right_align_from};
use super::ReportError;
use crate::policy::{PolicyKind, PolicySpec};

/// Which kind of results file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultFormat {
    /// The seed's `pytorch-results.csv`: only the six seed columns; experiments are named
    /// `Baseline`, `Local (N)`, `H2O (R+H)` (recent+heavy). The seed's H2O keeps the same tokens
    /// for all heads of a layer (scores summed over heads): our `h2o-layer`.
    Seed,
    /// Ours (`h2o bench`): the seed's columns, then `Policy` and the rest.
    Ours,
}

/// One experiment row of a results file, with what was needed to line it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// 1-based line in the file, counting the header as line 1 and one line per record.
    pub line: u64,
    pub experiment: String,
    /// The policy (ours: the `Policy` column), or the spec the seed's name maps to (`h2o-layer:H+R`, ...).
    pub spec: PolicySpec,
    pub kv_gb: Option<f64>,
    /// The file's `TPOT (ms)` column (ours: median decode step; seed: total / generated tokens).
    pub tpot_ms: Option<f64>,
    /// The seed's TPOT definition: the seed's `TPOT (ms)`, or our `Seed TPOT (ms)`.
    pub seed_tpot_ms: Option<f64>,
    pub throughput_tps: Option<f64>,
    pub ppl: Option<f64>,
}

/// A results file as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultFile {
    pub path: PathBuf,
    pub format: ResultFormat,
    pub rows: Vec<ResultRow>,
}

/// How two rows were matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchKind {
    /// Same family and the same budget (and heavy/recent split).
    Exact,
    /// `h2o` (per head) against `h2o-layer` (the seed's H2O) with the same heavy+recent split.
    H2oVariant,
    /// The same policy under another per-layer budget schedule (`@pyramid` against uniform).
    OtherSchedule,
    /// Same method (h2o and h2o-layer count as one, tova and tova-head too) and budget, different
    /// heavy/recent split or options.
    SameBudget,
}

impl std::fmt::Display for MatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatchKind::Exact => "exact",
            MatchKind::H2oVariant => "h2o vs h2o-layer, same split",
            MatchKind::OtherSchedule => "same policy, other schedule",
            MatchKind::SameBudget => "same budget, other split",
        })
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
    /// PPL of B minus PPL of A.
    pub ppl_diff: Option<f64>,
    /// TPOT of A / TPOT of B: above 1 means B decodes faster.
    pub speedup: Option<f64>,
}

/// Two result files lined up; unmatched rows are kept, not dropped.
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
}

fn parse_num(
    path: &Path,
    line: u64,
    column: &str,
    value: &str,
) -> Result<Option<f64>, ReportError> {
    let v = value.trim();
    if v.is_empty() || v == "-" {
        return Ok(None);
    }
    v.parse::<f64>()
        .map(Some)
        .map_err(|_| ReportError::BadValue {
            path: path.to_path_buf(),
            line,
            column: column.to_string(),
            value: value.to_string(),
        })
}

/// A results CSV's header, and where its columns are.
struct Header {
    names: Vec<String>,
    format: ResultFormat,
}

impl Header {
    fn read(path: &Path, rdr: &mut csv::Reader<std::fs::File>) -> Result<Header, ReportError> {
        let names: Vec<String> = rdr
            .headers()
            .map_err(|e| read_error(path, e))?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        let missing: Vec<String> = SEED_COLUMNS
            .iter()
            .filter(|c| !names.iter().any(|n| n == c.name()))
            .map(|c| c.name().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ReportError::MissingColumns {
                path: path.to_path_buf(),
                missing,
                found: names,
            });
        }
        let format = if names.iter().any(|n| n == Col::Policy.name()) {
            ResultFormat::Ours
        } else {
            ResultFormat::Seed
        };
        Ok(Header { names, format })
    }

    fn index(&self, col: Col) -> Option<usize> {
        self.names.iter().position(|n| n == col.name())
    }
}

fn read_error(path: &Path, e: csv::Error) -> ReportError {
    ReportError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The policy of a row: our `Policy` column, or the seed's experiment name (with its budget).
fn row_spec(
    path: &Path,
    line: u64,
    header: &Header,
    cell: &dyn Fn(Col) -> String,
) -> Result<PolicySpec, ReportError> {
    let bad = |col: Col, reason: String| ReportError::BadSpec {
        path: path.to_path_buf(),
        line,
        column: col.name().to_string(),
        value: cell(col),
        reason,
    };
    if header.format == ResultFormat::Ours {
        return cell(Col::Policy)
            .parse()
            .map_err(|e: crate::policy::PolicyError| bad(Col::Policy, e.to_string()));
    }
    let budget_text = cell(Col::Budget);
    let budget = match budget_text.to_ascii_lowercase().as_str() {
        "" | "-" | "full" | "all" => None,
        t => Some(t.parse::<usize>().map_err(|_| ReportError::BadValue {
            path: path.to_path_buf(),
            line,
            column: Col::Budget.name().to_string(),
            value: budget_text.clone(),
        })?),
    };
    parse_seed_name(&cell(Col::Experiment), budget).ok_or_else(|| {
        bad(
            Col::Experiment,
            "not one of the seed's experiment names: Baseline, Local (R), H2O (R+H)".to_string(),
        )
    })
}

/// One record as a row.
fn read_row(
    path: &Path,
    header: &Header,
    rec: &csv::StringRecord,
) -> Result<ResultRow, ReportError> {
    // Record number, not the csv crate's line counter (which miscounts CRLF files such as
    // the seed's): the header is line 1, each record one line.
    let line = rec.position().map(|p| p.record() + 1).unwrap_or(0);
    let cell = |col: Col| {
        header
            .index(col)
            .and_then(|i| rec.get(i))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let num = |col: Col| parse_num(path, line, col.name(), &cell(col));
    let spec = row_spec(path, line, header, &cell)?;
    let tpot_ms = num(Col::Tpot)?;
    let seed_tpot_ms = match header.format {
        ResultFormat::Seed => tpot_ms,
        ResultFormat::Ours => num(Col::SeedTpot)?,
    };
    Ok(ResultRow {
        line,
        experiment: cell(Col::Experiment),
        spec,
        kv_gb: num(Col::KvGb)?,
        tpot_ms,
        seed_tpot_ms,
        throughput_tps: num(Col::Throughput)?,
        ppl: num(Col::Ppl)?,
    })
}

/// Reads a results CSV, ours or the seed's. Errors: unreadable file, missing seed columns
/// (naming them), a cell that should be a number and is not, a policy that is not a spec
/// (ours) or not one of the seed's experiment names (the seed's).
pub fn load_results_csv(path: &Path) -> Result<ResultFile, ReportError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| read_error(path, e))?;
    let header = Header::read(path, &mut rdr)?;
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| read_error(path, e))?;
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        rows.push(read_row(path, &header, &rec)?);
    }
    Ok(ResultFile {
        path: path.to_path_buf(),
        format: header.format,
        rows,
    })
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

fn matches(a: &PolicySpec, b: &PolicySpec, kind: MatchKind) -> bool {
    match (kind, a.kind, b.kind) {
        (MatchKind::Exact, _, _) => a == b,
        (
            MatchKind::H2oVariant,
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
        (MatchKind::H2oVariant, _, _) => false,
        (MatchKind::OtherSchedule, _, _) => a.kind == b.kind && a.schedule != b.schedule,
        (MatchKind::SameBudget, _, _) => method(a) == method(b) && a.budget() == b.budget(),
    }
}

/// Lines up two result files already read (see [`compare`]).
pub fn compare_files(a: ResultFile, b: ResultFile) -> Comparison {
    let tpot_definition = if a.format == ResultFormat::Ours && b.format == ResultFormat::Ours {
        TpotDefinition::DecodeMedian
    } else {
        TpotDefinition::SeedTotal
    };
    let tpot = |r: &ResultRow| match tpot_definition {
        TpotDefinition::DecodeMedian => r.tpot_ms,
        TpotDefinition::SeedTotal => r.seed_tpot_ms,
    };
    let mut used_b = vec![false; b.rows.len()];
    let mut pairs: Vec<(usize, usize, MatchKind)> = Vec::new();
    let mut used_a = vec![false; a.rows.len()];
    for kind in [
        MatchKind::Exact,
        MatchKind::H2oVariant,
        MatchKind::OtherSchedule,
        MatchKind::SameBudget,
    ] {
        for (i, ra) in a.rows.iter().enumerate() {
            if used_a[i] {
                continue;
            }
            if let Some(j) =
                (0..b.rows.len()).find(|&j| !used_b[j] && matches(&ra.spec, &b.rows[j].spec, kind))
            {
                used_a[i] = true;
                used_b[j] = true;
                pairs.push((i, j, kind));
            }
        }
    }
    pairs.sort_by_key(|&(i, j, _)| (i, j));
    let pairs = pairs
        .into_iter()
        .map(|(i, j, kind)| {
            let (ra, rb) = (a.rows[i].clone(), b.rows[j].clone());
            let (ta, tb) = (tpot(&ra), tpot(&rb));
            MatchedPair {
                ppl_diff: ra.ppl.zip(rb.ppl).map(|(x, y)| y - x),
                speedup: ta.zip(tb).filter(|&(_, y)| y > 0.0).map(|(x, y)| x / y),
                tpot_a_ms: ta,
                tpot_b_ms: tb,
                a: ra,
                b: rb,
                kind,
            }
        })
        .collect();
    let rest = |rows: &[ResultRow], used: &[bool]| {
        rows.iter()
            .zip(used)
            .filter(|(_, &u)| !u)
            .map(|(r, _)| r.clone())
            .collect()
    };
    Comparison {
        unmatched_a: rest(&a.rows, &used_a),
        unmatched_b: rest(&b.rows, &used_b),
        a_path: a.path,
        b_path: b.path,
        a_format: a.format,
        b_format: b.format,
        tpot_definition,
        pairs,
    }
}

/// Loads two result CSVs (ours or the seed's format) and lines their experiments up by policy
/// family and budget: first exact matches, then `h2o` against `h2o-layer` (the seed's H2O) with
/// the same heavy+recent split, then the same policy under another budget schedule, then the same
/// method and budget with another split. Each row is
/// used once; rows left over are listed in `unmatched_a` / `unmatched_b`.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison, ReportError> {
    Ok(compare_files(load_results_csv(a)?, load_results_csv(b)?))
}

fn budget_text(s: &PolicySpec) -> String {
    s.budget()
        .map(|b| b.to_string())
        .unwrap_or_else(|| "Full".to_string())
}

impl Comparison {
    /// The side-by-side table: PPL both and difference, TPOT both and speed-up, KV size both.
    pub fn table(&self) -> Table {
        let mut t = new_table(&[
            "A: Experiment",
            "B: Experiment",
            "Budget",
            "Match",
            "PPL A",
            "PPL B",
            "ΔPPL (B−A)",
            "TPOT A (ms)",
            "TPOT B (ms)",
            "Speed-up (A/B)",
            "KV A (GB)",
            "KV B (GB)",
        ]);
        for p in &self.pairs {
            t.add_row(vec![
                format!("{} [{}]", p.a.experiment, p.a.spec),
                format!("{} [{}]", p.b.experiment, p.b.spec),
                budget_text(&p.b.spec),
                p.kind.to_string(),
                fmt(p.a.ppl, 2),
                fmt(p.b.ppl, 2),
                fmt(p.ppl_diff, 2),
                fmt(p.tpot_a_ms, 2),
                fmt(p.tpot_b_ms, 2),
                fmt(p.speedup, 2),
                fmt(p.a.kv_gb, 4),
                fmt(p.b.kv_gb, 4),
            ]);
        }
        right_align_from(&mut t, 4);
        t
    }

    /// The whole comparison as text: the files, the TPOT definition, the table, unmatched rows.
    pub fn render(&self) -> String {
        let fmt_name = |f: ResultFormat| match f {
            ResultFormat::Seed => "seed format",
            ResultFormat::Ours => "h2o bench format",
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "A: {} ({})",
            self.a_path.display(),
            fmt_name(self.a_format)
        );
        let _ = writeln!(
            s,
            "B: {} ({})",
            self.b_path.display(),
            fmt_name(self.b_format)
        );
        let _ = writeln!(
            s,
            "TPOT: {}",
            match self.tpot_definition {
                TpotDefinition::DecodeMedian =>
                    "median decode step, prefill excluded (both files ours)",
                TpotDefinition::SeedTotal =>
                    "the seed's definition, total generate time incl. prefill / generated tokens",
            }
        );
        let _ = writeln!(s, "{}", self.table());
        for (side, rows) in [("A", &self.unmatched_a), ("B", &self.unmatched_b)] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(s, "Unmatched in {side}:");
            for r in rows {
                let _ = writeln!(
                    s,
                    "  line {}: {} [{}], budget {}, PPL {}, TPOT {} ms, KV {} GB",
                    r.line,
                    r.experiment,
                    r.spec,
                    budget_text(&r.spec),
                    fmt(r.ppl, 2),
                    fmt(r.tpot_ms, 2),
                    fmt(r.kv_gb, 4)
                );
            }
        }
        s
    }
}
