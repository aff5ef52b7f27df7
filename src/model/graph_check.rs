//! The manifest checked against the graph it describes, before anything is sized from it and
//! without building a session (model.onnx's declared inputs and outputs, read by `onnx_scan`): the
//! layer count against the `past_key_values.{i}.key` inputs, KV heads / head_dim / K/V dtype
//! against every K/V input and output, query heads against the attention sums, vocab_size against the logits (where the graph's
//! shapes are static), and the weight format against the graph's operators (model.onnx scanned).

use std::path::Path;

use ort::value::{Outlet, TensorElementType, ValueType};

use super::onnx_scan::{self, GraphOps, NBits, ValueInfo};
use crate::error::{Error, Result};
use crate::manifest::{
    check_graph, KeyCache, KvDtype, LayerNames, Manifest, MaskInputs, PrefillWeights,
    KEY_POSITIONS, LOGITS_FROM,
};

/// One graph input or output as the session declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// Element type (`None`: not a tensor).
    pub ty: Option<TensorElementType>,
    /// Dimensions, -1 where dynamic.
    pub dims: Vec<i64>,
    /// The dynamic dimensions' names.
    pub symbols: Vec<String>,
}

impl Port {
    pub fn of(o: &Outlet) -> Port {
        match o.dtype() {
            ValueType::Tensor {
                ty,
                shape,
                dimension_symbols,
            } => Port {
                name: o.name().to_string(),
                ty: Some(*ty),
                dims: shape.to_vec(),
                symbols: dimension_symbols.to_vec(),
            },
            _ => Port {
                name: o.name().to_string(),
                ty: None,
                dims: Vec::new(),
                symbols: Vec::new(),
            },
        }
    }

    /// A port as model.onnx declares it (what a session built on it reports).
    pub fn declared(v: &ValueInfo) -> Port {
        use TensorElementType as T;
        let ty = v.elem_type.and_then(|t| {
            Some(match t {
                1 => T::Float32,
                2 => T::Uint8,
                3 => T::Int8,
                4 => T::Uint16,
                5 => T::Int16,
                6 => T::Int32,
                7 => T::Int64,
                8 => T::String,
                9 => T::Bool,
                10 => T::Float16,
                11 => T::Float64,
                12 => T::Uint32,
                13 => T::Uint64,
                16 => T::Bfloat16,
                21 => T::Uint4,
                22 => T::Int4,
                _ => return None,
            })
        });
        Port {
            name: v.name.clone(),
            ty,
            dims: v.dims.iter().map(|(d, _)| d.unwrap_or(-1)).collect(),
            symbols: v.dims.iter().map(|(_, s)| s.clone()).collect(),
        }
    }

    /// `[batch, 4, past, 16]`.
    fn shape(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .enumerate()
            .map(
                |(i, &d)| match self.symbols.get(i).filter(|s| d < 0 && !s.is_empty()) {
                    Some(s) => s.clone(),
                    None if d < 0 => "?".into(),
                    None => d.to_string(),
                },
            )
            .collect();
        format!("[{}]", dims.join(", "))
    }

    fn type_name(&self) -> String {
        match self.ty {
            Some(TensorElementType::Float32) => "float32".into(),
            Some(TensorElementType::Float16) => "float16".into(),
            Some(TensorElementType::Int64) => "int64".into(),
            Some(t) => t.to_string(),
            None => "not a tensor".into(),
        }
    }
}

/// A dimension the manifest fixes: axis, value, and the manifest field that says so.
type Fixed<'a> = (usize, usize, &'a str);

/// What the contract says of one input or output.
struct Expect<'a> {
    ty: TensorElementType,
    /// The manifest field the element type comes from (`None`: fixed by the contract).
    ty_field: Option<&'a str>,
    rank: usize,
    fixed: Vec<Fixed<'a>>,
}

/// Checks the manifest's num_layers, num_heads, head_dim, vocab_size and dtype against the
/// session's inputs and outputs (names already checked by [`crate::manifest::check_graph`]).
pub fn check_shapes(dir: &Path, m: &Manifest, inputs: &[Port], outputs: &[Port]) -> Result<()> {
    let manifest = dir.join("manifest.json");
    check_layer_count(&manifest, m, inputs)?;
    check_mask_inputs(&manifest, m, inputs)?;
    check_key_cache(&manifest, m, inputs)?;
    for (port, want) in expectations(m, inputs, outputs) {
        check_port(&manifest, m, port, &want)?;
    }
    Ok(())
}

