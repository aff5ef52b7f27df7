//! Throughput under a K/V memory cap (the H2O paper's systems claim): the K/V bytes a speed run
//! allocates, computed from the store's own growth rule ([`crate::cache::sizing`]) without
//! allocating; the largest batch under a cap; byte sizes such as `4GiB`; and a memory check that
//! refuses a run which certainly cannot fit before it starts.
//!
//! The cap is on the allocated K/V slot arrays at their largest (the end of the run): that is what
//! occupies memory, and it is at least the K/V held (a full cache grows in 64-slot chunks, so up to
//! 63 slots per head are allocated but empty; a bounded policy allocates its budget). Not counted:
//! the slot tables (a position and a score per slot and head, 12 bytes against the K/V's
//! `2 x head_dim x dtype`), and, while a layer grows, its old K (then V) array beside the new one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::bandwidth::weight_bytes;
use super::memory::available_bytes;
use crate::cache::sizing::{slot_limit, SLOT_CHUNK};
use crate::cache::{slots_after, KvLayout};
use crate::error::MemoryError;
use crate::manifest::Manifest;
use crate::model::Model;
use crate::policy::{PolicyKind, PolicySpec};

/// The lengths of a speed run that decide its K/V: prompt tokens per row, generated tokens per row,
/// the prefill chunk, and whether a declared BOS is fed before each prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// Text tokens of the prompt per row.
    pub prompt: usize,
    pub gen: usize,
    /// Most prompt tokens per row in one prefill run (`None`: the whole prompt in one run).
    pub prefill_chunk: Option<usize>,
    /// The model declares a BOS: the prefill feeds it before the prompt (one token more per row).
    pub bos: bool,
}

impl RunShape {
    /// Tokens the prefill feeds per row: the prompt, after the declared BOS if any.
    pub fn fed_prompt(&self) -> usize {
        self.prompt + usize::from(self.bos)
    }

    /// New tokens per row of each graph run, in order: the prefill's runs, then `gen - 1` decode
    /// steps of one token (the last generated token is never fed).
    pub fn graph_runs(&self) -> impl Iterator<Item = usize> + Clone {
        let prompt = self.fed_prompt();
        let chunk = self.prefill_chunk.unwrap_or(prompt).max(1);
        let full = prompt / chunk;
        let rest = prompt - full * chunk;
        std::iter::repeat_n(chunk, full)
            .chain((rest > 0).then_some(rest))
            .chain(std::iter::repeat_n(1, self.gen.saturating_sub(1)))
    }

    /// The most new tokens per row of one graph run (what sizes the logits).
    pub fn largest_run(&self) -> usize {
        self.graph_runs().max().unwrap_or(0)
    }

    /// Slots per (row, head) of the largest layer at the end of the run with `spec` on a model of
    /// `max_positions` positions (every layer's, under a uniform schedule).
    pub fn slots(&self, spec: &PolicySpec, max_positions: usize) -> usize {
        self.kind_slots(&spec.kind, max_positions)
    }

    /// Slots per (row, head) of each of `layers` layers at the end of the run with `spec` (a
    /// per-layer budget schedule gives each layer its own limit).
    pub fn layer_slots(
        &self,
        spec: &PolicySpec,
        layers: usize,
        max_positions: usize,
    ) -> Vec<usize> {
        spec.layer_kinds(layers)
            .iter()
            .map(|k| self.kind_slots(k, max_positions))
            .collect()
    }

    fn kind_slots(&self, kind: &PolicyKind, max_positions: usize) -> usize {
        let budget = kind.budget().unwrap_or(usize::MAX);
        slots_after(
            slot_limit(budget, max_positions),
            SLOT_CHUNK,
            self.graph_runs(),
        )
    }
}

/// The largest batch of one policy whose allocated K/V fits under a cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapFit {
    pub spec: PolicySpec,
    /// Slots per (row, head) at the end of the run.
    pub slots: usize,
    /// Allocated K/V bytes of one row.
    pub row_bytes: u64,
    /// The largest batch under the cap (at least 1).
    pub batch: usize,
    /// Allocated K/V bytes at that batch.
    pub bytes: u64,
}

/// A cap that holds not even one row of a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("K/V cap {} is less than one row of {spec} ({slots} slots per head at prompt {prompt} + gen {gen}{}: {} of K/V); raise the cap to at least {}", format_bytes(*.cap), if *.bos { " + the model's declared BOS" } else { "" }, format_bytes(*.row_bytes), format_bytes(*.row_bytes))]
pub struct CapTooSmall {
    pub cap: u64,
    pub spec: PolicySpec,
    pub slots: usize,
    pub prompt: usize,
    pub gen: usize,
    pub bos: bool,
    pub row_bytes: u64,
}

