//! `h2o compare A.csv B.csv`: line up two result files (ours or the seed's) by policy and budget.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use h2o_engine::report::{compare, terminal_width};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// First results CSV (ours, or the seed's pytorch-results.csv).
    pub a: PathBuf,
    /// Second results CSV.
    pub b: PathBuf,
    /// Show every column (the PPL difference, the speed-up and both KV sizes as well).
    #[arg(long)]
    pub wide: bool,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let c = compare(&a.a, &a.b)?;
    let text = c.render(&c.table(a.wide), terminal_width());
    outln!("{}", text.strip_suffix('\n').unwrap_or(&text));
    Ok(())
}