/// The graph's layers are its `past_key_values.{i}.key` inputs.
fn check_layer_count(manifest: &Path, m: &Manifest, inputs: &[Port]) -> Result<()> {
    let layers = inputs
        .iter()
        .filter(|p| {
            p.name
                .strip_prefix("past_key_values.")
                .and_then(|r| r.strip_suffix(".key"))
                .is_some_and(|i| i.parse::<usize>().is_ok())
        })
        .count();
    if layers == m.num_layers {
        return Ok(());
    }
    Err(Error::ManifestVsGraph {
        manifest: manifest.to_path_buf(),
        claim: format!("num_layers is {}", m.num_layers),
        graph: format!("model.onnx has {layers} layers (past_key_values.{{i}}.key inputs)"),
    })
}

/// `attention_masks` against the graph's mask inputs: one `attention_mask`, or one per layer.
fn check_mask_inputs(manifest: &Path, m: &Manifest, inputs: &[Port]) -> Result<()> {
    let shared = inputs.iter().any(|p| p.name == "attention_mask");
    let per_layer = inputs.iter().any(|p| p.name == "attention_mask.0");
    let graph = match (m.attention_masks, shared, per_layer) {
        (MaskInputs::PerLayer, true, false) => {
            "model.onnx takes one attention_mask for every layer"
        }
        (MaskInputs::Shared, false, true) => "model.onnx takes one attention_mask.{i} per layer",
        _ => return Ok(()),
    };
    let claim = match m.attention_masks {
        MaskInputs::Shared => "attention_masks is \"shared\" (or absent)",
        MaskInputs::PerLayer => "attention_masks is \"per_layer\"",
    };
    Err(Error::ManifestVsGraph {
        manifest: manifest.to_path_buf(),
        claim: claim.into(),
        graph: graph.into(),
    })
}

/// `key_cache` against the graph's inputs: `key_positions.{i}` per layer exactly when keys are
/// cached unrotated.
fn check_key_cache(manifest: &Path, m: &Manifest, inputs: &[Port]) -> Result<()> {
    let first = format!("{KEY_POSITIONS}.0");
    let takes = inputs.iter().any(|p| p.name == first);
    let (claim, graph) = match (m.key_cache, takes) {
        (KeyCache::Rotated, true) => (
            "key_cache is \"rotated\" (or absent)",
            "model.onnx takes key_positions.{i}: its keys are cached unrotated",
        ),
        (KeyCache::Unrotated, false) => (
            "key_cache is \"unrotated\"",
            "model.onnx takes no key_positions.{i}: its keys are cached rotated",
        ),
        _ => return Ok(()),
    };
    Err(Error::ManifestVsGraph {
        manifest: manifest.to_path_buf(),
        claim: claim.into(),
        graph: graph.into(),
    })
}

/// Each input and output of the contract with what it must be.
fn expectations<'p>(
    m: &Manifest,
    inputs: &'p [Port],
    outputs: &'p [Port],
) -> Vec<(&'p Port, Expect<'static>)> {
    let kv_ty = match m.dtype {
        KvDtype::Float32 => TensorElementType::Float32,
        KvDtype::Float16 => TensorElementType::Float16,
    };
    // K/V ports [batch, kv heads, past|seq, head_dim]: num_kv_heads when the manifest gives it
    let kv_field = match m.num_kv_heads {
        Some(_) => "num_kv_heads",
        None => "num_heads",
    };
    let kv = || Expect {
        ty: kv_ty,
        ty_field: Some("dtype"),
        rank: 4,
        fixed: vec![(1, m.kv_heads(), kv_field), (3, m.head_dim, "head_dim")],
    };
    let contract = |ty, rank, fixed| Expect {
        ty,
        ty_field: None,
        rank,
        fixed,
    };
    let int64 = |rank| contract(TensorElementType::Int64, rank, vec![]);
    let mut want: Vec<(String, Expect)> = vec![
        ("input_ids".into(), int64(2)),
        ("position_ids".into(), int64(2)),
        (LOGITS_FROM.into(), int64(1)),
        (
            "logits".into(),
            contract(
                TensorElementType::Float32,
                3,
                vec![(2, m.vocab_size, "vocab_size")],
            ),
        ),
    ];
    if m.attention_masks == MaskInputs::Shared {
        want.push(("attention_mask".into(), int64(2)));
    }
    for n in LayerNames::all(m.num_layers) {
        if m.attention_masks == MaskInputs::PerLayer {
            want.push((n.mask, int64(2)));
        }
        want.push((n.past_key, kv()));
        want.push((n.past_value, kv()));
        if m.key_cache == KeyCache::Unrotated {
            let heads = vec![(1, m.num_heads, "num_heads")];
            want.push((
                n.key_positions,
                contract(TensorElementType::Int64, 3, heads),
            ));
        }
        want.push((n.new_key, kv()));
        want.push((n.new_value, kv()));
        // attention sums [batch, query heads, past + seq]
        let sums = contract(
            TensorElementType::Float32,
            3,
            vec![(1, m.num_heads, "num_heads")],
        );
        want.push((n.attention_sums, sums));
    }
    want.into_iter()
        .filter_map(|(name, e)| {
            let port = inputs.iter().chain(outputs).find(|p| p.name == name)?;
            Some((port, e))
        })
        .collect()
}

