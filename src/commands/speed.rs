//! `h2o speed`: prefill + decode timings for one or more policies, optionally as a sweep over context lengths.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use h2o_engine::eval::bandwidth::{
    bytes_read_per_token, floor_ms, measure_read_bandwidth, weight_bytes,
};
use h2o_engine::experiment::{Experiment, Lab, PeakMemory, Plan, SpeedPlan};
use h2o_engine::policy::PolicySpec;
use h2o_engine::report::{render_sweep, results_table, Col, ExperimentResult, Shown, SweepPoint};

use super::{resolve_data, start_runtime, write_atomic, ModelArgs};

#[derive(Args, Debug)]
pub struct SpeedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file for the prompt tokens; default: $H2O_DATA.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Comma-separated policy specs.
    #[arg(long, value_delimiter = ',', default_value = "full")]
    pub exp: Vec<PolicySpec>,
    /// Prompt tokens (ignored with --contexts).
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    /// Generated tokens (the prefill gives the first).
    #[arg(long, default_value_t = 1024)]
    pub gen: usize,
    /// Context lengths to sweep: for each, prefill that many tokens and time --gen tokens after it.
    #[arg(long, value_delimiter = ',')]
    pub contexts: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Write all figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a PNG of TPOT and KV bytes against context length here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Skip the memory-bandwidth measurement (and the floor columns).
    #[arg(long)]
    pub no_floor: bool,
}

/// The table: policy, context, the speed columns, KV bytes, and the bandwidth floor.
const TABLE: [Shown; 11] = [
    Shown::Col(Col::Policy),
    Shown::Given("Context"),
    Shown::Col(Col::Ttft),
    Shown::Col(Col::Tpot),
    Shown::Col(Col::TpotP90),
    Shown::Col(Col::Throughput),
    Shown::Col(Col::HostShare),
    Shown::Col(Col::KvBytes),
    Shown::Col(Col::FullKvBytes),
    Shown::Given("Floor (ms)"),
    Shown::Given("TPOT / floor"),
];

fn fixed(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".to_string()
    }
}

/// Measured read bandwidth (bytes/s), or NaN with `--no-floor`.
fn bandwidth(a: &SpeedArgs, threads: usize, weights: u64) -> f64 {
    if a.no_floor {
        return f64::NAN;
    }
    let bw = measure_read_bandwidth(1 << 30, threads, 3);
    eprintln!(
        "memory read bandwidth {:.1} GB/s ({threads} threads); weights read per token {:.1} MiB (input embedding: one row): floor {:.2} ms/token without K/V",
        bw / 1e9,
        weights as f64 / (1u64 << 20) as f64,
        floor_ms(weights, 0, bw)
    );
    bw
}

pub fn run(a: SpeedArgs) -> Result<()> {
    let setup = a.model.setup(resolve_data(a.data.as_deref())?)?;
    let contexts = if a.contexts.is_empty() {
        vec![a.prompt]
    } else {
        a.contexts.clone()
    };
    let plans: Vec<Plan> = contexts
        .iter()
        .map(|&prompt| Plan {
            ppl: None,
            speed: Some(SpeedPlan {
                prompt,
                gen: a.gen,
                warmup: a.warmup,
            }),
        })
        .collect();
    let rt = start_runtime(&setup.model)?;
    let mut lab = Lab::load(&rt, &setup, &plans)?;
    let man = lab.model().manifest.clone();
    for spec in &a.exp {
        spec.validate(man.max_position_embeddings)?;
    }
    let weights = bytes_read_per_token(
        weight_bytes(&lab.model().dir),
        man.vocab_size,
        man.hidden_size,
        man.dtype.size(),
    );
    let threads = setup.session.intra_threads;
    let bandwidth = bandwidth(&a, threads, weights);
    let mut rows: Vec<(ExperimentResult, Vec<String>)> = Vec::new();
    let mut json_rows = Vec::new();
    for spec in &a.exp {
        for (plan, &c) in plans.iter().zip(&contexts) {
            let exp = Experiment::of(*spec);
            let r = lab
                .run(&exp, plan, PeakMemory::SharedProcess, &mut |_| {
                    ControlFlow::Continue(())
                })?
                .result;
            let (Some(f), Some(m)) = (&r.speed, &r.memory) else {
                anyhow::bail!("the speed run gave no figures");
            };
            let floor = floor_ms(weights, m.kv_bytes, bandwidth);
            json_rows.push(serde_json::json!({
                "policy": spec, "context": c, "gen": a.gen, "speed": f,
                "kv_bytes": m.kv_bytes, "kv_bytes_full": m.kv_bytes_full,
                "floor_ms": floor.is_finite().then_some(floor),
            }));
            let given = vec![
                c.to_string(),
                fixed(floor, 2),
                fixed(f.tpot_median_ms / floor, 2),
            ];
            rows.push((r, given));
        }
    }
    let shown: Vec<(&ExperimentResult, Vec<String>)> =
        rows.iter().map(|(r, g)| (r, g.clone())).collect();
    println!("{}", results_table(&TABLE, &shown));
    if let Some(p) = &a.json {
        let doc = serde_json::json!({
            "weight_bytes_read_per_token": weights,
            "read_bandwidth_bytes_per_s": bandwidth.is_finite().then_some(bandwidth),
            "model": man.name, "threads": threads, "provider": setup.session.provider.to_string(),
            "runs": json_rows,
        });
        write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    if let Some(p) = &a.plot {
        let points: Vec<SweepPoint> = rows
            .iter()
            .zip(contexts.iter().cycle())
            .filter_map(|((r, _), &context)| {
                Some(SweepPoint {
                    policy: r.spec.to_string(),
                    context,
                    tpot_ms: r.speed.as_ref()?.tpot_median_ms,
                    kv_bytes: r.memory.as_ref()?.kv_bytes,
                })
            })
            .collect();
        let title = format!(
            "{} - {threads} threads - gen {} after each context",
            man.name, a.gen
        );
        render_sweep(&points, &title, p)?;
        println!("{}", p.display());
    }
    Ok(())
}
