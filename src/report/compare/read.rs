//! Reading a results CSV (ours or the seed's format) with bounded reads: its rows, each checked
//! and named by line and column in every error, and what it says about its run ([`RunFacts`]:
//! bench's run document beside it, the CSV's run columns, or the seed's published setup).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::facts::{Aspect, FactSource, RunFacts};
use crate::catalogue::seed::{parse_seed_name, seed_equivalent};
use crate::policy::PolicySpec;
use crate::report::columns::{Col, RunCol, SEED_COLUMNS};
use crate::report::results::RunInfo;
use crate::report::ReportError;

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
    /// What the file says about its run: bench's run document beside it (`<stem>.json`) and the
    /// CSV's run columns, or for the seed's file the seed's published setup.
    pub run: RunFacts,
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

    fn run_index(&self, col: RunCol) -> Option<usize> {
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
/// `ok` nor `failed: <reason>`, a run column (`Text`, `Counting`) with a value it cannot hold or
/// rows that disagree in one. A failed experiment's row is read with its reason and no figures.
/// Lines are the file's lines (a quoted cell may span several), where the record starts. The
/// run facts come with it (see [`ResultFile::run`]); a run document that cannot be used is not
/// an error, the facts say why it was not.
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
    let mut run_cells = RunCells::default();
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
        run_cells.add(path, &header, &text, line)?;
    }
    let run = match header.format {
        ResultFormat::Seed => RunFacts::seed_published(),
        ResultFormat::Ours => run_facts(path, &rows, &run_cells),
    };
    Ok(ResultFile {
        path: path.to_path_buf(),
        format: header.format,
        rows,
        run,
    })
}

/// The run columns' values, one per file (each row of a run has the same), with the line that
/// gave each first.
#[derive(Default)]
struct RunCells {
    seen: Vec<(RunCol, String, u64)>,
}