fn check_port(manifest: &Path, m: &Manifest, port: &Port, want: &Expect<'_>) -> Result<()> {
    let contradiction = |claim: String, graph: String| Error::ManifestVsGraph {
        manifest: manifest.to_path_buf(),
        claim,
        graph,
    };
    if port.ty != Some(want.ty) {
        return Err(match want.ty_field {
            Some(field) => contradiction(
                format!("{field} is \"{}\"", m.dtype.name()),
                format!("model.onnx's {} holds {}", port.name, port.type_name()),
            ),
            None => Error::GraphMismatch(format!(
                "{} holds {}; the contract has {:?}",
                port.name,
                port.type_name(),
                want.ty
            )),
        });
    }
    if port.dims.len() != want.rank {
        return Err(Error::GraphMismatch(format!(
            "{} has shape {}; the contract has {} dimensions",
            port.name,
            port.shape(),
            want.rank
        )));
    }
    for &(axis, value, field) in &want.fixed {
        let d = port.dims[axis];
        if d >= 0 && d as u64 != value as u64 {
            return Err(contradiction(
                format!("{field} is {value}"),
                format!(
                    "model.onnx's {} is {} ({field} {d} there)",
                    port.name,
                    port.shape()
                ),
            ));
        }
    }
    Ok(())
}

/// Operators of quantized weights (ONNX and ONNX Runtime's contrib domain).
const QUANTIZED_OPS: [&str; 10] = [
    "MatMulNBits",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QLinearMatMul",
    "QGemm",
    "QAttention",
    "DequantizeLinear",
    "GatherBlockQuantized",
    "MatMulBnb4",
];

/// Checks the manifest `m` of model directory `dir` against its model.onnx, read once without a
/// session: the inputs' and outputs' shapes and types ([`check_shapes`]), their names
/// ([`check_graph`]) and the weight format against the operators ([`weights_agree`]).
pub fn check_model_file(dir: &Path, m: &Manifest) -> Result<()> {
    let ops = onnx_scan::scan(&dir.join("model.onnx"))?;
    let ins: Vec<Port> = ops.inputs.iter().map(Port::declared).collect();
    let outs: Vec<Port> = ops.outputs.iter().map(Port::declared).collect();
    let names = |ports: &[Port]| ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    check_shapes(dir, m, &ins, &outs)?;
    check_graph(m, &names(&ins), &names(&outs))?;
    check_weights(dir, m, &ops)
}

/// Checks manifest `weights` (format, block_size, lm_head) against model.onnx's operators.
fn check_weights(dir: &Path, m: &Manifest, ops: &GraphOps) -> Result<()> {
    weights_agree(m, ops).map_err(|(claim, graph)| Error::ManifestVsGraph {
        manifest: dir.join("manifest.json"),
        claim,
        graph,
    })
}

