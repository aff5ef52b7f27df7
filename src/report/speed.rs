//! `h2o speed`'s results: its measured points and the document `--json` writes (the points with
//! the bandwidth floor, the session and the K/V cap), typed; beside bench's run document
//! ([`super::RunDocument`]).

use serde::Serialize;

use super::figures::{MemoryFigures, SpeedFigures};
use super::record::ExperimentResult;
use crate::policy::PolicySpec;

/// One measured point: a policy at one context length and batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedPoint {
    pub context: usize,
    pub batch: usize,
    /// The largest batch whose K/V fits under the cap.
    pub at_cap: bool,
    /// The measurement (its speed and memory figures are there: [`SpeedPoint::new`]).
    pub result: ExperimentResult,
    /// TPOT's floor from the memory bandwidth (ms), NaN when not measured.
    pub floor_ms: f64,
    /// Each round's median TPOT (ms), in the order measured (`speed --rounds N`: the point's
    /// figures are its median round's); one entry for a single round.
    pub rounds_tpot_ms: Vec<f64>,
    /// Set by [`flag_unsteady`]: how many times the run's typical spread this point's is, when it is
    /// far wider than its neighbours'.
    pub unsteady: Option<f64>,
}

impl SpeedPoint {
    /// A point of `result`; `None` when it has no speed or memory figures. The floor is NaN
    /// until it is known.
    pub fn new(
        context: usize,
        batch: usize,
        at_cap: bool,
        result: ExperimentResult,
    ) -> Option<SpeedPoint> {
        if result.speed.is_none() || result.memory.is_none() {
            return None;
        }
        Some(SpeedPoint {
            context,
            batch,
            at_cap,
            rounds_tpot_ms: vec![result.speed.as_ref().map_or(f64::NAN, |s| s.tpot_median_ms)],
            result,
            floor_ms: f64::NAN,
            unsteady: None,
        })
    }

    /// The point of the median round of `rounds` (the same target measured once per round; the
    /// lower middle for an even count), with every round's TPOT recorded; `None` for no rounds.
    pub fn median_round(rounds: Vec<SpeedPoint>) -> Option<SpeedPoint> {
        let tpots: Vec<f64> = rounds.iter().map(|p| p.speed().tpot_median_ms).collect();
        let mut order: Vec<usize> = (0..rounds.len()).collect();
        order.sort_by(|&a, &b| tpots[a].total_cmp(&tpots[b]));
        let middle = *order.get(rounds.len().checked_sub(1)? / 2)?;
        let mut p = rounds.into_iter().nth(middle)?;
        p.rounds_tpot_ms = tpots;
        Some(p)
    }

    /// How much the rounds' TPOTs differ: (max - min) / median round, in percent; NaN for one round.
    pub fn round_spread_pct(&self) -> f64 {
        let r = &self.rounds_tpot_ms;
        if r.len() < 2 {
            return f64::NAN;
        }
        let max = r.iter().copied().fold(f64::MIN, f64::max);
        let min = r.iter().copied().fold(f64::MAX, f64::min);
        (max - min) / self.speed().tpot_median_ms * 100.0
    }

    /// The spread that decides steadiness: the wider of the decode steps' and the rounds'.
    pub fn spread_pct(&self) -> f64 {
        let steps = self.speed().tpot_spread_pct();
        let rounds = self.round_spread_pct();
        if rounds.is_nan() {
            steps
        } else {
            steps.max(rounds)
        }
    }

    pub fn spec(&self) -> PolicySpec {
        self.result.spec
    }

    pub fn speed(&self) -> &SpeedFigures {
        self.result
            .speed
            .as_ref()
            .expect("a point has speed figures")
    }

    pub fn memory(&self) -> &MemoryFigures {
        self.result
            .memory
            .as_ref()
            .expect("a point has memory figures")
    }

    /// Allocated K/V bytes at the end of the run (the bytes held where not known).
    pub fn kv_allocated(&self) -> u64 {
        let m = self.memory();
        m.kv_allocated_bytes.unwrap_or(m.kv_bytes)
    }
}

/// A point is unsteady when its spread ([`SpeedPoint::spread_pct`]) is more than this many times
/// the run's median spread...
pub const UNSTEADY_TIMES: f64 = 3.0;
/// ...and at least this many percent: a run whose steps all vary by a few percent flags nothing.
pub const UNSTEADY_MIN_PCT: f64 = 10.0;

