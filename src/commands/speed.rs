//! `h2o speed`: prefill + decode timings for one or more policies, as a sweep over context lengths or
//! over batch sizes (N sequences decoded together), with the largest batch under a K/V memory cap
//! computed and measured per policy. Each point runs in a child process (`h2o bench-one`, as bench's
//! experiments) so its peak RSS is its own, unless `--in-process`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use h2o_engine::cache::KvLayout;
use h2o_engine::eval::bandwidth::{
    bytes_read_per_token, floor_ms, measure_read_bandwidth, weight_bytes,
};
use h2o_engine::eval::data::TextMode;
use h2o_engine::eval::throughput::{
    best_under_cap, format_bytes, largest_batch, parse_bytes, CapFit, RunShape, ThroughputPoint,
};
use h2o_engine::experiment::{Checked, Experiment, Job, PeakMemory, Plan, Setup, SpeedPlan};
use h2o_engine::manifest::Manifest;
use h2o_engine::output::Target as Output;
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{
    finite, flag_unsteady, render_sweep, render_throughput, results_table, terminal_width,
    BatchPoint, BestUnderCapJson, CapBar, CapFitJson, Col, ExperimentResult, Importance, KvCapJson,
    Shown, SpeedDocument, SpeedPoint, SpeedRunJson, SweepPoint, TextTable, CAP_MEASURE,
    UNSTEADY_MIN_PCT, UNSTEADY_TIMES,
};
use h2o_engine::runner::Place;

use super::numbers;
use super::{
    check_outputs, data_flag, project_root, resolve_data, runner_error, write_to, JobBars,
    ModelArgs,
};

#[derive(Args, Debug)]
pub struct SpeedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file for the prompt tokens; default: $H2O_DATA.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which text of the file the prompts are taken from: `file` (as it is) or `seed` (the seed's rows).
    #[arg(long, value_enum, default_value_t = TextMode::File)]
    pub text: TextMode,
    /// Comma-separated policy specs.
    #[arg(long, value_delimiter = ',', default_value = "full")]
    pub exp: Vec<PolicySpec>,
    /// Prompt tokens per row (not with --contexts, whose lengths are the prompts).
    #[arg(long, default_value_t = 512, value_parser = numbers::count, allow_hyphen_values = true, conflicts_with = "contexts")]
    pub prompt: usize,
    /// Generated tokens per row (the prefill gives the first). Every row generates this many, so
    /// the rows of a batch finish together.
    #[arg(long, default_value_t = 1024, value_parser = numbers::count, allow_hyphen_values = true)]
    pub gen: usize,
    /// Context lengths to sweep: for each, prefill that many tokens and time --gen tokens after it.
    #[arg(long, value_delimiter = ',', value_parser = numbers::count, allow_hyphen_values = true)]
    pub contexts: Vec<usize>,
    /// Batch sizes to sweep: N sequences decoded together, row r prompted with text tokens
    /// [r*P, (r+1)*P), each row its own eviction.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = numbers::count, allow_hyphen_values = true)]
    pub batch: Vec<usize>,
    /// Cap on the allocated K/V (e.g. 4GiB, 512MiB, or bytes): per policy, the largest batch whose
    /// K/V fits is computed from the store's growth rule (nothing allocated) and measured too.
    #[arg(long, value_parser = parse_cap, allow_hyphen_values = true)]
    pub kv_cap: Option<u64>,
    /// Feed the prompt in graph runs of at most N tokens per row (bounds the prefill's logits
    /// [batch, N, vocab] at large batch; default: the whole prompt in one run).
    #[arg(long, value_parser = numbers::count, allow_hyphen_values = true)]
    pub prefill_chunk: Option<usize>,
    #[arg(long, default_value_t = 1, value_parser = numbers::count, allow_hyphen_values = true)]
    pub warmup: usize,
    /// Measure every point N times, the points alternating (round 1 of every point, then round
    /// 2, ...); each point reports its median round, and how far the rounds spread.
    #[arg(long, default_value_t = 1, value_parser = rounds, allow_hyphen_values = true)]
    pub rounds: usize,
    /// Write all figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a PNG here: throughput against batch (with the best under --kv-cap) for a batch
    /// sweep, else TPOT and KV bytes against context length.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Skip the memory-bandwidth measurement (the floor columns show `-`).
    #[arg(long)]
    pub no_floor: bool,
    /// Show every column (TPOT p90, host share and the full cache's KV as well).
    #[arg(long)]
    pub wide: bool,
    /// Measure every point in this process (peak RSS is then cumulative) instead of a child each.
    #[arg(long)]
    pub in_process: bool,
}