/// `Err((what the manifest claims, what the graph shows))` where they disagree.
pub fn weights_agree(m: &Manifest, ops: &GraphOps) -> std::result::Result<(), (String, String)> {
    let w = &m.weights;
    let claim = |field: &str, v: &dyn std::fmt::Display| format!("weights.{field} is \"{v}\"");
    let quantized = quantized_summary(ops);
    let bits = |format: &str| match format {
        "int8" => Some(8),
        "int4" => Some(4),
        _ => None,
    };
    if let Some(p) = &w.prefill {
        prefill_agrees(m, p, ops)?;
    } else if w.format == "int8-dq" || !ops.dq_matmuls.is_empty() && bits(&w.format).is_some() {
        return dynamic_agrees(m, ops);
    }
    let Some(layer_bits) = bits(&w.format) else {
        return match quantized {
            None => Ok(()),
            Some(q) => Err((claim("format", &w.format), format!("model.onnx holds {q}"))),
        };
    };
    let (head, layers): (Vec<&NBits>, Vec<&NBits>) =
        ops.nbits.iter().partition(|n| n.n == m.vocab_size as i64);
    if layers.is_empty() {
        return Err((
            claim("format", &w.format),
            format!(
                "model.onnx has no MatMulNBits node for the layers' linears ({})",
                plain(ops)
            ),
        ));
    }
    if let Some(n) = layers.iter().find(|n| n.bits != layer_bits) {
        return Err((
            claim("format", &w.format),
            format!("model.onnx's MatMulNBits nodes hold {}-bit weights", n.bits),
        ));
    }
    if let Some(n) = w
        .block_size
        .and_then(|b| ops.nbits.iter().find(|n| n.block_size != b as i64))
    {
        return Err((
            format!("weights.block_size is {}", w.block_size.unwrap_or_default()),
            format!(
                "model.onnx's MatMulNBits nodes use blocks of {}",
                n.block_size
            ),
        ));
    }
    let lm_head = w.lm_head.as_deref().unwrap_or(&w.format);
    match (bits(lm_head), head.first()) {
        (None, None) => Ok(()),
        (Some(b), Some(n)) if n.bits == b => Ok(()),
        (_, Some(n)) => Err((
            claim("lm_head", &lm_head),
            format!(
                "model.onnx's LM head (MatMulNBits, N = vocab_size {}) holds {}-bit weights",
                m.vocab_size, n.bits
            ),
        )),
        (Some(_), None) => Err((
            claim("lm_head", &lm_head),
            format!(
                "model.onnx's LM head (N = vocab_size {}) is not a MatMulNBits node",
                m.vocab_size
            ),
        )),
    }
}

/// `weights_agree` for a prefill copy (manifest `weights.prefill`, export.py --prefill-weights
/// int8-dq): an int8/int4 format, an If routing the steps, and a DynamicQuantizeMatMul (the copy)
/// for every MatMulNBits of the layers (the LM head, outside the If, has none). The MatMulNBits
/// side is checked by `weights_agree` as for any int8/int4 graph.
fn prefill_agrees(
    m: &Manifest,
    p: &PrefillWeights,
    ops: &GraphOps,
) -> std::result::Result<(), (String, String)> {
    let claim = |v: &str| format!("weights.prefill.format is \"{v}\"");
    if p.format != "int8-dq" {
        return Err((
            claim(&p.format),
            "this engine knows prefill copies in int8-dq (DynamicQuantizeMatMul) only".into(),
        ));
    }
    if !matches!(m.weights.format.as_str(), "int8" | "int4") {
        return Err((
            format!(
                "weights.format is \"{}\" with a prefill copy",
                m.weights.format
            ),
            "a prefill copy belongs to an int8/int4 (MatMulNBits) graph".into(),
        ));
    }
    if !ops.ops.contains_key("If") {
        return Err((
            claim(&p.format),
            "model.onnx has no If node to route prefills to the copy".into(),
        ));
    }
    let vocab = m.vocab_size as i64;
    let layers = ops.nbits.iter().filter(|n| n.n != vocab).count();
    let copies = ops.dq_matmuls.iter().filter(|&&n| n != vocab).count();
    if copies != layers || ops.dq_matmuls.contains(&vocab) {
        return Err((
            claim(&p.format),
            format!(
                "model.onnx holds {} DynamicQuantizeMatMul node(s) for {layers} MatMulNBits layer linear(s)",
                ops.dq_matmuls.len()
            ),
        ));
    }
    Ok(())
}

