//! manifest.json: what the exporter says about a graph, and the check of a session's real inputs/outputs against it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cache::KvLayout;
pub use crate::dtype::KvDtype;
use crate::error::{Error, Result};

pub mod fields;

/// The manifest format this engine reads (docs/architecture.md, "Graph contract").
pub const MANIFEST_VERSION: u64 = 1;

/// Where the weights came from.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Source {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// How the graph's linears hold their weights (manifest `weights`, export.py --weights; absent = fp32).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightFormat {
    /// "fp32" (MatMul on the model dtype), "int8" or "int4" (com.microsoft MatMulNBits), "int8-dq"
    /// (com.microsoft DynamicQuantizeMatMul: a scale per output column, activations per call).
    pub format: String,
    #[serde(default)]
    pub block_size: Option<u64>,
    #[serde(default)]
    pub lm_head: Option<String>,
    /// An int8 copy of the layers' weights that steps of at least `min_tokens` new tokens run on
    /// (export.py --prefill-weights int8-dq; an If in the graph); absent = one set of weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill: Option<PrefillWeights>,
}

/// Manifest `weights.prefill`: the prefill copy of an int4/int8 graph's layer weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefillWeights {
    /// "int8-dq" (com.microsoft DynamicQuantizeMatMul).
    pub format: String,
    /// Steps with at least this many new tokens run on the copy; shorter ones (decode) do not.
    pub min_tokens: u64,
    /// The copy's bytes: on disk and in memory, not read by a decode step.
    #[serde(default)]
    pub bytes: u64,
}

impl Default for WeightFormat {
    fn default() -> Self {
        Self {
            format: "fp32".into(),
            block_size: None,
            lm_head: None,
            prefill: None,
        }
    }
}

impl WeightFormat {
    /// One line for `h2o info`, e.g. "int4 (MatMulNBits, block 32, LM head int4)".
    pub fn describe(&self) -> String {
        if self.format == "int8-dq" {
            return format!(
                "int8-dq (DynamicQuantizeMatMul, a scale per column, LM head {})",
                self.lm_head.as_deref().unwrap_or(&self.format)
            );
        }
        match self.block_size {
            Some(b) => format!(
                "{} (MatMulNBits, block {b}, LM head {})",
                self.format,
                self.lm_head.as_deref().unwrap_or(&self.format)
            ),
            None => self.format.clone(),
        }
    }

    /// The prefill copy for `h2o info`, e.g. "int8-dq (DynamicQuantizeMatMul), 4+ new tokens,
    /// 288.84 MiB" (steps of 4+ new tokens run on it); `None` without one.
    pub fn describe_prefill(&self) -> Option<String> {
        self.prefill.as_ref().map(|p| {
            format!(
                "{}{}, {}+ new tokens, {}",
                p.format,
                if p.format == "int8-dq" {
                    " (DynamicQuantizeMatMul)"
                } else {
                    ""
                },
                p.min_tokens,
                crate::eval::throughput::format_bytes(p.bytes)
            )
        })
    }

    /// The format as results record it: "int4", or "int4+int8-dq-prefill" with a prefill copy.
    pub fn label(&self) -> String {
        match &self.prefill {
            Some(p) => format!("{}+{}-prefill", self.format, p.format),
            None => self.format.clone(),
        }
    }

    /// Bytes of the prefill copy (0 without one): weights a decode step does not read.
    pub fn prefill_bytes(&self) -> u64 {
        self.prefill.as_ref().map_or(0, |p| p.bytes)
    }
}

/// How a graph takes its attention mask (manifest `attention_masks`; absent = shared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskInputs {
    /// One `attention_mask` `[batch, past + seq]` for every layer: every layer has the same past.
    #[default]
    Shared,
    /// `attention_mask.{i}` `[batch, past_i + seq]` per layer (`export.py --layer-masks`): layers
    /// may hold different numbers of slots (per-layer budgets).
    PerLayer,
}

