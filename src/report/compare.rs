//! Loading result CSVs (ours or the seed's format) and lining two of them up by policy family and budget.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::columns::{Col, SEED_COLUMNS};
use super::seed::{parse_seed_name, seed_equivalent};
use super::tables::{fmt, new_table, right_align_from};
use super::text_table::{Importance, TextTable};
use super::wrap::wrap_words;
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
    /// The spec in our budget counting: ours as written; for the seed's rows, the spec of ours that
    /// attends as many tokens a step ([`seed_equivalent`]: its `Local (256)` is our `local:255`).
    pub counted: PolicySpec,
    pub kv_gb: Option<f64>,
    /// The file's `TPOT (ms)` column (ours: median decode step; seed: total / generated tokens).
    pub tpot_ms: Option<f64>,
    /// The seed's TPOT definition: the seed's `TPOT (ms)`, or our `Seed TPOT (ms)`.
    pub seed_tpot_ms: Option<f64>,
    pub throughput_tps: Option<f64>,
    pub ppl: Option<f64>,
    /// Why the experiment failed (our `Status` column says `failed: <reason>`); such a row has no
    /// figures and is listed, never matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// A results file as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultFile {
    pub path: PathBuf,
    pub format: ResultFormat,
    /// Every row, failed ones included (in file order).
    pub rows: Vec<ResultRow>,
}

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
    /// PPL of B minus PPL of A.
    pub ppl_diff: Option<f64>,
    /// TPOT of A / TPOT of B: above 1 means B decodes faster.
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
}

/// A results CSV's header, and where its columns are.
struct Header {
    names: Vec<String>,
    format: ResultFormat,
}

