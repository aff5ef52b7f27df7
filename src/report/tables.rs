//! Console tables (comfy-table): main results, per-step breakdown (like the seed's Table 2) and memory.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use super::results::ExperimentResult;

pub(crate) fn fmt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_string(),
    }
}

pub(crate) fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
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

fn mib(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.2}", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "-".to_string())
}

/// The main table: the seed's columns first (Experiment, Budget (Tokens), KV Size (GB),
/// TPOT (ms) = median decode step, Throughput (T/s) = decode tokens / decode time, PPL), then
/// policy spec, TTFT, TPOT p90, the seed's TPOT, KV ratio, peak RSS and status.
pub fn main_table(results: &[ExperimentResult]) -> Table {
    let mut t = new_table(&[
        "Experiment",
        "Budget (Tokens)",
        "KV Size (GB)",
        "TPOT (ms)",
        "Throughput (T/s)",
        "PPL",
        "Policy",
        "TTFT (ms)",
        "TPOT p90 (ms)",
        "Seed TPOT (ms)",
        "KV Ratio",
        "Peak RSS (MiB)",
        "Status",
    ]);
    for r in results {
        let s = r.speed.as_ref();
        let m = r.memory.as_ref();
        t.add_row(vec![
            r.label.clone(),
            r.budget_cell(),
            fmt(m.map(|m| m.kv_gb()), 4),
            fmt(s.map(|s| s.tpot_median_ms), 2),
            fmt(s.map(|s| s.throughput_tps), 2),
            fmt(r.ppl.as_ref().map(|p| p.ppl), 2),
            r.spec.clone(),
            fmt(s.map(|s| s.ttft_ms), 1),
            fmt(s.map(|s| s.tpot_p90_ms), 2),
            fmt(s.map(|s| s.seed_tpot_ms), 2),
            fmt(m.map(|m| m.ratio), 3),
            mib(m.map(|m| m.peak_rss_bytes)),
            r.status.to_string(),
        ]);
    }
    right_align(&mut t, (1..=5).chain(7..=11));
    t
}

/// Per-step breakdown like the seed's Table 2, one row per experiment: mean ms per decode step
/// of model run, score update, eviction and other host work, each with its share of the step.
pub fn breakdown_table(results: &[ExperimentResult]) -> Table {
    let mut t = new_table(&[
        "Experiment",
        "Policy",
        "Model run (ms)",
        "Score update (ms)",
        "Eviction (ms)",
        "Other host (ms)",
        "Step (ms)",
        "Host share",
    ]);
    let cell = |ms: f64, share: f64| {
        if ms.is_finite() && share.is_finite() {
            format!("{ms:.3} ({:.1}%)", share * 100.0)
        } else {
            "-".to_string()
        }
    };
    for r in results {
        let Some(s) = r.speed.as_ref() else {
            t.add_row(vec![
                r.label.clone(),
                r.spec.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        };
        let b = &s.breakdown;
        let host = b.score_update_share + b.eviction_share + b.other_share;
        t.add_row(vec![
            r.label.clone(),
            r.spec.clone(),
            cell(b.model_ms, b.model_share),
            cell(b.score_update_ms, b.score_update_share),
            cell(b.eviction_ms, b.eviction_share),
            cell(b.other_ms, b.other_share),
            fmt(Some(b.step_ms), 3),
            fmt(Some(host * 100.0), 1) + if host.is_finite() { "%" } else { "" },
        ]);
    }
    right_align_from(&mut t, 2);
    t
}

/// Memory table: exact KV bytes held, the full-cache bytes for the same length, their ratio,
/// peak process (and device) memory and how the peak was measured.
pub fn memory_table(results: &[ExperimentResult]) -> Table {
    let mut t = new_table(&[
        "Experiment",
        "Policy",
        "KV held (MiB)",
        "Full cache (MiB)",
        "Ratio",
        "Peak RSS (MiB)",
        "Peak device (MiB)",
        "Peak measured by",
    ]);
    for r in results {
        let m = r.memory.as_ref();
        t.add_row(vec![
            r.label.clone(),
            r.spec.clone(),
            mib(m.map(|m| m.kv_bytes)),
            mib(m.map(|m| m.kv_bytes_full)),
            fmt(m.map(|m| m.ratio), 3),
            mib(m.map(|m| m.peak_rss_bytes)),
            mib(m.and_then(|m| m.peak_device_bytes)),
            m.map(|m| m.method.clone()).unwrap_or_else(|| "-".into()),
        ]);
    }
    right_align_from(&mut t, 2);
    t
}
