//! The device KV store's companion graphs, built at load time with ONNX Runtime's model editor (no file
//! ships with the model, so every export of contract version 1 can use the device store): `write` puts
//! the kept new K/V rows into their slots, `grow` copies slot arrays into larger ones, `zero` clears
//! fresh memory. They run on the step session's execution provider, on the store's device memory.

use ort::editor::{Graph, Model as EditorModel, Node, Opset, ONNX_DOMAIN};
use ort::session::builder::SessionBuilder;
use ort::session::{IoBinding, Session};
use ort::value::{Outlet, Shape, SymbolicDimensions, TensorElementType, ValueType};

use super::device_kv::element_type;
use crate::error::{Error, Result};
use crate::manifest::KvDtype;

/// The opset the companion graphs import (Gather-13, ScatterND-16, Pad-13 and Expand-13 are current in it).
const OPSET: u32 = 17;

/// Names of the `write` graph's inputs and output.
pub(crate) mod write {
    /// Every layer's K/V slot rows `[rows, head_dim]`; bound as output `POOL_OUT` too (written in place).
    pub const POOL: &str = "pool";
    /// The step's new K/V rows `[fresh_rows, head_dim]` (the graph's `new_key_values.*` outputs).
    pub const FRESH: &str = "fresh";
    /// int64 `[n]`: the fresh row of each kept new token's K or V.
    pub const SRC: &str = "src";
    /// int64 `[n, 1]`: the pool row it goes to.
    pub const DST: &str = "dst";
    pub const POOL_OUT: &str = "pool_out";
}

/// Names of the `grow` graph's inputs and output: `new [x, c_new, d] = Pad(old [x, c_old, d], pads)`.
pub(crate) mod grow {
    pub const OLD: &str = "old";
    /// int64 `[6]`: ONNX Pad's begins then ends per axis.
    pub const PADS: &str = "pads";
    pub const NEW: &str = "new";
}

/// Names of the `zero` graph's inputs and output: `out [rows, d] = Expand(zero [1], shape [2])`.
pub(crate) mod zero {
    pub const ZERO: &str = "zero";
    pub const SHAPE: &str = "shape";
    pub const OUT: &str = "out";
}

/// One companion graph's session and its binding.
pub(crate) struct Companion {
    what: &'static str,
    session: Session,
    pub binding: IoBinding,
}

impl Companion {
    fn new(builder: &SessionBuilder, what: &'static str, spec: GraphSpec) -> Result<Self> {
        let session = session(builder, what, spec)?;
        let binding = session
            .create_binding()
            .map_err(|e| Error::ort(format!("binding the device store's {what} graph"), e))?;
        Ok(Self {
            what,
            session,
            binding,
        })
    }

    /// Run on what is bound, then drop the bindings (so no tensor outlives its store through them).
    pub fn run(&mut self) -> Result<()> {
        let result = self.session.run_binding(&self.binding).map(drop);
        self.binding.clear();
        result.map_err(|e| Error::ort(format!("running the device store's {} graph", self.what), e))
    }
}

/// The three companion graphs.
pub(crate) struct Companions {
    pub write: Companion,
    pub grow: Companion,
    pub zero: Companion,
}

impl Companions {
    /// Build the graphs for K/V of `dtype` and commit them with `builder` (the step session's options
    /// and execution provider).
    pub fn new(builder: &SessionBuilder, dtype: KvDtype) -> Result<Self> {
        let ty = element_type(dtype);
        Ok(Self {
            write: Companion::new(builder, "write", write_graph(ty))?,
            grow: Companion::new(builder, "grow", grow_graph(ty))?,
            zero: Companion::new(builder, "zero", zero_graph(ty))?,
        })
    }
}

/// A tensor outlet; a dimension named by a non-empty string is symbolic (its size given as -1).
fn outlet(name: &str, ty: TensorElementType, dims: &[&str]) -> Outlet {
    let shape = Shape::new(dims.iter().map(|_| -1i64));
    let symbols = SymbolicDimensions::new(dims.iter().map(|d| d.to_string()));
    Outlet::new(
        name,
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols: symbols,
        },
    )
}

/// One graph: its inputs, outputs and nodes `(op, inputs, outputs)`.
struct GraphSpec {
    inputs: Vec<Outlet>,
    outputs: Vec<Outlet>,
    nodes: Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)>,
}

fn write_graph(ty: TensorElementType) -> GraphSpec {
    use write::*;
    let i64t = TensorElementType::Int64;
    GraphSpec {
        inputs: vec![
            outlet(POOL, ty, &["rows", "head_dim"]),
            outlet(FRESH, ty, &["fresh_rows", "head_dim"]),
            outlet(SRC, i64t, &["n"]),
            outlet(DST, i64t, &["n", "one"]),
        ],
        outputs: vec![outlet(POOL_OUT, ty, &["rows", "head_dim"])],
        nodes: vec![
            // kept [n, head_dim] = fresh[src]; pool_out = pool with row dst[i] = kept[i]
            ("Gather", vec![FRESH, SRC], vec!["kept"]),
            ("ScatterND", vec![POOL, DST, "kept"], vec![POOL_OUT]),
        ],
    }
}

fn grow_graph(ty: TensorElementType) -> GraphSpec {
    use grow::*;
    GraphSpec {
        inputs: vec![
            outlet(OLD, ty, &["x", "c_old", "head_dim"]),
            outlet(PADS, TensorElementType::Int64, &["six"]),
        ],
        outputs: vec![outlet(NEW, ty, &["x", "c_new", "head_dim"])],
        // mode "constant" with value 0 are Pad's defaults
        nodes: vec![("Pad", vec![OLD, PADS], vec![NEW])],
    }
}

fn zero_graph(ty: TensorElementType) -> GraphSpec {
    use zero::*;
    GraphSpec {
        inputs: vec![
            outlet(ZERO, ty, &["one"]),
            outlet(SHAPE, TensorElementType::Int64, &["two"]),
        ],
        outputs: vec![outlet(OUT, ty, &["rows", "head_dim"])],
        nodes: vec![("Expand", vec![ZERO, SHAPE], vec![OUT])],
    }
}

/// Build `spec` with the model editor and commit it as a session.
fn session(builder: &SessionBuilder, what: &str, spec: GraphSpec) -> Result<Session> {
    let fail = |e: ort::Error| Error::ort(format!("building the device store's {what} graph"), e);
    let mut graph = Graph::new().map_err(fail)?;
    graph.set_inputs(spec.inputs).map_err(fail)?;
    graph.set_outputs(spec.outputs).map_err(fail)?;
    for (i, (op, ins, outs)) in spec.nodes.into_iter().enumerate() {
        let node =
            Node::new(op, ONNX_DOMAIN, format!("{what}.{i}"), ins, outs, []).map_err(fail)?;
        graph.add_node(node).map_err(fail)?;
    }
    let mut model =
        EditorModel::new([Opset::new(ONNX_DOMAIN, OPSET).map_err(fail)?]).map_err(fail)?;
    model.set_graph(graph).map_err(fail)?;
    model.into_session(builder).map_err(fail)
}