/// How the graph's keys are cached (manifest `key_cache`; absent = rotated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyCache {
    /// Rotated at their position: `new_key_values.{i}.key` is rotated, the past keys are used as
    /// they are, and a token's position is fixed when it enters (absolute positions only).
    #[default]
    Rotated,
    /// Unrotated (`export.py --key-cache unrotated`): the graph rotates each layer's past keys by
    /// `key_positions.{i}` `[batch, heads, past_i]`, so the engine chooses the positions (the
    /// original ones, or renumbered within the cache: `@rolling`).
    Unrotated,
}

/// manifest.json (format_version 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u64,
    pub name: String,
    /// The architecture: "gpt_neox" (Pythia), "llama" (Llama 2/3, SmolLM2, TinyLlama) or "qwen2".
    pub model_type: String,
    pub num_layers: usize,
    /// Query heads (the attention sums' rows per layer).
    pub num_heads: usize,
    /// K/V heads (grouped-query attention: query head h reads KV head h / (num_heads /
    /// num_kv_heads), Hugging Face's repeat_kv order); absent = num_heads. Read it through
    /// [`Manifest::kv_heads`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_kv_heads: Option<usize>,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub rotary_dims: usize,
    pub rotary_base: f64,
    /// The rope scaling the graph applies to its inverse frequencies (recorded for `info`; none for
    /// gpt_neox): `{"rope_type": "linear", "factor"}` or `{"rope_type": "llama3", ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    pub max_position_embeddings: usize,
    pub dtype: KvDtype,
    #[serde(default)]
    pub weights: WeightFormat,
    /// One attention mask for all layers, or one per layer.
    #[serde(default)]
    pub attention_masks: MaskInputs,
    /// Keys cached rotated, or unrotated and rotated by the graph at the positions fed.
    #[serde(default)]
    pub key_cache: KeyCache,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    #[serde(default)]
    pub opset: Option<u64>,
    #[serde(default)]
    pub exporter_version: Option<String>,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub random_init: bool,
    #[serde(default, rename = "init_seed", alias = "seed")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub tokenizer_vocab_size: Option<usize>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// The BOS the model was trained with at position 0 of every window: fed first, at
    /// position 0, never scored (docs/architecture.md, "Graph contract"). None for Pythia's own
    /// models (their `bos_token_id` is the tokenizer's id only, never fed).
    #[serde(default)]
    pub prepend_bos_token_id: Option<u32>,
    /// Where the tokenizer's ids come from when it is not the model's own (random-init shapes
    /// that ship another model's tokenizer); absent = the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerSource>,
}

/// The manifest's `tokenizer` note: which tokenizer supplies the ids of a model whose
/// tokenizer.json is not its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerSource {
    /// Where the ids come from, e.g. `../shared/data/pythia-tokenizer.json (random init)`.
    pub source: String,
    /// Whether tokenizer.json is the model's own (false for a borrowed one).
    #[serde(default)]
    pub own: bool,
}

