//! `h2o compare`: two results files (ours or the seed's format) read ([`read`]), what their runs
//! say about themselves and what differs ([`facts`]), their rows lined up by policy family and
//! budget ([`pair`]) and shown ([`render`]).

mod facts;
mod pair;
mod read;
mod render;

use std::path::Path;

pub use facts::{Aspect, Difference, FactSource, Figure, RunFacts, Withheld};
pub use pair::{
    compare_files, Comparison, MatchKind, MatchedPair, PolicyMatch, TokenMatch, TpotDefinition,
};
pub use read::{
    load_results_csv, ResultFile, ResultFormat, ResultRow, MAX_CELL_BYTES, MAX_RESULTS_BYTES,
    MAX_RUN_DOCUMENT_BYTES,
};
pub use render::SEED_COUNTING_NOTE;

use super::ReportError;

/// Loads two result CSVs (ours or the seed's format) and lines their experiments up by policy
/// family and budget, best first: the same policy attending the same tokens (`exact`; between
/// the seed's file and ours that is our spec with one token less, see
/// [`crate::catalogue::seed::seed_equivalent`]), `h2o` against `h2o-layer` (the seed's H2O) with the same
/// split, the same policy under another budget schedule, then our spec with the seed's numbers
/// (ours attends one token more), then the same method and budget with another split. Each row is
/// used once; rows left over are listed in `unmatched_a` / `unmatched_b`, failed experiments in
/// `failed_a` / `failed_b`. What differs between the two runs is listed, and a derived figure it
/// makes meaningless is left out (see [`Comparison::withheld`]).
pub fn compare(a: &Path, b: &Path) -> Result<Comparison, ReportError> {
    Ok(compare_files(load_results_csv(a)?, load_results_csv(b)?))
}
