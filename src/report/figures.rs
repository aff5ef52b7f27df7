//! Figures computed from raw measurements: perplexity, speed (with the per-step breakdown) and memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::timing::StepTiming;

/// Number of position buckets in the per-token NLL summary.
pub const NLL_BUCKETS: usize = 8;

/// Percentile `p` (0..=1) of `values` with linear interpolation between closest ranks
/// (numpy's default): position `p * (n - 1)` in the sorted values. NaN for an empty slice.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, p)
}

fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let p = if p.is_nan() { 0.5 } else { p.clamp(0.0, 1.0) };
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn one() -> usize {
    1
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Mean NLL over one contiguous range of predictions `[start, end)` (0-based prediction index:
/// prediction i scores token i+1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllBucket {
    pub start: usize,
    pub end: usize,
    #[serde(with = "super::nanable")]
    pub mean_nll: f64,
}

/// Summary of the per-token NLLs (the whole array is kept only when asked for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllSummary {
    /// Median (linear interpolation, see [`percentile`]).
    #[serde(with = "super::nanable")]
    pub p50: f64,
    #[serde(with = "super::nanable")]
    pub p90: f64,
    #[serde(with = "super::nanable")]
    pub max: f64,
    /// Mean NLL per position bucket: `min(NLL_BUCKETS, n)` buckets, bucket i covering
    /// predictions `[i*n/k, (i+1)*n/k)`; shows how quality changes as the cache fills and evicts.
    pub buckets: Vec<NllBucket>,
}

/// Streaming perplexity figures (design §4): PPL = exp(mean NLL) over all predictions, in f64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PplFigures {
    pub n_predictions: usize,
    #[serde(with = "super::nanable")]
    pub mean_nll: f64,
    #[serde(with = "super::nanable")]
    pub ppl: f64,
    pub nll: NllSummary,
}

impl PplFigures {
    /// From the per-prediction NLLs (natural log). An empty slice gives `n_predictions == 0`
    /// and NaN figures (written as `null` in JSON, empty in CSV).
    pub fn from_nlls(nlls: &[f64]) -> PplFigures {
        let n = nlls.len();
        let mean_nll = mean(nlls);
        let mut sorted = nlls.to_vec();
        sorted.sort_by(f64::total_cmp);
        let k = NLL_BUCKETS.min(n);
        let buckets = (0..k)
            .map(|i| {
                let (start, end) = (i * n / k, (i + 1) * n / k);
                NllBucket {
                    start,
                    end,
                    mean_nll: mean(&nlls[start..end]),
                }
            })
            .collect();
        PplFigures {
            n_predictions: n,
            mean_nll,
            ppl: mean_nll.exp(),
            nll: NllSummary {
                p50: percentile_sorted(&sorted, 0.5),
                p90: percentile_sorted(&sorted, 0.9),
                max: sorted.last().copied().unwrap_or(f64::NAN),
                buckets,
            },
        }
    }
}

/// Mean per-step cost of each part of a decode step, in ms, and its share of the whole step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    #[serde(with = "super::nanable")]
    pub model_ms: f64,
    #[serde(with = "super::nanable")]
    pub score_update_ms: f64,
    #[serde(with = "super::nanable")]
    pub eviction_ms: f64,
    #[serde(with = "super::nanable")]
    pub other_ms: f64,
    /// Mean whole step (the sum of the four above).
    #[serde(with = "super::nanable")]
    pub step_ms: f64,
    /// Shares of the step, 0..=1 (sum of the part over all steps / sum of all steps).
    #[serde(with = "super::nanable")]
    pub model_share: f64,
    #[serde(with = "super::nanable")]
    pub score_update_share: f64,
    #[serde(with = "super::nanable")]
    pub eviction_share: f64,
    #[serde(with = "super::nanable")]
    pub other_share: f64,
}

