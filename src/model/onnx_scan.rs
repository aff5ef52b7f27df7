//! A minimal reader of model.onnx's protobuf: the graph's declared inputs and outputs (name,
//! element type, shape), so the manifest is checked against the graph without building an ONNX
//! Runtime session, and what the weight format shows: each node's operator (op_type, and
//! MatMulNBits' `bits`, `block_size` and `N` attributes, DynamicQuantizeMatMul's B input) and each
//! initializer's element type (and a quantized one's dims: DynamicQuantizeMatMul's N) (ONNX
//! Runtime does not expose a session's nodes). Streamed, the weight bytes skipped with seeks
//! (nothing of the size of the weights is held).
//!
//! Wire format (protobuf): a field is a varint key `number << 3 | wire type`, then a varint (0), 8
//! bytes (1), a varint length and that many bytes (2: strings, nested messages, packed lists) or 4
//! bytes (5). Fields read (onnx.proto3): ModelProto.graph = 7; GraphProto.node = 1, .initializer = 5,
//! .input = 11, .output = 12; NodeProto.input = 1, .op_type = 4, .attribute = 5; AttributeProto.name = 1,
//! .i = 3, .g = 6, .graphs = 11; TensorProto.dims = 1, .data_type = 2, .name = 8; ValueInfoProto.name = 1, .type = 2;
//! TypeProto.tensor_type = 1; TypeProto.Tensor.elem_type = 1, .shape = 2; TensorShapeProto.dim = 1;
//! Dimension.dim_value = 1, .dim_param = 2. Everything else is skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::Path;

use crate::error::{Error, Result};

/// ONNX TensorProto data types of quantized weights: uint8, int8, uint4, int4.
const QUANTIZED_TYPES: [u64; 4] = [2, 3, 21, 22];
/// Subgraphs (If / Loop bodies) nested deeper than this are refused (a crafted file's recursion).
const MAX_DEPTH: usize = 8;
/// Dims kept per initializer (weights have two; more only matter as "not [K, N]").
const MAX_DIMS: usize = 8;
/// Longest op_type or attribute name read (ONNX's are short).
const MAX_NAME: u64 = 256;

/// One MatMulNBits node's quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NBits {
    pub bits: i64,
    pub block_size: i64,
    /// Output features: the vocabulary for the LM head.
    pub n: i64,
}

/// What the graph's nodes and initializers say about its weights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphOps {
    /// Nodes per op_type (subgraphs included).
    pub ops: BTreeMap<String, usize>,
    /// Every MatMulNBits node's attributes.
    pub nbits: Vec<NBits>,
    /// Every DynamicQuantizeMatMul node's output features (N, B's [K, N] second axis: the vocabulary
    /// for the LM head); -1 where B is not a quantized initializer of the graph.
    pub dq_matmuls: Vec<i64>,
    /// Initializers of an 8- or 4-bit integer type.
    pub quantized_initializers: usize,
    /// The main graph's inputs that are not initializers (what a session takes), in file order.
    pub inputs: Vec<ValueInfo>,
    /// The main graph's outputs, in file order.
    pub outputs: Vec<ValueInfo>,
}

/// A graph input or output as model.onnx declares it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueInfo {
    pub name: String,
    /// ONNX TensorProto.DataType (1 float, 7 int64, 10 float16, ...); `None`: not a tensor.
    pub elem_type: Option<u64>,
    /// Per axis: its fixed size, or `None` and the symbol's name (empty when unnamed).
    pub dims: Vec<(Option<i64>, String)>,
}

