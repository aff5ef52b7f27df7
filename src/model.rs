//! A loaded model directory (manifest, tokenizer, ONNX session) and one run of the decoder-step graph
//! on a view of the KV cache ([`PastKv`]), with K/V in host memory (inputs and outputs of the run) or
//! in the model's device buffers (`device_kv`: bound with IoBinding, written by companion graphs:
//! `binding`, `companion`).

mod binding;
mod companion;
mod device_kv;
pub mod graph_check;
pub mod onnx_scan;
mod past;
pub mod traffic;

use std::path::{Path, PathBuf};

use half::f16;
use ort::session::builder::SessionBuilder;
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{PrimitiveTensorElementType, TensorRef};

use crate::cache::{host_buffers, KvBuffers, KvElement, KvLayout, NewKv};
use crate::error::{Error, Result};
use crate::manifest::{KvDtype, LayerNames, Manifest, MaskInputs, LOGITS_FROM};
use crate::runtime::{
    check_provider, Denormals, ExecutionProvider, KvPlacement, Runtime, SessionConfig,
};
use binding::DeviceRunner;
pub use device_kv::DeviceKv;
pub use graph_check::Port;
pub use past::PastKv;
pub use traffic::{Pasts, Traffic};

/// model.onnx + manifest.json + tokenizer.json from one directory, with a session ready to run.
pub struct Model {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub tokenizer: tokenizers::Tokenizer,
    pub config: SessionConfig,
    /// Per layer, the graph's input/output names (built once, not per step).
    pub names: Vec<LayerNames>,
    /// The device store's binding and companion graphs (`config.kv` = device).
    device: Option<DeviceRunner>,
    session: Session,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("dir", &self.dir)
            .field("name", &self.manifest.name)
            .finish()
    }
}

/// Refuses a model path that is not a directory holding the model's files, naming what is there
/// instead (missing, a file where the directory should be, a directory where a file should be).
pub fn check_model_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Err(_) => return Err(Error::ModelDirMissing(dir.to_path_buf())),
        Ok(m) if !m.is_dir() => return Err(Error::ModelDirNotADir(dir.to_path_buf())),
        Ok(_) => {}
    }
    for name in ["manifest.json", "model.onnx", "tokenizer.json"] {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Err(_) => return Err(Error::ModelFileMissing { path }),
            Ok(m) if !m.is_file() => return Err(Error::ModelFileNotAFile { path }),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Load a tokenizer and check it against the manifest: its ids fit the model's vocabulary
/// (`vocab_size`, the logits' width) and it has as many tokens as the one the model was exported
/// with (`tokenizer_vocab_size`, when the manifest has it).
pub fn load_tokenizer(path: &Path, manifest: &Manifest) -> Result<tokenizers::Tokenizer> {
    if !path.is_file() {
        return Err(Error::ModelFileMissing {
            path: path.to_path_buf(),
        });
    }
    let refuse = |reason: String| Error::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| refuse(format!("not a tokenizer.json ({e})")))?;
    let vocab = tok.get_vocab(true);
    let (n, top) = (vocab.len(), vocab.values().max().copied().unwrap_or(0));
    let model_vocab = manifest.vocab_size;
    // a borrowed tokenizer (random-init shapes) may hold more ids than the model: those are
    // refused where they are fed (the decoder's input check), naming the tokenizer's source
    let borrowed = manifest.borrowed_tokenizer().is_some();
    if !borrowed && (n > model_vocab || top as usize >= model_vocab) {
        return Err(refuse(format!(
            "it has {n} tokens (ids up to {top}) but the model's vocabulary is {model_vocab} (vocab_size in manifest.json): it can give ids the model has no logits for; use the tokenizer.json the model was exported with"
        )));
    }
    match manifest.tokenizer_vocab_size {
        Some(want) if want != n => Err(refuse(format!(
            "it has {n} tokens but the model was exported with a tokenizer of {want} (tokenizer_vocab_size in manifest.json): it is another tokenizer; use the tokenizer.json the model was exported with"
        ))),
        _ => Ok(tok),
    }
}

impl Model {
    /// Load `dir` (model.onnx, manifest.json, tokenizer.json) and start a session on `rt`.
    pub fn load(rt: &Runtime, dir: &Path, config: SessionConfig) -> Result<Self> {
        check_provider(config.provider)?;
        config.check()?;
        check_model_dir(dir)?;
        let manifest = Manifest::load(&dir.join("manifest.json"))?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"), &manifest)?;
        graph_check::check_model_file(dir, &manifest)?;
        Self::open(rt, dir, manifest, tokenizer, config)
    }