/// Speed figures of one prefill + decode run.
///
/// Our TPOT is per decode step (prefill excluded): median, p90 and mean over the steps.
/// The seed's TPOT is kept under its own name: total generate time (prefill included) divided
/// by the generated tokens, where the prefill yields the first token, so
/// `generated_tokens = decode_steps + 1` (the seed's `generate(max_new_tokens=G)` runs one
/// prefill and G-1 decode steps for G tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedFigures {
    /// Sequences decoded together (each step decodes one token of every row).
    #[serde(default = "one")]
    pub batch: usize,
    /// Prompt tokens per row.
    pub prompt_tokens: usize,
    pub decode_steps: usize,
    /// Tokens per row the seed's definition counts: prefill's token + one per decode step.
    pub generated_tokens: usize,
    /// Time to first token = prefill time.
    #[serde(with = "super::nanable")]
    pub ttft_ms: f64,
    #[serde(with = "super::nanable")]
    pub tpot_median_ms: f64,
    #[serde(with = "super::nanable")]
    pub tpot_p90_ms: f64,
    /// 10th percentile decode step (NaN in documents written before it was recorded).
    #[serde(default = "nan", with = "super::nanable")]
    pub tpot_p10_ms: f64,
    #[serde(with = "super::nanable")]
    pub tpot_mean_ms: f64,
    /// Decode tokens of all rows / decode time (prefill excluded).
    #[serde(with = "super::nanable")]
    pub throughput_tps: f64,
    /// Prompt tokens of all rows / prefill time.
    #[serde(with = "super::nanable")]
    pub prefill_tps: f64,
    /// The seed's TPOT: measured wall time of the whole generate (prefill included) / generated tokens.
    #[serde(with = "super::nanable")]
    pub seed_tpot_ms: f64,
    /// The seed's throughput: generated tokens of all rows / measured wall time of the whole generate.
    #[serde(with = "super::nanable")]
    pub seed_throughput_tps: f64,
    pub breakdown: Breakdown,
    /// Bytes between host and device memory (counted on any provider), when the run counted them.
    #[serde(default)]
    pub traffic: Option<TrafficFigures>,
}

/// Bytes a speed run moved between host and device memory: what ONNX Runtime copies under a device
/// provider (nothing moves on the CPU provider, the count is the same). Decode figures are means
/// over the timed steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficFigures {
    pub prefill_to_device: u64,
    pub prefill_from_device: u64,
    pub step_to_device: u64,
    pub step_from_device: u64,
}

impl TrafficFigures {
    /// From the prefill's bytes and the sum over `steps` decode steps (means rounded down; 0 steps
    /// give 0).
    pub fn new(prefill: (u64, u64), decode_total: (u64, u64), steps: usize) -> TrafficFigures {
        let per_step = |x: u64| x.checked_div(steps as u64).unwrap_or(0);
        TrafficFigures {
            prefill_to_device: prefill.0,
            prefill_from_device: prefill.1,
            step_to_device: per_step(decode_total.0),
            step_from_device: per_step(decode_total.1),
        }
    }
}

fn nan() -> f64 {
    f64::NAN
}

impl SpeedFigures {
    /// How unsteady the decode steps were: (p90 - p10) / median, in percent (NaN when unknown).
    pub fn tpot_spread_pct(&self) -> f64 {
        (self.tpot_p90_ms - self.tpot_p10_ms) / self.tpot_median_ms * 100.0
    }

    /// From the prefill time, the measured wall time of the whole generate loop (prefill
    /// included: the seed's TPOT numerator), the prompt length per row, the rows decoded together
    /// and each decode step's timing. No decode steps gives NaN step figures (never a panic).
    pub fn from_run(
        prefill: Duration,
        total: Duration,
        prompt_tokens: usize,
        batch: usize,
        decode_steps: &[StepTiming],
    ) -> SpeedFigures {
        let n = decode_steps.len();
        let totals: Vec<f64> = decode_steps.iter().map(|s| ms(s.total())).collect();
        let mut sorted = totals.clone();
        sorted.sort_by(f64::total_cmp);
        let sum =
            |f: fn(&StepTiming) -> Duration| -> f64 { decode_steps.iter().map(|s| ms(f(s))).sum() };
        let (model, score, evict, other) = (
            sum(|s| s.model),
            sum(|s| s.score_update),
            sum(|s| s.eviction),
            sum(|s| s.other),
        );
        let decode_ms: f64 = model + score + evict + other;
        let per_step = |x: f64| if n == 0 { f64::NAN } else { x / n as f64 };
        let share = |x: f64| {
            if decode_ms > 0.0 {
                x / decode_ms
            } else {
                f64::NAN
            }
        };
        let ttft_ms = ms(prefill);
        let generated_tokens = n + 1;
        let total_ms = ms(total);
        let rows = batch as f64;
        SpeedFigures {
            batch,
            prompt_tokens,
            decode_steps: n,
            generated_tokens,
            ttft_ms,
            tpot_median_ms: percentile_sorted(&sorted, 0.5),
            tpot_p90_ms: percentile_sorted(&sorted, 0.9),
            tpot_p10_ms: percentile_sorted(&sorted, 0.1),
            tpot_mean_ms: per_step(decode_ms),
            throughput_tps: if n > 0 && decode_ms > 0.0 {
                rows * n as f64 / (decode_ms / 1e3)
            } else {
                f64::NAN
            },
            prefill_tps: if ttft_ms > 0.0 {
                rows * prompt_tokens as f64 / (ttft_ms / 1e3)
            } else {
                f64::NAN
            },
            seed_tpot_ms: total_ms / generated_tokens as f64,
            seed_throughput_tps: if total_ms > 0.0 {
                rows * generated_tokens as f64 / (total_ms / 1e3)
            } else {
                f64::NAN
            },
            breakdown: Breakdown {
                model_ms: per_step(model),
                score_update_ms: per_step(score),
                eviction_ms: per_step(evict),
                other_ms: per_step(other),
                step_ms: per_step(decode_ms),
                model_share: share(model),
                score_update_share: share(score),
                eviction_share: share(evict),
                other_share: share(other),
            },
            traffic: None,
        }
    }
}