impl Manifest {
    /// Read and check `manifest.json`: every field the engine reads is checked (presence, type,
    /// bounds, agreement with the others; see [`fields`]) before any is used.
    pub fn load(path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::ManifestInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::ModelFileMissing {
                    path: path.to_path_buf(),
                }
            } else {
                invalid(e.to_string())
            }
        })?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(not_json(&text, &e)))?;
        let field_error = |p: fields::FieldProblem| Error::ManifestField {
            path: path.to_path_buf(),
            field: p.field,
            problem: p.problem,
        };
        let found = fields::format_version(&raw).map_err(field_error)?;
        if found != MANIFEST_VERSION {
            return Err(Error::ManifestVersion {
                path: path.to_path_buf(),
                found,
                expected: MANIFEST_VERSION,
            });
        }
        fields::check(&raw).map_err(field_error)?;
        serde_json::from_value(raw).map_err(|e| invalid(e.to_string()))
    }

    /// Input names the contract requires for this many layers, in order.
    pub fn expected_inputs(&self) -> Vec<String> {
        let mut v = vec!["input_ids".to_string(), "position_ids".into()];
        match self.attention_masks {
            MaskInputs::Shared => v.push("attention_mask".into()),
            MaskInputs::PerLayer => {
                v.extend((0..self.num_layers).map(|i| format!("attention_mask.{i}")))
            }
        }
        for i in 0..self.num_layers {
            v.push(format!("past_key_values.{i}.key"));
            v.push(format!("past_key_values.{i}.value"));
        }
        if self.takes_key_positions() {
            v.extend((0..self.num_layers).map(|i| format!("{KEY_POSITIONS}.{i}")));
        }
        if self.takes_logits_from() {
            v.push(LOGITS_FROM.into());
        }
        v
    }

    /// Whether the graph takes `logits_from` (exporter 1.3.0 on: logits only for the new tokens
    /// from that index on); older graphs compute every new token's logits.
    pub fn takes_logits_from(&self) -> bool {
        self.inputs.iter().any(|n| n == LOGITS_FROM)
    }

    /// Whether the graph caches keys unrotated and takes `key_positions.{i}` per layer.
    pub fn takes_key_positions(&self) -> bool {
        self.key_cache == KeyCache::Unrotated
    }

    /// Output names the contract requires for this many layers.
    pub fn expected_outputs(&self) -> Vec<String> {
        let names = LayerNames::all(self.num_layers);
        let mut v = vec!["logits".to_string()];
        for n in &names {
            v.push(n.new_key.clone());
            v.push(n.new_value.clone());
        }
        v.extend(names.into_iter().map(|n| n.attention_sums));
        v
    }

    /// K/V heads per layer: `num_kv_heads`, or `num_heads` when the manifest has none.
    pub fn kv_heads(&self) -> usize {
        self.num_kv_heads.unwrap_or(self.num_heads)
    }

    /// Query heads per KV head (1 without grouped-query attention).
    pub fn group_size(&self) -> usize {
        self.num_heads / self.kv_heads().max(1)
    }

    /// The tokenizer note when tokenizer.json is not the model's own (`info` names its source).
    pub fn borrowed_tokenizer(&self) -> Option<&TokenizerSource> {
        self.tokenizer.as_ref().filter(|t| !t.own)
    }

    /// Bytes of K and V for one token over all layers and KV heads: `2 x layers x kv_heads x
    /// head_dim x dtype bytes` (batch 1; saturating).
    pub fn kv_bytes_per_token(&self) -> u64 {
        KvLayout::of(self).bytes(1, 1)
    }
}

impl KvLayout {
    /// The K/V layout a manifest declares (built here, so the cache imports nothing of the manifest).
    pub fn of(m: &Manifest) -> KvLayout {
        KvLayout {
            layers: m.num_layers,
            heads: m.kv_heads(),
            head_dim: m.head_dim,
            dtype: m.dtype,
        }
    }
}

/// Why `text` is not JSON: the parser's words, the line it stopped at, and a hint when the line
/// holds a number JSON has no word for (Python's json writes NaN and Infinity).
fn not_json(text: &str, e: &serde_json::Error) -> String {
    let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
    // up to 40 characters before the column the parser stopped at and 20 after
    let at = line
        .char_indices()
        .take_while(|(i, _)| *i < e.column().saturating_sub(1))
        .count();
    let near: String = line.chars().skip(at.saturating_sub(40)).take(60).collect();
    let hint = if ["NaN", "Infinity"].iter().any(|w| near.contains(w)) {
        "; NaN and Infinity are not JSON numbers"
    } else {
        ""
    };
    format!("not JSON: {e}, near `{}`{hint}", near.trim())
}

/// The optional input naming the first new token whose logits the graph computes, int64 `[1]`.
pub const LOGITS_FROM: &str = "logits_from";

/// The stem of each layer's input of the positions its past keys are rotated by,
/// `key_positions.{i}` int64 `[batch, heads, past_i]` (graphs with `"key_cache": "unrotated"`).
pub const KEY_POSITIONS: &str = "key_positions";

/// One layer's input and output names in the graph contract, built once (the decode loop looks them up
/// every step).
#[derive(Debug, Clone)]
pub struct LayerNames {
    /// The layer's own mask input (graphs with [`MaskInputs::PerLayer`]).
    pub mask: String,
    pub past_key: String,
    pub past_value: String,
    /// The layer's key positions input (graphs with [`KeyCache::Unrotated`]).
    pub key_positions: String,
    pub new_key: String,
    pub new_value: String,
    pub attention_sums: String,
}

