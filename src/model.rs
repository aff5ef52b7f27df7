//! A loaded model directory (manifest, tokenizer, ONNX session) and one run of the decoder-step graph.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;

use crate::cache::{KvBuf, KvStore};
use crate::error::{Error, Result};
use crate::manifest::{check_graph, LayerNames, Manifest};
use crate::runtime::{check_provider, ExecutionProvider, Runtime, SessionConfig};

/// model.onnx + manifest.json + tokenizer.json from one directory, with a session ready to run.
pub struct Model {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub tokenizer: tokenizers::Tokenizer,
    pub config: SessionConfig,
    /// Per layer, the graph's input/output names (built once, not per step).
    pub names: Vec<LayerNames>,
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

/// Load a tokenizer and check that its ids fit the model's vocabulary.
pub fn load_tokenizer(path: &Path, model_vocab: usize) -> Result<tokenizers::Tokenizer> {
    if !path.is_file() {
        return Err(Error::ModelFileMissing {
            path: path.to_path_buf(),
        });
    }
    let tok = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
        path: path.to_path_buf(),
        reason: format!("not a tokenizer.json ({e})"),
    })?;
    let n = tok.get_vocab_size(true);
    if n > model_vocab {
        return Err(Error::Tokenizer {
            path: path.to_path_buf(),
            reason: format!(
                "it has {n} tokens but the model's vocabulary is {model_vocab}; use the tokenizer.json the model was exported with"
            ),
        });
    }
    Ok(tok)
}

impl Model {
    /// Load `dir` (model.onnx, manifest.json, tokenizer.json) and start a session on `rt`.
    pub fn load(rt: &Runtime, dir: &Path, config: SessionConfig) -> Result<Self> {
        check_provider(config.provider)?;
        if !dir.is_dir() {
            return Err(Error::ModelDirMissing(dir.to_path_buf()));
        }
        let manifest = Manifest::load(&dir.join("manifest.json"))?;
        let onnx = dir.join("model.onnx");
        if !onnx.is_file() {
            return Err(Error::ModelFileMissing { path: onnx });
        }
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"), manifest.vocab_size)?;
        let mut builder = Session::builder(&rt.env)?
            .with_intra_threads(config.intra_threads)
            .map_err(|e| Error::Ort(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| Error::Ort(e.to_string()))?
            .with_optimization_level(config.opt_level.to_ort())
            .map_err(|e| Error::Ort(e.to_string()))?
            .with_intra_op_spinning(config.spin)
            .map_err(|e| Error::Ort(e.to_string()))?;
        if config.provider == ExecutionProvider::Cuda {
            builder = Self::with_cuda(builder)?;
        }
        let session = builder
            .commit_from_file(&onnx)
            .map_err(|e| Error::Ort(format!("cannot load {}: {e}", onnx.display())))?;
        let ins: Vec<String> = session
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let outs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        check_graph(&manifest, &ins, &outs)?;
        let names = LayerNames::all(manifest.num_layers);
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            tokenizer,
            config,
            names,
            session,
        })
    }

    #[cfg(feature = "cuda")]
    fn with_cuda(
        builder: ort::session::builder::SessionBuilder,
    ) -> Result<ort::session::builder::SessionBuilder> {
        builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| {
                Error::ExecutionProvider(format!(
                    "cuda could not start ({}); point ORT_DYLIB_PATH at the libonnxruntime.so of an onnxruntime-gpu wheel (with its CUDA libraries on the loader path), or use --provider cpu",
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

    /// Run the graph once: `ids`, `positions` `[batch, seq]`, `mask` `[batch, capacity + seq]`, the
    /// store's whole slot arrays as past (views of its memory, no copy).
    pub fn run<'s>(
        &'s mut self,
        store: &KvStore,
        ids: &[i64],
        positions: &[i64],
        mask: &[i64],
        seq: usize,
    ) -> Result<ort::session::SessionOutputs<'s>> {
        let b = store.batch();
        let past = store.capacity();
        let kv_shape = [b, store.heads(), past, store.head_dim()];
        let mut inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(3 + 2 * store.num_layers());
        inputs.push((
            "input_ids",
            TensorRef::from_array_view(([b, seq], ids))?.into(),
        ));
        inputs.push((
            "position_ids",
            TensorRef::from_array_view(([b, seq], positions))?.into(),
        ));
        inputs.push((
            "attention_mask",
            TensorRef::from_array_view(([b, past + seq], mask))?.into(),
        ));
        for (l, names) in self.names.iter().enumerate() {
            let (k, v) = store.kv(l);
            for (name, buf) in [(names.past_key.as_str(), k), (names.past_value.as_str(), v)] {
                let value: ort::session::SessionInputValue<'_> = match buf {
                    KvBuf::F32(x) => TensorRef::from_array_view((kv_shape, x.as_slice()))?.into(),
                    KvBuf::F16(x) => TensorRef::from_array_view((kv_shape, x.as_slice()))?.into(),
                };
                inputs.push((name, value));
            }
        }
        Ok(self.session.run(inputs)?)
    }
}