fn rounds(s: &str) -> Result<usize, String> {
    match numbers::count(s)? {
        0 => Err("0 rounds measure nothing; give 1 or more".into()),
        n => Ok(n),
    }
}

fn parse_cap(s: &str) -> Result<u64, String> {
    match parse_bytes(s)? {
        0 => Err("a K/V cap of 0 bytes holds nothing; give e.g. 4GiB".into()),
        n => Ok(n),
    }
}

/// The table (`--wide`): policy, context, batch, the speed columns (TPOT with its spread), K/V
/// bytes, peak RSS and the bandwidth floor; then, when measured, the rounds' spread, and whether
/// each point was steady when one was not.
const TABLE: [Shown; 15] = [
    Shown::Col(Col::Policy),
    Shown::Given("Context", Importance::Essential),
    Shown::Given("Batch", Importance::Essential),
    Shown::Col(Col::Ttft),
    Shown::Col(Col::Tpot),
    Shown::Col(Col::TpotSpread),
    Shown::Col(Col::TpotP90),
    Shown::Col(Col::Throughput),
    Shown::Col(Col::HostShare),
    Shown::Col(Col::KvBytes),
    Shown::Given("KV alloc (MiB)", Importance::Normal),
    Shown::Col(Col::FullKvBytes),
    Shown::Col(Col::PeakRss),
    Shown::Given("Floor (ms)", Importance::Minor),
    Shown::Given("TPOT / floor", Importance::Normal),
];

/// The compact table: TABLE without TPOT p90, host share and the full cache's KV.
fn compact(c: &Shown) -> bool {
    !matches!(
        c,
        Shown::Col(Col::TpotP90 | Col::HostShare | Col::FullKvBytes)
    )
}

/// Per-step breakdown of the decode steps, one row per point.
const BREAKDOWN: [Shown; 9] = [
    Shown::Col(Col::Policy),
    Shown::Given("Context", Importance::Essential),
    Shown::Given("Batch", Importance::Essential),
    Shown::WithShare(Col::ModelMs, Col::ModelShare),
    Shown::WithShare(Col::ScoreUpdateMs, Col::ScoreUpdateShare),
    Shown::WithShare(Col::EvictionMs, Col::EvictionShare),
    Shown::WithShare(Col::OtherHostMs, Col::OtherHostShare),
    Shown::Col(Col::TpotMean),
    Shown::Col(Col::HostShare),
];

fn fixed(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".to_string()
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1u64 << 20) as f64)
}

/// Measured read bandwidth (bytes/s), or NaN with `--no-floor`; `when` says which of the run's
/// two measurements (before and after the points: the floor uses the higher, since this VM's
/// bandwidth moves from minute to minute) this is.
fn bandwidth(a: &SpeedArgs, threads: usize, weights: u64, when: &str) -> f64 {
    if a.no_floor {
        return f64::NAN;
    }
    let bw = measure_read_bandwidth(1 << 30, threads, 3);
    errln!(
        "memory read bandwidth {when} {:.1} GB/s (best of {threads} and {} threads); weights read per token {:.1} MiB (input embedding: one row): floor {:.2} ms/token without K/V",
        bw / 1e9,
        2 * threads,
        weights as f64 / (1u64 << 20) as f64,
        floor_ms(weights, 0, bw)
    );
    bw
}

/// What one point measures: a policy at one context length and batch.
#[derive(Debug, Clone, Copy)]
struct Target {
    spec: PolicySpec,
    context: usize,
    batch: usize,
    /// The largest batch whose K/V fits under the cap.
    at_cap: bool,
}

