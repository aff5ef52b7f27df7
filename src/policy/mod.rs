//! Eviction policies: which cached tokens survive a step. Knows nothing about ONNX or the store's layout.

/// The candidates of one (batch row, layer) after a step: the cached slots followed by the new tokens.
///
/// Layout: `positions` and `scores` are `[heads, n]` row-major, `n = cached + new`.
/// Position -1 marks an empty or padding candidate (always evicted first).
/// Scores already include this step's attention.
pub struct Candidates<'a> {
    pub heads: usize,
    pub n: usize,
    pub positions: &'a [i64],
    pub scores: &'a [f32],
}

/// One eviction policy. Called only when `n > budget()`.
pub trait Policy: Send + Sync {
    /// Canonical spec, e.g. `h2o:192+64`; used in tables and results.
    fn spec(&self) -> String;
    /// Most tokens kept per head between steps (`usize::MAX` for the full cache).
    fn budget(&self) -> usize;
    /// Whether the policy reads accumulated scores (the store may skip the score update if not).
    fn needs_scores(&self) -> bool;
    /// Mark exactly `min(budget, n)` candidates per head to keep: `keep` is `[heads, n]`.
    fn select(&self, cands: &Candidates<'_>, keep: &mut [bool]);
}