    /// Starts a session on `dir`'s model.onnx for a manifest and tokenizer already read and
    /// checked against the graph (as [`Model::load`] does, and `experiment::Checked`:
    /// [`graph_check::check_model_file`], without a session).
    pub fn open(
        rt: &Runtime,
        dir: &Path,
        manifest: Manifest,
        tokenizer: tokenizers::Tokenizer,
        config: SessionConfig,
    ) -> Result<Self> {
        let onnx = dir.join("model.onnx");
        let mut builder = Self::session_builder(rt, &config)?;
        let session = builder
            .commit_from_file(&onnx)
            .map_err(|e| Error::ort(format!("cannot load {}", onnx.display()), e))?;
        let names = LayerNames::all(manifest.num_layers);
        let device = match config.kv {
            KvPlacement::Host => None,
            KvPlacement::Device => Some(DeviceRunner::new(
                &session,
                &builder,
                config.provider,
                manifest.dtype,
            )?),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            tokenizer,
            config,
            names,
            device,
            session,
        })
    }

    /// Session options of `config`: threads, optimisation level, spinning, subnormals, execution
    /// provider (the step graph's and the device store's companion graphs').
    fn session_builder(rt: &Runtime, config: &SessionConfig) -> Result<SessionBuilder> {
        let opts = |e: ort::Error<_>| Error::ort("setting the session options", e);
        let mut builder = Session::builder(&rt.env)
            .map_err(|e| Error::ort("creating a session", e))?
            .with_intra_threads(config.intra_threads)
            .map_err(opts)?
            .with_inter_threads(1)
            .map_err(opts)?
            .with_optimization_level(config.opt_level.to_ort())
            .map_err(opts)?
            .with_intra_op_spinning(config.spin)
            .map_err(opts)?;
        if config.denormals == Denormals::Flush {
            builder = builder.with_flush_to_zero().map_err(opts)?;
        }
        if config.provider == ExecutionProvider::Cuda {
            builder = Self::with_cuda(builder)?;
        }
        Ok(builder)
    }

    /// Empty K/V buffers for a store of `batch` rows, where `config.kv` says: host memory, or the
    /// provider's device memory (then [`Model::run`] binds them and [`Model::write_kv`] writes them).
    pub fn kv_buffers(&mut self, batch: usize) -> Result<Box<dyn KvBuffers>> {
        let m = &self.manifest;
        let (layers, heads, d) = (m.num_layers, m.kv_heads(), m.head_dim);
        Ok(match self.device.as_mut() {
            None => host_buffers(m.dtype, layers, batch, heads, d),
            Some(dev) => Box::new(dev.buffers(&self.session, layers, batch, heads, d)?),
        })
    }

    /// After a run and the store's update of every layer: with device buffers, grow them if the plans
    /// asked for it and write the kept new K/V into their slots, on the device (host buffers were
    /// written by the update). `buffers` are the store's ([`crate::cache::KvStore::buffers_mut`]).
    /// Returns the bytes this sent to the device.
    pub fn write_kv(&mut self, buffers: &mut dyn KvBuffers) -> Result<Traffic> {
        match (DeviceKv::of_mut(buffers), self.device.as_mut()) {
            (None, _) => Ok(Traffic::default()),
            (Some(kv), Some(dev)) => dev.commit(kv),
            (Some(_), None) => Err(Self::not_device()),
        }
    }

    /// The session's inputs and outputs as ONNX Runtime reads them (what
    /// [`graph_check::check_model_file`] reads from the file instead, without a session).
    pub fn ports(&self) -> (Vec<Port>, Vec<Port>) {
        (
            self.session.inputs().iter().map(Port::of).collect(),
            self.session.outputs().iter().map(Port::of).collect(),
        )
    }

    /// Whether this model keeps K/V in device memory (`kv = device`).
    pub fn kv_on_device(&self) -> bool {
        self.device.is_some()
    }

    fn not_device() -> Error {
        Error::Store(
            "device K/V buffers given to a model loaded for host K/V; load it with kv = device"
                .into(),
        )
    }

    #[cfg(feature = "cuda")]
    fn with_cuda(
        builder: ort::session::builder::SessionBuilder,
    ) -> Result<ort::session::builder::SessionBuilder> {
        builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| {
                Error::ExecutionProvider(format!(
                    "cuda could not start ({}); point ORT_DYLIB_PATH at the libonnxruntime.so of an onnxruntime-gpu wheel (with its CUDA libraries on the loader path), or run on the cpu provider",
                    e.to_string().trim_end_matches('.')
                ))
            })
    }

    #[cfg(not(feature = "cuda"))]
    fn with_cuda(
        _builder: ort::session::builder::SessionBuilder,
    ) -> Result<ort::session::builder::SessionBuilder> {
        check_provider(ExecutionProvider::Cuda)?;
        unreachable!("check_provider refuses cuda without the feature")
    }

    /// Run the graph once on `inputs`, with every layer's slot arrays of `past` (the decoder's store)
    /// as past K/V (views of their memory, no copy). [`StepOutputs::view`] gives the outputs, checked
    /// against the manifest. With device buffers the new K/V stay on the device until
    /// [`Model::write_kv`].
    pub fn run<'s>(
        &'s mut self,
        past: &dyn PastKv,
        inputs: &StepInputs<'_>,
    ) -> Result<StepOutputs<'s>> {
        let (dims, pasts) = self.check_run(past, inputs)?;
        let layer_pasts = Pasts {
            layers: Some(&pasts),
            per_layer_masks: self.per_layer_masks(),
        };
        if let Some(kv) = DeviceKv::of(past.buffers()) {
            let dev = self.device.as_mut().ok_or_else(Self::not_device)?;
            let binding = dev.bind_step(kv, &self.names, inputs, &dims, &layer_pasts)?;
            let traffic = Traffic::device_run_layers(&dims, &layer_pasts);
            let outputs = self
                .session
                .run_binding(binding)
                .map_err(|e| Error::ort("running the decoder-step graph", e))?;
            return Ok(StepOutputs {
                outputs,
                names: &self.names,
                dims,
                pasts,
                dtype: self.manifest.dtype,
                kv_on_device: true,
                traffic,
            });
        }
        let (b, seq) = (dims.batch, dims.seq);
        let mut feed: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(3 + 3 * dims.layers);
        feed.push(("input_ids", int_input("input_ids", [b, seq], inputs.ids)?));
        feed.push((
            "position_ids",
            int_input("position_ids", [b, seq], inputs.positions)?,
        ));
        if !self.per_layer_masks() {
            feed.push((
                "attention_mask",
                int_input("attention_mask", [b, dims.past + seq], inputs.mask)?,
            ));
        }
        let logits_from = dims.logits_from.map(|f| [f as i64]);
        if let Some(from) = &logits_from {
            let t = TensorRef::from_array_view(([1usize], &from[..]))
                .map_err(|e| Error::ort(format!("binding {LOGITS_FROM}"), e))?;
            feed.push((LOGITS_FROM, t.into()));
        }
        let mut rest = inputs.mask;
        for (l, names) in self.names.iter().enumerate() {
            if self.per_layer_masks() {
                // this layer's [batch, past_l + seq], the layers' masks one after the other
                let (mask, next) = rest.split_at(b * (pasts[l] + seq));
                rest = next;
                feed.push((
                    names.mask.as_str(),
                    int_input(&names.mask, [b, pasts[l] + seq], mask)?,
                ));
            }
            let [k, v] = past::bind_host(past.buffers(), l)?;
            feed.push((names.past_key.as_str(), k));
            feed.push((names.past_value.as_str(), v));
        }
        let mut rest = inputs.key_positions;
        for (names, &p) in self.names.iter().zip(&pasts) {
            if !self.manifest.takes_key_positions() {
                break;
            }
            // this layer's [batch, heads, past_l]
            let (kp, next) = rest.split_at(b * dims.heads * p);
            rest = next;
            let t = TensorRef::from_array_view(([b, dims.heads, p], kp))
                .map_err(|e| Error::ort(format!("binding {}", names.key_positions), e))?;
            feed.push((names.key_positions.as_str(), t.into()));
        }
        let outputs = self
            .session
            .run(feed)
            .map_err(|e| Error::ort("running the decoder-step graph", e))?;
        let traffic = Traffic::host_run_layers(&dims, &layer_pasts, self.manifest.dtype.size());
        Ok(StepOutputs {
            outputs,
            names: &self.names,
            dims,
            pasts,
            dtype: self.manifest.dtype,
            kv_on_device: false,
            traffic,
        })
    }

    /// Whether the graph takes one attention mask per layer (so layers may differ in capacity).
    pub fn per_layer_masks(&self) -> bool {
        self.manifest.attention_masks == MaskInputs::PerLayer
    }

    /// The step's dimensions and each layer's past, after checking the cache's view and the inputs
    /// against the manifest.
    fn check_run(
        &self,
        kv: &dyn PastKv,
        inputs: &StepInputs<'_>,
    ) -> Result<(StepDims, Vec<usize>)> {
        let m = &self.manifest;
        let layout = kv.layout();
        if layout != KvLayout::of(m) {
            return Err(Error::Input(format!(
                "the KV store ({} layers x {} KV heads x head_dim {}, {}) does not fit the model ({} x {} x {}, {})",
                layout.layers, layout.heads, layout.head_dim, layout.dtype.name(),
                m.num_layers, m.kv_heads(), m.head_dim, m.dtype.name()
            )));
        }
        let pasts: Vec<usize> = (0..layout.layers).map(|l| kv.capacity(l)).collect();
        let past = pasts[0];
        let per_layer = self.per_layer_masks();
        if let Some(l) = (0..pasts.len()).find(|&l| !per_layer && pasts[l] != past) {
            return Err(Error::Store(format!(
                "layer {l} has {} slots, layer 0 {past}: this graph takes one attention mask for every layer (export it with --layer-masks for per-layer budgets)",
                pasts[l]
            )));
        }
        let (batch, seq) = (kv.batch(), inputs.seq);
        let n = batch * seq;
        let mask_len = if per_layer {
            pasts.iter().map(|p| batch * (p + seq)).sum()
        } else {
            batch * (past + seq)
        };
        if inputs.ids.len() != n || inputs.positions.len() != n || inputs.mask.len() != mask_len {
            let mask = if per_layer {
                "every layer's mask [batch x (past_l + seq)], one after the other"
            } else {
                "a mask [batch x (past + seq)]"
            };
            return Err(Error::Input(format!(
                "step inputs must be ids and positions [batch {batch} x seq {seq}] and {mask} (past {past}, {} values given)",
                inputs.mask.len()
            )));
        }
        let key_len = if m.takes_key_positions() {
            pasts.iter().map(|p| batch * m.num_heads * p).sum()
        } else {
            0
        };
        if inputs.key_positions.len() != key_len {
            return Err(Error::Input(format!(
                "key positions must be every layer's [batch {batch} x heads {} x past_l] ({key_len} values; none for a graph that caches keys rotated), {} given",
                m.num_heads,
                inputs.key_positions.len()
            )));
        }
        if inputs.logits_from >= seq {
            return Err(Error::Input(format!(
                "logits from new token {} of a run of {seq}: at least the last token's logits are computed",
                inputs.logits_from
            )));
        }
        let dims = StepDims {
            batch,
            seq,
            past,
            layers: m.num_layers,
            heads: m.num_heads,
            kv_heads: m.kv_heads(),
            head_dim: m.head_dim,
            vocab: m.vocab_size,
            logits_from: m.takes_logits_from().then_some(inputs.logits_from),
        };
        Ok((dims, pasts))
    }
}

