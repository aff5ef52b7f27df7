//! Loading result CSVs (ours or the seed's format) and lining two of them up by policy family and budget.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use comfy_table::Table;
use serde::{Deserialize, Serialize};

use super::experiments::{parse_spec, PolicyKey};
use super::results::SEED_COLUMNS;
use super::tables::{fmt, new_table, right_align_from};
use super::ReportError;

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
    /// The policy spec (ours), or the spec the seed's name maps to (`h2o-layer:H+R`, ...).
    pub spec: String,
    pub key: PolicyKey,
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
    /// Same method (h2o and h2o-layer count as one) and budget, different heavy/recent split.
    SameBudget,
}

impl std::fmt::Display for MatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatchKind::Exact => "exact",
            MatchKind::H2oVariant => "h2o vs h2o-layer, same split",
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

/// Maps one of the seed's experiment names to a policy key and spec.
fn seed_key(name: &str, budget: Option<usize>) -> (PolicyKey, String) {
    let lower = name.trim().to_ascii_lowercase();
    let inner = lower
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(x, _)| x.trim().to_string());
    let key = |family: &str, budget, heavy, recent| PolicyKey {
        family: family.to_string(),
        budget,
        heavy,
        recent,
    };
    if lower.starts_with("baseline") || lower.starts_with("full") {
        return (key("full", None, None, None), "full".to_string());
    }
    if lower.starts_with("local") {
        let b = inner
            .as_deref()
            .and_then(|x| x.trim_end_matches('r').trim().parse().ok())
            .or(budget);
        let spec = b
            .map(|b| format!("local:{b}"))
            .unwrap_or_else(|| "local".into());
        return (key("local", b, None, b), spec);
    }
    if lower.starts_with("h2o") {
        // "(R+H)" in the seed's CSV; "(64r + 192h)" in its report.
        let split = inner.as_deref().and_then(|x| {
            let (l, r) = x.split_once('+')?;
            let (l, r) = (l.trim(), r.trim());
            let n = |s: &str| s.trim_end_matches(['r', 'h']).trim().parse::<usize>().ok();
            let (ln, rn) = (n(l)?, n(r)?);
            if l.ends_with('h') || r.ends_with('r') {
                Some((ln, rn)) // heavy + recent
            } else {
                Some((rn, ln)) // recent + heavy (the seed's order)
            }
        });
        if let Some((h, r)) = split {
            return (
                key("h2o-layer", h.checked_add(r), Some(h), Some(r)),
                format!("h2o-layer:{h}+{r}"),
            );
        }
        return (key("h2o-layer", budget, None, None), "h2o-layer".into());
    }
    (key(&lower, budget, None, None), lower.clone())
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