impl Header {
    fn read(path: &Path, rdr: &mut csv::Reader<&[u8]>) -> Result<Header, ReportError> {
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

/// What a number cell may hold.
#[derive(Clone, Copy)]
enum Range {
    /// Finite and >= 0 (sizes, times, rates).
    NonNegative,
    /// Finite and >= 1 (a perplexity is exp of a mean of non-negative NLLs).
    Perplexity,
}

/// The cells of one record, read with the file, line and column named in every error.
struct Cells<'a> {
    path: &'a Path,
    line: u64,
    header: &'a Header,
    rec: &'a csv::StringRecord,
}

impl Cells<'_> {
    fn text(&self, col: Col) -> String {
        self.header
            .index(col)
            .and_then(|i| self.rec.get(i))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    fn bad(&self, col: Col, reason: impl Into<String>) -> ReportError {
        ReportError::BadValue {
            path: self.path.to_path_buf(),
            line: self.line,
            column: col.name().to_string(),
            value: self.text(col),
            reason: reason.into(),
        }
    }

    /// A number; empty is `None` (not measured) where the file's format allows it.
    fn num(&self, col: Col, range: Range) -> Result<Option<f64>, ReportError> {
        let v = self.text(col);
        if v.is_empty() || v == "-" {
            if self.header.format == ResultFormat::Seed && self.header.index(col).is_some() {
                return Err(self.bad(col, "empty; every row of the seed's file has this figure"));
            }
            return Ok(None);
        }
        let x: f64 = v.parse().map_err(|_| self.bad(col, "not a number"))?;
        if !x.is_finite() {
            return Err(self.bad(col, "not a finite number"));
        }
        match range {
            Range::NonNegative if x < 0.0 => Err(self.bad(col, "negative; it cannot be below 0")),
            Range::Perplexity if x < 1.0 => {
                Err(self.bad(col, "below 1; a perplexity is at least 1"))
            }
            _ => Ok(Some(x)),
        }
    }

    /// The Budget column: `None` for the full cache.
    fn budget(&self) -> Result<Option<usize>, ReportError> {
        let t = self.text(Col::Budget);
        match t.to_ascii_lowercase().as_str() {
            "full" | "all" => Ok(None),
            "" | "-" => Err(self.bad(Col::Budget, "empty; write the tokens kept, or Full")),
            n => n
                .parse::<usize>()
                .map(Some)
                .map_err(|_| self.bad(Col::Budget, "not a token count or Full")),
        }
    }

    /// The policy: our `Policy` column, or the seed's experiment name (with the Budget column for
    /// a `Local` without a number); its budget must be the Budget column's.
    fn spec(&self) -> Result<PolicySpec, ReportError> {
        let budget = self.budget()?;
        let spec = if self.header.format == ResultFormat::Ours {
            self.text(Col::Policy)
                .parse()
                .map_err(|e: crate::policy::PolicyError| {
                    self.bad_spec(Col::Policy, e.to_string())
                })?
        } else {
            parse_seed_name(&self.text(Col::Experiment), budget).ok_or_else(|| {
                self.bad_spec(
                    Col::Experiment,
                    "not one of the seed's experiment names: Baseline, Local (R), H2O (R+H)".into(),
                )
            })?
        };
        if spec.budget() != budget {
            let keeps = spec
                .budget()
                .map_or("every token".to_string(), |b| b.to_string());
            return Err(self.bad(
                Col::Budget,
                format!("the row's policy {spec} keeps {keeps}"),
            ));
        }
        Ok(spec)
    }

    fn bad_spec(&self, col: Col, reason: String) -> ReportError {
        ReportError::BadSpec {
            path: self.path.to_path_buf(),
            line: self.line,
            column: col.name().to_string(),
            value: self.text(col),
            reason,
        }
    }

    /// Our Status column (absent: ok): `None` for `ok`, the reason for `failed: <reason>`.
    fn failure(&self) -> Result<Option<String>, ReportError> {
        let t = self.text(Col::Status);
        if t.is_empty() && self.header.index(Col::Status).is_none() || t == "ok" {
            return Ok(None);
        }
        match t.strip_prefix("failed:") {
            Some(reason) => Ok(Some(reason.trim().to_string())),
            None => Err(self.bad(Col::Status, "expected `ok` or `failed: <reason>`")),
        }
    }
}

/// One record as a row. Errors name the file, the line and the column.
fn read_row(
    path: &Path,
    header: &Header,
    rec: &csv::StringRecord,
    line: u64,
) -> Result<ResultRow, ReportError> {
    if rec.len() != header.names.len() {
        return Err(ReportError::FieldCount {
            path: path.to_path_buf(),
            line,
            found: rec.len(),
            expected: header.names.len(),
        });
    }
    let c = Cells {
        path,
        line,
        header,
        rec,
    };
    let spec = c.spec()?;
    let counted = match header.format {
        ResultFormat::Seed => seed_equivalent(&spec).unwrap_or(spec),
        ResultFormat::Ours => spec,
    };
    let mut row = ResultRow {
        line,
        experiment: c.text(Col::Experiment),
        spec,
        counted,
        kv_gb: None,
        tpot_ms: None,
        seed_tpot_ms: None,
        throughput_tps: None,
        ppl: None,
        failed: c.failure()?,
    };
    if row.failed.is_some() {
        return Ok(row);
    }
    row.kv_gb = c.num(Col::KvGb, Range::NonNegative)?;
    row.tpot_ms = c.num(Col::Tpot, Range::NonNegative)?;
    row.seed_tpot_ms = match header.format {
        ResultFormat::Seed => row.tpot_ms,
        ResultFormat::Ours => c.num(Col::SeedTpot, Range::NonNegative)?,
    };
    row.throughput_tps = c.num(Col::Throughput, Range::NonNegative)?;
    row.ppl = c.num(Col::Ppl, Range::Perplexity)?;
    Ok(row)
}

/// The most bytes a results file may have: far above any real one (a row is ~200 bytes), and a
/// bound on what `compare` reads from anything (`/dev/zero`, a huge file).
pub const MAX_RESULTS_BYTES: u64 = 16 << 20;
/// The longest cell: any name, policy spec, status or number is far shorter.
pub const MAX_CELL_BYTES: usize = 4096;

/// The file's bytes, reading no further than [`MAX_RESULTS_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, ReportError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| ReportError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_RESULTS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReportError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_RESULTS_BYTES {
        return Err(ReportError::TooLarge {
            path: path.to_path_buf(),
            limit_mib: MAX_RESULTS_BYTES >> 20,
        });
    }
    Ok(bytes)
}

/// Line numbers of byte offsets, counted once through the file (offsets asked in increasing order).
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl LineCounter<'_> {
    /// The 1-based line of the record that starts at byte `offset` (or at the line ends right
    /// after it: the csv reader may leave a CRLF's `\n` before the next record): newlines before
    /// the record's first byte, plus one.
    fn line_at(&mut self, offset: usize) -> u64 {
        let mut end = offset.min(self.bytes.len());
        while end < self.bytes.len() && matches!(self.bytes[end], b'\r' | b'\n') {
            end += 1;
        }
        if end > self.offset {
            self.line += self.bytes[self.offset..end]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            self.offset = end;
        }
        self.line
    }
}