/// Analytic bytes of a full (never evicted) K+V cache:
/// `2 * layers * kv_heads * head_dim * dtype_bytes * tokens * batch` (saturating, never overflows;
/// KV heads: fewer than the query heads under grouped-query attention).
pub fn full_cache_bytes(
    layers: usize,
    heads: usize,
    head_dim: usize,
    dtype_bytes: usize,
    tokens: usize,
    batch: usize,
) -> u64 {
    [layers, heads, head_dim, dtype_bytes, tokens, batch]
        .iter()
        .fold(2u64, |acc, &x| acc.saturating_mul(x as u64))
}

/// Memory figures of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// Exact K+V bytes held by the store at the end of the run.
    pub kv_bytes: u64,
    /// Full-cache bytes for the same length ([`full_cache_bytes`]).
    pub kv_bytes_full: u64,
    /// Bytes of the K/V slot arrays at the end of the run (what occupies memory: at least
    /// `kv_bytes`, as a full cache grows in 64-slot chunks), when known.
    #[serde(default)]
    pub kv_allocated_bytes: Option<u64>,
    /// `kv_bytes / kv_bytes_full` (NaN when the full figure is 0).
    #[serde(with = "super::nanable")]
    pub ratio: f64,
    /// Peak resident set size of the process while this experiment ran.
    pub peak_rss_bytes: u64,
    /// Peak device memory (CUDA), when measured.
    #[serde(default)]
    pub peak_device_bytes: Option<u64>,
    /// How the peak was measured, e.g. "child process per experiment, VmHWM".
    pub method: String,
}

impl MemoryFigures {
    /// Builds the figures; the ratio is computed here.
    pub fn new(
        kv_bytes: u64,
        kv_bytes_full: u64,
        peak_rss_bytes: u64,
        method: impl Into<String>,
    ) -> MemoryFigures {
        MemoryFigures {
            kv_bytes,
            kv_bytes_full,
            ratio: if kv_bytes_full == 0 {
                f64::NAN
            } else {
                kv_bytes as f64 / kv_bytes_full as f64
            },
            peak_rss_bytes,
            kv_allocated_bytes: None,
            peak_device_bytes: None,
            method: method.into(),
        }
    }