impl RunCells {
    /// The record's run cells: an empty cell says nothing; a value must be one the column may
    /// hold and the same in every row.
    fn add(
        &mut self,
        path: &Path,
        header: &Header,
        rec: &csv::StringRecord,
        line: u64,
    ) -> Result<(), ReportError> {
        for col in [RunCol::Text, RunCol::Data, RunCol::Counting] {
            let Some(v) = header
                .run_index(col)
                .and_then(|i| rec.get(i))
                .map(str::trim)
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            let bad = |reason: String| ReportError::BadValue {
                path: path.to_path_buf(),
                line,
                column: col.name().to_string(),
                value: v.to_string(),
                reason,
            };
            let allowed: &[&str] = match col {
                RunCol::Text => &["file", "seed"],
                RunCol::Counting => &["ours", "seed"],
                RunCol::Data => &[],
            };
            if !allowed.is_empty() && !allowed.contains(&v) {
                return Err(bad(format!("not `{}`", allowed.join("` or `"))));
            }
            match self.seen.iter().find(|(c, _, _)| *c == col) {
                None => self.seen.push((col, v.to_string(), line)),
                Some((_, first, _)) if first == v => {}
                Some((_, first, at)) => {
                    return Err(bad(format!(
                        "not line {at}'s {first:?}; the rows of a results file come from one run"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The values as run facts.
    fn facts(&self) -> Vec<(Aspect, String)> {
        self.seen
            .iter()
            .map(|(col, v, _)| match col {
                RunCol::Text => (Aspect::Text, v.clone()),
                RunCol::Counting => (Aspect::Counting, v.clone()),
                RunCol::Data => (
                    Aspect::DataFile,
                    Path::new(v)
                        .file_name()
                        .map_or_else(|| v.clone(), |n| n.to_string_lossy().into_owned()),
                ),
            })
            .collect()
    }
}

/// The most bytes of a run document read: its per-token NLLs make it far larger than the CSV.
pub const MAX_RUN_DOCUMENT_BYTES: u64 = 256 << 20;

/// Our file's run facts: the run document beside it (`<stem>.json`, when it describes these
/// rows and agrees with the CSV's run columns), completed by those columns. A document that
/// cannot be used is said why, never an error: the CSV alone is still compared.
fn run_facts(csv: &Path, rows: &[ResultRow], cells: &RunCells) -> RunFacts {
    let doc = csv.with_extension("json");
    let columns = cells.facts();
    let mut facts = match read_run_document(&doc, rows) {
        Ok(run) => RunFacts::of_run(&run, FactSource::RunDocument { path: doc.clone() }),
        Err(why) => RunFacts::unknown(FactSource::CsvOnly { why }),
    };
    let disagree: Vec<&str> = columns
        .iter()
        .filter(|(a, v)| facts.get(*a).is_some_and(|d| d != v))
        .map(|(a, _)| a.name())
        .collect();
    if !disagree.is_empty() {
        let why = format!(
            "run document {} not used: it disagrees with the CSV's {}",
            doc.display(),
            disagree.join(", ")
        );
        facts = RunFacts::unknown(FactSource::CsvOnly { why });
    }
    for (aspect, value) in columns {
        facts.values.entry(aspect).or_insert(value);
    }
    facts
}

/// The run of the document at `doc`, read no further than [`MAX_RUN_DOCUMENT_BYTES`] (the
/// experiments' figures are skipped, not kept), when it is a regular file whose experiments
/// are the CSV's rows (the CSV may hold one row more: it is written first); else why not.
fn read_run_document(doc: &Path, rows: &[ResultRow]) -> Result<RunInfo, String> {
    use std::io::Read;

    #[derive(Deserialize)]
    struct Document {
        run: RunInfo,
        experiments: Vec<Label>,
    }
    #[derive(Deserialize)]
    struct Label {
        label: String,
    }

    let shown = doc.display();
    let not_read = |e: &dyn std::fmt::Display| format!("run document {shown} not read: {e}");
    let meta = match std::fs::metadata(doc) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no run document {shown} beside it"))
        }
        Err(e) => return Err(not_read(&e)),
    };
    if !meta.is_file() {
        return Err(not_read(&"not a regular file"));
    }
    let file = std::fs::File::open(doc).map_err(|e| not_read(&e))?;
    let reader = std::io::BufReader::new(file.take(MAX_RUN_DOCUMENT_BYTES));
    let d: Document = serde_json::from_reader(reader).map_err(|e| not_read(&e))?;
    let n = d.experiments.len().min(rows.len());
    let same = d.experiments.len() <= rows.len()
        && rows.len() - d.experiments.len() <= 1
        && d.experiments[..n]
            .iter()
            .zip(rows)
            .all(|(e, r)| e.label.trim() == r.experiment);
    if !same {
        return Err(format!(
            "run document {shown} not used: its experiments are not the CSV's rows"
        ));
    }
    Ok(d.run)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run document as bench writes it, by hand: tiny-neox on 2 CPU threads, the file's text,
    /// seed counting, two experiments.
    const DOC: &str = r#"{
  "run": {
    "tool_version": "0.1.0",
    "model": {"name": "tiny-neox", "dir": "tests/fixtures/tiny", "dtype": "float32",
              "layers": 2, "heads": 4, "head_dim": 16, "max_positions": 512},
    "runtime": {"ort_version": "1.23.0", "execution_provider": "cpu", "intra_op_threads": 2,
                "inter_op_threads": 1},
    "settings": {"ppl_tokens": 64, "prompt": 16, "gen": 8, "warmup": 0,
                 "data_path": "/data/wiki.test.raw", "text": "file", "counting": "seed",
                 "batch": 1, "experiments": []},
    "machine": {"cpu_brand": "Test CPU 9000", "cpu_arch": "x86_64", "physical_cores": 1,
                "logical_cores": 2, "total_memory_bytes": 1, "os": "Linux", "kernel": null,
                "hostname": null},
    "git_commit": null,
    "start_time": "2026-11-27T03:15:00+00:00"
  },
  "experiments": [
    {"label": "Baseline, seed counting", "spec": "full", "ppl": null, "speed": null,
     "memory": null, "status": {"state": "ok"}},
    {"label": "local 8, seed counting", "spec": "local:7", "ppl": null, "speed": null,
     "memory": null, "status": {"state": "ok"}}
  ],
  "complete": true
}
"#;

    const CSV: &str = "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL,Policy,Text,Data,Counting
\"Baseline, seed counting\",Full,0.5,2,500,9.5,full,file,/data/wiki.test.raw,seed
\"local 8, seed counting\",7,0.25,1,1000,12,local:7,file,/data/wiki.test.raw,seed
";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn values(f: &RunFacts) -> Vec<(Aspect, &str)> {
        f.values.iter().map(|(a, v)| (*a, v.as_str())).collect()
    }

    #[test]
    fn the_run_document_beside_the_csv_gives_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        let csv = write(tmp.path(), "run.csv", CSV);
        let doc = write(tmp.path(), "run.json", DOC);
        let f = load_results_csv(&csv).unwrap();
        let labels: Vec<&str> = f.rows.iter().map(|r| r.experiment.as_str()).collect();
        assert_eq!(
            labels,
            ["Baseline, seed counting", "local 8, seed counting"]
        );
        assert_eq!(f.run.source, FactSource::RunDocument { path: doc });
        assert_eq!(
            values(&f.run),
            [
                (Aspect::Model, "tiny-neox"),
                (Aspect::Size, "2 layers x 4 heads x 16"),
                (Aspect::Dtype, "float32"),
                (Aspect::Device, "CPU"),
                (Aspect::Processor, "Test CPU 9000"),
                (Aspect::Threads, "2"),
                (Aspect::Text, "file"),
                (Aspect::DataFile, "wiki.test.raw"),
                (Aspect::Counting, "seed"),
                (Aspect::PplTokens, "64"),
                (Aspect::Prompt, "16"),
                (Aspect::Gen, "8"),
                (Aspect::Batch, "1"),
            ]
        );
    }

    #[test]
    fn without_a_usable_document_the_csvs_run_columns_stay_and_say_why() {
        let tmp = tempfile::tempdir().unwrap();
        let csv = write(tmp.path(), "run.csv", CSV);
        let only_columns = [
            (Aspect::Text, "file"),
            (Aspect::DataFile, "wiki.test.raw"),
            (Aspect::Counting, "seed"),
        ];
        let why = |f: &ResultFile| match &f.run.source {
            FactSource::CsvOnly { why } => why.clone(),
            other => panic!("{other:?}"),
        };
        let doc = tmp.path().join("run.json");
        let f = load_results_csv(&csv).unwrap();
        assert_eq!(values(&f.run), only_columns);
        assert_eq!(
            why(&f),
            format!("no run document {} beside it", doc.display())
        );
        // another run's document (other experiments)
        write(tmp.path(), "run.json", &DOC.replace("local 8,", "local 9,"));
        let f = load_results_csv(&csv).unwrap();
        assert_eq!(values(&f.run), only_columns);
        assert_eq!(
            why(&f),
            format!(
                "run document {} not used: its experiments are not the CSV's rows",
                doc.display()
            )
        );
        // a document whose text disagrees with the CSV's Text column
        write(
            tmp.path(),
            "run.json",
            &DOC.replace("\"text\": \"file\"", "\"text\": \"seed\""),
        );
        let f = load_results_csv(&csv).unwrap();
        assert_eq!(values(&f.run), only_columns);
        assert_eq!(
            why(&f),
            format!(
                "run document {} not used: it disagrees with the CSV's text",
                doc.display()
            )
        );
        // not JSON, and not a file
        write(tmp.path(), "run.json", "{\"run\": ");
        assert!(why(&load_results_csv(&csv).unwrap()).starts_with(&format!(
            "run document {} not read: EOF while parsing",
            doc.display()
        )));
        std::fs::remove_file(&doc).unwrap();
        std::fs::create_dir(&doc).unwrap();
        assert_eq!(
            why(&load_results_csv(&csv).unwrap()),
            format!(
                "run document {} not read: not a regular file",
                doc.display()
            )
        );
        // a file of the CSV's last row only (the JSON is written after it): still this run
        std::fs::remove_dir(&doc).unwrap();
        let one = DOC.replace(
            ",\n    {\"label\": \"local 8, seed counting\", \"spec\": \"local:7\", \"ppl\": null, \"speed\": null,\n     \"memory\": null, \"status\": {\"state\": \"ok\"}}",
            "",
        );
        assert_ne!(one, DOC);
        write(tmp.path(), "run.json", &one);
        let f = load_results_csv(&csv).unwrap();
        assert!(matches!(f.run.source, FactSource::RunDocument { .. }));
    }

    #[test]
    fn run_columns_hold_one_run_and_known_values() {
        let tmp = tempfile::tempdir().unwrap();
        let mixed = write(
            tmp.path(),
            "mixed.csv",
            &CSV.replacen(",file,/data", ",seed,/data", 1),
        );
        let e = load_results_csv(&mixed).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: line 3, column \"Text\": \"file\" is not line 2's \"seed\"; the rows of a results file come from one run",
                mixed.display()
            )
        );
        let odd = write(tmp.path(), "odd.csv", &CSV.replace(",seed\n", ",theirs\n"));
        let e = load_results_csv(&odd).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: line 2, column \"Counting\": \"theirs\" is not `ours` or `seed`",
                odd.display()
            )
        );
        // empty run cells say nothing
        let empty = write(
            tmp.path(),
            "empty.csv",
            &CSV.replace(",file,/data/wiki.test.raw,seed", ",,,"),
        );
        assert!(load_results_csv(&empty).unwrap().run.values.is_empty());
    }

    #[test]
    fn the_seeds_file_gets_the_seeds_published_setup() {
        let tmp = tempfile::tempdir().unwrap();
        let seed = write(
            tmp.path(),
            "pytorch-results.csv",
            "Experiment,Budget (Tokens),KV Size (GB),TPOT (ms),Throughput (T/s),PPL\nBaseline,Full,1.4,90,11,8.2\n",
        );
        write(tmp.path(), "pytorch-results.json", DOC);
        let f = load_results_csv(&seed).unwrap();
        assert_eq!(f.run, RunFacts::seed_published());
    }
}
