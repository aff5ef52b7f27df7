//! `h2o compare A.csv B.csv`: line up two result files (ours or the seed's) by policy and budget.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// First results CSV (ours, or the seed's pytorch-results.csv).
    pub a: PathBuf,
    /// Second results CSV.
    pub b: PathBuf,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let c = h2o_engine::report::compare(&a.a, &a.b)?;
    println!("{}", c.render());
    Ok(())
}