    /// KV size in the seed's unit (bytes / 2^30).
    pub fn kv_gb(&self) -> f64 {
        self.kv_bytes as f64 / super::BYTES_PER_GB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(model: u64, score: u64, evict: u64, other: u64) -> StepTiming {
        StepTiming {
            model: Duration::from_micros(model),
            score_update: Duration::from_micros(score),
            eviction: Duration::from_micros(evict),
            other: Duration::from_micros(other),
        }
    }

    #[test]
    fn percentile_interpolates() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert!((percentile(&v, 0.9) - 3.7).abs() < 1e-12);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn ppl_from_nlls_exact() {
        let nlls: Vec<f64> = (1..=10).map(|i| i as f64 / 10.0).collect();
        let f = PplFigures::from_nlls(&nlls);
        assert_eq!(f.n_predictions, 10);
        assert!((f.mean_nll - 0.55).abs() < 1e-12);
        assert!((f.ppl - 0.55f64.exp()).abs() < 1e-12);
        assert!((f.nll.p50 - 0.55).abs() < 1e-12);
        assert!((f.nll.p90 - 0.91).abs() < 1e-12);
        assert_eq!(f.nll.max, 1.0);
        assert_eq!(f.nll.buckets.len(), 8);
        // 10 predictions in 8 buckets: boundaries floor(i*10/8) = 0,1,2,3,5,6,7,8,10
        let bounds: Vec<(usize, usize)> = f.nll.buckets.iter().map(|b| (b.start, b.end)).collect();
        assert_eq!(
            bounds,
            vec![
                (0, 1),
                (1, 2),
                (2, 3),
                (3, 5),
                (5, 6),
                (6, 7),
                (7, 8),
                (8, 10)
            ]
        );
        assert!((f.nll.buckets[3].mean_nll - 0.45).abs() < 1e-12);
        assert!((f.nll.buckets[7].mean_nll - 0.95).abs() < 1e-12);
    }

    #[test]
    fn ppl_few_and_empty() {
        let f = PplFigures::from_nlls(&[2.0, 4.0]);
        assert_eq!(f.nll.buckets.len(), 2);
        assert_eq!(f.ppl, 3.0f64.exp());
        let e = PplFigures::from_nlls(&[]);
        assert_eq!(e.n_predictions, 0);
        assert!(e.ppl.is_nan() && e.nll.buckets.is_empty());
        // NaN survives a JSON round trip as null
        let back: PplFigures = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert!(back.ppl.is_nan());
    }

    #[test]
    fn speed_from_run_exact() {
        // steps of 10, 20, 30, 40 ms; parts: model 8/16/24/32, score 1/2/3/4, evict 0/1/2/3, other 1/1/1/1
        let steps = [
            step(8000, 1000, 0, 1000),
            step(16000, 2000, 1000, 1000),
            step(24000, 3000, 2000, 1000),
            step(32000, 4000, 3000, 1000),
        ];
        // the whole generate took 160 ms: 10 ms more than the prefill and the steps timed (the
        // argmax and loop between steps), so the seed's TPOT is 160 / 5, not 150 / 5
        let total = Duration::from_millis(160);
        let f = SpeedFigures::from_run(Duration::from_millis(50), total, 100, 1, &steps);
        assert_eq!(f.decode_steps, 4);
        assert_eq!(f.generated_tokens, 5);
        assert!((f.ttft_ms - 50.0).abs() < 1e-9);
        assert!((f.tpot_median_ms - 25.0).abs() < 1e-9);
        assert!((f.tpot_p90_ms - 37.0).abs() < 1e-9);
        assert!((f.tpot_p10_ms - 13.0).abs() < 1e-9); // 10 + 0.3 x 10
        assert!((f.tpot_spread_pct() - 96.0).abs() < 1e-9); // (37 - 13) / 25
        assert!((f.tpot_mean_ms - 25.0).abs() < 1e-9);
        assert!((f.throughput_tps - 40.0).abs() < 1e-9); // 4 tokens / 0.1 s
        assert!((f.prefill_tps - 2000.0).abs() < 1e-9);
        assert!((f.seed_tpot_ms - 32.0).abs() < 1e-9); // 160 ms / 5
        assert!((f.seed_throughput_tps - 5.0 / 0.16).abs() < 1e-9);
        let b = &f.breakdown;
        assert!((b.model_ms - 20.0).abs() < 1e-9);
        assert!((b.score_update_ms - 2.5).abs() < 1e-9);
        assert!((b.eviction_ms - 1.5).abs() < 1e-9);
        assert!((b.other_ms - 1.0).abs() < 1e-9);
        assert!((b.step_ms - 25.0).abs() < 1e-9);
        assert!((b.model_share - 0.8).abs() < 1e-12);
        assert!((b.score_update_share - 0.1).abs() < 1e-12);
        assert!((b.eviction_share - 0.06).abs() < 1e-12);
        assert!((b.other_share - 0.04).abs() < 1e-12);
        // three rows: the same steps decode three times the tokens
        let f3 = SpeedFigures::from_run(Duration::from_millis(50), total, 100, 3, &steps);
        assert_eq!(f3.batch, 3);
        assert_eq!(f3.tpot_median_ms, f.tpot_median_ms);
        assert!((f3.throughput_tps - 120.0).abs() < 1e-9);
        assert!((f3.prefill_tps - 6000.0).abs() < 1e-9);
        assert_eq!(f3.generated_tokens, 5, "per row");
        assert!((f3.seed_throughput_tps - 15.0 / 0.16).abs() < 1e-9);
        // results written before batches existed read as batch 1
        let mut old = serde_json::to_value(&f).unwrap();
        old.as_object_mut().unwrap().remove("batch");
        assert_eq!(serde_json::from_value::<SpeedFigures>(old).unwrap(), f);
    }

    #[test]
    fn speed_without_steps_does_not_panic() {
        let f = SpeedFigures::from_run(Duration::ZERO, Duration::ZERO, 0, 1, &[]);
        assert!(f.tpot_median_ms.is_nan() && f.throughput_tps.is_nan());
        assert_eq!(f.generated_tokens, 1);
    }

    #[test]
    fn memory_figures() {
        // Pythia-2.8B, 256 tokens, fp16: the seed's 0.078125 GB
        let full = full_cache_bytes(32, 32, 80, 2, 256, 1);
        assert_eq!(full, 83_886_080);
        let m = MemoryFigures::new(full / 4, full, 1 << 30, "VmHWM");
        assert_eq!(m.ratio, 0.25);
        assert_eq!(MemoryFigures::new(full, full, 0, "").kv_gb(), 0.078125);
        assert!(MemoryFigures::new(1, 0, 0, "").ratio.is_nan());
        assert_eq!(full_cache_bytes(usize::MAX, 2, 1, 1, 1, 1), u64::MAX);
    }
}