/// `weights_agree` for format "int8-dq" (com.microsoft DynamicQuantizeMatMul, export.py --weights
/// int8-dq), or a MatMulNBits format whose graph holds DynamicQuantizeMatMul nodes.
fn dynamic_agrees(m: &Manifest, ops: &GraphOps) -> std::result::Result<(), (String, String)> {
    let w = &m.weights;
    let claim = |field: &str, v: &str| format!("weights.{field} is \"{v}\"");
    if w.format != "int8-dq" {
        return Err((
            claim("format", &w.format),
            format!(
                "model.onnx holds {} DynamicQuantizeMatMul node(s) (int8-dq)",
                ops.dq_matmuls.len()
            ),
        ));
    }
    if !ops.nbits.is_empty() {
        return Err((
            claim("format", &w.format),
            format!(
                "model.onnx holds {} MatMulNBits node(s) (int8/int4)",
                ops.nbits.len()
            ),
        ));
    }
    let vocab = m.vocab_size as i64;
    if !ops.dq_matmuls.iter().any(|&n| n != vocab) {
        return Err((
            claim("format", &w.format),
            format!(
                "model.onnx has no DynamicQuantizeMatMul node for the layers' linears ({})",
                plain(ops)
            ),
        ));
    }
    let lm_head = w.lm_head.as_deref().unwrap_or(&w.format);
    match (lm_head == "int8-dq", ops.dq_matmuls.contains(&vocab)) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => Err((
            claim("lm_head", lm_head),
            format!(
                "model.onnx's LM head (N = vocab_size {vocab}) is not a DynamicQuantizeMatMul node"
            ),
        )),
        (false, true) => Err((
            claim("lm_head", lm_head),
            format!(
                "model.onnx's LM head (DynamicQuantizeMatMul, N = vocab_size {vocab}) holds int8 weights"
            ),
        )),
    }
}

/// The quantized operators and initializers of the graph in words, `None` when there are none.
fn quantized_summary(ops: &GraphOps) -> Option<String> {
    let mut parts: Vec<String> = QUANTIZED_OPS
        .iter()
        .filter_map(|op| ops.ops.get(*op).map(|n| format!("{n} {op} node(s)")))
        .collect();
    if ops.quantized_initializers > 0 {
        parts.push(format!(
            "{} int8/uint8/int4 initializer(s)",
            ops.quantized_initializers
        ));
    }
    (!parts.is_empty()).then(|| format!("quantized weights: {}", parts.join(", ")))
}