/// One run's inputs.
#[derive(Debug, Clone, Copy)]
pub struct StepInputs<'a> {
    /// Token ids, `[batch, seq]`.
    pub ids: &'a [i64],
    /// The new tokens' positions, `[batch, seq]` (absolute, or rolling: renumbered in the cache).
    pub positions: &'a [i64],
    /// For a graph that caches keys unrotated (manifest `key_cache`), the positions each layer's
    /// past keys are rotated by, `[batch, heads, past_l]`, layer after layer; else empty.
    pub key_positions: &'a [i64],
    /// `[batch, past + seq]`: the store's slots in use, then the new tokens' own mask; for a graph
    /// with per-layer masks every layer's `[batch, past_l + seq]`, layer after layer.
    pub mask: &'a [i64],
    pub seq: usize,
    /// The first new token whose logits are wanted (0: all; below `seq`). A graph that takes
    /// `logits_from` computes only those; an older one computes all and the caller skips the rest.
    pub logits_from: usize,
}

/// Dimensions of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDims {
    pub batch: usize,
    pub seq: usize,
    /// Layer 0's capacity the graph ran with (every layer's with one shared mask; see
    /// [`LayerOutputs::past`]).
    pub past: usize,
    pub layers: usize,
    /// Query heads: the attention sums' rows.
    pub heads: usize,
    /// K/V heads: the new and past K/V's rows (`heads` without grouped-query attention).
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// The graph's `logits_from` input of this run, when it takes one (`None`: a graph of before
    /// exporter 1.3.0, which returns every new token's logits).
    pub logits_from: Option<usize>,
}

