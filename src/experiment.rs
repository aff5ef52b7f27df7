//! Experiments in the library: one policy measured on one model and text (streaming perplexity,
//! prefill + decode speed, memory) as one [`ExperimentResult`].
//!
//! `h2o bench` (in process, or in its `bench-one` child, which receives one serialised [`Job`]),
//! `h2o speed` and `h2o ppl` all measure through [`Lab::run`] (bench and speed through
//! [`crate::runner`]); the binary only turns flags into a [`Setup`] and [`Plan`], draws progress
//! and prints. A run is checked once, at the entry: [`Setup::check`] (nothing loaded), then
//! [`Checked`] (manifest, tokenizer, the manifest against model.onnx's declared inputs, outputs and
//! operators read from the file, plans, text, experiments, memory; no session), then the session is
//! built ([`Checked::open`], [`Lab::load`]). Everything that shapes a measurement is in
//! the `Setup`, the `Plan` or the [`Experiment`], so a job carries all of it by construction.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::catalogue::{group_experiments, Counting, Experiment, Group, UnknownGroup};
use crate::decoder::{check_rolling_of, layer_limits_of, TraceFile, TRACE_FORMAT};
use crate::error::{Error, LengthError, MemoryError, Result, Setting};
use crate::eval::bos::{fed, lead};
use crate::eval::data::{read_text_tokens, short_text, TextMode};
use crate::eval::memory::peak_rss_bytes;
use crate::eval::ppl::measure_ppl;
use crate::eval::speed::{check_lengths, measure, SpeedRun};
use crate::eval::throughput::{check_memory, check_memory_of, RunShape};
use crate::manifest::Manifest;
pub use crate::model::check_model_dir;
use crate::model::graph_check::check_model_file;
use crate::model::{load_tokenizer, Model};
use crate::policy::PolicySpec;
use crate::report::{
    full_cache_bytes, ExperimentResult, ExperimentStatus, MemoryFigures, PplFigures, SpeedFigures,
    TrafficFigures,
};
use crate::runtime::{check_provider, KvPlacement, Runtime, SessionConfig};

/// Streaming perplexity over the first `tokens` tokens of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PplPlan {
    pub tokens: usize,
    /// Record the eviction trace (h2o-evict-trace/1) and return it in the [`Outcome`].
    #[serde(default)]
    pub trace: bool,
}

/// Prefill of `prompt` tokens of the text per row, then greedy decoding of `gen` tokens per row (the
/// prefill gives the first; `gen - 1` timed decode steps) after `warmup` untimed runs.
///
/// `batch` rows are decoded together: row r prompts with text tokens `[r * prompt, (r + 1) * prompt)`
/// (different text per row, each row its own eviction). Every row generates `gen` tokens, so the
/// rows finish together (no row waits on another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeedPlan {
    pub prompt: usize,
    pub gen: usize,
    pub warmup: usize,
    /// Sequences decoded together.
    #[serde(default = "one")]
    pub batch: usize,
    /// Most prompt tokens per row in one prefill run of the graph (`None`: the whole prompt in one
    /// run). Smaller runs bound the prefill's logits `[batch, run, vocab]`; a run-by-run prefill
    /// may keep other tokens than a one-run prefill under a score-based policy.
    #[serde(default)]
    pub prefill_chunk: Option<usize>,
}

fn one() -> usize {
    1
}

impl SpeedPlan {
    /// One row, the whole prompt in one prefill run.
    pub fn new(prompt: usize, gen: usize, warmup: usize) -> SpeedPlan {
        SpeedPlan {
            prompt,
            gen,
            warmup,
            batch: 1,
            prefill_chunk: None,
        }
    }

    /// The lengths that decide the run's K/V on a model that declares a BOS (`bos`: fed before
    /// each row's prompt) or not.
    pub fn shape(&self, bos: bool) -> RunShape {
        RunShape {
            prompt: self.prompt,
            gen: self.gen,
            prefill_chunk: self.prefill_chunk,
            bos,
        }
    }