/// The largest batch of `spec` whose allocated K/V (all layers, K and V, every row) after a run of
/// `shape` is at most `cap`: computed, nothing is allocated. K/V bytes are exactly linear in the
/// batch (rows of one run have the same slots), so it is `cap / bytes of one row`.
pub fn largest_batch(
    cap: u64,
    layout: &KvLayout,
    spec: &PolicySpec,
    max_positions: usize,
    shape: &RunShape,
) -> Result<CapFit, CapTooSmall> {
    let layer_slots = shape.layer_slots(spec, layout.layers, max_positions);
    let slots = layer_slots.iter().copied().max().unwrap_or(0);
    let row_bytes = layout.row_bytes(&layer_slots);
    let batch = cap
        .checked_div(row_bytes)
        .map_or(0, |b| usize::try_from(b).unwrap_or(usize::MAX));
    if batch == 0 {
        return Err(CapTooSmall {
            cap,
            spec: *spec,
            slots,
            prompt: shape.prompt,
            gen: shape.gen,
            bos: shape.bos,
            row_bytes,
        });
    }
    Ok(CapFit {
        spec: *spec,
        slots,
        row_bytes,
        batch,
        bytes: row_bytes.saturating_mul(batch as u64),
    })
}

/// One measured point of a throughput sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputPoint {
    pub spec: PolicySpec,
    pub batch: usize,
    /// Allocated K/V bytes at the end of the run.
    pub kv_allocated_bytes: u64,
    /// Decode tokens of all rows per second.
    pub tokens_per_s: f64,
}

/// Per policy (in first-seen order), the measured point of highest throughput whose allocated K/V
/// is within `cap`; a policy with no such point is left out.
pub fn best_under_cap(points: &[ThroughputPoint], cap: u64) -> Vec<ThroughputPoint> {
    let mut best: Vec<ThroughputPoint> = Vec::new();
    for p in points
        .iter()
        .filter(|p| p.kv_allocated_bytes <= cap && p.tokens_per_s.is_finite())
    {
        match best.iter_mut().find(|b| b.spec == p.spec) {
            Some(b) if b.tokens_per_s < p.tokens_per_s => *b = p.clone(),
            Some(_) => {}
            None => best.push(p.clone()),
        }
    }
    best
}

/// Memory a speed run certainly needs (a lower bound: ONNX Runtime's activations come on top).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// Allocated K/V at the end of the run.
    pub kv: u64,
    /// The float32 logits `[batch, rows, vocab]` of the largest graph run, twice: ONNX Runtime's
    /// output and the decoder's copy.
    pub logits: u64,
    /// The weight files (loaded by the session).
    pub weights: u64,
    /// Whether the graph returns only the logits asked for (`logits_from`, exporter 1.3.0): one
    /// row per sequence in a speed run's prefill, so the prefill chunk does not change them.
    pub last_logits_only: bool,
}

impl MemoryNeed {
    /// `batch` rows of `shape` whose K/V takes `row_bytes` per row, a vocabulary of `vocab` and
    /// `weights` bytes; `last_logits_only`: the graph takes `logits_from` (a speed run's prefill
    /// then returns one logits row per sequence, as a decode step does), else every new token's.
    pub fn of(
        row_bytes: u64,
        vocab: usize,
        weights: u64,
        batch: usize,
        shape: &RunShape,
        last_logits_only: bool,
    ) -> Self {
        let rows = if last_logits_only {
            1
        } else {
            shape.largest_run()
        };
        MemoryNeed {
            kv: row_bytes.saturating_mul(batch as u64),
            logits: logits_bytes(batch, rows, vocab),
            weights,
            last_logits_only,
        }
    }

    pub fn total(&self) -> u64 {
        self.kv
            .saturating_add(self.logits)
            .saturating_add(self.weights)
    }

    /// Refuses the run when its need is more than `available`; the error says which prefill chunk
    /// would fit, if a smaller one would.
    pub fn check(
        &self,
        what: &str,
        batch: usize,
        vocab: usize,
        shape: &RunShape,
        available: u64,
    ) -> Result<(), MemoryError> {
        if self.total() <= available {
            return Ok(());
        }
        let room = available.saturating_sub(self.kv.saturating_add(self.weights));
        let per_token = logits_bytes(batch, 1, vocab).max(1);
        let fits = usize::try_from(room / per_token).unwrap_or(usize::MAX);
        let chunk_hint =
            (!self.last_logits_only && fits >= 1 && fits < shape.largest_run()).then_some(fits);
        Err(MemoryError {
            what: what.to_string(),
            need: self.total(),
            parts: vec![
                ("K/V", self.kv),
                ("logits of the largest graph run x2", self.logits),
                ("weights", self.weights),
            ],
            available,
            chunk_hint,
        })
    }
}