/// Marks the points whose spread is far wider than the other points' of the run (more than
/// [`UNSTEADY_TIMES`] the median spread and over [`UNSTEADY_MIN_PCT`]): a figure measured while
/// something else ran, not a steady measurement. Needs three points with a known spread (with
/// fewer there are no neighbours to compare with); returns how many it marked.
pub fn flag_unsteady(points: &mut [SpeedPoint]) -> usize {
    let mut spreads: Vec<f64> = points
        .iter()
        .map(SpeedPoint::spread_pct)
        .filter(|s| s.is_finite())
        .collect();
    if spreads.len() < 3 {
        return 0;
    }
    spreads.sort_by(f64::total_cmp);
    let typical = spreads[(spreads.len() - 1) / 2];
    let mut marked = 0;
    for p in points.iter_mut() {
        let s = p.spread_pct();
        p.unsteady =
            (s.is_finite() && s > UNSTEADY_MIN_PCT && s > UNSTEADY_TIMES * typical).then(|| {
                if typical > 0.0 {
                    s / typical
                } else {
                    f64::INFINITY
                }
            });
        marked += usize::from(p.unsteady.is_some());
    }
    marked
}

/// A point as `--json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeedRunJson {
    pub policy: PolicySpec,
    pub context: usize,
    pub batch: usize,
    pub at_cap: bool,
    /// Generated tokens per row.
    pub gen: usize,
    pub speed: SpeedFigures,
    pub kv_bytes: u64,
    pub kv_allocated_bytes: u64,
    pub kv_bytes_full: u64,
    pub peak_rss_bytes: u64,
    /// `null` when not measured (`--no-floor`).
    pub floor_ms: Option<f64>,
    /// Each round's median TPOT (ms), in the order measured; the figures are the median round's.
    pub rounds_tpot_median_ms: Vec<f64>,
    /// Whether the point's spread was in line with the run's ([`flag_unsteady`]).
    pub steady: bool,
}

impl SpeedRunJson {
    pub fn of(p: &SpeedPoint, gen: usize) -> SpeedRunJson {
        let m = p.memory();
        SpeedRunJson {
            policy: p.spec(),
            context: p.context,
            batch: p.batch,
            at_cap: p.at_cap,
            gen,
            speed: p.speed().clone(),
            kv_bytes: m.kv_bytes,
            kv_allocated_bytes: p.kv_allocated(),
            kv_bytes_full: m.kv_bytes_full,
            peak_rss_bytes: m.peak_rss_bytes,
            floor_ms: finite(p.floor_ms),
            rounds_tpot_median_ms: p.rounds_tpot_ms.clone(),
            steady: p.unsteady.is_none(),
        }
    }
}

/// The largest batch of one policy whose allocated K/V fits under the cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapFitJson {
    pub spec: PolicySpec,
    /// Slots per (row, head) at the end of the run.
    pub slots: usize,
    /// Allocated K/V bytes of one row.
    pub row_bytes: u64,
    pub batch: usize,
    /// Allocated K/V bytes at that batch.
    pub bytes: u64,
}

/// A policy's measured point of highest throughput within the cap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestUnderCapJson {
    pub spec: PolicySpec,
    pub batch: usize,
    pub kv_allocated_bytes: u64,
    pub tokens_per_s: f64,
}

/// What the K/V cap is on.
pub const CAP_MEASURE: &str = "allocated K/V slot arrays at the end of the run";

/// The K/V cap of a run (`--kv-cap`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvCapJson {
    pub bytes: u64,
    /// What the cap is on ([`CAP_MEASURE`]).
    pub measure: &'static str,
    pub fits: Vec<CapFitJson>,
    pub best: Vec<BestUnderCapJson>,
}