    /// Refuses batch 0, a prefill chunk of 0, and lengths the model cannot take (a declared BOS,
    /// `bos`, takes a position of its own).
    pub fn check(&self, max_positions: usize, bos: bool) -> Result<(), LengthError> {
        for (setting, value) in [
            (Setting::Batch, Some(self.batch)),
            (Setting::PrefillChunk, self.prefill_chunk),
        ] {
            if value == Some(0) {
                return Err(LengthError::TooFew {
                    setting,
                    value: 0,
                    min: 1,
                });
            }
        }
        check_lengths(max_positions, self.prompt, self.gen, bos)
    }
}

/// What an experiment measures: perplexity, speed, or both (memory always, at the end of the
/// speed run, else of the perplexity run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub ppl: Option<PplPlan>,
    pub speed: Option<SpeedPlan>,
}

impl Plan {
    /// The length of text the plan measures, which group budgets are shares of: the perplexity
    /// tokens, else the speed run's prompt + generated tokens.
    pub fn text_tokens(&self) -> usize {
        match (self.ppl, self.speed) {
            (Some(p), _) => p.tokens,
            (None, Some(s)) => s.prompt + s.gen,
            (None, None) => 0,
        }
    }

    /// Tokens the plan reads from the start of the text.
    pub fn tokens_needed(&self) -> usize {
        let ppl = self.ppl.map_or(0, |p| p.tokens);
        ppl.max(self.speed.map_or(0, |s| s.prompt.saturating_mul(s.batch)))
    }

    /// Refuses lengths the model cannot take, before anything is measured; `bos`: the model
    /// declares a BOS (fed first: N perplexity tokens then use positions 0..N-1, a speed run one
    /// position more than its prompt and generated tokens).
    pub fn check(&self, max_positions: usize, bos: bool) -> Result<(), LengthError> {
        self.check_streaming(max_positions, bos, false)
    }

    /// [`Plan::check`]; with `rolling` (every experiment run on it has rolling positions) a
    /// perplexity text of any length is taken.
    pub fn check_streaming(
        &self,
        max_positions: usize,
        bos: bool,
        rolling: bool,
    ) -> Result<(), LengthError> {
        if let Some(p) = self.ppl {
            if p.tokens < 2 {
                return Err(LengthError::TooFew {
                    setting: Setting::PplTokens,
                    value: p.tokens,
                    min: 2,
                });
            }
            if p.tokens > max_positions && !rolling {
                return Err(LengthError::PplBeyondPositions {
                    tokens: p.tokens,
                    max_positions,
                });
            }
        }
        match self.speed {
            Some(s) => s.check(max_positions, bos),
            None => Ok(()),
        }
    }
}

/// The model, how to run it, and the text: what a process loads before measuring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Exported model directory.
    #[serde(with = "os_path")]
    pub model: PathBuf,
    pub session: SessionConfig,
    /// Text file (WikiText-2 raw test).
    #[serde(with = "os_path")]
    pub data: PathBuf,
    /// Which text of the file is read: as it is, or the seed's rows (see [`TextMode`]).
    #[serde(default)]
    pub text: TextMode,
}

/// One experiment, self-contained: what `h2o bench` hands its `bench-one` child (as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub setup: Setup,
    pub plan: Plan,
    pub experiment: Experiment,
}

/// Where the peak resident memory of an experiment is read, written into its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeakMemory {
    /// The experiment has its process to itself (bench's child): the peak is the experiment's.
    OwnProcess,
    /// Experiments share the process: the peak is cumulative over them.
    SharedProcess,
}

impl PeakMemory {
    /// How the peak was measured, as the results say it.
    pub fn method(self) -> &'static str {
        match self {
            PeakMemory::OwnProcess => "child process per experiment: VmHWM",
            PeakMemory::SharedProcess => "in-process VmHWM (cumulative over experiments)",
        }
    }
}