impl Target {
    fn plan(&self, a: &SpeedArgs) -> Plan {
        let speed = SpeedPlan {
            batch: self.batch,
            prefill_chunk: a.prefill_chunk,
            ..SpeedPlan::new(self.context, a.gen, a.warmup)
        };
        Plan {
            ppl: None,
            speed: Some(speed),
        }
    }

    fn name(&self) -> String {
        format!(
            "{} at context {} batch {}",
            self.spec, self.context, self.batch
        )
    }
}

/// A point's throughput, as the cap's arithmetic takes it.
fn throughput(p: &SpeedPoint) -> ThroughputPoint {
    ThroughputPoint {
        spec: p.spec(),
        batch: p.batch,
        kv_allocated_bytes: p.kv_allocated(),
        tokens_per_s: p.speed().throughput_tps,
    }
}

/// Every policy at every context and batch, plus each policy's batch under the cap (in order).
fn targets(a: &SpeedArgs, contexts: &[usize], fits: &[CapFit]) -> Vec<Target> {
    let mut out = Vec::new();
    for spec in &a.exp {
        let cap = fits.iter().find(|f| f.spec == *spec).map(|f| f.batch);
        for &context in contexts {
            let mut batches = a.batch.clone();
            batches.extend(cap);
            batches.sort_unstable();
            batches.dedup();
            out.extend(batches.into_iter().map(|batch| Target {
                spec: *spec,
                context,
                batch,
                at_cap: Some(batch) == cap,
            }));
        }
    }
    out
}

/// Measures every target `a.rounds` times, where `place` says: round 1 of every target in order,
/// then round 2, ...; each target's point is its median round ([`SpeedPoint::median_round`]).
fn sweep(
    place: &mut Place<'_>,
    setup: &Setup,
    a: &SpeedArgs,
    targets: &[Target],
) -> Result<Vec<SpeedPoint>> {
    let label = |job: &Job| {
        let batch = job.plan.speed.map_or(1, |s| s.batch);
        format!("{} x{batch}", job.experiment.spec)
    };
    let mut watch = JobBars::new(label);
    let mut rounds: Vec<Vec<SpeedPoint>> = vec![Vec::new(); targets.len()];
    for round in 1..=a.rounds {
        for (i, t) in targets.iter().enumerate() {
            if a.rounds > 1 {
                errln!(
                    "[{}/{}] {} (round {round} of {})",
                    i + 1,
                    targets.len(),
                    t.name(),
                    a.rounds
                );
            } else {
                errln!("[{}/{}] {}", i + 1, targets.len(), t.name());
            }
            let job = Job {
                setup: setup.clone(),
                plan: t.plan(a),
                experiment: Experiment::of(t.spec),
            };
            let result = place
                .measure(&job, &mut watch)
                .map_err(runner_error)
                .with_context(|| format!("measuring {} failed", t.name()))?;
            let Some(point) = SpeedPoint::new(t.context, t.batch, t.at_cap, result) else {
                bail!("the speed run of {} gave no figures", t.name());
            };
            rounds[i].push(point);
        }
    }
    Ok(rounds
        .into_iter()
        .filter_map(SpeedPoint::median_round)
        .collect())
}

fn table(points: &[SpeedPoint], wide: bool) -> TextTable {
    let rounds = points.iter().any(|p| p.rounds_tpot_ms.len() > 1);
    let unsteady = points.iter().any(|p| p.unsteady.is_some());
    let rows: Vec<(&ExperimentResult, Vec<String>)> = points
        .iter()
        .map(|p| {
            let tpot = p.speed().tpot_median_ms;
            let mut given = vec![
                p.context.to_string(),
                format!("{}{}", p.batch, if p.at_cap { " (cap)" } else { "" }),
                mib(p.kv_allocated()),
                fixed(p.floor_ms, 2),
                fixed(tpot / p.floor_ms, 2),
            ];
            if rounds {
                given.push(fixed(p.round_spread_pct(), 1));
            }
            if unsteady {
                given.push(match p.unsteady {
                    Some(x) if x.is_finite() => format!("NO: {x:.0}x"),
                    Some(_) => "NO".to_string(),
                    None => "yes".to_string(),
                });
            }
            (&p.result, given)
        })
        .collect();
    let mut columns: Vec<Shown> = TABLE.into_iter().filter(|c| wide || compact(c)).collect();
    if rounds {
        columns.push(Shown::Given("Round spread (%)", Importance::Normal));
    }
    if unsteady {
        columns.push(Shown::Given("Steady", Importance::Essential));
    }
    results_table(&columns, &rows)
}

