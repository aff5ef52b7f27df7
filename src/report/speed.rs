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
            result,
            floor_ms: f64::NAN,
        })
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
    pub threads: usize,
    pub provider: String,
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
            threads: 2,
            provider: "cpu".into(),
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
        "tpot_p90_ms": 0.5,
        "traffic": {
          "prefill_from_device": 2,
          "prefill_to_device": 1,
          "step_from_device": 4,
          "step_to_device": 3
        },
        "ttft_ms": 1.5
      }
    }
  ],
  "threads": 2,
  "weight_bytes_read_per_token": 123456
}"#;
        assert_eq!(doc.to_json().unwrap(), want);
        // the untyped document speed built before, on the same point
        let (f, m) = (p.speed(), p.memory());
        let untyped = serde_json::json!({
            "weight_bytes_read_per_token": 123456u64,
            "read_bandwidth_bytes_per_s": Some(2.5e10),
            "read_bandwidth_before_after": [Some(2.5e10), None::<f64>],
            "model": "pythia-micro", "threads": 2, "provider": "cpu",
            "kv": "host",
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