/// Refuses `batch` rows of `shape` with `spec` on `model` when they certainly do not fit in the memory
/// available now (MemAvailable; no check where it cannot be read). `what` names the run.
pub fn check_memory(
    model: &Model,
    spec: &PolicySpec,
    shape: &RunShape,
    batch: usize,
    what: &str,
) -> Result<(), MemoryError> {
    check_memory_of(&model.manifest, &model.dir, spec, shape, batch, what)
}

/// [`check_memory`] for the model `m` in `dir`, without a loaded model.
pub fn check_memory_of(
    m: &Manifest,
    dir: &Path,
    spec: &PolicySpec,
    shape: &RunShape,
    batch: usize,
    what: &str,
) -> Result<(), MemoryError> {
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    let need = memory_need_of(m, dir, spec, shape, batch);
    need.check(what, batch, m.vocab_size, shape, available)
}

/// The memory `batch` rows of `shape` with `spec` certainly need on the model `m` in `dir` (what
/// [`check_memory_of`] compares with the memory available; a sweep's job records it).
pub fn memory_need_of(
    m: &Manifest,
    dir: &Path,
    spec: &PolicySpec,
    shape: &RunShape,
    batch: usize,
) -> MemoryNeed {
    let layout = KvLayout::of(m);
    let row_bytes =
        layout.row_bytes(&shape.layer_slots(spec, m.num_layers, m.max_position_embeddings));
    MemoryNeed::of(
        row_bytes,
        m.vocab_size,
        weight_bytes(dir),
        batch,
        shape,
        m.takes_logits_from(),
    )
}

/// Bytes of float32 logits `[batch, seq, vocab]`, twice (ONNX Runtime's output and the decoder's copy).
fn logits_bytes(batch: usize, seq: usize, vocab: usize) -> u64 {
    [batch, seq, vocab, 4]
        .iter()
        .fold(2u64, |acc, &x| acc.saturating_mul(x as u64))
}

/// Units [`parse_bytes`] accepts, lower case, with their factor.
const UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// A byte count: plain bytes (`4294967296`) or a number with a unit (`4GiB`, `512 MiB`, `1.5GiB`,
/// `2GB`; KiB/MiB/GiB/TiB are powers of 1024, kB/MB/GB/TB of 1000; case-insensitive), rounded
/// down to whole bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!(
            "'{text}' is negative; give a size of bytes, e.g. 4GiB, 512MiB, 2GB, 1073741824"
        ));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim().to_ascii_lowercase());
    let bad = || {
        format!("'{text}' is not a byte size; give bytes or a number with a unit, e.g. 4GiB, 512MiB, 2GB, 1073741824")
    };
    let factor = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| *f)
            .ok_or_else(bad)?
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return Err(bad());
    }
    let too_many = || format!("'{text}' is more bytes than this machine can count");
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            Ok(0)
        } else if s.len() > 30 {
            Err(too_many())
        } else {
            s.parse::<u128>().map_err(|_| bad())
        }
    };
    // at most 30 + 9 digits times a factor below 2^41: well inside u128, checked all the same
    let (whole, part, scale) = (digits(int)?, digits(frac)?, 10u128.pow(frac.len() as u32));
    let value = whole
        .checked_mul(scale)
        .and_then(|v| v.checked_add(part))
        .and_then(|v| v.checked_mul(u128::from(factor)))
        .ok_or_else(too_many)?
        / scale;
    u64::try_from(value).map_err(|_| too_many())
}