/// What the Steady column means, under the table (when a point was flagged).
fn unsteady_note() -> String {
    format!(
        "Steady NO: the point's spread (TPOT p10 to p90, or between rounds) is more than {UNSTEADY_TIMES:.0}x the run's median spread and over {UNSTEADY_MIN_PCT:.0}% (Nx: how many times): something else probably ran during it; measure it again (--rounds N alternates the points) rather than read it as a figure."
    )
}

fn breakdown(points: &[SpeedPoint]) -> TextTable {
    let rows: Vec<(&ExperimentResult, Vec<String>)> = points
        .iter()
        .map(|p| {
            let given = vec![p.context.to_string(), p.batch.to_string()];
            (&p.result, given)
        })
        .collect();
    results_table(&BREAKDOWN, &rows)
}

/// Per policy: its batch under the cap and the throughput there, and the best throughput of any
/// measured batch within the cap (with the ratio to the full cache's best).
fn cap_table(fits: &[CapFit], points: &[SpeedPoint], cap: u64) -> TextTable {
    let all: Vec<ThroughputPoint> = points.iter().map(throughput).collect();
    let best = best_under_cap(&all, cap);
    let full = best.iter().find(|b| b.spec == PolicySpec::FULL);
    let mut t = TextTable::new(&[
        "Policy",
        "Slots/head",
        "K/V per row (MiB)",
        "Batch under cap",
        "K/V at it (MiB)",
        "T/s at it",
        "Best T/s under cap",
        "at batch",
        "Best / full's best",
    ]);
    {
        use Importance::*;
        t.set_importance([
            Essential, Normal, Minor, Essential, Normal, Essential, Normal, Normal, Normal,
        ]);
    }
    for f in fits {
        let at = points.iter().find(|p| p.spec() == f.spec && p.at_cap);
        let b = best.iter().find(|b| b.spec == f.spec);
        t.add_row([
            f.spec.to_string(),
            f.slots.to_string(),
            mib(f.row_bytes),
            f.batch.to_string(),
            mib(f.bytes),
            at.map_or("-".into(), |p| fixed(p.speed().throughput_tps, 2)),
            b.map_or("-".into(), |b| fixed(b.tokens_per_s, 2)),
            b.map_or("-".into(), |b| b.batch.to_string()),
            match (b, full) {
                (Some(b), Some(f)) => fixed(b.tokens_per_s / f.tokens_per_s, 2),
                _ => "-".into(),
            },
        ]);
    }
    t
}

/// The PNG, written to `out`: throughput against batch for a batch sweep, else TPOT and K/V
/// against context.
fn plot(
    out: Output<'_>,
    points: &[SpeedPoint],
    fits: &[CapFit],
    a: &SpeedArgs,
    title: &str,
) -> Result<()> {
    if a.batch.len() > 1 || a.kv_cap.is_some() {
        let lines: Vec<BatchPoint> = points
            .iter()
            .map(|p| BatchPoint {
                policy: p.spec().to_string(),
                batch: p.batch,
                tokens_per_s: p.speed().throughput_tps,
                at_cap: p.at_cap,
            })
            .collect();
        let all: Vec<ThroughputPoint> = points.iter().map(throughput).collect();
        let bars: Vec<CapBar> = a
            .kv_cap
            .map(|cap| best_under_cap(&all, cap))
            .unwrap_or_default()
            .into_iter()
            .filter(|b| fits.iter().any(|f| f.spec == b.spec))
            .map(|b| CapBar {
                policy: b.spec.to_string(),
                batch: b.batch,
                tokens_per_s: b.tokens_per_s,
            })
            .collect();
        let cap = a.kv_cap.map(format_bytes);
        let cap = cap.as_deref().map(|c| (c, &bars[..]));
        render_throughput(&lines, cap, title, out)?;
    } else {
        let sweep: Vec<SweepPoint> = points
            .iter()
            .map(|pt| SweepPoint {
                policy: pt.spec().to_string(),
                context: pt.context,
                tpot_ms: pt.speed().tpot_median_ms,
                kv_bytes: pt.memory().kv_bytes,
            })
            .collect();
        render_sweep(&sweep, title, out)?;
    }
    Ok(())
}