/// Which measurement a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Ppl,
    Speed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Ppl => "ppl",
            Phase::Speed => "speed",
        })
    }
}

/// Progress of a run: `done` of `total` steps of one phase. The hook that receives it returns
/// `ControlFlow::Break` to stop the run, which then ends with [`Error::Cancelled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: usize,
    pub total: usize,
}

/// The progress hook of a run.
pub type Hook<'a> = &'a mut dyn FnMut(Progress) -> ControlFlow<()>;

/// What a run gives: the result row, and the eviction trace when the plan asked for it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: ExperimentResult,
    /// The perplexity run's eviction trace, its tokens as fed (a declared BOS first).
    pub trace: Option<TraceFile>,
}

/// When the text is too short only because a speed plan's batch asks for a prompt per row (one
/// prompt fits, and any perplexity run too): the error naming the batch.
fn batch_beyond_text(plans: &[Plan], available: usize, path: &Path) -> Option<LengthError> {
    let needs = |p: &&Plan| p.tokens_needed();
    let p = plans.iter().max_by_key(needs)?;
    let s = p.speed?;
    let ppl_fits = p.ppl.is_none_or(|q| q.tokens <= available);
    let batch_is_why = s.batch > 1 && s.prompt <= available && p.tokens_needed() > available;
    (ppl_fits && batch_is_why).then(|| LengthError::BatchBeyondText {
        batch: s.batch,
        prompt: s.prompt,
        available,
        path: path.to_path_buf(),
    })
}

impl Setup {
    /// The checks that need nothing loaded, in this order: the session settings (provider,
    /// threads), then the model directory (the model's files are there).
    pub fn check(&self) -> Result<()> {
        check_provider(self.session.provider)?;
        self.session.check()?;
        check_model_dir(&self.model)
    }
}

/// The entry of `bench` and `speed`: checks `setup` ([`Setup::check`]), so that a mistyped model
/// is named before the runtime is looked for, then starts ONNX Runtime (`root`: see
/// [`Runtime::start`]). Then [`Checked::model`] checks the rest without a session.
pub fn start(setup: &Setup, root: &Path) -> Result<Runtime> {
    setup.check()?;
    Runtime::start(root)
}

/// The start of the text the plans read (as many tokens as the largest needs).
struct Text {
    tokens: Vec<u32>,
}

impl Text {
    /// Checks every plan against the model's positions, and reads as many tokens of the text as
    /// the largest plan needs.
    fn read(
        setup: &Setup,
        man: &Manifest,
        tokenizer: &tokenizers::Tokenizer,
        plans: &[Plan],
        rolling: bool,
    ) -> Result<Text> {
        let (max, bos) = (
            man.max_position_embeddings,
            man.prepend_bos_token_id.is_some(),
        );
        for p in plans {
            p.check_streaming(max, bos, rolling)?;
        }
        let n = plans.iter().map(Plan::tokens_needed).max().unwrap_or(0);
        let tokens = if n == 0 {
            Vec::new()
        } else {
            read_text_tokens(tokenizer, &setup.data, n, setup.text)?
        };
        if tokens.len() < n {
            return Err(match batch_beyond_text(plans, tokens.len(), &setup.data) {
                Some(e) => e.into(),
                None => short_text(&setup.data, setup.text, tokens.len(), n),
            });
        }
        Ok(Text { tokens })
    }
}

/// Refuses an experiment the model `man` in `dir` cannot run with K/V where `session` puts them:
/// a budget of 0 or beyond its positions (a layer's, under a schedule), per-layer budgets on a
/// graph with one attention mask, a key-norm policy with K/V on the device.
fn check_experiment(
    man: &Manifest,
    dir: &Path,
    session: &SessionConfig,
    exp: &Experiment,
) -> Result<()> {
    exp.spec
        .validate(man.num_layers, man.max_position_embeddings)?;
    let on_device = session.kv == KvPlacement::Device;
    let policies = exp.spec.build(man.num_layers);
    layer_limits_of(man, dir, on_device, &policies)?;
    if exp.spec.rolling() {
        check_rolling_of(man, dir, &policies)?;
    }
    Ok(())
}