/// The document `h2o speed --json` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeedDocument {
    /// Weight bytes a decode step reads (the input embedding: one row).
    pub weight_bytes_read_per_token: u64,
    /// The higher of the two read-bandwidth measurements; `null` with `--no-floor`.
    pub read_bandwidth_bytes_per_s: Option<f64>,
    /// The read bandwidth measured before and after the points.
    pub read_bandwidth_before_after: [Option<f64>; 2],
    pub model: String,
    /// The linears' weight format (manifest `weights`: fp32, int8, int4, int8-dq; with a prefill
    /// copy e.g. int4+int8-dq-prefill), so runs of one model name in several formats stay apart.
    pub weights: String,
    pub threads: usize,
    pub provider: String,
    /// Subnormal floats in ONNX Runtime's threads (`flush` or `keep`, `--denormals`): a softmax over
    /// masked scores runs several times faster flushed, so runs that differ in it do not compare.
    pub denormals: String,
    /// Where the K/V lived (`host` or `device`).
    pub kv: String,
    pub prefill_chunk: Option<usize>,
    /// How the peak memory was measured.
    pub peak_memory: &'static str,
    pub kv_cap: Option<KvCapJson>,
    pub runs: Vec<SpeedRunJson>,
}

impl SpeedDocument {
    /// The document as `--json` writes it: pretty JSON, every object's keys in alphabetical order
    /// (as this file has always had them).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&serde_json::to_value(self)?)
    }
}

