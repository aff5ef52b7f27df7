//! Per-step wall-clock costs of a decode step, split the way the benchmark reports them.

use std::time::Duration;

/// Where one decoder step spent its time (design §4: model run, score update, eviction, other host work).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTiming {
    /// ONNX Runtime: the step graph's run (inputs bound from the store, outputs produced) and, with K/V
    /// on the device, the companion runs that grow the store and write the kept new K/V.
    pub model: Duration,
    /// Adding the step's attention sums to the accumulated scores.
    pub score_update: Duration,
    /// The policy's victim choice (zero when nothing is evicted).
    pub eviction: Duration,
    /// Everything else on the host: building inputs, writing new K/V into slots, logits handling.
    pub other: Duration,
}

impl StepTiming {
    /// Whole step.
    pub fn total(&self) -> Duration {
        self.model + self.score_update + self.eviction + self.other
    }
    /// Host work only (score update + eviction + other).
    pub fn host(&self) -> Duration {
        self.score_update + self.eviction + self.other
    }
}