impl StepDims {
    /// Logits rows per batch row the run returns: the new tokens from `logits_from` on.
    pub fn logits_rows(&self) -> usize {
        self.seq - self.logits_from.unwrap_or(0)
    }
}

/// A run's outputs as ONNX Runtime returned them; read them through [`StepOutputs::view`].
pub struct StepOutputs<'s> {
    outputs: SessionOutputs<'s>,
    names: &'s [LayerNames],
    dims: StepDims,
    /// Each layer's past.
    pasts: Vec<usize>,
    dtype: KvDtype,
    /// New K/V left on the device (device store): read as [`NewKv::Device`].
    kv_on_device: bool,
    traffic: Traffic,
}

/// A run's outputs, every shape and element type checked against the manifest.
#[derive(Debug)]
pub struct StepView<'a> {
    pub dims: StepDims,
    /// `[batch, seq - logits_from, vocab]` (`StepDims::logits_rows` rows per batch row).
    pub logits: &'a [f32],
    /// One entry per layer.
    pub layers: Vec<LayerOutputs<'a>>,
}

/// One layer's outputs.
#[derive(Debug, Clone, Copy)]
pub struct LayerOutputs<'a> {
    /// New keys (rotated) and values, `[batch, kv_heads, seq, head_dim]`, model dtype.
    pub key: NewKv<'a>,
    pub value: NewKv<'a>,
    /// Attention summed over the real new queries, `[batch, heads, past + seq]`, per query head.
    pub attention: &'a [f32],
    /// The layer's capacity the graph ran with (its slot columns in `attention`).
    pub past: usize,
}