/// Reads a results CSV, ours or the seed's. Errors: unreadable file, missing seed columns
/// (naming them), a cell that should be a number and is not.
pub fn load_results_csv(path: &Path) -> Result<ResultFile, ReportError> {
    let read_err = |e: csv::Error| ReportError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(read_err)?;
    let headers: Vec<String> = rdr
        .headers()
        .map_err(read_err)?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let missing: Vec<String> = SEED_COLUMNS
        .iter()
        .filter(|c| col(c).is_none())
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ReportError::MissingColumns {
            path: path.to_path_buf(),
            missing,
            found: headers.clone(),
        });
    }
    let policy_col = col("Policy");
    let format = if policy_col.is_some() {
        ResultFormat::Ours
    } else {
        ResultFormat::Seed
    };
    let seed_tpot_col = col("Seed TPOT (ms)");
    let family_col = col("Family");
    let idx = |n: usize| col(SEED_COLUMNS[n]).unwrap_or(0);
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(read_err)?;
        // Record number, not the csv crate's line counter (which miscounts CRLF files such as
        // the seed's): the header is line 1, each record one line.
        let line = rec.position().map(|p| p.record() + 1).unwrap_or(0);
        let cell = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or("");
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let experiment = cell(Some(idx(0))).trim().to_string();
        let budget_text = cell(Some(idx(1))).trim();
        let budget = match budget_text.to_ascii_lowercase().as_str() {
            "" | "-" | "full" | "all" => None,
            t => Some(t.parse::<usize>().map_err(|_| ReportError::BadValue {
                path: path.to_path_buf(),
                line,
                column: SEED_COLUMNS[1].to_string(),
                value: budget_text.to_string(),
            })?),
        };
        let num = |i: Option<usize>, name: &str| parse_num(path, line, name, cell(i));
        let tpot_ms = num(Some(idx(3)), SEED_COLUMNS[3])?;
        let (key, spec, seed_tpot_ms) = match format {
            ResultFormat::Seed => {
                let (k, s) = seed_key(&experiment, budget);
                (k, s, tpot_ms)
            }
            ResultFormat::Ours => {
                let spec = cell(policy_col).trim().to_string();
                let key = parse_spec(&spec).unwrap_or_else(|| PolicyKey {
                    family: cell(family_col).trim().to_string(),
                    budget,
                    heavy: None,
                    recent: None,
                });
                (key, spec, num(seed_tpot_col, "Seed TPOT (ms)")?)
            }
        };
        rows.push(ResultRow {
            line,
            experiment,
            spec,
            key,
            kv_gb: num(Some(idx(2)), SEED_COLUMNS[2])?,
            tpot_ms,
            seed_tpot_ms,
            throughput_tps: num(Some(idx(4)), SEED_COLUMNS[4])?,
            ppl: num(Some(idx(5)), SEED_COLUMNS[5])?,
        });
    }
    Ok(ResultFile {
        path: path.to_path_buf(),
        format,
        rows,
    })
}

fn matches(a: &PolicyKey, b: &PolicyKey, kind: MatchKind) -> bool {
    match kind {
        MatchKind::Exact => a == b,
        MatchKind::H2oVariant => {
            a.family != b.family
                && a.group() == "h2o"
                && b.group() == "h2o"
                && a.heavy.is_some()
                && (a.heavy, a.recent) == (b.heavy, b.recent)
        }
        MatchKind::SameBudget => a.group() == b.group() && a.budget == b.budget,
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
        MatchKind::SameBudget,
    ] {
        for (i, ra) in a.rows.iter().enumerate() {
            if used_a[i] {
                continue;
            }
            if let Some(j) =
                (0..b.rows.len()).find(|&j| !used_b[j] && matches(&ra.key, &b.rows[j].key, kind))
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
/// the same heavy+recent split, then the same method and budget with another split. Each row is
/// used once; rows left over are listed in `unmatched_a` / `unmatched_b`.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison, ReportError> {
    Ok(compare_files(load_results_csv(a)?, load_results_csv(b)?))
}

fn budget_text(k: &PolicyKey) -> String {
    k.budget
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
                budget_text(&p.b.key),
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
                    budget_text(&r.key),
                    fmt(r.ppl, 2),
                    fmt(r.tpot_ms, 2),
                    fmt(r.kv_gb, 4)
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_names() {
        let (k, s) = seed_key("H2O (64+192)", Some(256));
        assert_eq!(s, "h2o-layer:192+64");
        assert_eq!(
            (k.heavy, k.recent, k.budget),
            (Some(192), Some(64), Some(256))
        );
        let (_, s) = seed_key("H2O (64r + 192h)", Some(256));
        assert_eq!(s, "h2o-layer:192+64");
        let (_, s) = seed_key("H2O (192h+64r)", None);
        assert_eq!(s, "h2o-layer:192+64");
        assert_eq!(seed_key("Baseline", None).1, "full");
        assert_eq!(seed_key("Local (256)", Some(256)).0.budget, Some(256));
        assert_eq!(seed_key("Local Attention", Some(128)).1, "local:128");
        assert_eq!(seed_key("Mystery", Some(5)).0.family, "mystery");
    }
}