/// `x`, or `None` when it is not finite (NaN: not measured).
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Breakdown, ExperimentStatus, TrafficFigures};

    fn point() -> SpeedPoint {
        let spec: PolicySpec = "h2o:6+2".parse().unwrap();
        let mut r = ExperimentResult::new("h2o 6+2", spec);
        r.speed = Some(SpeedFigures {
            batch: 2,
            prompt_tokens: 8,
            decode_steps: 3,
            generated_tokens: 8,
            ttft_ms: 1.5,
            tpot_median_ms: 0.25,
            tpot_p90_ms: 0.5,
            tpot_p10_ms: 0.125,
            tpot_mean_ms: 0.375,
            throughput_tps: 8000.0,
            prefill_tps: 10666.5,
            seed_tpot_ms: f64::NAN,
            seed_throughput_tps: 1200.0,
            breakdown: Breakdown {
                model_ms: 0.25,
                score_update_ms: 0.0625,
                eviction_ms: 0.03125,
                other_ms: 0.03125,
                step_ms: 0.375,
                model_share: 0.5,
                score_update_share: 0.125,
                eviction_share: 0.0625,
                other_share: 0.0625,
            },
            traffic: Some(TrafficFigures {
                prefill_to_device: 1,
                prefill_from_device: 2,
                step_to_device: 3,
                step_from_device: 4,
            }),
        });
        r.memory = Some(MemoryFigures {
            kv_bytes: 4096,
            kv_bytes_full: 8192,
            kv_allocated_bytes: Some(6144),
            ratio: 0.5,
            peak_rss_bytes: 1_000_000,
            peak_device_bytes: None,
            method: "m".into(),
        });
        r.status = ExperimentStatus::Ok;
        SpeedPoint {
            floor_ms: 0.125,
            ..SpeedPoint::new(8, 2, true, r).unwrap()
        }
    }

    /// The typed document writes exactly the JSON the untyped one did: every key and value, in
    /// alphabetical order, pretty-printed (expected text written by hand).
    #[test]
    fn the_document_writes_the_json_of_a_hand_built_point() {
        let p = point();
        let doc = SpeedDocument {
            weight_bytes_read_per_token: 123456,
            read_bandwidth_bytes_per_s: finite(2.5e10),
            read_bandwidth_before_after: [finite(2.5e10), finite(f64::NAN)],
            model: "pythia-micro".into(),
            weights: "int4+int8-dq-prefill".into(),
            threads: 2,
            provider: "cpu".into(),
            denormals: "flush".into(),
            kv: "host".into(),
            prefill_chunk: None,
            peak_memory: "child process per experiment: VmHWM",
            kv_cap: Some(KvCapJson {
                bytes: 1 << 20,
                measure: CAP_MEASURE,
                fits: vec![CapFitJson {
                    spec: p.spec(),
                    slots: 64,
                    row_bytes: 3072,
                    batch: 341,
                    bytes: 1047552,
                }],
                best: vec![BestUnderCapJson {
                    spec: p.spec(),
                    batch: 2,
                    kv_allocated_bytes: 6144,
                    tokens_per_s: 8000.0,
                }],
            }),
            runs: vec![SpeedRunJson::of(&p, 4)],
        };
        let want = r#"{
  "denormals": "flush",
  "kv": "host",
  "kv_cap": {
    "best": [
      {
        "batch": 2,
        "kv_allocated_bytes": 6144,
        "spec": "h2o:6+2",
        "tokens_per_s": 8000.0
      }
    ],
    "bytes": 1048576,
    "fits": [
      {
        "batch": 341,
        "bytes": 1047552,
        "row_bytes": 3072,
        "slots": 64,
        "spec": "h2o:6+2"
      }
    ],
    "measure": "allocated K/V slot arrays at the end of the run"
  },
  "model": "pythia-micro",
  "peak_memory": "child process per experiment: VmHWM",
  "prefill_chunk": null,
  "provider": "cpu",
  "read_bandwidth_before_after": [
    25000000000.0,
    null
  ],
  "read_bandwidth_bytes_per_s": 25000000000.0,
  "runs": [
    {
      "at_cap": true,
      "batch": 2,
      "context": 8,
      "floor_ms": 0.125,
      "gen": 4,
      "kv_allocated_bytes": 6144,
      "kv_bytes": 4096,
      "kv_bytes_full": 8192,
      "peak_rss_bytes": 1000000,
      "policy": "h2o:6+2",
      "rounds_tpot_median_ms": [
        0.25
      ],
      "speed": {
        "batch": 2,
        "breakdown": {
          "eviction_ms": 0.03125,
          "eviction_share": 0.0625,
          "model_ms": 0.25,
          "model_share": 0.5,
          "other_ms": 0.03125,
          "other_share": 0.0625,
          "score_update_ms": 0.0625,
          "score_update_share": 0.125,
          "step_ms": 0.375
        },
        "decode_steps": 3,
        "generated_tokens": 8,
        "prefill_tps": 10666.5,
        "prompt_tokens": 8,
        "seed_throughput_tps": 1200.0,
        "seed_tpot_ms": null,
        "throughput_tps": 8000.0,
        "tpot_mean_ms": 0.375,
        "tpot_median_ms": 0.25,
        "tpot_p10_ms": 0.125,
        "tpot_p90_ms": 0.5,
        "traffic": {
          "prefill_from_device": 2,
          "prefill_to_device": 1,
          "step_from_device": 4,
          "step_to_device": 3
        },
        "ttft_ms": 1.5
      },
      "steady": true
    }
  ],
  "threads": 2,
  "weight_bytes_read_per_token": 123456,
  "weights": "int4+int8-dq-prefill"
}"#;
        assert_eq!(doc.to_json().unwrap(), want);
        // the untyped document speed built before, on the same point
        let (f, m) = (p.speed(), p.memory());
        let untyped = serde_json::json!({
            "weight_bytes_read_per_token": 123456u64,
            "read_bandwidth_bytes_per_s": Some(2.5e10),
            "read_bandwidth_before_after": [Some(2.5e10), None::<f64>],
            "model": "pythia-micro", "weights": "int4+int8-dq-prefill", "threads": 2, "provider": "cpu",
            "denormals": "flush", "kv": "host",
            "prefill_chunk": None::<usize>,
            "peak_memory": "child process per experiment: VmHWM",
            "kv_cap": Some(serde_json::json!({
                "bytes": 1u64 << 20,
                "measure": "allocated K/V slot arrays at the end of the run",
                "fits": [{"spec": "h2o:6+2", "slots": 64, "row_bytes": 3072, "batch": 341, "bytes": 1047552}],
                "best": [{"spec": "h2o:6+2", "batch": 2, "kv_allocated_bytes": 6144, "tokens_per_s": 8000.0}],
            })),
            "runs": [serde_json::json!({
                "policy": p.result.spec, "context": 8, "batch": 2,
                "at_cap": true, "gen": 4, "speed": f,
                "kv_bytes": m.kv_bytes, "kv_allocated_bytes": 6144,
                "kv_bytes_full": m.kv_bytes_full, "peak_rss_bytes": m.peak_rss_bytes,
                "floor_ms": Some(0.125),
                "rounds_tpot_median_ms": [0.25], "steady": true,
            })],
        });
        assert_eq!(serde_json::to_string_pretty(&untyped).unwrap(), want);
        // no cap, no floor: nulls, as before
        let doc = SpeedDocument {
            kv_cap: None,
            runs: vec![SpeedRunJson::of(
                &SpeedPoint {
                    floor_ms: f64::NAN,
                    ..p
                },
                4,
            )],
            ..doc
        };
        let v: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(v["kv_cap"], serde_json::Value::Null);
        assert_eq!(v["runs"][0]["floor_ms"], serde_json::Value::Null);
    }

    /// A point whose decode steps spread from p10 to p90 by `spread` percent of the median 10 ms.
    fn spread(spread: f64) -> SpeedPoint {
        let mut p = point();
        let f = p.result.speed.as_mut().unwrap();
        f.tpot_median_ms = 10.0;
        f.tpot_p10_ms = 10.0;
        f.tpot_p90_ms = 10.0 + spread / 10.0;
        p.rounds_tpot_ms = vec![10.0];
        p
    }

    #[test]
    fn the_median_round_is_kept_with_every_rounds_tpot() {
        let round = |tpot: f64, ttft: f64| {
            let mut p = point();
            let f = p.result.speed.as_mut().unwrap();
            f.tpot_median_ms = tpot;
            f.ttft_ms = ttft;
            p
        };
        let rounds = vec![round(20.0, 1.0), round(10.0, 2.0), round(30.0, 3.0)];
        let p = SpeedPoint::median_round(rounds).unwrap();
        assert_eq!(
            p.speed().ttft_ms,
            1.0,
            "the round of median TPOT (20), whole"
        );
        assert_eq!(p.rounds_tpot_ms, [20.0, 10.0, 30.0]);
        assert_eq!(p.round_spread_pct(), 100.0); // (30 - 10) / 20
                                                 // an even count takes the lower middle
        let p = SpeedPoint::median_round(vec![round(20.0, 1.0), round(10.0, 2.0)]).unwrap();
        assert_eq!(p.speed().ttft_ms, 2.0);
        assert_eq!(SpeedPoint::median_round(Vec::new()), None);
        assert!(point().round_spread_pct().is_nan());
    }

    #[test]
    fn a_point_far_wider_than_its_neighbours_is_flagged() {
        // spreads 4, 5, 6 and 40 %: the typical (median, lower middle) is 5, and 40 > 3 x 5
        let mut pts = vec![spread(4.0), spread(5.0), spread(6.0), spread(40.0)];
        assert_eq!(flag_unsteady(&mut pts), 1);
        assert_eq!(pts[3].unsteady, Some(8.0));
        assert!(pts[..3].iter().all(|p| p.unsteady.is_none()));
        assert!(!SpeedRunJson::of(&pts[3], 4).steady && SpeedRunJson::of(&pts[0], 4).steady);
        // 14 % is over 10 % but not over 3 x 5: steady
        let mut pts = vec![spread(4.0), spread(5.0), spread(6.0), spread(14.0)];
        assert_eq!(flag_unsteady(&mut pts), 0);
        // all tiny: 2 % against 0.5 % is 4x, but under the 10 % floor
        let mut pts = vec![spread(0.5), spread(0.5), spread(0.5), spread(2.0)];
        assert_eq!(flag_unsteady(&mut pts), 0);
        // two points have no neighbours to compare with
        let mut pts = vec![spread(1.0), spread(90.0)];
        assert_eq!(flag_unsteady(&mut pts), 0);
        // the rounds count too: steady steps, rounds 10 and 16 ms apart (60 %)
        let mut wide = spread(4.0);
        wide.rounds_tpot_ms = vec![10.0, 16.0, 10.0];
        let mut pts = vec![spread(4.0), spread(5.0), spread(6.0), wide];
        assert_eq!(flag_unsteady(&mut pts), 1);
        assert_eq!(pts[3].unsteady, Some(12.0));
    }

    #[test]
    fn a_result_without_speed_or_memory_is_no_point() {
        let mut r = point().result;
        r.memory = None;
        assert_eq!(SpeedPoint::new(8, 1, false, r), None);
        let p = point();
        assert_eq!(p.kv_allocated(), 6144);
        let mut r = p.result;
        r.memory.as_mut().unwrap().kv_allocated_bytes = None;
        assert_eq!(
            SpeedPoint::new(8, 1, false, r).unwrap().kv_allocated(),
            4096
        );
    }
}
