//! Rendering a comparison: the head (the files, what differs between their runs, figures left
//! out, the TPOT definition, the budget counting), the side-by-side table, then unmatched and
//! failed rows.

use std::fmt::Write as _;

use super::facts::{FactSource, Figure, RunFacts};
use super::pair::{Comparison, TpotDefinition};
use super::read::ResultFormat;
use crate::policy::PolicySpec;
use crate::report::tables::{fmt, new_table, right_align_from};
use crate::report::text_table::{Importance, TextTable};
use crate::report::wrap::wrap_words;

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
    Figure::PplDiff.header(),
    Figure::Speedup.header(),
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
    /// the PPL difference, the speed-up (each unless [`Comparison::withheld`] leaves it out) and
    /// both KV sizes.
    pub fn table(&self, wide: bool) -> TextTable {
        let n = if wide {
            COMPARE_COLUMNS.len()
        } else {
            COMPACT_COLUMNS
        };
        let left_out = |i: usize| {
            [Figure::PplDiff, Figure::Speedup]
                .into_iter()
                .any(|f| self.withholds(f) && COMPARE_COLUMNS[i] == f.header())
        };
        let shown: Vec<usize> = (0..n).filter(|&i| !left_out(i)).collect();
        let pick =
            |cells: &[String]| -> Vec<String> { shown.iter().map(|&i| cells[i].clone()).collect() };
        let headers: Vec<String> = COMPARE_COLUMNS.iter().map(|h| h.to_string()).collect();
        let mut t = new_table(&pick(&headers));
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
            t.add_row(pick(&row));
        }
        right_align_from(&mut t, 4);
        t.set_importance(shown.iter().map(|&i| COMPARE_IMPORTANCE[i]))
            .every_column(wide);
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

    /// The lines above the table: the files and where their run facts come from, what differs
    /// between the runs (one line each, both values), what neither side records, the figures
    /// left out and why, the TPOT definition, the budget counting note.
    fn head(&self) -> String {
        let fmt_name = |f: ResultFormat| match f {
            ResultFormat::Seed => "seed format",
            ResultFormat::Ours => "h2o bench format",
        };
        let mut s = String::new();
        for (side, path, format, run) in [
            ("A", &self.a_path, self.a_format, &self.a_run),
            ("B", &self.b_path, self.b_format, &self.b_run),
        ] {
            let _ = writeln!(
                s,
                "{side}: {} ({}; {})",
                path.display(),
                fmt_name(format),
                source_text(run)
            );
        }
        for d in &self.differences {
            let _ = writeln!(
                s,
                "{} differs: A {}, B {}",
                capitalised(d.aspect.name()),
                d.a,
                d.b
            );
        }
        for (side, run) in [("A", &self.a_run), ("B", &self.b_run)] {
            let unknown: Vec<&str> = run.unknown_aspects().iter().map(|a| a.name()).collect();
            if !unknown.is_empty() {
                let _ = writeln!(
                    s,
                    "Unknown for {side} (not counted as differences): {}",
                    unknown.join(", ")
                );
            }
        }
        for w in &self.withheld {
            let _ = writeln!(s, "{}", w.line());
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

/// Where a file's run facts come from, as the head says it.
fn source_text(run: &RunFacts) -> String {
    match &run.source {
        FactSource::RunDocument { path } => format!("run document {}", path.display()),
        FactSource::SeedPublished => {
            "the file records no run; the seed's published setup".to_string()
        }
        FactSource::CsvOnly { why } => why.clone(),
    }
}

/// `data file` -> `Data file`.
fn capitalised(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What `compare` says about budgets when it lines the seed's file up with ours.
pub const SEED_COUNTING_NOTE: &str = "Budgets: the seed's budget counts the new token (a step attends B tokens); ours keeps B and attends B + 1. `exact` pairs attend the same tokens a step: the seed's Local (256) is our local:255 (`h2o bench --counting seed` runs the seed's groups that way, its H2O per layer as the seed's). `ours +1 token`: our spec has the seed's numbers and attends one token more a step. `h2o vs h2o-layer`: per-head against the seed's per-layer H2O, same split; `other schedule`: the same policy under another per-layer budget schedule; `other split`: same method and budget, another heavy/recent split.";

#[cfg(test)]
mod tests {
    use super::*;

    use crate::report::compare::facts::Aspect;
    use crate::report::compare::pair::compare_files;
    use crate::report::compare::pair::tests::{file, row};

    fn header_cells(t: &TextTable) -> Vec<String> {
        t.header().to_vec()
    }

    #[test]
    fn the_head_names_each_difference_the_unknowns_and_what_is_left_out() {
        let a = file(
            "runs/a.csv",
            vec![row(2, "full", 8.0, 40.0)],
            &[
                (Aspect::Model, "tiny-neox"),
                (Aspect::Size, "2 layers x 4 heads x 16"),
                (Aspect::Device, "CPU"),
                (Aspect::DataFile, "wiki.test.raw"),
                (Aspect::Counting, "ours"),
                (Aspect::Text, "file"),
                (Aspect::Dtype, "float32"),
                (Aspect::Processor, "Test CPU"),
                (Aspect::Threads, "2"),
                (Aspect::Subnormals, "flush"),
                (Aspect::PplTokens, "64"),
                (Aspect::Prompt, "16"),
                (Aspect::Gen, "8"),
                (Aspect::Batch, "1"),
            ],
        );
        let mut b = file(
            "runs/b.csv",
            vec![row(2, "full", 9.0, 20.0)],
            &[
                (Aspect::Model, "pythia-2.8b"),
                (Aspect::Size, "2 layers x 4 heads x 16"),
                (Aspect::Device, "GPU (CUDA)"),
                (Aspect::Counting, "seed"),
                (Aspect::Text, "seed"),
            ],
        );
        b.run.source = FactSource::CsvOnly {
            why: "no run document runs/b.json beside it".into(),
        };
        let c = compare_files(a, b);
        assert_eq!(
            c.head(),
            "A: runs/a.csv (h2o bench format; run document runs/a.json)
B: runs/b.csv (h2o bench format; no run document runs/b.json beside it)
Model differs: A tiny-neox, B pythia-2.8b
Device differs: A CPU, B GPU (CUDA)
Text differs: A file, B seed
Counting differs: A ours, B seed
Unknown for B (not counted as differences): dtype, processor, threads, subnormals, data file, PPL tokens, prompt tokens, generated tokens, batch
No Speed-up (A/B): A and B differ in model, device; a TPOT ratio between them is not a policy's speed-up.
No ΔPPL (B−A): A and B differ in model, text; a PPL difference between them is not a policy's cost.
TPOT: median decode step, prefill excluded (both files ours)
"
        );
        // the left-out figures are not columns of the wide table; the rest are
        assert_eq!(
            header_cells(&c.table(true)),
            [
                "A: Experiment",
                "B: Experiment",
                "Budget (A / B)",
                "Match",
                "PPL A",
                "PPL B",
                "TPOT A (ms)",
                "TPOT B (ms)",
                "KV A (GB)",
                "KV B (GB)"
            ]
        );
        assert_eq!(header_cells(&c.table(false)).len(), COMPACT_COLUMNS);
    }

    #[test]
    fn the_same_run_shows_every_column_and_no_difference_lines() {
        let facts = [(Aspect::Model, "tiny-neox"), (Aspect::Device, "CPU")];
        let a = file("a.csv", vec![row(2, "local:8", 12.0, 20.0)], &facts);
        let b = file("b.csv", vec![row(2, "local:8", 13.5, 10.0)], &facts);
        let c = compare_files(a, b);
        let t = c.table(true);
        assert_eq!(header_cells(&t), COMPARE_COLUMNS);
        let cells: Vec<String> = t.rows()[0].clone();
        assert_eq!(
            cells,
            [
                "local 8 [local:8]",
                "local 8 [local:8]",
                "8",
                "exact",
                "12.00",
                "13.50",
                "20.00",
                "10.00",
                "1.50",
                "2.00",
                "0.5000",
                "0.5000"
            ]
        );
        let head = c.head();
        assert!(!head.contains("differs") && !head.contains("No "), "{head}");
    }
}
