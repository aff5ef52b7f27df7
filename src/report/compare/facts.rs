//! What a results file says about its run (model, dtype, device, text, counting, lengths), from
//! bench's run document beside it, the CSV's run columns or the seed's published setup; what
//! differs between two runs, and which derived figures a difference makes meaningless.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::columns::{counting_name, text_mode_name};
use crate::report::results::RunInfo;

/// One thing about a run that the meaning of a figure depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    /// The model's name (manifest `name`).
    Model,
    /// Layers x heads x head_dim.
    Size,
    /// The model's element type (`float32`, `float16`).
    Dtype,
    /// CPU, or GPU and its provider.
    Device,
    /// The CPU's model name, or the GPU's name.
    Processor,
    /// ONNX Runtime's intra-op threads (CPU runs).
    Threads,
    /// Subnormal floats in ONNX Runtime's threads, `flush` or `keep` (CPU runs; `--denormals`,
    /// recorded since 2026-12-07: older files leave it unknown).
    Subnormals,
    /// Which text of the data file: `file` or `seed`.
    Text,
    /// The data file's name.
    DataFile,
    /// Budget counting: `ours` or `seed`.
    Counting,
    /// Tokens of the perplexity run.
    PplTokens,
    /// Prompt tokens of the speed run.
    Prompt,
    /// Generated tokens of the speed run.
    Gen,
    /// Rows decoded together in the speed run.
    Batch,
}

impl Aspect {
    /// Every aspect, in the order the head lists them.
    pub const ALL: [Aspect; 14] = [
        Aspect::Model,
        Aspect::Size,
        Aspect::Dtype,
        Aspect::Device,
        Aspect::Processor,
        Aspect::Threads,
        Aspect::Subnormals,
        Aspect::Text,
        Aspect::DataFile,
        Aspect::Counting,
        Aspect::PplTokens,
        Aspect::Prompt,
        Aspect::Gen,
        Aspect::Batch,
    ];

    /// The aspect's name in a sentence (`model`, `data file`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Aspect::Model => "model",
            Aspect::Size => "size",
            Aspect::Dtype => "dtype",
            Aspect::Device => "device",
            Aspect::Processor => "processor",
            Aspect::Threads => "threads",
            Aspect::Subnormals => "subnormals",
            Aspect::Text => "text",
            Aspect::DataFile => "data file",
            Aspect::Counting => "counting",
            Aspect::PplTokens => "PPL tokens",
            Aspect::Prompt => "prompt tokens",
            Aspect::Gen => "generated tokens",
            Aspect::Batch => "batch",
        }
    }

    /// The derived figures a difference in this aspect makes meaningless: a speed-up measures a
    /// policy only on the same model, machine and speed run; a PPL difference only on the same
    /// model and text. A counting difference spoils neither: rows are paired by the tokens
    /// their specs attend, whatever the file's counting.
    pub fn spoils(self) -> &'static [Figure] {
        match self {
            Aspect::Model | Aspect::Size | Aspect::Dtype => &[Figure::Speedup, Figure::PplDiff],
            Aspect::Device
            | Aspect::Processor
            | Aspect::Threads
            | Aspect::Subnormals
            | Aspect::Prompt
            | Aspect::Gen
            | Aspect::Batch => &[Figure::Speedup],
            Aspect::Text | Aspect::DataFile | Aspect::PplTokens => &[Figure::PplDiff],
            Aspect::Counting => &[],
        }
    }
}

/// A figure derived from both files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// TPOT of A / TPOT of B.
    Speedup,
    /// PPL of B minus PPL of A.
    PplDiff,
}

impl Figure {
    /// The figure's column header.
    pub const fn header(self) -> &'static str {
        match self {
            Figure::Speedup => "Speed-up (A/B)",
            Figure::PplDiff => "ΔPPL (B−A)",
        }
    }

    /// What the figure would wrongly claim between runs that differ.
    fn not_a(self) -> &'static str {
        match self {
            Figure::Speedup => "a TPOT ratio between them is not a policy's speed-up",
            Figure::PplDiff => "a PPL difference between them is not a policy's cost",
        }
    }
}

/// Where a file's run facts come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FactSource {
    /// `h2o bench`'s run document beside the CSV (`<stem>.json`).
    RunDocument { path: PathBuf },
    /// The seed's file records none: the seed's published setup ([`RunFacts::seed_published`]).
    SeedPublished,
    /// No run document was read (`why`); only the CSV's run columns, where it has them.
    CsvOnly { why: String },
}