impl StepOutputs<'_> {
    pub fn dims(&self) -> StepDims {
        self.dims
    }

    /// Bytes the run moved between host and device (see [`Traffic`]).
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Every output, checked: logits `[batch, seq - logits_from, vocab]`; per layer new K/V `[batch,
    /// kv_heads, seq, head_dim]` in the manifest's dtype and attention sums `[batch, heads (query),
    /// past_l + seq]`.
    pub fn view(&self) -> Result<StepView<'_>> {
        let d = self.dims;
        let logits = self.tensor::<f32>("logits", &[d.batch, d.logits_rows(), d.vocab])?;
        let kv_shape = [d.batch, d.kv_heads, d.seq, d.head_dim];
        let layers = self
            .names
            .iter()
            .zip(&self.pasts)
            .map(|(n, &past)| {
                let att_shape = [d.batch, d.heads, past + d.seq];
                Ok(LayerOutputs {
                    key: self.kv(&n.new_key, &kv_shape)?,
                    value: self.kv(&n.new_value, &kv_shape)?,
                    attention: self.tensor::<f32>(&n.attention_sums, &att_shape)?,
                    past,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StepView {
            dims: d,
            logits,
            layers,
        })
    }

    /// K or V output `name` in the manifest's dtype.
    fn kv(&self, name: &str, shape: &[usize]) -> Result<NewKv<'_>> {
        if self.kv_on_device {
            return Ok(NewKv::Device);
        }
        match self.dtype {
            KvDtype::Float32 => self.tensor::<f32>(name, shape).map(NewKv::of),
            KvDtype::Float16 => self.tensor::<f16>(name, shape).map(NewKv::of),
        }
    }

    /// Output `name` as a `T` slice, its shape checked.
    fn tensor<T: KvElement + PrimitiveTensorElementType>(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<&[T]> {
        let value = self
            .outputs
            .get(name)
            .ok_or_else(|| Error::GraphMismatch(format!("the run returned no output {name}")))?;
        let (got, data) = value
            .try_extract_tensor::<T>()
            .map_err(|e| Error::ort(format!("reading output {name} as {}", T::DTYPE.name()), e))?;
        if got.len() != shape.len() || got.iter().zip(shape).any(|(&g, &w)| g != w as i64) {
            return Err(Error::GraphMismatch(format!(
                "output {name} has shape {:?}, expected {shape:?}",
                &got[..]
            )));
        }
        Ok(data)
    }
}

/// An int64 input `[rows, cols]` of the graph, without a copy.
fn int_input<'a>(name: &str, shape: [usize; 2], data: &'a [i64]) -> Result<SessionInputValue<'a>> {
    TensorRef::from_array_view((shape, data))
        .map(Into::into)
        .map_err(|e| Error::ort(format!("binding {name}"), e))
}