/// Bytes for people: `4.00 GiB`, `45.00 MiB`, `512 B`.
pub fn format_bytes(bytes: u64) -> String {
    const STEPS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in STEPS {
        if bytes >= size {
            return format!("{:.2} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::manifest::KvDtype;

    fn shape(prompt: usize, gen: usize, chunk: Option<usize>) -> RunShape {
        RunShape {
            prompt,
            gen,
            prefill_chunk: chunk,
            bos: false,
        }
    }

    const PYTHIA_160M: KvLayout = KvLayout {
        layers: 12,
        heads: 12,
        head_dim: 64,
        dtype: KvDtype::Float32,
    };

    #[test]
    fn graph_runs_of_a_run() {
        let runs: Vec<usize> = shape(10, 3, Some(4)).graph_runs().collect();
        assert_eq!(runs, vec![4, 4, 2, 1, 1]);
        let runs: Vec<usize> = shape(8, 2, None).graph_runs().collect();
        assert_eq!(runs, vec![8, 1]);
        let runs: Vec<usize> = shape(8, 1, Some(8)).graph_runs().collect();
        assert_eq!(runs, vec![8]);
        assert_eq!(shape(512, 128, Some(64)).largest_run(), 64);
        assert_eq!(shape(512, 128, None).largest_run(), 512);
        // a declared BOS is fed first, in the prefill's first run
        let bos = RunShape {
            bos: true,
            ..shape(10, 3, Some(4))
        };
        assert_eq!(bos.fed_prompt(), 11);
        assert_eq!(bos.graph_runs().collect::<Vec<_>>(), vec![4, 4, 3, 1, 1]);
        let spec: PolicySpec = "full".parse().unwrap();
        let layout = KvLayout {
            layers: 1,
            heads: 1,
            head_dim: 1,
            dtype: KvDtype::Float32,
        };
        let e = largest_batch(1, &layout, &spec, 2048, &bos).unwrap_err();
        assert!(
            e.to_string()
                .contains("at prompt 10 + gen 3 + the model's declared BOS:"),
            "{e}"
        );
    }

    #[test]
    fn pyramid_rows_add_up_each_layers_slots() {
        let s = shape(512, 128, None);
        let spec: PolicySpec = "h2o:192+64@pyramid".parse().unwrap();
        let slots = s.layer_slots(&spec, 12, 2048);
        assert!(
            slots.windows(2).all(|w| w[0] >= w[1]) && slots[0] > slots[11],
            "{slots:?}"
        );
        // every layer is bounded below prompt + gen, so each holds its budget: the same total as uniform
        assert_eq!(slots.iter().sum::<usize>(), 12 * 256, "{slots:?}");
        let fit = largest_batch(4 << 30, &PYTHIA_160M, &spec, 2048, &s).unwrap();
        assert_eq!(fit.slots, slots[0]);
        assert_eq!(fit.row_bytes, PYTHIA_160M.bytes(1, 256));
        assert_eq!(fit.batch, 227);
        let one = KvLayout {
            layers: 1,
            ..PYTHIA_160M
        };
        let sum: u64 = slots.iter().map(|&x| one.bytes(1, x)).sum();
        assert_eq!(PYTHIA_160M.row_bytes(&slots), sum);
    }

    #[test]
    fn the_readme_cap_at_random_160m() {
        let s = shape(512, 128, None);
        let spec = |t: &str| t.parse::<PolicySpec>().unwrap();
        let full = largest_batch(4 << 30, &PYTHIA_160M, &spec("full"), 2048, &s).unwrap();
        // 640 slots x 12 layers x 12 heads x 64 x 4 B x 2 = 47,185,920 B per row
        assert_eq!(
            (full.slots, full.row_bytes, full.batch),
            (640, 47_185_920, 91)
        );
        let h2o = largest_batch(4 << 30, &PYTHIA_160M, &spec("h2o:192+64"), 2048, &s).unwrap();
        assert_eq!(
            (h2o.slots, h2o.row_bytes, h2o.batch),
            (256, 18_874_368, 227)
        );
        let local = largest_batch(4 << 30, &PYTHIA_160M, &spec("local:256"), 2048, &s).unwrap();
        assert_eq!(local.batch, 227);
        let e = largest_batch(1 << 20, &PYTHIA_160M, &spec("full"), 2048, &s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "K/V cap 1.00 MiB is less than one row of full (640 slots per head at prompt 512 + gen 128: 45.00 MiB of K/V); raise the cap to at least 45.00 MiB"
        );
    }

    fn spec_strategy() -> impl Strategy<Value = PolicySpec> {
        prop_oneof![
            Just(PolicySpec::FULL),
            (1usize..300).prop_map(|recent| PolicySpec::from(PolicyKind::Local { recent })),
            (0usize..200, 1usize..100).prop_map(|(heavy, recent)| PolicySpec::from(
                PolicyKind::H2o {
                    heavy,
                    recent,
                    scope: crate::policy::Scope::Head,
                }
            )),
        ]
    }

    proptest! {
        /// The batch found never exceeds the cap, and one row more would.
        #[test]
        fn cap_search_is_within_the_cap_and_maximal(
            layers in 1usize..40, heads in 1usize..40, head_dim in 1usize..256, fp16 in any::<bool>(),
            spec in spec_strategy(), prompt in 1usize..700, gen in 2usize..300,
            chunk in prop::option::of(1usize..600), cap in 1u64..(64u64 << 30),
        ) {
            let layout = KvLayout {
                layers, heads, head_dim,
                dtype: if fp16 { KvDtype::Float16 } else { KvDtype::Float32 },
            };
            let s = shape(prompt, gen, chunk);
            match largest_batch(cap, &layout, &spec, 2048, &s) {
                Ok(fit) => {
                    prop_assert!(fit.batch >= 1);
                    prop_assert_eq!(fit.bytes, layout.bytes(fit.batch, fit.slots));
                    prop_assert!(fit.bytes <= cap, "{fit:?} over the cap {cap}");
                    prop_assert!(layout.bytes(fit.batch + 1, fit.slots) > cap, "{fit:?}: one more row fits {cap}");
                }
                Err(e) => prop_assert!(layout.bytes(1, e.slots) > cap, "{e}"),
            }
            let slots = s.slots(&spec, 2048);
            prop_assert!(slots >= (prompt + gen - 1).min(spec.budget().unwrap_or(2048)));
            prop_assert!(slots <= spec.budget().unwrap_or(2048).min(2048));
        }
    }

    #[test]
    fn best_under_cap_per_policy() {
        let p = |spec: &str, batch, kv, tps| ThroughputPoint {
            spec: spec.parse().unwrap(),
            batch,
            kv_allocated_bytes: kv,
            tokens_per_s: tps,
        };
        let points = [
            p("full", 1, 10, 5.0),
            p("full", 8, 80, 30.0),
            p("full", 16, 160, 50.0),
            p("local:4", 8, 40, 32.0),
            p("local:4", 16, 80, 31.0),
            p("h2o:2+2", 64, 320, 90.0),
        ];
        let best = best_under_cap(&points, 100);
        assert_eq!(best, vec![points[1].clone(), points[3].clone()]);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes(" 512 mib "), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(parse_bytes("10B"), Ok(10));
        assert_eq!(parse_bytes("0.5KiB"), Ok(512));
        for bad in ["", "GiB", "4G", "-1GiB", "1.2.3MiB", "four", "4 GiBs", "."] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_bytes("99999999999TiB")
            .unwrap_err()
            .contains("more bytes"));
        // 2^108 + 1 MiB wrapped to 1 MiB in u128 before the arithmetic was checked
        for huge in [
            "324518553658426726783156020576257MiB",
            "309485009821345068724781057TiB",
            "99999999999999999999999999999999999999.999999999",
        ] {
            assert!(
                parse_bytes(huge).unwrap_err().contains("more bytes"),
                "{huge}"
            );
        }
        assert!(parse_bytes("-1GiB").unwrap_err().contains("negative"));
        assert_eq!(format_bytes(4 << 30), "4.00 GiB");
        assert_eq!(format_bytes(47_185_920), "45.00 MiB");
        assert_eq!(format_bytes(100), "100 B");
    }

    #[test]
    fn memory_need_and_chunk_hint() {
        let s = shape(512, 128, None);
        let need = MemoryNeed::of(PYTHIA_160M.bytes(1, 640), 50_304, 600 << 20, 91, &s, false);
        assert_eq!(need.kv, 91 * 47_185_920);
        assert_eq!(need.logits, 2 * 91 * 512 * 50_304 * 4);
        assert!(need
            .check("full at batch 91", 91, 50_304, &s, u64::MAX)
            .is_ok());
        let e = need
            .check("full at batch 91", 91, 50_304, &s, 16 << 30)
            .unwrap_err();
        // room for logits: 16 GiB - K/V - weights, at 2 x 91 x 50304 x 4 B per token of a run
        let room = (16u64 << 30) - need.kv - (600 << 20);
        assert_eq!(e.chunk_hint, Some((room / (2 * 91 * 50_304 * 4)) as usize));
        assert!(
            e.to_string().contains("full at batch 91 needs at least"),
            "{e}"
        );
        assert!(
            e.to_string().contains("set prefill chunk well below"),
            "{e}"
        );
        let e = need.check("x", 91, 50_304, &s, 4 << 30).unwrap_err();
        assert_eq!(e.chunk_hint, None, "K/V alone is over: no chunk helps");
        assert!(e.to_string().contains("lower the batch"), "{e}");
        // a graph with logits_from: one logits row per sequence, whatever the chunk
        let last = MemoryNeed::of(PYTHIA_160M.bytes(1, 640), 50_304, 600 << 20, 91, &s, true);
        assert_eq!(last.logits, 2 * 91 * 50_304 * 4);
        assert!(last.check("x", 91, 50_304, &s, 16 << 30).is_ok());
        let e = last.check("x", 91, 50_304, &s, 4 << 30).unwrap_err();
        assert_eq!(
            e.chunk_hint, None,
            "the chunk does not change one row of logits"
        );
    }
}
