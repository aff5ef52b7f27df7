//! `h2o speed`: prefill + decode timings for one or more policies, optionally as a sweep over context lengths.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use comfy_table::{presets::UTF8_FULL, Cell, Table};

use h2o_engine::eval::bandwidth::{
    bytes_read_per_token, floor_ms, measure_read_bandwidth, weight_bytes,
};
use h2o_engine::eval::data::{load_tokens, resolve_data_path};
use h2o_engine::eval::speed::measure;
use h2o_engine::report::{full_cache_bytes, render_sweep, SpeedFigures, SweepPoint};

use super::{parse_policy, write_atomic, ModelArgs};

#[derive(Args, Debug)]
pub struct SpeedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file for the prompt tokens; default: $H2O_DATA.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Comma-separated policy specs.
    #[arg(long, value_delimiter = ',', default_value = "full")]
    pub exp: Vec<String>,
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

pub fn run(a: SpeedArgs) -> Result<()> {
    let data = resolve_data_path(a.data.as_deref())?;
    let (_rt, mut model) = a.model.load()?;
    let man = model.manifest.clone();
    let max_pos = man.max_position_embeddings;
    let specs = a
        .exp
        .iter()
        .map(|s| parse_policy(s, max_pos).map(|p| p.0))
        .collect::<Result<Vec<_>>>()?;
    let contexts = if a.contexts.is_empty() {
        vec![a.prompt]
    } else {
        a.contexts.clone()
    };
    for &c in &contexts {
        if c == 0 || c + a.gen > max_pos {
            bail!(
                "context {c} + --gen {} must be within the model's {max_pos} positions",
                a.gen
            );
        }
    }
    let tokens = load_tokens(
        &model.tokenizer,
        &data,
        *contexts.iter().max().expect("non-empty"),
    )?;
    let weights = bytes_read_per_token(
        weight_bytes(&model.dir),
        man.vocab_size,
        man.hidden_size,
        man.dtype.size(),
    );
    let bandwidth = if a.no_floor {
        f64::NAN
    } else {
        let bw = measure_read_bandwidth(1 << 30, model.config.intra_threads, 3);
        eprintln!(
            "memory read bandwidth {:.1} GB/s ({} threads); weights read per token {:.1} MiB (input embedding: one row): floor {:.2} ms/token without K/V",
            bw / 1e9,
            model.config.intra_threads,
            weights as f64 / (1u64 << 20) as f64,
            floor_ms(weights, 0, bw)
        );
        bw
    };
    let mut points = Vec::new();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL).set_header(vec![
        "Policy",
        "Context",
        "TTFT (ms)",
        "TPOT median (ms)",
        "TPOT p90 (ms)",
        "Throughput (T/s)",
        "Host share (%)",
        "KV bytes",
        "Full KV bytes",
        "Floor (ms)",
        "TPOT / floor",
    ]);
    let mut rows = Vec::new();
    for spec in &specs {
        for &c in &contexts {
            let make = || spec.build();
            let run = measure(&mut model, &make, &tokens[..c], a.gen, a.warmup, |_| {})?;
            let f = SpeedFigures::from_run(run.prefill, run.prompt_tokens, &run.steps);
            let full = full_cache_bytes(
                man.num_layers,
                man.num_heads,
                man.head_dim,
                man.dtype.size(),
                c + a.gen - 1,
                1,
            );
            let host = 1.0 - f.breakdown.model_share;
            let floor = floor_ms(weights, run.kv_bytes as u64, bandwidth);
            points.push(SweepPoint {
                policy: spec.to_string(),
                context: c,
                tpot_ms: f.tpot_median_ms,
                kv_bytes: run.kv_bytes as u64,
            });
            table.add_row(vec![
                Cell::new(spec.to_string()),
                Cell::new(c),
                Cell::new(format!("{:.2}", f.ttft_ms)),
                Cell::new(format!("{:.3}", f.tpot_median_ms)),
                Cell::new(format!("{:.3}", f.tpot_p90_ms)),
                Cell::new(format!("{:.1}", f.throughput_tps)),
                Cell::new(format!("{:.2}", 100.0 * host)),
                Cell::new(run.kv_bytes),
                Cell::new(full),
                Cell::new(format!("{floor:.2}")),
                Cell::new(format!("{:.2}", f.tpot_median_ms / floor)),
            ]);
            rows.push(serde_json::json!({
                "policy": spec.to_string(), "context": c, "gen": a.gen, "speed": f,
                "kv_bytes": run.kv_bytes, "kv_bytes_full": full,
                "floor_ms": if floor.is_finite() { Some(floor) } else { None },
            }));
        }
    }
    println!("{table}");
    if let Some(p) = &a.json {
        let doc = serde_json::json!({
            "weight_bytes_read_per_token": weights,
            "read_bandwidth_bytes_per_s": if bandwidth.is_finite() { Some(bandwidth) } else { None },
            "model": man.name, "threads": model.config.intra_threads, "provider": model.config.provider.to_string(),
            "runs": rows,
        });
        write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "{} - {} threads - gen {} after each context",
            man.name, model.config.intra_threads, a.gen
        );
        render_sweep(&points, &title, p)?;
        println!("{}", p.display());
    }
    Ok(())
}