impl LayerNames {
    pub fn new(layer: usize) -> Self {
        Self {
            mask: format!("attention_mask.{layer}"),
            past_key: format!("past_key_values.{layer}.key"),
            past_value: format!("past_key_values.{layer}.value"),
            key_positions: format!("{KEY_POSITIONS}.{layer}"),
            new_key: format!("new_key_values.{layer}.key"),
            new_value: format!("new_key_values.{layer}.value"),
            attention_sums: format!("attention_sums.{layer}"),
        }
    }

    /// Every layer's names.
    pub fn all(layers: usize) -> Vec<Self> {
        (0..layers).map(Self::new).collect()
    }
}

/// Compare two name lists as sets; `None` when equal, else "missing [..]; extra [..]".
pub fn name_diff(what: &str, expected: &[String], actual: &[String]) -> Option<String> {
    let missing: Vec<&String> = expected.iter().filter(|n| !actual.contains(n)).collect();
    let extra: Vec<&String> = actual.iter().filter(|n| !expected.contains(n)).collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("{what} missing {missing:?}"));
    }
    if !extra.is_empty() {
        parts.push(format!("{what} not in the contract {extra:?}"));
    }
    Some(parts.join("; "))
}

/// Check the manifest's own lists and the session's real names against the contract.
pub fn check_graph(
    m: &Manifest,
    session_inputs: &[String],
    session_outputs: &[String],
) -> Result<()> {
    let ei = m.expected_inputs();
    let eo = m.expected_outputs();
    let mut problems = Vec::new();
    if let Some(d) = name_diff("manifest inputs:", &ei, &m.inputs) {
        problems.push(d);
    }
    if let Some(d) = name_diff("manifest outputs:", &eo, &m.outputs) {
        problems.push(d);
    }
    if let Some(d) = name_diff("graph inputs:", &ei, session_inputs) {
        problems.push(d);
    }
    if let Some(d) = name_diff("graph outputs:", &eo, session_outputs) {
        problems.push(d);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::GraphMismatch(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefill_copy_in_words_labels_and_bytes() {
        let w: WeightFormat = serde_json::from_value(serde_json::json!({
            "format": "int4", "block_size": 32, "lm_head": "int4",
            "prefill": {"format": "int8-dq", "min_tokens": 4, "bytes": 47_185_920, "op": "x"}
        }))
        .unwrap();
        assert_eq!(w.describe(), "int4 (MatMulNBits, block 32, LM head int4)");
        assert_eq!(
            w.describe_prefill().as_deref(),
            Some("int8-dq (DynamicQuantizeMatMul), 4+ new tokens, 45.00 MiB")
        );
        assert_eq!(w.label(), "int4+int8-dq-prefill");
        assert_eq!(w.prefill_bytes(), 47_185_920);
        let plain: WeightFormat =
            serde_json::from_value(serde_json::json!({"format": "int4", "block_size": 32}))
                .unwrap();
        assert_eq!((plain.label().as_str(), plain.prefill_bytes()), ("int4", 0));
        assert_eq!(plain.describe_prefill(), None);
    }

    #[test]
    fn name_diff_lists_missing_and_extra() {
        let e = vec!["a".to_string(), "b".to_string()];
        let a = vec!["a".to_string(), "c".to_string()];
        let d = name_diff("graph outputs:", &e, &a).unwrap();
        assert!(d.contains("missing [\"b\"]"), "{d}");
        assert!(d.contains("not in the contract [\"c\"]"), "{d}");
        assert!(name_diff("x", &e, &e).is_none());
    }

    #[test]
    fn prepend_bos_token_id_is_optional_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        let text = std::fs::read_to_string("tests/fixtures/tiny/manifest.json").unwrap();
        let mut raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        std::fs::write(&path, raw.to_string()).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().prepend_bos_token_id, None);
        raw["prepend_bos_token_id"] = 0.into();
        std::fs::write(&path, raw.to_string()).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().prepend_bos_token_id, Some(0));
        raw["prepend_bos_token_id"] = raw["vocab_size"].clone();
        std::fs::write(&path, raw.to_string()).unwrap();
        let err = Manifest::load(&path).unwrap_err().to_string();
        assert!(err.contains("prepend_bos_token_id"), "{err}");
    }
}
