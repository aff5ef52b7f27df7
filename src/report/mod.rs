//! Benchmark reporting: figures from raw measurements, result files (CSV + JSON), console tables and comparison of result files.
//!
//! Pure library code: nothing here touches ONNX Runtime. The CLI measures, builds an
//! [`ExperimentResult`] per experiment and hands it to a [`ResultsWriter`]; the tables and
//! [`compare`] work on those results or on CSV files (ours or the seed's format).

mod compare;
mod error;
mod experiments;
mod figures;
mod machine;
mod nanable;
mod plot;
mod results;
mod tables;

pub use compare::{
    compare, compare_files, load_results_csv, Comparison, MatchKind, MatchedPair, ResultFile,
    ResultFormat, ResultRow, TpotDefinition,
};
pub use error::ReportError;
pub use experiments::{default_experiments, parse_spec, PolicyKey, SEED_MAX_POSITIONS};
pub use figures::{
    full_cache_bytes, percentile, Breakdown, MemoryFigures, NllBucket, NllSummary, PplFigures,
    SpeedFigures, NLL_BUCKETS,
};
pub use machine::{process_peak_rss_bytes, MachineInfo};
pub use plot::{render_sweep, SweepPoint};
pub use results::{
    column_meanings, csv_header, run_stem, write_atomic, ExperimentResult, ExperimentStatus,
    ModelInfo, ResultsWriter, RunDocument, RunInfo, RuntimeInfo, Settings, OUR_COLUMNS,
    SEED_COLUMNS,
};
pub use tables::{breakdown_table, main_table, memory_table};

/// Bytes in the seed's "GB" (its KV Size column is bytes / 2^30).
pub const BYTES_PER_GB: f64 = 1024.0 * 1024.0 * 1024.0;
