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
use h2o_engine::report::{
    render_sweep, results_table, Col, ExperimentResult, MemoryFigures, Shown, SpeedFigures,
    SweepPoint,
};

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

/// One measured point of the sweep: a policy's result at one context length.
struct Point {
    result: ExperimentResult,
    context: usize,
    speed: SpeedFigures,
    memory: MemoryFigures,
    floor_ms: f64,
}

/// Every policy at every context length, on the loaded model.
fn sweep(
    lab: &mut Lab,
    specs: &[PolicySpec],
    plans: &[(usize, Plan)],
    weights: u64,
    bandwidth: f64,
) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    for spec in specs {
        for (context, plan) in plans {
            let result = lab
                .run(
                    &Experiment::of(*spec),
                    plan,
                    PeakMemory::SharedProcess,
                    &mut |_| ControlFlow::Continue(()),
                )?
                .result;
            let (Some(speed), Some(memory)) = (result.speed.clone(), result.memory.clone()) else {
                anyhow::bail!("the speed run of {spec} gave no figures");
            };
            points.push(Point {
                floor_ms: floor_ms(weights, memory.kv_bytes, bandwidth),
                result,
                context: *context,
                speed,
                memory,
            });
        }
    }
    Ok(points)
}

fn table(points: &[Point]) -> comfy_table::Table {
    let rows: Vec<(&ExperimentResult, Vec<String>)> = points
        .iter()
        .map(|p| {
            let tpot = p.speed.tpot_median_ms;
            let given = vec![
                p.context.to_string(),
                fixed(p.floor_ms, 2),
                fixed(tpot / p.floor_ms, 2),
            ];
            (&p.result, given)
        })
        .collect();
    results_table(&TABLE, &rows)
}

fn json_runs(points: &[Point], gen: usize) -> Vec<serde_json::Value> {
    points
        .iter()
        .map(|p| {
            let (f, m) = (&p.speed, &p.memory);
            serde_json::json!({
                "policy": p.result.spec, "context": p.context, "gen": gen, "speed": f,
                "kv_bytes": m.kv_bytes, "kv_bytes_full": m.kv_bytes_full,
                "floor_ms": p.floor_ms.is_finite().then_some(p.floor_ms),
            })
        })
        .collect()
}

pub fn run(a: SpeedArgs) -> Result<()> {
    let setup = a.model.setup(resolve_data(a.data.as_deref())?)?;
    let contexts = if a.contexts.is_empty() {
        vec![a.prompt]
    } else {
        a.contexts.clone()
    };
    let plans: Vec<(usize, Plan)> = contexts
        .iter()
        .map(|&prompt| {
            let speed = SpeedPlan {
                prompt,
                gen: a.gen,
                warmup: a.warmup,
            };
            let plan = Plan {
                ppl: None,
                speed: Some(speed),
            };
            (prompt, plan)
        })
        .collect();
    let rt = start_runtime(&setup.model)?;
    let all: Vec<Plan> = plans.iter().map(|(_, p)| *p).collect();
    let mut lab = Lab::load(&rt, &setup, &all)?;
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
    let points = sweep(&mut lab, &a.exp, &plans, weights, bandwidth)?;
    println!("{}", table(&points));
    if let Some(p) = &a.json {
        let doc = serde_json::json!({
            "weight_bytes_read_per_token": weights,
            "read_bandwidth_bytes_per_s": bandwidth.is_finite().then_some(bandwidth),
            "model": man.name, "threads": threads, "provider": setup.session.provider.to_string(),
            "kv": setup.session.kv.to_string(),
            "runs": json_runs(&points, a.gen),
        });
        write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    if let Some(p) = &a.plot {
        let sweep: Vec<SweepPoint> = points
            .iter()
            .map(|pt| SweepPoint {
                policy: pt.result.spec.to_string(),
                context: pt.context,
                tpot_ms: pt.speed.tpot_median_ms,
                kv_bytes: pt.memory.kv_bytes,
            })
            .collect();
        let title = format!(
            "{} - {threads} threads - gen {} after each context",
            man.name, a.gen
        );
        render_sweep(&sweep, &title, p)?;
        println!("{}", p.display());
    }
    Ok(())
}