/// Refuses what cannot be measured, before anything is: sweeps over two axes, a cap below one row
/// of a policy, and points that certainly do not fit in the memory available. Returns the fits.
fn fits_under_cap(a: &SpeedArgs, contexts: &[usize], man: &Manifest) -> Result<Vec<CapFit>> {
    let Some(cap) = a.kv_cap else {
        return Ok(Vec::new());
    };
    if contexts.len() > 1 {
        bail!("--kv-cap sizes batches at one context: give --prompt, not --contexts");
    }
    let shape = RunShape {
        prompt: contexts[0],
        gen: a.gen,
        prefill_chunk: a.prefill_chunk,
        bos: man.prepend_bos_token_id.is_some(),
    };
    let layout = KvLayout::of(man);
    a.exp
        .iter()
        .map(|spec| {
            largest_batch(cap, &layout, spec, man.max_position_embeddings, &shape)
                .map_err(|e| anyhow::anyhow!("--kv-cap: {e}"))
        })
        .collect()
}

/// A batch beyond the text that --kv-cap chose (not one of --batch) is named as the cap's.
fn cap_batch_beyond_text(e: h2o_engine::Error, a: &SpeedArgs) -> anyhow::Error {
    use h2o_engine::error::LengthError;
    match (&e, a.kv_cap) {
        (
            h2o_engine::Error::Length(LengthError::BatchBeyondText {
                batch,
                prompt,
                available,
                path,
            }),
            Some(cap),
        ) if !a.batch.contains(batch) => anyhow::anyhow!(
            "--kv-cap {}: the largest batch under it, {batch} rows of {prompt} prompt tokens, needs {} tokens of text (each row is prompted with its own), but {} gives only {available}; lower --kv-cap or use a longer text file",
            format_bytes(cap),
            *batch as u128 * *prompt as u128,
            path.display()
        ),
        _ => e.into(),
    }
}

/// Checks every spec against the model, reads the text for every point and checks each fits in
/// memory.
fn check_points(checked: &mut Checked, a: &SpeedArgs, targets: &[Target]) -> Result<()> {
    let plans: Vec<Plan> = targets.iter().map(|t| t.plan(a)).collect();
    checked
        .read_text(&plans)
        .map_err(|e| cap_batch_beyond_text(e, a))?;
    for (t, plan) in targets.iter().zip(&plans) {
        if let Some(s) = plan.speed {
            checked
                .check_memory(&t.spec, &s, &t.name())
                .map_err(h2o_engine::Error::from)?;
        }
    }
    Ok(())
}

/// The `--json` document.
fn document(
    a: &SpeedArgs,
    man: &Manifest,
    setup: &Setup,
    weights: u64,
    bandwidth: [f64; 3],
    fits: &[CapFit],
    points: &[SpeedPoint],
) -> SpeedDocument {
    let [both, before, after] = bandwidth;
    let peak = match a.in_process {
        true => PeakMemory::SharedProcess,
        false => PeakMemory::OwnProcess,
    };
    SpeedDocument {
        weight_bytes_read_per_token: weights,
        read_bandwidth_bytes_per_s: finite(both),
        read_bandwidth_before_after: [finite(before), finite(after)],
        model: man.name.clone(),
        weights: man.weights.label(),
        threads: setup.session.intra_threads,
        provider: setup.session.provider.to_string(),
        denormals: setup.session.denormals.to_string(),
        kv: setup.session.kv.to_string(),
        prefill_chunk: a.prefill_chunk,
        peak_memory: peak.method(),
        kv_cap: a.kv_cap.map(|cap| KvCapJson {
            bytes: cap,
            measure: CAP_MEASURE,
            fits: fits
                .iter()
                .map(|f| CapFitJson {
                    spec: f.spec,
                    slots: f.slots,
                    row_bytes: f.row_bytes,
                    batch: f.batch,
                    bytes: f.bytes,
                })
                .collect(),
            best: best_under_cap(&points.iter().map(throughput).collect::<Vec<_>>(), cap)
                .into_iter()
                .map(|b| BestUnderCapJson {
                    spec: b.spec,
                    batch: b.batch,
                    kv_allocated_bytes: b.kv_allocated_bytes,
                    tokens_per_s: b.tokens_per_s,
                })
                .collect(),
        }),
        runs: points.iter().map(|p| SpeedRunJson::of(p, a.gen)).collect(),
    }
}