/// Refuses a record with a cell longer than [`MAX_CELL_BYTES`], naming its column.
fn check_cells(
    path: &Path,
    line: u64,
    names: &[String],
    rec: &csv::ByteRecord,
) -> Result<(), ReportError> {
    match rec.iter().position(|c| c.len() > MAX_CELL_BYTES) {
        None => Ok(()),
        Some(i) => Err(ReportError::CellTooLong {
            path: path.to_path_buf(),
            line,
            column: names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("#{}", i + 1)),
            bytes: rec[i].len(),
            limit: MAX_CELL_BYTES,
        }),
    }
}

/// Reads a results CSV, ours or the seed's. Errors (each naming the file, and the line and
/// column where there is one): unreadable file, a file over [`MAX_RESULTS_BYTES`] or a cell over
/// [`MAX_CELL_BYTES`], missing seed columns, a row with more or fewer fields than the header, a
/// figure that is not a finite number, a negative size/time/rate, a perplexity below 1, a missing
/// figure in the seed's file, a policy that is not a spec (ours) or not one of the seed's
/// experiment names, a Budget column that disagrees with the policy, a Status that is neither
/// `ok` nor `failed: <reason>`. A failed experiment's row is read with its reason and no figures.
/// Lines are the file's lines (a quoted cell may span several), where the record starts.
pub fn load_results_csv(path: &Path) -> Result<ResultFile, ReportError> {
    let bytes = read_bounded(path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let mut lines = LineCounter {
        bytes: &bytes,
        offset: 0,
        line: 1,
    };
    let header_cells = rdr.byte_headers().map_err(|e| read_error(path, e))?.clone();
    check_cells(path, 1, &[], &header_cells)?;
    let header = Header::read(path, &mut rdr)?;
    let mut rows = Vec::new();
    let mut rec = csv::ByteRecord::new();
    while rdr
        .read_byte_record(&mut rec)
        .map_err(|e| read_error(path, e))?
    {
        let line = lines.line_at(rec.position().map_or(0, |p| p.byte() as usize));
        check_cells(path, line, &header.names, &rec)?;
        let text =
            csv::StringRecord::from_byte_record(rec.clone()).map_err(|e| ReportError::Read {
                path: path.to_path_buf(),
                message: format!("line {line}: {e}"),
            })?;
        if text.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        rows.push(read_row(path, &header, &text, line)?);
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
    }
}

/// Loads two result CSVs (ours or the seed's format) and lines their experiments up by policy
/// family and budget, best first: the same policy attending the same tokens (`exact`; between
/// the seed's file and ours that is our spec with one token less, see [`seed_equivalent`]),
/// `h2o` against `h2o-layer` (the seed's H2O) with the same split, the same policy under another
/// budget schedule, then our spec with the seed's numbers (ours attends one token more), then the
/// same method and budget with another split. Each row is used once; rows left over are listed
/// in `unmatched_a` / `unmatched_b`, failed experiments in `failed_a` / `failed_b`.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison, ReportError> {
    Ok(compare_files(load_results_csv(a)?, load_results_csv(b)?))
}

fn budget_text(s: &PolicySpec) -> String {
    s.budget()
        .map(|b| b.to_string())
        .unwrap_or_else(|| "Full".to_string())
}

/// `256` when both budgets are equal, else `256 / 255` (A / B).
fn budgets(a: &PolicySpec, b: &PolicySpec) -> String {
    let (x, y) = (budget_text(a), budget_text(b));
    if x == y {
        x
    } else {
        format!("{x} / {y}")
    }
}

/// The comparison table's columns: the first [`COMPACT_COLUMNS`] by default, all with `--wide`.
const COMPARE_COLUMNS: [&str; 12] = [
    "A: Experiment",
    "B: Experiment",
    "Budget (A / B)",
    "Match",
    "PPL A",
    "PPL B",
    "TPOT A (ms)",
    "TPOT B (ms)",
    "ΔPPL (B−A)",
    "Speed-up (A/B)",
    "KV A (GB)",
    "KV B (GB)",
];