/// A run checked without an ONNX Runtime session (what `bench` and `speed` check in the parent
/// process, whose children load the model themselves): the manifest (every field), the tokenizer
/// against it, the plans against the model's positions, the text they need, the experiments
/// against the model, and the memory of speed runs; the manifest against model.onnx's declared
/// inputs, outputs and operators, read from the file (`model::graph_check::check_model_file`).
pub struct Checked {
    setup: Setup,
    manifest: Manifest,
    tokenizer: tokenizers::Tokenizer,
    text: Text,
    /// The experiments' specs checked so far.
    checked: Vec<PolicySpec>,
}

impl Checked {
    /// Reads and checks the manifest and the tokenizer of `setup`'s model (the setup checked
    /// before: [`start`]); no plan yet ([`Checked::read_text`]).
    pub fn model(setup: &Setup) -> Result<Checked> {
        let manifest = Manifest::load(&setup.model.join("manifest.json"))?;
        let tokenizer = load_tokenizer(&setup.model.join("tokenizer.json"), &manifest)?;
        check_model_file(&setup.model, &manifest)?;
        Ok(Checked {
            setup: setup.clone(),
            manifest,
            tokenizer,
            text: Text { tokens: Vec::new() },
            checked: Vec::new(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Checks every plan against the model's positions, and reads as many tokens of the text as
    /// the largest plan needs.
    pub fn read_text(&mut self, plans: &[Plan]) -> Result<()> {
        self.text = Text::read(&self.setup, &self.manifest, &self.tokenizer, plans, false)?;
        Ok(())
    }

    /// Refuses an experiment this model cannot run (see [`Lab::check`]).
    pub fn check(&mut self, exp: &Experiment) -> Result<()> {
        let s = &self.setup;
        check_experiment(&self.manifest, &s.model, &s.session, exp)?;
        self.checked.push(exp.spec);
        Ok(())
    }

    /// Refuses a speed run of `spec` as `plan` says that certainly does not fit in the memory
    /// available (`what` names it).
    pub fn check_memory(
        &self,
        spec: &PolicySpec,
        plan: &SpeedPlan,
        what: &str,
    ) -> Result<(), MemoryError> {
        let bos = self.manifest.prepend_bos_token_id.is_some();
        check_memory_of(
            &self.manifest,
            &self.setup.model,
            spec,
            &plan.shape(bos),
            plan.batch,
            what,
        )
    }

    /// Builds the session on `rt` (the graph checked against the manifest): a lab for the
    /// plans and experiments checked.
    pub fn open(self, rt: &Runtime) -> Result<Lab> {
        let s = self.setup;
        let model = Model::open(rt, &s.model, self.manifest, self.tokenizer, s.session)?;
        Ok(Lab {
            model,
            text: self.text,
            checked: self.checked,
        })
    }

    /// Builds the session on `rt` (the graph checked against the manifest): the model alone, for
    /// a command that reads no plan's text (info, generate, heatmap).
    pub fn open_model(self, rt: &Runtime) -> Result<Model> {
        let s = self.setup;
        Model::open(rt, &s.model, self.manifest, self.tokenizer, s.session)
    }
}

/// A loaded model and the start of the text, ready to run experiments on.
pub struct Lab {
    model: Model,
    text: Text,
    /// The experiments' specs checked so far (each is checked once).
    checked: Vec<PolicySpec>,
}

impl Lab {
    /// Loads the model (the setup checked before: [`Setup::check`]), checks every plan against
    /// its positions, and reads as many tokens of the text as the largest plan needs.
    pub fn load(rt: &Runtime, setup: &Setup, plans: &[Plan]) -> Result<Lab> {
        Self::load_for(rt, setup, plans, &[])
    }

    /// [`Lab::load`] for the experiments `specs` only: when every one has rolling positions
    /// (`@rolling`), a perplexity text may be longer than the model's positions.
    pub fn load_for(
        rt: &Runtime,
        setup: &Setup,
        plans: &[Plan],
        specs: &[PolicySpec],
    ) -> Result<Lab> {
        let rolling = !specs.is_empty() && specs.iter().all(PolicySpec::rolling);
        let c = Checked::model(setup)?;
        let model = Model::open(
            rt,
            &setup.model,
            c.manifest,
            c.tokenizer,
            setup.session.clone(),
        )?;
        let text = Text::read(setup, &model.manifest, &model.tokenizer, plans, rolling)?;
        Ok(Lab {
            model,
            text,
            checked: Vec::new(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Refuses an experiment this model cannot run: a budget of 0 or beyond its positions (a
    /// layer's, under a schedule), per-layer budgets on a graph with one attention mask, a
    /// key-norm policy with K/V on the device.
    pub fn check(&mut self, exp: &Experiment) -> Result<()> {
        let m = &self.model;
        check_experiment(&m.manifest, &m.dir, &m.config, exp)?;
        self.checked.push(exp.spec);
        Ok(())
    }

    /// The tokens read from the start of the text (the text only: a declared BOS is fed before
    /// them by each measurement).
    pub fn tokens(&self) -> &[u32] {
        &self.text.tokens
    }

    /// Measures `exp` as `plan` says; the peak memory is read as `peak` says. An experiment or
    /// plan not checked yet is checked first.
    pub fn run(
        &mut self,
        exp: &Experiment,
        plan: &Plan,
        peak: PeakMemory,
        hook: Hook<'_>,
    ) -> Result<Outcome> {
        let man = self.model.manifest.clone();
        let bos = man.prepend_bos_token_id;
        if !self.checked.contains(&exp.spec) {
            self.check(exp)?;
        }
        // the plan for this experiment: a text past the positions only on rolling positions
        plan.check_streaming(
            man.max_position_embeddings,
            bos.is_some(),
            exp.spec.rolling(),
        )?;
        if self.text.tokens.len() < plan.tokens_needed() {
            return Err(Error::Input(format!(
                "the plan needs {} tokens of text, {} were read",
                plan.tokens_needed(),
                self.text.tokens.len()
            )));
        }
        let mut result = ExperimentResult::new(exp.label.clone(), exp.spec);
        let mut trace = None;
        // K/V at the end of the last run: (bytes held, bytes allocated, tokens a full cache would
        // hold per row, a declared BOS included, rows)
        let mut held = (0, None, 0, 1);
        if let Some(p) = plan.ppl {
            let run = measure_ppl(
                &mut self.model,
                &exp.spec,
                &self.text.tokens[..p.tokens],
                p.trace,
                |done| hook(progress(Phase::Ppl, done, p.tokens - 1)),
            )?;
            result.ppl = Some(PplFigures::from_nlls(&run.nlls));
            result.nlls = Some(run.nlls);
            trace = run.trace.map(|steps| TraceFile {
                format: TRACE_FORMAT,
                // the trace's [layer][head] lists are per KV head (what the cache evicts by)
                heads: man.kv_heads(),
                layers: man.num_layers,
                policy: exp.spec,
                prepend_bos_token_id: bos,
                steps,
                tokens: fed(bos, &self.text.tokens[..p.tokens]),
            });
            held = (run.kv_bytes, None, p.tokens - 1 + lead(bos), 1);
        }
        if let Some(s) = plan.speed {
            let run = self.run_speed(exp, &s, hook)?;
            let mut speed =
                SpeedFigures::from_run(run.prefill, run.total, s.prompt, s.batch, &run.steps);
            let (p, d) = (run.prefill_traffic, run.decode_traffic);
            speed.traffic = Some(TrafficFigures::new(
                (p.to_device, p.from_device),
                (d.to_device, d.from_device),
                run.steps.len(),
            ));
            result.speed = Some(speed);
            held = (
                run.kv_bytes,
                Some(run.kv_allocated_bytes as u64),
                s.prompt + s.gen - 1 + lead(bos),
                s.batch,
            );
        }
        let full = full_cache_bytes(
            man.num_layers,
            man.kv_heads(),
            man.head_dim,
            man.dtype.size(),
            held.2,
            held.3,
        );
        let mut memory = MemoryFigures::new(
            held.0 as u64,
            full,
            peak_rss_bytes().unwrap_or(0),
            peak.method(),
        );
        memory.kv_allocated_bytes = held.1;
        result.memory = Some(memory);
        result.status = ExperimentStatus::Ok;
        Ok(Outcome { result, trace })
    }

    /// The speed run of `plan`: `batch` rows of consecutive text (each after the declared BOS, if
    /// any), after a check that it fits in the memory available.
    fn run_speed(&mut self, exp: &Experiment, s: &SpeedPlan, hook: Hook<'_>) -> Result<SpeedRun> {
        let what = format!("{} at batch {}", exp.spec, s.batch);
        let bos = self.model.manifest.prepend_bos_token_id.is_some();
        check_memory(&self.model, &exp.spec, &s.shape(bos), s.batch, &what)?;
        let rows: Vec<Vec<u32>> = self.text.tokens[..s.prompt * s.batch]
            .chunks(s.prompt)
            .map(<[u32]>::to_vec)
            .collect();
        measure(
            &mut self.model,
            &exp.spec,
            &rows,
            s.gen,
            s.warmup,
            s.prefill_chunk,
            |done| hook(progress(Phase::Speed, done, s.gen - 1)),
        )
    }
}

fn progress(phase: Phase, done: usize, total: usize) -> Progress {
    Progress { phase, done, total }
}

/// Runs one job from scratch: checks its setup, loads its model and text, then measures (what
/// bench's child runs).
pub fn run_job(rt: &Runtime, job: &Job, peak: PeakMemory, hook: Hook<'_>) -> Result<Outcome> {
    job.setup.check()?;
    let mut lab = Lab::load(rt, &job.setup, &[job.plan])?;
    lab.run(&job.experiment, &job.plan, peak, hook)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Denormals, KvPlacement};

    #[test]
    fn plan_lengths() {
        let speed = |prompt, gen| SpeedPlan::new(prompt, gen, 0);
        let ppl = |tokens| PplPlan {
            tokens,
            trace: false,
        };
        let plan = Plan {
            ppl: Some(ppl(64)),
            speed: Some(speed(32, 8)),
        };
        assert_eq!(plan.tokens_needed(), 64);
        assert_eq!(plan.check(2048, false), Ok(()));
        assert_eq!(Plan::default().tokens_needed(), 0);
        assert_eq!(Plan::default().check(1, false), Ok(()));
        let too_few = Plan {
            ppl: Some(ppl(1)),
            speed: None,
        };
        assert!(matches!(
            too_few.check(2048, false),
            Err(LengthError::TooFew {
                setting: Setting::PplTokens,
                ..
            })
        ));
        let too_long = Plan {
            ppl: None,
            speed: Some(speed(2000, 100)),
        };
        assert_eq!(too_long.tokens_needed(), 2000);
        assert!(matches!(
            too_long.check(2048, false),
            Err(LengthError::BeyondPositions { .. })
        ));
        assert!(Plan {
            ppl: Some(ppl(4000)),
            speed: None
        }
        .check(2048, false)
        .is_err());
        let batch = |batch, prefill_chunk| Plan {
            ppl: Some(ppl(64)),
            speed: Some(SpeedPlan {
                batch,
                prefill_chunk,
                ..speed(32, 8)
            }),
        };
        // a declared BOS: N perplexity tokens use positions 0..N-1 (as many as without it), a
        // speed run one position more than prompt + gen
        let at = |ppl_tokens, prompt, gen| Plan {
            ppl: Some(ppl(ppl_tokens)),
            speed: Some(speed(prompt, gen)),
        };
        assert_eq!(at(2048, 2000, 47).check(2048, true), Ok(()));
        assert_eq!(at(2048, 2000, 48).check(2048, false), Ok(()));
        assert_eq!(
            at(2048, 2000, 48).check(2048, true),
            Err(LengthError::BeyondPositions {
                parts: vec![
                    (Setting::PromptTokens, 2000),
                    (Setting::GenTokens, 48),
                    (Setting::Bos, 1)
                ],
                max_positions: 2048
            })
        );
        assert!(at(2049, 8, 8).check(2048, true).is_err());
        assert_eq!(
            SpeedPlan::new(32, 8, 0)
                .shape(true)
                .graph_runs()
                .sum::<usize>(),
            33 + 7,
            "the BOS is fed in the prefill"
        );
        assert_eq!(batch(3, None).tokens_needed(), 96, "a prompt per row");
        assert_eq!(batch(3, Some(5)).check(2048, false), Ok(()));
        for (plan, setting) in [
            (batch(0, None), Setting::Batch),
            (batch(2, Some(0)), Setting::PrefillChunk),
        ] {
            assert_eq!(
                plan.check(2048, false),
                Err(LengthError::TooFew {
                    setting,
                    value: 0,
                    min: 1
                })
            );
        }
    }

    /// The parent's checks (bench, speed) need no ONNX Runtime and build no session: the
    /// fixture's manifest, tokenizer, plans, text and experiments are checked with none started,
    /// and what the model cannot run is refused there.
    #[test]
    fn a_run_is_checked_without_a_runtime() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let setup = Setup {
            model: root.join("tests/fixtures/tiny"),
            session: SessionConfig {
                intra_threads: 1,
                ..SessionConfig::default()
            },
            data: root.join("tests/data/wiki.test.excerpt.raw"),
            text: TextMode::File,
        };
        setup.check().unwrap();
        let plan = Plan {
            ppl: Some(PplPlan {
                tokens: 16,
                trace: false,
            }),
            speed: Some(SpeedPlan::new(8, 2, 0)),
        };
        let mut c = Checked::model(&setup).unwrap();
        assert_eq!(c.manifest().num_layers, 2);
        c.read_text(&[plan]).unwrap();
        assert_eq!(c.text.tokens.len(), 16);
        let exp = |s: &str| Experiment::of(s.parse().unwrap());
        c.check(&exp("h2o:4+4")).unwrap();
        assert_eq!(c.checked, vec![exp("h2o:4+4").spec]);
        let e = c.check(&exp("h2o:6+2@pyramid")).unwrap_err().to_string();
        assert!(e.contains("--layer-masks"), "{e}");
        let e = c.check(&exp("h2o:4096+4")).unwrap_err();
        assert!(matches!(e, Error::Policy(_)), "{e}");
        let too_long = Plan {
            ppl: Some(PplPlan {
                tokens: 2049,
                trace: false,
            }),
            speed: None,
        };
        let e = c.read_text(&[too_long]).unwrap_err();
        assert!(
            matches!(e, Error::Length(LengthError::PplBeyondPositions { .. })),
            "{e}"
        );
        // rolling positions on a graph that caches keys rotated: one error naming the export
        let e = c.check(&exp("sink:2+6@rolling")).unwrap_err().to_string();
        assert!(e.contains("make export-micro-rolling"), "{e}");
        // K/V on the device: a key-norm policy is refused before any session exists
        let device = Setup {
            session: SessionConfig {
                kv: KvPlacement::Device,
                ..setup.session.clone()
            },
            ..setup.clone()
        };
        let e = Checked::model(&device)
            .unwrap()
            .check(&exp("knorm:8"))
            .unwrap_err();
        assert!(
            matches!(&e, Error::KeyNormNeedsHostKv { family } if family == "knorm"),
            "{e}"
        );
        // the setup's own checks: threads, then the model directory
        let none = Setup {
            model: root.join("tests/fixtures/no-such-model"),
            ..setup.clone()
        };
        assert!(matches!(none.check(), Err(Error::ModelDirMissing(_))));
        let zero = Setup {
            session: SessionConfig {
                intra_threads: 0,
                ..setup.session.clone()
            },
            ..none
        };
        assert!(matches!(zero.check(), Err(Error::Threads { .. })));
    }

    #[test]
    fn a_job_round_trips_through_json_with_every_setting() {
        let job = Job {
            setup: Setup {
                model: "models/m".into(),
                session: SessionConfig {
                    intra_threads: 3,
                    spin: false,
                    kv: KvPlacement::Device,
                    denormals: Denormals::Keep,
                    ..SessionConfig::default()
                },
                data: "wiki.test.raw".into(),
                text: TextMode::Seed,
            },
            plan: Plan {
                ppl: Some(PplPlan {
                    tokens: 64,
                    trace: false,
                }),
                speed: Some(SpeedPlan {
                    batch: 3,
                    prefill_chunk: Some(8),
                    ..SpeedPlan::new(32, 8, 1)
                }),
            },
            experiment: Experiment::of("h2o:16+16".parse().unwrap()),
        };
        let text = serde_json::to_string(&job).unwrap();
        assert!(text.contains("\"spin\":false"), "{text}");
        assert!(text.contains("\"text\":\"seed\""), "{text}");
        assert!(text.contains("\"kv\":\"device\""), "{text}");
        assert!(text.contains("\"denormals\":\"keep\""), "{text}");
        assert!(text.contains("\"spec\":\"h2o:16+16\""), "{text}");
        assert!(text.contains("\"batch\":3"), "{text}");
        assert!(!text.contains("group"), "{text}");
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        // a job written before `denormals` existed flushes them (the default)
        let older = text.replace(",\"denormals\":\"keep\"", "");
        assert_ne!(older, text);
        let read: Job = serde_json::from_str(&older).unwrap();
        assert_eq!(read.setup.session.denormals, Denormals::Flush);
        // a group's experiment carries its group and its full spec
        let job = Job {
            experiment: Group::Pyramid.experiments(2048, 64)[7].clone(),
            ..job
        };
        let text = serde_json::to_string(&job).unwrap();
        assert!(text.contains("\"group\":\"pyramid\""), "{text}");
        assert!(text.contains("\"spec\":\"random:8@pyramid\""), "{text}");
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
    }

    #[test]
    fn text_tokens_of_a_plan() {
        let mut p = Plan {
            ppl: Some(PplPlan {
                tokens: 100,
                trace: false,
            }),
            speed: Some(SpeedPlan::new(8, 4, 0)),
        };
        assert_eq!(p.text_tokens(), 100);
        p.ppl = None;
        assert_eq!(p.text_tokens(), 12);
        assert_eq!(Plan::default().text_tokens(), 0);
    }
}

/// A path in a job's JSON: a string when it is UTF-8, else its bytes (a Unix path may be any bytes;
/// the bench child must get exactly the path the user gave).
mod os_path {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        match p.to_str() {
            Some(text) => s.serialize_str(text),
            None => s.serialize_bytes(p.as_os_str().as_bytes()),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(t) => PathBuf::from(t),
            Repr::Bytes(b) => PathBuf::from(OsString::from_vec(b)),
        })
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct P(#[serde(with = "super")] std::path::PathBuf);

        #[test]
        fn utf8_and_other_paths_round_trip() {
            use std::os::unix::ffi::OsStrExt;
            let odd = P(std::ffi::OsStr::from_bytes(b"dir/\xff\xfe.txt").into());
            let plain = P("models/m".into());
            for p in [odd, plain] {
                let j = serde_json::to_string(&p).unwrap();
                assert_eq!(serde_json::from_str::<P>(&j).unwrap(), p, "{j}");
            }
            assert_eq!(serde_json::to_string(&P("a/b".into())).unwrap(), "\"a/b\"");
        }
    }
}