/// What the graph has instead, e.g. `only plain MatMul, 17 nodes: float weights`.
fn plain(ops: &GraphOps) -> String {
    match ops.ops.get("MatMul") {
        Some(n) => format!("only plain MatMul, {n} nodes: float weights"),
        None => "no MatMul either".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(weights: serde_json::Value) -> Manifest {
        let text = std::fs::read_to_string("tests/fixtures/tiny/manifest.json").unwrap();
        let mut raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        raw["weights"] = weights;
        serde_json::from_value(raw).unwrap()
    }

    fn graph(nbits: &[(i64, i64)]) -> GraphOps {
        let mut ops = GraphOps::default();
        ops.ops.insert("MatMul".into(), 3);
        for &(bits, n) in nbits {
            ops.nbits.push(NBits {
                bits,
                block_size: 32,
                n,
            });
        }
        if !nbits.is_empty() {
            ops.ops.insert("MatMulNBits".into(), nbits.len());
        }
        ops
    }

    #[test]
    fn formats_that_agree() {
        let fp32 = manifest(serde_json::json!({"format": "fp32"}));
        assert_eq!(weights_agree(&fp32, &graph(&[])), Ok(()));
        let int4 =
            manifest(serde_json::json!({"format": "int4", "block_size": 32, "lm_head": "int8"}));
        assert_eq!(weights_agree(&int4, &graph(&[(4, 192), (8, 512)])), Ok(()));
        let head_fp32 =
            manifest(serde_json::json!({"format": "int8", "block_size": 32, "lm_head": "fp32"}));
        assert_eq!(weights_agree(&head_fp32, &graph(&[(8, 192)])), Ok(()));
    }

    #[test]
    fn formats_the_graph_contradicts() {
        let fp32 = manifest(serde_json::json!({"format": "fp32"}));
        let (claim, g) = weights_agree(&fp32, &graph(&[(4, 192)])).unwrap_err();
        assert!(
            claim.contains("\"fp32\"") && g.contains("1 MatMulNBits"),
            "{claim} / {g}"
        );
        let int4 = manifest(serde_json::json!({"format": "int4", "block_size": 32}));
        let (_, g) = weights_agree(&int4, &graph(&[])).unwrap_err();
        assert!(
            g.contains("no MatMulNBits") && g.contains("plain MatMul, 3 nodes"),
            "{g}"
        );
        let (_, g) = weights_agree(&int4, &graph(&[(8, 192), (8, 512)])).unwrap_err();
        assert!(g.contains("8-bit"), "{g}");
        let (claim, _) = weights_agree(&int4, &graph(&[(4, 192)])).unwrap_err();
        assert!(claim.contains("lm_head"), "{claim}");
        let blocks = manifest(serde_json::json!({"format": "int4", "block_size": 64}));
        let (claim, _) = weights_agree(&blocks, &graph(&[(4, 192), (4, 512)])).unwrap_err();
        assert!(claim.contains("block_size is 64"), "{claim}");
    }

    /// A graph of DynamicQuantizeMatMul nodes with these N (512 = the fixture's vocabulary).
    fn dq_graph(ns: &[i64]) -> GraphOps {
        let mut ops = graph(&[]);
        ops.dq_matmuls = ns.to_vec();
        ops.ops
            .insert("DynamicQuantizeMatMul".into(), ns.len().max(1));
        ops
    }

    /// An int4 graph (layers N 192 and 64, head 512) with a prefill copy of `copies` N behind an If.
    fn routed_graph(copies: &[i64], with_if: bool) -> GraphOps {
        let mut ops = graph(&[(4, 192), (4, 64), (4, 512)]);
        ops.dq_matmuls = copies.to_vec();
        ops.ops
            .insert("DynamicQuantizeMatMul".into(), copies.len().max(1));
        if with_if {
            ops.ops.insert("If".into(), 1);
        }
        ops
    }

    #[test]
    fn prefill_copy_agrees_and_is_contradicted() {
        let routed = || {
            serde_json::json!({"format": "int4", "block_size": 32, "lm_head": "int4",
                "prefill": {"format": "int8-dq", "min_tokens": 4, "bytes": 1000}})
        };
        let m = manifest(routed());
        assert_eq!(weights_agree(&m, &routed_graph(&[192, 64], true)), Ok(()));
        // the same graph without the manifest's word is refused as before: DynamicQuantizeMatMul
        // nodes in an int4 graph
        let plain = manifest(serde_json::json!({"format": "int4", "block_size": 32}));
        let (claim, g) = weights_agree(&plain, &routed_graph(&[192, 64], true)).unwrap_err();
        assert!(
            claim.contains("\"int4\"") && g.contains("2 DynamicQuantizeMatMul"),
            "{claim} / {g}"
        );
        let (claim, g) = weights_agree(&m, &routed_graph(&[192, 64], false)).unwrap_err();
        assert!(
            claim.contains("weights.prefill.format is \"int8-dq\"") && g.contains("no If"),
            "{g}"
        );
        let (_, g) = weights_agree(&m, &routed_graph(&[192], true)).unwrap_err();
        assert!(
            g.contains("1 DynamicQuantizeMatMul node(s) for 2 MatMulNBits"),
            "{g}"
        );
        let (_, g) = weights_agree(&m, &routed_graph(&[192, 64, 512], true)).unwrap_err();
        assert!(g.contains("3 DynamicQuantizeMatMul"), "{g}");
        let (_, g) = weights_agree(&m, &routed_graph(&[], true)).unwrap_err();
        assert!(g.contains("0 DynamicQuantizeMatMul"), "{g}");
        let mut other = routed();
        other["prefill"]["format"] = "int4".into();
        let (claim, _) =
            weights_agree(&manifest(other), &routed_graph(&[192, 64], true)).unwrap_err();
        assert!(claim.contains("\"int4\""), "{claim}");
        let mut dq = routed();
        dq["format"] = "int8-dq".into();
        let (claim, _) = weights_agree(&manifest(dq), &routed_graph(&[192, 64], true)).unwrap_err();
        assert!(
            claim.contains("weights.format is \"int8-dq\" with a prefill copy"),
            "{claim}"
        );
    }

    #[test]
    fn int8_dq_agrees_and_is_contradicted() {
        let dq = manifest(serde_json::json!({"format": "int8-dq", "lm_head": "int8-dq"}));
        assert_eq!(weights_agree(&dq, &dq_graph(&[192, 64, 512])), Ok(()));
        let head_fp32 = manifest(serde_json::json!({"format": "int8-dq", "lm_head": "fp32"}));
        assert_eq!(weights_agree(&head_fp32, &dq_graph(&[192, 64])), Ok(()));
        let (claim, g) = weights_agree(&head_fp32, &dq_graph(&[192, 512])).unwrap_err();
        assert!(
            claim.contains("lm_head") && g.contains("holds int8"),
            "{claim} / {g}"
        );
        let (claim, g) = weights_agree(&dq, &dq_graph(&[192])).unwrap_err();
        assert!(
            claim.contains("lm_head") && g.contains("not a DynamicQuantizeMatMul"),
            "{g}"
        );
        let (_, g) = weights_agree(&dq, &graph(&[])).unwrap_err();
        assert!(
            g.contains("no DynamicQuantizeMatMul") && g.contains("plain MatMul"),
            "{g}"
        );
        let (_, g) = weights_agree(&dq, &graph(&[(8, 192)])).unwrap_err();
        assert!(g.contains("1 MatMulNBits"), "{g}");
        // the other way round: an fp32 or int8 manifest on a DynamicQuantizeMatMul graph
        let fp32 = manifest(serde_json::json!({"format": "fp32"}));
        let (claim, g) = weights_agree(&fp32, &dq_graph(&[192, 512])).unwrap_err();
        assert!(
            claim.contains("\"fp32\"") && g.contains("DynamicQuantizeMatMul"),
            "{g}"
        );
        let int8 = manifest(serde_json::json!({"format": "int8", "block_size": 32}));
        let (claim, g) = weights_agree(&int8, &dq_graph(&[192, 512])).unwrap_err();
        assert!(
            claim.contains("\"int8\"") && g.contains("int8-dq"),
            "{claim} / {g}"
        );
    }

    #[test]
    fn shapes_are_shown_with_their_symbols() {
        let p = Port {
            name: "past_key_values.0.key".into(),
            ty: Some(TensorElementType::Float32),
            dims: vec![-1, 4, -1, 16],
            symbols: vec!["batch".into(), "".into(), "past".into(), "".into()],
        };
        assert_eq!(p.shape(), "[batch, 4, past, 16]");
    }

    /// A float32 port `[batch, dims...]` (-1 = dynamic).
    fn port(name: &str, dims: &[i64]) -> Port {
        Port {
            name: name.into(),
            ty: Some(TensorElementType::Float32),
            dims: dims.to_vec(),
            symbols: vec![String::new(); dims.len()],
        }
    }

    /// The fixture's manifest (2 layers, 4 heads, head_dim 16) as a Llama with `kv` KV heads, and
    /// its K/V ports with `kv_dim` heads, attention sums with `sums_dim`.
    fn gqa(kv: usize, kv_dim: i64, sums_dim: i64) -> Result<()> {
        let mut m = manifest(serde_json::json!({"format": "fp32"}));
        m.model_type = "llama".into();
        m.num_kv_heads = Some(kv);
        let mut ins = Vec::new();
        let mut outs = Vec::new();
        for n in LayerNames::all(2) {
            ins.push(port(&n.past_key, &[-1, kv_dim, -1, 16]));
            ins.push(port(&n.past_value, &[-1, kv_dim, -1, 16]));
            outs.push(port(&n.new_key, &[-1, kv_dim, -1, 16]));
            outs.push(port(&n.new_value, &[-1, kv_dim, -1, 16]));
            outs.push(port(&n.attention_sums, &[-1, sums_dim, -1]));
        }
        check_shapes(Path::new("m"), &m, &ins, &outs)
    }

    #[test]
    fn kv_ports_have_kv_heads_and_attention_sums_query_heads() {
        gqa(2, 2, 4).unwrap();
        let err = gqa(2, 4, 4).unwrap_err().to_string();
        assert!(
            err.contains("num_kv_heads is 2")
                && err.contains("past_key_values.0.key is [?, 4, ?, 16]"),
            "{err}"
        );
        let err = gqa(2, 2, 2).unwrap_err().to_string();
        assert!(
            err.contains("num_heads is 4") && err.contains("attention_sums.0 is [?, 2, ?]"),
            "{err}"
        );
    }
}
