//! Benchmark reporting: figures from raw measurements, result files (CSV + JSON), console tables and comparison of result files.
//!
//! Pure library code: nothing here touches ONNX Runtime or imports the run (it stands on
//! [`crate::catalogue`]). The experiment entry ([`crate::experiment`]) builds an
//! [`ExperimentResult`] per experiment and the runner ([`crate::runner`]) hands it to a
//! [`ResultsWriter`]; `speed` builds a [`SpeedDocument`] of its points; the tables and [`compare`] work on those results or on CSV files (ours or the
//! seed's format). Every result column is declared once, in [`COLUMNS`].

mod batch_plot;
mod columns;
mod compare;
mod error;
mod figures;
mod machine;
mod nanable;
mod plot;
mod record;
mod results;
mod speed;
mod tables;
mod text_table;
mod window_plot;
mod wrap;

pub use batch_plot::{render_throughput, BatchPoint, CapBar};
pub use columns::{
    column_meanings, columns_markdown, counting_name, csv_header, text_mode_name, Col, Column,
    RunCol, RunColumn, Show, Value, COLUMNS, RUN_COLUMNS, SEED_COLUMNS,
};
pub use compare::{
    compare, compare_files, load_results_csv, Aspect, Comparison, Difference, FactSource, Figure,
    MatchKind, MatchedPair, PolicyMatch, ResultFile, ResultFormat, ResultRow, RunFacts, TokenMatch,
    TpotDefinition, Withheld, MAX_CELL_BYTES, MAX_RESULTS_BYTES, MAX_RUN_DOCUMENT_BYTES,
    SEED_COUNTING_NOTE,
};
pub use error::ReportError;
pub use figures::{
    full_cache_bytes, percentile, Breakdown, MemoryFigures, NllBucket, NllSummary, PplFigures,
    SpeedFigures, TrafficFigures, NLL_BUCKETS,
};
pub use machine::MachineInfo;
pub use plot::{render_sweep, SweepPoint};
pub use record::{ExperimentResult, ExperimentStatus};
pub use results::{
    check_results_dir, run_stem, ModelInfo, ResultsWriter, RunDocument, RunInfo, RuntimeInfo,
    Settings,
};
pub use speed::{
    finite, flag_unsteady, BestUnderCapJson, CapFitJson, KvCapJson, SpeedDocument, SpeedPoint,
    SpeedRunJson, CAP_MEASURE, UNSTEADY_MIN_PCT, UNSTEADY_TIMES,
};
pub use tables::{
    breakdown_table, main_table, memory_table, results_table, stderr_width, terminal_width, Shown,
    Width,
};
pub use text_table::{Importance, TextTable};
pub use window_plot::{render_windows, WindowSeries};
pub use wrap::{atoms, wrap_hanging, wrap_line, wrap_words};

/// Bytes in the seed's "GB" (its KV Size column is bytes / 2^30).
pub const BYTES_PER_GB: f64 = 1024.0 * 1024.0 * 1024.0;