/// Reads model.onnx's nodes and initializer types.
pub fn scan(path: &Path) -> Result<GraphOps> {
    let bad = |reason: String| Error::OnnxUnreadable {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut wire = Wire {
        r: BufReader::new(file),
        pos: 0,
    };
    let mut ops = GraphOps::default();
    let mut dq = DqInputs::default();
    model(&mut wire, len, &mut ops, &mut dq).map_err(bad)?;
    dq.resolve(&mut ops);
    Ok(ops)
}

/// What DynamicQuantizeMatMul's N is read from: each node's B input and the quantized
/// initializers' dims (both small: names and a few integers).
#[derive(Default)]
struct DqInputs {
    b_inputs: Vec<String>,
    dims: BTreeMap<String, Vec<i64>>,
}

impl DqInputs {
    fn resolve(self, ops: &mut GraphOps) {
        ops.dq_matmuls = self
            .b_inputs
            .iter()
            .map(|b| match self.dims.get(b).map(Vec::as_slice) {
                Some([_, n]) => *n,
                _ => -1,
            })
            .collect();
    }
}

/// The input ports of a graph: its declared inputs less those an initializer of the same name
/// provides (older files list initializers as inputs too; a session does not take them).
fn session_inputs(declared: Vec<ValueInfo>, initializers: &[String]) -> Vec<ValueInfo> {
    declared
        .into_iter()
        .filter(|v| !initializers.contains(&v.name))
        .collect()
}

/// Reads ONNX protobuf bytes held in memory (tests build graphs this way).
#[cfg(test)]
fn scan_bytes(bytes: &[u8]) -> std::result::Result<GraphOps, String> {
    let mut wire = Wire {
        r: std::io::Cursor::new(bytes),
        pos: 0,
    };
    let mut ops = GraphOps::default();
    let mut dq = DqInputs::default();
    model(&mut wire, bytes.len() as u64, &mut ops, &mut dq)?;
    dq.resolve(&mut ops);
    Ok(ops)
}

type Parse<T> = std::result::Result<T, String>;

/// A protobuf stream: the reader and the offset read up to.
struct Wire<R> {
    r: R,
    pos: u64,
}

impl<R: BufRead + Seek> Wire<R> {
    fn byte(&mut self) -> Parse<u8> {
        let mut b = [0u8];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("the file ends inside a field at byte {}", self.pos))?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> Parse<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "a varint longer than 10 bytes at byte {}",
            self.pos
        ))
    }

    /// A length-delimited field's length, checked against the end of the message holding it.
    fn length(&mut self, end: u64) -> Parse<u64> {
        let n = self.varint()?;
        match self.pos.checked_add(n) {
            Some(stop) if stop <= end => Ok(n),
            _ => Err(format!(
                "a field of {n} bytes at byte {} runs past its message",
                self.pos
            )),
        }
    }

    fn skip(&mut self, n: u64) -> Parse<()> {
        let step = i64::try_from(n).map_err(|_| format!("a field of {n} bytes"))?;
        self.r
            .seek_relative(step)
            .map_err(|e| format!("cannot skip {n} bytes at byte {}: {e}", self.pos))?;
        self.pos += n;
        Ok(())
    }

    fn text(&mut self, end: u64) -> Parse<String> {
        let n = self.length(end)?;
        if n > MAX_NAME {
            return Err(format!(
                "a name of {n} bytes at byte {} (at most {MAX_NAME})",
                self.pos
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| format!("the file ends inside a name at byte {}", self.pos))?;
        self.pos += n;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The next field's (number, wire type), or `None` at `end`.
    fn field(&mut self, end: u64) -> Parse<Option<(u64, u8)>> {
        if self.pos >= end {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    /// Skips a field's value of wire type `wire`.
    fn skip_value(&mut self, wire: u8, end: u64) -> Parse<()> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.skip(8),
            2 => {
                let n = self.length(end)?;
                self.skip(n)
            }
            5 => self.skip(4),
            w => Err(format!("wire type {w} at byte {}", self.pos)),
        }
    }
}

/// ModelProto: its graph (7).
fn model<R: BufRead + Seek>(
    w: &mut Wire<R>,
    end: u64,
    out: &mut GraphOps,
    dq: &mut DqInputs,
) -> Parse<()> {
    let mut graphs = 0;
    while let Some((field, wire)) = w.field(end)? {
        if (field, wire) == (7, 2) {
            let stop = w.length(end)? + w.pos;
            graph(w, stop, out, dq, 0)?;
            graphs += 1;
        } else {
            w.skip_value(wire, end)?;
        }
    }
    if graphs == 0 {
        return Err("no graph in the file".into());
    }
    Ok(())
}

/// GraphProto: its nodes (1) and initializers (5).
fn graph<R: BufRead + Seek>(
    w: &mut Wire<R>,
    end: u64,
    out: &mut GraphOps,
    dq: &mut DqInputs,
    depth: usize,
) -> Parse<()> {
    if depth > MAX_DEPTH {
        return Err(format!("subgraphs nested more than {MAX_DEPTH} deep"));
    }
    let (mut inputs, mut outputs, mut initializers) = (Vec::new(), Vec::new(), Vec::new());
    while let Some((field, wire)) = w.field(end)? {
        match (field, wire) {
            (1, 2) => {
                let stop = w.length(end)? + w.pos;
                node(w, stop, out, dq, depth)?;
            }
            (5, 2) => {
                let stop = w.length(end)? + w.pos;
                let (ty, name, dims) = tensor_type(w, stop)?;
                if QUANTIZED_TYPES.contains(&ty) {
                    out.quantized_initializers += 1;
                    dq.dims.insert(name.clone(), dims);
                }
                if depth == 0 {
                    initializers.push(name);
                }
            }
            (11 | 12, 2) if depth == 0 => {
                let stop = w.length(end)? + w.pos;
                let v = value_info(w, stop)?;
                if field == 11 {
                    &mut inputs
                } else {
                    &mut outputs
                }
                .push(v);
            }
            _ => w.skip_value(wire, end)?,
        }
    }
    if depth == 0 {
        out.inputs = session_inputs(inputs, &initializers);
        out.outputs = outputs;
    }
    Ok(())
}

/// ValueInfoProto: its name (1) and tensor type (2).
fn value_info<R: BufRead + Seek>(w: &mut Wire<R>, end: u64) -> Parse<ValueInfo> {
    let mut v = ValueInfo::default();
    while let Some((field, wire)) = w.field(end)? {
        match (field, wire) {
            (1, 2) => v.name = w.text(end)?,
            (2, 2) => {
                let stop = w.length(end)? + w.pos;
                type_proto(w, stop, &mut v)?;
            }
            _ => w.skip_value(wire, end)?,
        }
    }
    Ok(v)
}

/// TypeProto: its tensor_type (1): elem_type (1) and shape (2); other types leave `elem_type` None.
fn type_proto<R: BufRead + Seek>(w: &mut Wire<R>, end: u64, v: &mut ValueInfo) -> Parse<()> {
    while let Some((field, wire)) = w.field(end)? {
        if (field, wire) != (1, 2) {
            w.skip_value(wire, end)?;
            continue;
        }
        let tensor_end = w.length(end)? + w.pos;
        v.elem_type = Some(0);
        while let Some((f, wt)) = w.field(tensor_end)? {
            match (f, wt) {
                (1, 0) => v.elem_type = Some(w.varint()?),
                (2, 2) => {
                    let shape_end = w.length(tensor_end)? + w.pos;
                    while let Some((d, dw)) = w.field(shape_end)? {
                        if (d, dw) == (1, 2) {
                            let dim_end = w.length(shape_end)? + w.pos;
                            v.dims.push(dimension(w, dim_end)?);
                        } else {
                            w.skip_value(dw, shape_end)?;
                        }
                    }
                }
                _ => w.skip_value(wt, tensor_end)?,
            }
        }
    }
    Ok(())
}

/// TensorShapeProto.Dimension: dim_value (1) or dim_param (2).
fn dimension<R: BufRead + Seek>(w: &mut Wire<R>, end: u64) -> Parse<(Option<i64>, String)> {
    let (mut value, mut param) = (None, String::new());
    while let Some((field, wire)) = w.field(end)? {
        match (field, wire) {
            (1, 0) => value = Some(w.varint()? as i64),
            (2, 2) => param = w.text(end)?,
            _ => w.skip_value(wire, end)?,
        }
    }
    Ok((value, param))
}

/// NodeProto: its inputs (1; the second kept), op_type (4) and attributes (5).
fn node<R: BufRead + Seek>(
    w: &mut Wire<R>,
    end: u64,
    out: &mut GraphOps,
    dq: &mut DqInputs,
    depth: usize,
) -> Parse<()> {
    let mut op = String::new();
    let mut attrs = BTreeMap::new();
    let (mut inputs, mut second_input) = (0, String::new());
    while let Some((field, wire)) = w.field(end)? {
        match (field, wire) {
            (1, 2) => {
                let name = w.text(end)?;
                if inputs == 1 {
                    second_input = name;
                }
                inputs += 1;
            }
            (4, 2) => op = w.text(end)?,
            (5, 2) => {
                let stop = w.length(end)? + w.pos;
                if let Some((name, value)) = attribute(w, stop, out, dq, depth)? {
                    attrs.insert(name, value);
                }
            }
            _ => w.skip_value(wire, end)?,
        }
    }
    if op == "MatMulNBits" {
        let get = |k: &str| attrs.get(k).copied().unwrap_or(-1);
        out.nbits.push(NBits {
            bits: get("bits"),
            block_size: get("block_size"),
            n: get("N"),
        });
    }
    if op == "DynamicQuantizeMatMul" {
        dq.b_inputs.push(second_input);
    }
    *out.ops.entry(op).or_default() += 1;
    Ok(())
}

/// AttributeProto: (name, integer value) when it holds an integer (3); its subgraphs (6, 11) are
/// read into `out`.
fn attribute<R: BufRead + Seek>(
    w: &mut Wire<R>,
    end: u64,
    out: &mut GraphOps,
    dq: &mut DqInputs,
    depth: usize,
) -> Parse<Option<(String, i64)>> {
    let (mut name, mut int) = (String::new(), None);
    while let Some((field, wire)) = w.field(end)? {
        match (field, wire) {
            (1, 2) => name = w.text(end)?,
            (3, 0) => int = Some(w.varint()? as i64),
            (6 | 11, 2) => {
                let stop = w.length(end)? + w.pos;
                graph(w, stop, out, dq, depth + 1)?;
            }
            _ => w.skip_value(wire, end)?,
        }
    }
    Ok(int.map(|i| (name, i)))
}

/// Keeps a tensor's first [`MAX_DIMS`] dims (a crafted file may list millions).
fn push_dim(dims: &mut Vec<i64>, d: u64) {
    if dims.len() < MAX_DIMS {
        dims.push(d as i64);
    }
}

/// TensorProto: its dims (1, packed or not), data_type (2) and name (8); the data is skipped.
fn tensor_type<R: BufRead + Seek>(w: &mut Wire<R>, end: u64) -> Parse<(u64, String, Vec<i64>)> {
    let (mut ty, mut name, mut dims) = (0, String::new(), Vec::new());
    while let Some((field, wire)) = w.field(end)? {
        match (field, wire) {
            (1, 0) => push_dim(&mut dims, w.varint()?),
            (1, 2) => {
                let stop = w.length(end)? + w.pos;
                while w.pos < stop {
                    push_dim(&mut dims, w.varint()?);
                }
            }
            (2, 0) => ty = w.varint()?,
            (8, 2) => name = w.text(end)?,
            _ => w.skip_value(wire, end)?,
        }
    }
    Ok((ty, name, dims))
}

/// Protobuf encoding of the few messages the tests need (a field at a time).
#[cfg(test)]
pub mod encode {
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field.
    pub fn bytes(field: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    /// A varint field.
    pub fn int(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }

    /// A NodeProto of `op` with integer attributes.
    pub fn node(op: &str, attrs: &[(&str, i64)]) -> Vec<u8> {
        let mut n = Vec::new();
        bytes(4, op.as_bytes(), &mut n);
        for (name, v) in attrs {
            let mut a = Vec::new();
            bytes(1, name.as_bytes(), &mut a);
            int(3, *v as u64, &mut a);
            bytes(5, &a, &mut n);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{bytes, int, varint};
    use super::*;

    fn model_of(nodes: &[Vec<u8>], initializer_types: &[u64]) -> Vec<u8> {
        let mut g = Vec::new();
        for n in nodes {
            bytes(1, n, &mut g);
        }
        for &t in initializer_types {
            let mut tensor = Vec::new();
            int(2, t, &mut tensor);
            bytes(9, &[7u8; 100], &mut tensor); // raw_data, skipped
            bytes(5, &tensor, &mut g);
        }
        let mut m = Vec::new();
        int(1, 8, &mut m); // ir_version
        bytes(7, &g, &mut m);
        m
    }

    #[test]
    fn nodes_attributes_and_initializer_types() {
        let m = model_of(
            &[
                encode::node("MatMul", &[]),
                encode::node(
                    "MatMulNBits",
                    &[("bits", 4), ("block_size", 32), ("N", 512)],
                ),
                encode::node("MatMul", &[]),
            ],
            &[1, 2, 7],
        );
        let ops = scan_bytes(&m).unwrap();
        assert_eq!(ops.ops["MatMul"], 2);
        assert_eq!(ops.ops["MatMulNBits"], 1);
        assert_eq!(
            ops.nbits,
            vec![NBits {
                bits: 4,
                block_size: 32,
                n: 512
            }]
        );
        assert_eq!(ops.quantized_initializers, 1);
    }

    /// DynamicQuantizeMatMul's N comes from its B initializer's dims, packed or one field per dim;
    /// a B that is not a quantized initializer reads -1.
    #[test]
    fn dynamic_quantize_matmul_n_from_its_weight() {
        let dq = |b: &str| {
            let mut n = Vec::new();
            for input in ["x", b, "scale"] {
                bytes(1, input.as_bytes(), &mut n);
            }
            bytes(4, b"DynamicQuantizeMatMul", &mut n);
            n
        };
        let mut g = Vec::new();
        for b in ["head_q", "layer_q", "float_w"] {
            bytes(1, &dq(b), &mut g);
        }
        let mut head = Vec::new(); // dims [64, 4096] packed, int8
        let mut packed = Vec::new();
        varint(64, &mut packed);
        varint(4096, &mut packed);
        bytes(1, &packed, &mut head);
        int(2, 3, &mut head);
        bytes(8, b"head_q", &mut head);
        bytes(5, &head, &mut g);
        let mut layer = Vec::new(); // dims [64, 192] one field each, int8
        int(1, 64, &mut layer);
        int(1, 192, &mut layer);
        int(2, 3, &mut layer);
        bytes(8, b"layer_q", &mut layer);
        bytes(5, &layer, &mut g);
        let mut float = Vec::new(); // a float initializer: its dims are not kept
        int(1, 64, &mut float);
        int(1, 10, &mut float);
        int(2, 1, &mut float);
        bytes(8, b"float_w", &mut float);
        bytes(5, &float, &mut g);
        let mut m = Vec::new();
        bytes(7, &g, &mut m);
        let ops = scan_bytes(&m).unwrap();
        assert_eq!(ops.ops["DynamicQuantizeMatMul"], 3);
        assert_eq!(ops.dq_matmuls, vec![4096, 192, -1]);
        assert_eq!(ops.quantized_initializers, 2);
    }

    /// A ValueInfoProto of a tensor of ONNX type `ty` with `dims` (a value, a named symbol, or
    /// neither).
    fn value_info(name: &str, ty: u64, dims: &[(Option<u64>, &str)]) -> Vec<u8> {
        let mut shape = Vec::new();
        for (value, param) in dims {
            let mut d = Vec::new();
            if let Some(v) = value {
                int(1, *v, &mut d);
            }
            if !param.is_empty() {
                bytes(2, param.as_bytes(), &mut d);
            }
            bytes(1, &d, &mut shape);
        }
        let mut tensor = Vec::new();
        int(1, ty, &mut tensor);
        bytes(2, &shape, &mut tensor);
        let mut ty_proto = Vec::new();
        bytes(1, &tensor, &mut ty_proto);
        let mut v = Vec::new();
        bytes(1, name.as_bytes(), &mut v);
        bytes(2, &ty_proto, &mut v);
        v
    }

    #[test]
    fn declared_inputs_and_outputs_less_initializers() {
        let mut g = Vec::new();
        bytes(1, &encode::node("MatMul", &[]), &mut g);
        let ids = value_info("input_ids", 7, &[(None, "batch"), (None, "seq")]);
        let past = value_info("past.0", 10, &[(None, "batch"), (Some(4), ""), (None, "")]);
        let w = value_info("w", 1, &[(Some(16), ""), (Some(8), "")]);
        for v in [&ids, &w, &past] {
            bytes(11, v, &mut g);
        }
        let mut init = Vec::new();
        int(2, 1, &mut init);
        bytes(8, b"w", &mut init);
        bytes(5, &init, &mut g);
        bytes(
            12,
            &value_info("logits", 1, &[(None, "batch"), (Some(512), "")]),
            &mut g,
        );
        let mut m = Vec::new();
        bytes(7, &g, &mut m);
        let ops = scan_bytes(&m).unwrap();
        let vi = |name: &str, ty: u64, dims: &[(Option<i64>, &str)]| ValueInfo {
            name: name.into(),
            elem_type: Some(ty),
            dims: dims.iter().map(|(v, p)| (*v, p.to_string())).collect(),
        };
        assert_eq!(
            ops.inputs,
            vec![
                vi("input_ids", 7, &[(None, "batch"), (None, "seq")]),
                vi("past.0", 10, &[(None, "batch"), (Some(4), ""), (None, "")]),
            ]
        );
        assert_eq!(
            ops.outputs,
            vec![vi("logits", 1, &[(None, "batch"), (Some(512), "")])]
        );
    }

    #[test]
    fn the_fixture_is_plain_matmuls() {
        let ops = scan(Path::new("tests/fixtures/tiny/model.onnx")).unwrap();
        assert!(ops.ops["MatMul"] > 0, "{ops:?}");
        assert!(ops.nbits.is_empty() && ops.quantized_initializers == 0);
    }

    #[test]
    fn truncated_and_lying_files_are_refused() {
        let m = model_of(&[encode::node("MatMul", &[])], &[1]);
        assert!(scan_bytes(&m[..m.len() - 3]).is_err());
        let mut lying = Vec::new();
        varint(7 << 3 | 2, &mut lying);
        varint(1 << 40, &mut lying); // a graph longer than the file
        assert!(scan_bytes(&lying).unwrap_err().contains("runs past"));
        assert!(scan_bytes(&[]).unwrap_err().contains("no graph"));
    }
}