/// What a results file says about its run; an aspect it does not record is unknown (absent),
/// never a difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFacts {
    pub source: FactSource,
    pub values: BTreeMap<Aspect, String>,
}

/// How a device shows: `CPU`, or `GPU (CUDA)` for a GPU provider.
fn device_name(provider: &str) -> String {
    match provider {
        "cpu" => "CPU".to_string(),
        "cuda" => "GPU (CUDA)".to_string(),
        other => other.to_string(),
    }
}

impl RunFacts {
    /// Nothing known yet.
    pub fn unknown(source: FactSource) -> RunFacts {
        RunFacts {
            source,
            values: BTreeMap::new(),
        }
    }

    /// The facts of bench's run document.
    pub fn of_run(run: &RunInfo, source: FactSource) -> RunFacts {
        let (m, rt, s) = (&run.model, &run.runtime, &run.settings);
        let cpu = rt.execution_provider == "cpu";
        let processor = if cpu {
            Some(run.machine.cpu_brand.clone()).filter(|b| b != "unknown" && !b.is_empty())
        } else {
            Some(run.machine.gpus.join(", ")).filter(|g| !g.is_empty())
        };
        let data_file = Path::new(&s.data_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let mut f = RunFacts::unknown(source);
        let known = [
            (Aspect::Model, Some(m.name.clone())),
            (Aspect::Size, Some(size_text(m.layers, m.heads, m.head_dim))),
            (Aspect::Dtype, Some(m.dtype.clone())),
            (Aspect::Device, Some(device_name(&rt.execution_provider))),
            (Aspect::Processor, processor),
            (
                Aspect::Threads,
                cpu.then(|| rt.intra_op_threads.to_string()),
            ),
            (Aspect::Subnormals, rt.denormals.clone().filter(|_| cpu)),
            (Aspect::Text, Some(text_mode_name(s.text).to_string())),
            (Aspect::DataFile, data_file),
            (
                Aspect::Counting,
                Some(counting_name(s.counting).to_string()),
            ),
            (Aspect::PplTokens, Some(s.ppl_tokens.to_string())),
            (Aspect::Prompt, Some(s.prompt.to_string())),
            (Aspect::Gen, Some(s.gen.to_string())),
            (Aspect::Batch, Some(s.batch.to_string())),
        ];
        for (aspect, value) in known {
            if let Some(v) = value {
                f.values.insert(aspect, v);
            }
        }
        f
    }

    /// The seed's published setup (../shared/seed/report-tables.md: "Model: EleutherAI/pythia-2.8b
    /// in FP16 on one CUDA GPU"; its text, counting and lengths from its code), for the seed's
    /// `pytorch-results.csv`, which records none of it. Unknown: which GPU, the data file (it
    /// loads the Hugging Face dataset), and the prompt (its code asks 512 tokens, but its KV size
    /// shows the truncation never applied; README "Columns").
    pub fn seed_published() -> RunFacts {
        let mut f = RunFacts::unknown(FactSource::SeedPublished);
        for (aspect, value) in [
            (Aspect::Model, "pythia-2.8b".to_string()),
            (Aspect::Size, size_text(32, 32, 80)),
            (Aspect::Dtype, "float16".to_string()),
            (Aspect::Device, device_name("cuda")),
            (Aspect::Text, "seed".to_string()),
            (Aspect::Counting, "seed".to_string()),
            (Aspect::PplTokens, "2048".to_string()),
            (Aspect::Gen, "1024".to_string()),
            (Aspect::Batch, "1".to_string()),
        ] {
            f.values.insert(aspect, value);
        }
        f
    }

    pub fn get(&self, aspect: Aspect) -> Option<&str> {
        self.values.get(&aspect).map(String::as_str)
    }

    /// The aspects this file does not record, in [`Aspect::ALL`] order.
    pub fn unknown_aspects(&self) -> Vec<Aspect> {
        Aspect::ALL
            .into_iter()
            .filter(|a| !self.values.contains_key(a))
            .collect()
    }
}

/// `8 layers x 8 heads x 32`.
fn size_text(layers: usize, heads: usize, head_dim: usize) -> String {
    format!("{layers} layers x {heads} heads x {head_dim}")
}

/// One aspect both files record, with different values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub aspect: Aspect,
    pub a: String,
    pub b: String,
}