pub fn run(a: SpeedArgs) -> Result<()> {
    let setup = a
        .model
        .unchecked_setup(resolve_data(a.data.as_deref())?, a.text);
    let outputs = check_outputs(
        &[("--json", &a.json), ("--plot", &a.plot)],
        &[(data_flag(&a.data), &setup.data), ("--model", &setup.model)],
    )?;
    let contexts = if a.contexts.is_empty() {
        vec![a.prompt]
    } else {
        a.contexts.clone()
    };
    if contexts.len() > 1 && a.batch.len() > 1 {
        bail!("--contexts and --batch each sweep an axis; sweep one: give --prompt with a batch sweep");
    }
    let rt = h2o_engine::experiment::start(&setup, &project_root())?;
    let mut checked = Checked::model(&setup)?;
    let man = checked.manifest().clone();
    for spec in &a.exp {
        // A spec the model cannot take names the flag it came from (`--exp: policy ...`), as in
        // bench and ppl.
        checked.check(&Experiment::of(*spec))?;
    }
    let fits = fits_under_cap(&a, &contexts, &man)?;
    let targets = targets(&a, &contexts, &fits);
    check_points(&mut checked, &a, &targets)?;
    // a prefill copy of the weights (manifest weights.prefill) is on disk but not read by a decode step
    let weights = bytes_read_per_token(
        weight_bytes(&setup.model).saturating_sub(man.weights.prefill_bytes()),
        man.vocab_size,
        man.hidden_size,
        man.dtype.size(),
    );
    let threads = setup.session.intra_threads;
    let before = bandwidth(&a, threads, weights, "before");
    // Children load their own model; in this process the model is loaded once, here.
    let mut lab = match a.in_process {
        true => Some(checked.open(&rt)?),
        false => None,
    };
    let mut place = Place::of(lab.as_mut()).map_err(runner_error)?;
    let mut points = sweep(&mut place, &setup, &a, &targets)?;
    let after = bandwidth(&a, threads, weights, "after");
    let bandwidth = before.max(after);
    for p in &mut points {
        p.floor_ms = floor_ms(weights, p.memory().kv_bytes, bandwidth);
    }
    let unsteady = flag_unsteady(&mut points);
    let fit = |mut t: TextTable| t.every_column(a.wide).fit(terminal_width());
    outln!("{}", fit(table(&points, a.wide)));
    if unsteady > 0 {
        outln!("{}", unsteady_note());
    }
    outln!(
        "Per-step breakdown (decode steps)\n{}",
        fit(breakdown(&points))
    );
    if let Some(cap) = a.kv_cap {
        outln!(
            "Under a K/V cap of {} (allocated K/V slot arrays; prompt {} + gen {})\n{}",
            format_bytes(cap),
            contexts[0],
            a.gen,
            fit(cap_table(&fits, &points, cap))
        );
    }
    if let Some(p) = &a.json {
        let bandwidth = [bandwidth, before, after];
        let doc = document(&a, &man, &setup, weights, bandwidth, &fits, &points);
        write_to("--json", &outputs.target(p), doc.to_json()?.as_bytes())?;
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "{} - {threads} threads - prompt {} + gen {}",
            man.name, contexts[0], a.gen
        );
        plot(outputs.target(p), &points, &fits, &a, &title).context("--plot")?;
        outln!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_parse_and_zero_is_refused() {
        assert_eq!(parse_cap("4GiB"), Ok(4 << 30));
        assert!(parse_cap("0").unwrap_err().contains("holds nothing"));
        assert!(parse_cap("4 parsecs").is_err());
    }
}