/// Columns of the compact comparison table.
const COMPACT_COLUMNS: usize = 8;

/// How much each of [`COMPARE_COLUMNS`] matters when the terminal is too narrow for the table.
const COMPARE_IMPORTANCE: [Importance; 12] = {
    use Importance::*;
    [
        Essential, Essential, Normal, Essential, Essential, Essential, Normal, Normal, Minor,
        Minor, Minor, Minor,
    ]
};

impl Comparison {
    /// The side-by-side table: experiments, budgets, match, PPL and TPOT of both; `wide` adds
    /// the PPL difference, the speed-up and both KV sizes.
    pub fn table(&self, wide: bool) -> TextTable {
        let n = if wide {
            COMPARE_COLUMNS.len()
        } else {
            COMPACT_COLUMNS
        };
        let mut t = new_table(&COMPARE_COLUMNS[..n]);
        for p in &self.pairs {
            let row = [
                format!("{} [{}]", p.a.experiment, p.a.spec),
                format!("{} [{}]", p.b.experiment, p.b.spec),
                budgets(&p.a.spec, &p.b.spec),
                p.kind.to_string(),
                fmt(p.a.ppl, 2),
                fmt(p.b.ppl, 2),
                fmt(p.tpot_a_ms, 2),
                fmt(p.tpot_b_ms, 2),
                fmt(p.ppl_diff, 2),
                fmt(p.speedup, 2),
                fmt(p.a.kv_gb, 4),
                fmt(p.b.kv_gb, 4),
            ];
            t.add_row(row[..n].to_vec());
        }
        right_align_from(&mut t, 4);
        t.set_importance(COMPARE_IMPORTANCE).every_column(wide);
        t
    }

    /// The whole comparison as text: the files, the TPOT definition and budget counting, the
    /// table, then unmatched and failed rows; the text around the table is wrapped at word
    /// boundaries to `width` columns when given.
    pub fn render(&self, table: &TextTable, width: Option<u16>) -> String {
        let fit = |text: String| match width {
            Some(w) => wrap_words(&text, usize::from(w)),
            None => text,
        };
        let table = table.fit(width);
        format!("{}{table}\n{}", fit(self.head()), fit(self.rest()))
    }

    /// The lines above the table: the files, the TPOT definition, the budget counting note.
    fn head(&self) -> String {
        let fmt_name = |f: ResultFormat| match f {
            ResultFormat::Seed => "seed format",
            ResultFormat::Ours => "h2o bench format",
        };
        let mut s = String::new();
        for (side, path, format) in [
            ("A", &self.a_path, self.a_format),
            ("B", &self.b_path, self.b_format),
        ] {
            let _ = writeln!(s, "{side}: {} ({})", path.display(), fmt_name(format));
        }
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
        if self.a_format != self.b_format {
            let _ = writeln!(s, "{SEED_COUNTING_NOTE}");
        }
        s
    }

    /// The lines below the table: unmatched rows, then failed experiments.
    fn rest(&self) -> String {
        let mut s = String::new();
        for (side, rows) in [("A", &self.unmatched_a), ("B", &self.unmatched_b)] {
            if !rows.is_empty() {
                let _ = writeln!(s, "Unmatched in {side}:");
            }
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
        for (side, rows) in [("A", &self.failed_a), ("B", &self.failed_b)] {
            if !rows.is_empty() {
                let _ = writeln!(s, "Failed in {side} (no figures):");
            }
            for r in rows {
                let reason = r.failed.as_deref().unwrap_or("");
                let _ = writeln!(
                    s,
                    "  line {}: {} [{}]: failed: {reason}",
                    r.line, r.experiment, r.spec
                );
            }
        }
        s
    }
}

/// What `compare` says about budgets when it lines the seed's file up with ours.
pub const SEED_COUNTING_NOTE: &str = "Budgets: the seed's budget counts the new token (a step attends B tokens); ours keeps B and attends B + 1. `exact` pairs attend the same tokens a step: the seed's Local (256) is our local:255 (`h2o bench --counting seed` runs the seed's groups that way, its H2O per layer as the seed's). `ours +1 token`: our spec has the seed's numbers and attends one token more a step. `h2o vs h2o-layer`: per-head against the seed's per-layer H2O, same split; `other schedule`: the same policy under another per-layer budget schedule; `other split`: same method and budget, another heavy/recent split.";