/// A derived figure left out, and the differences that make it meaningless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    pub figure: Figure,
    pub because: Vec<Aspect>,
}

impl Withheld {
    /// `No Speed-up (A/B): A and B differ in model, device; a TPOT ratio ...`.
    pub fn line(&self) -> String {
        let names: Vec<&str> = self.because.iter().map(|a| a.name()).collect();
        format!(
            "No {}: A and B differ in {}; {}.",
            self.figure.header(),
            names.join(", "),
            self.figure.not_a()
        )
    }
}

/// Every aspect both files record with different values, in [`Aspect::ALL`] order.
pub fn differences(a: &RunFacts, b: &RunFacts) -> Vec<Difference> {
    Aspect::ALL
        .into_iter()
        .filter_map(|aspect| match (a.get(aspect), b.get(aspect)) {
            (Some(x), Some(y)) if x != y => Some(Difference {
                aspect,
                a: x.to_string(),
                b: y.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// The derived figures `differences` make meaningless (speed-up first), each with its reasons.
pub fn withheld(differences: &[Difference]) -> Vec<Withheld> {
    [Figure::Speedup, Figure::PplDiff]
        .into_iter()
        .filter_map(|figure| {
            let because: Vec<Aspect> = differences
                .iter()
                .map(|d| d.aspect)
                .filter(|a| a.spoils().contains(&figure))
                .collect();
            (!because.is_empty()).then_some(Withheld { figure, because })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(Aspect, &str)]) -> RunFacts {
        RunFacts {
            source: FactSource::CsvOnly { why: "test".into() },
            values: pairs.iter().map(|(a, v)| (*a, v.to_string())).collect(),
        }
    }

    #[test]
    fn differences_name_both_values_and_unknown_is_no_difference() {
        let a = facts(&[
            (Aspect::Model, "tiny"),
            (Aspect::Text, "file"),
            (Aspect::Counting, "ours"),
            (Aspect::Threads, "2"),
        ]);
        let b = facts(&[
            (Aspect::Model, "pythia-2.8b"),
            (Aspect::Text, "seed"),
            (Aspect::Counting, "ours"),
        ]);
        let d = differences(&a, &b);
        assert_eq!(
            d,
            [
                Difference {
                    aspect: Aspect::Model,
                    a: "tiny".into(),
                    b: "pythia-2.8b".into()
                },
                Difference {
                    aspect: Aspect::Text,
                    a: "file".into(),
                    b: "seed".into()
                },
            ]
        );
        assert_eq!(
            withheld(&d),
            [
                Withheld {
                    figure: Figure::Speedup,
                    because: vec![Aspect::Model]
                },
                Withheld {
                    figure: Figure::PplDiff,
                    because: vec![Aspect::Model, Aspect::Text]
                },
            ]
        );
        assert_eq!(
            withheld(&d)[1].line(),
            "No ΔPPL (B−A): A and B differ in model, text; a PPL difference between them is not a policy's cost."
        );
        assert_eq!(b.unknown_aspects().len(), 11);
    }

    #[test]
    fn what_each_difference_spoils() {
        let only = |aspect, x: &str, y: &str| {
            withheld(&differences(&facts(&[(aspect, x)]), &facts(&[(aspect, y)])))
        };
        assert_eq!(only(Aspect::Counting, "ours", "seed"), []);
        let device = only(Aspect::Device, "CPU", "GPU (CUDA)");
        assert_eq!(device.len(), 1);
        assert_eq!(device[0].figure, Figure::Speedup);
        let text = only(Aspect::PplTokens, "2048", "512");
        assert_eq!(text.len(), 1);
        assert_eq!(text[0].figure, Figure::PplDiff);
        assert_eq!(only(Aspect::Dtype, "float32", "float16").len(), 2);
    }

    #[test]
    fn the_seeds_published_setup() {
        let s = RunFacts::seed_published();
        assert_eq!(s.get(Aspect::Model), Some("pythia-2.8b"));
        assert_eq!(s.get(Aspect::Device), Some("GPU (CUDA)"));
        assert_eq!(s.get(Aspect::Counting), Some("seed"));
        assert_eq!(
            s.unknown_aspects(),
            [
                Aspect::Processor,
                Aspect::Threads,
                Aspect::Subnormals,
                Aspect::DataFile,
                Aspect::Prompt
            ]
        );
    }
}
