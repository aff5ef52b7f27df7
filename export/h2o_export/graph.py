"""The decoder-step graph, built node by node with onnx.helper (docs/architecture.md, "Graph
contract", version 1).

One graph serves prefill and decode: it takes `seq` new tokens and a past of `past` cached
slots (any subset of earlier tokens, in any order, some possibly masked out) and returns the
logits, the new tokens' K/V only, and per layer the attention probabilities summed over the
non-padding new queries. Semantics follow transformers' GPTNeoXForCausalLM (eager attention):

  x = embed_in[input_ids]
  per layer:  a = Attention(LN1(x));  parallel:  x = (MLP(LN2(x)) + a) + x
                                       else:      x' = a + x;  x = MLP(LN2(x')) + x'
  logits = LN_f(x) @ embed_out^T
  Attention: qkv = LN(x) @ Wqkv^T + b, viewed [batch, seq, heads, 3*head_dim] (per head q|k|v);
  RoPE (rotate_half convention) on the first rotary_dims of q and k at position_ids;
  scores = q @ [past_k | k]^T * head_dim^-0.5, masked, softmax in float32.
  The attention never concatenates the cache: scores = [q @ past_k^T | q @ k^T] (only this small
  [batch, heads, seq, past+seq] tensor is concatenated) and ctx = probs[..., :past] @ past_v +
  probs[..., past:] @ v, so the past K/V inputs are read in place (also with past = 0).

Weights are handed to a `TensorSink`, which either keeps them in the protobuf or appends each
one to the external-data file as soon as it is produced, so a model larger than memory can be
exported (only one tensor is alive at a time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .config import NeoxConfig
from .errors import ExportError

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; ONNX Runtime 1.31 loads it
# Large negative finite score for masked entries (as transformers' eager mask, finfo.min): with
# it every masked probability underflows to exactly 0 and a fully masked row stays finite.
MASK_VALUE = float(np.finfo(np.float32).min)
EXTERNAL_ALIGN = 4096

DTYPES = {"fp32": np.float32, "fp16": np.float16}
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16"}


def input_names(num_layers: int) -> list[str]:
    names = ["input_ids", "position_ids", "attention_mask"]
    for i in range(num_layers):
        names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    return names


def output_names(num_layers: int) -> list[str]:
    names = ["logits"]
    for i in range(num_layers):
        names += [f"new_key_values.{i}.key", f"new_key_values.{i}.value"]
    names += [f"attention_sums.{i}" for i in range(num_layers)]
    return names


class TensorSink:
    """Turns weight arrays into initializers: inline, or appended to one external-data file
    (each tensor written as soon as it arrives, aligned to 4096 bytes)."""

    def __init__(self, external_path: Optional[Path]):
        self.external_path = external_path
        self._file = open(external_path, "wb") if external_path is not None else None
        self.bytes_written = 0

    def add(self, name: str, arr: np.ndarray) -> TensorProto:
        arr = np.ascontiguousarray(arr)
        if self._file is None:
            return numpy_helper.from_array(arr, name)
        pad = (-self._file.tell()) % EXTERNAL_ALIGN
        if pad:
            self._file.write(b"\0" * pad)
        offset = self._file.tell()
        self._file.write(memoryview(arr).cast("B"))
        self.bytes_written += arr.nbytes
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.external_path.name), ("offset", str(offset)), ("length", str(arr.nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


class _Builder:
    def __init__(self, sink: TensorSink):
        self.sink = sink
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._n = 0

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str = "", **attrs):
        self._n += 1
        base = f"{name or op_type}_{self._n}"
        outs = [base] if n_out == 1 else [f"{base}_{j}" for j in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"n{self._n}_{op_type}", **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype) -> str:
        """A small constant (kept inline in the protobuf)."""
        self._n += 1
        name = f"const_{self._n}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, name: str, arr: np.ndarray) -> str:
        self.initializers.append(self.sink.add(name, arr))
        return name


def build_graph(
    cfg: NeoxConfig,
    dtype: str,
    get_tensor: Callable[[str], np.ndarray],
    sink: TensorSink,
    graph_name: str,
) -> onnx.ModelProto:
    """Build the decoder-step model. `get_tensor(hf_name)` returns one HF-layout tensor (any
    float dtype); it is converted, transposed where a MatMul needs [in, out], handed to the
    sink and dropped before the next one is requested."""
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    wdt = DTYPES[dtype]
    welem = helper.np_dtype_to_tensor_dtype(np.dtype(wdt))
    half = dtype == "fp16"
    L, nh, hd, H = cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.hidden_size
    rd = cfg.rotary_dims
    b = _Builder(sink)
    i64, f32 = np.int64, np.float32

    def load(hf_name: str, transpose: bool, out_dtype) -> np.ndarray:
        arr = get_tensor(hf_name)
        if not np.isfinite(arr).all():
            raise ExportError(f"weight {hf_name} contains NaN or infinite values; the checkpoint is damaged")
        if transpose:
            arr = arr.T
        arr = np.ascontiguousarray(arr, dtype=out_dtype)
        if out_dtype == np.float16 and not np.isfinite(arr).all():
            raise ExportError(f"weight {hf_name} has values beyond float16 range; export with --dtype fp32")
        return arr

    def w(hf_name: str, transpose: bool = False, keep_f32: bool = False) -> str:
        return b.weight(hf_name, load(hf_name, transpose, np.float32 if keep_f32 else wdt))

    def to_w(x: str) -> str:  # float32 -> model dtype
        return b.op("Cast", [x], to=welem) if half else x

    def to_f32(x: str) -> str:  # model dtype -> float32
        return b.op("Cast", [x], to=TensorProto.FLOAT) if half else x

    def linear(x: str, hf: str, bias: bool) -> str:
        y = b.op("MatMul", [x, w(hf + ".weight", transpose=True)])
        return b.op("Add", [y, w(hf + ".bias")]) if bias else y

    def layer_norm(x: str, hf: str) -> str:
        return b.op(
            "LayerNormalization",
            [x, w(hf + ".weight", keep_f32=True), w(hf + ".bias", keep_f32=True)],
            axis=-1,
            epsilon=cfg.layer_norm_eps,
        )

    # ---- graph inputs
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "past_plus_seq"]),
    ]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", welem, ["batch", nh, "past", hd])
            )

    # ---- masks shared by all layers
    ax0, ax1 = b.const([0], i64), b.const([1], i64)
    s1 = b.op("Shape", ["input_ids"], start=1, end=2, name="seq_len")  # [1]
    p1 = b.op("Shape", ["past_key_values.0.key"], start=2, end=3, name="past_len")  # [1]
    t1 = b.op("Add", [p1, s1], name="total_len")  # [1]
    s0, p0, t0 = (b.op("Squeeze", [x, ax0]) for x in (s1, p1, t1))
    zero, one = b.const(0, i64), b.const(1, i64)
    kv_idx = b.op("Range", [zero, t0, one], name="kv_idx")  # [past+seq]
    q_idx = b.op("Range", [zero, s0, one], name="q_idx")  # [seq]
    q_lim = b.op("Unsqueeze", [b.op("Add", [q_idx, p0]), ax1])  # [seq, 1]: new query i sees kv <= past+i
    causal = b.op("LessOrEqual", [kv_idx, q_lim], name="causal")  # [seq, past+seq]
    pad = b.op("Cast", ["attention_mask"], to=TensorProto.BOOL)  # [batch, past+seq]
    pad4 = b.op("Unsqueeze", [pad, b.const([1, 2], i64)])  # [batch, 1, 1, past+seq]
    allowed = b.op("And", [pad4, causal], name="allowed")  # [batch, 1, seq, past+seq]
    qmask = b.op("Slice", ["attention_mask", p1, t1, ax1])  # [batch, seq]: own column = not padding
    qmask4 = b.op("Unsqueeze", [b.op("Cast", [qmask], to=TensorProto.FLOAT), b.const([1, 3], i64)])  # [batch,1,seq,1]
    neg = b.const(MASK_VALUE, f32)

    # ---- rotary tables from position_ids (float32, as transformers computes them)
    if rd > 0:
        # inv_freq = 1 / base^(arange(0, rd, 2) / rd), evaluated in float32 like the RoPE init.
        exponent = np.arange(0, rd, 2, dtype=np.int64).astype(np.float32) / np.float32(rd)
        inv_freq = (np.float32(1.0) / np.power(np.float32(cfg.rotary_base), exponent, dtype=np.float32)).astype(f32)
        pos = b.op("Unsqueeze", [b.op("Cast", ["position_ids"], to=TensorProto.FLOAT), b.const([2], i64)])  # [b,s,1]
        freqs = b.op("Mul", [pos, b.const(inv_freq, f32)])  # [batch, seq, rd/2]
        emb = b.op("Concat", [freqs, freqs], axis=-1)  # [batch, seq, rd]
        cos = b.op("Unsqueeze", [b.op("Cos", [emb]), ax1], name="rope_cos")  # [batch, 1, seq, rd]
        sin = b.op("Unsqueeze", [b.op("Sin", [emb]), ax1], name="rope_sin")
        ax3 = b.const([3], i64)
        c0, c_half, c_rd, c_hd = (b.const([v], i64) for v in (0, rd // 2, rd, hd))

        def rope(x: str) -> str:  # x float32 [batch, heads, seq, head_dim]
            x_rot = b.op("Slice", [x, c0, c_rd, ax3]) if rd < hd else x
            x1 = b.op("Slice", [x_rot, c0, c_half, ax3])
            x2 = b.op("Slice", [x_rot, c_half, c_rd, ax3])
            rot_half = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
            y = b.op("Add", [b.op("Mul", [x_rot, cos]), b.op("Mul", [rot_half, sin])])
            if rd < hd:
                y = b.op("Concat", [y, b.op("Slice", [x, c_rd, c_hd, ax3])], axis=-1)
            return y
    else:
        def rope(x: str) -> str:
            return x

    scale = np.float32(hd ** -0.5)
    qkv_shape = b.const([0, 0, nh, 3 * hd], i64)
    ctx_shape = b.const([0, 0, H], i64)
    split_sizes = b.const([hd, hd, hd], i64)
    sum_axes = b.const([2], i64)
    c_zero1, ax_last = b.const([0], i64), b.const([3], i64)

    def _qkT(q_: str, k_: str) -> str:
        """q @ k^T for q [b, h, seq, hd], k [b, h, n, hd] -> [b, h, seq, n]. ONNX Runtime fuses
        the Transpose into the MatMul (FusedMatMul transB=1), so the cache is not copied."""
        return b.op("MatMul", [q_, b.op("Transpose", [k_], perm=[0, 1, 3, 2])])

    def mlp(x: str, p: str) -> str:  # x float32 -> float32
        u = linear(to_w(x), p + "mlp.dense_h_to_4h", True)
        u = to_f32(u)
        # exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))
        g = b.op("Mul", [b.op("Mul", [u, b.const(0.5, f32)]),
                         b.op("Add", [b.op("Erf", [b.op("Mul", [u, b.const(np.float32(0.5 ** 0.5), f32)])]),
                                      b.const(1.0, f32)])], name="gelu")
        return to_f32(linear(to_w(g), p + "mlp.dense_4h_to_h", True))

    # ---- embedding
    x = b.op("Gather", [w("gpt_neox.embed_in.weight"), "input_ids"], axis=0, name="embed")  # [batch, seq, hidden]
    x = to_f32(x)

    outputs_kv, outputs_sums = [], []
    for i in range(L):
        p = f"gpt_neox.layers.{i}."
        h1 = layer_norm(x, p + "input_layernorm")
        qkv = linear(to_w(h1), p + "attention.query_key_value", cfg.attention_bias)  # [batch, seq, 3*hidden]
        qkv = b.op("Transpose", [b.op("Reshape", [qkv, qkv_shape])], perm=[0, 2, 1, 3])  # [batch, heads, seq, 3*hd]
        q, k, v = b.op("Split", [qkv, split_sizes], n_out=3, axis=3)  # each [batch, heads, seq, head_dim]
        q, k = rope(to_f32(q)), rope(to_f32(k))
        k_new, v_new = to_w(k), v  # rotated key and value, model dtype [batch, heads, seq, hd]
        # Concat-free attention: the past cache is read in place (never copied into a
        # [past+seq] buffer); only the small score/probability tensors are concatenated/sliced.
        pk, pv = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        if half:
            # scale q before the float16 product so the scores stay well inside float16 range
            qs = b.op("Cast", [b.op("Mul", [q, b.const(scale, f32)])], to=welem)
            scores = b.op("Concat", [_qkT(qs, pk), _qkT(qs, k_new)], axis=-1)
            scores = b.op("Cast", [scores], to=TensorProto.FLOAT)
        else:
            sc = b.const(scale, f32)
            scores = b.op("Concat", [b.op("Mul", [_qkT(q, pk), sc]), b.op("Mul", [_qkT(q, k_new), sc])],
                          axis=-1)  # [batch, heads, seq, past+seq]
        scores = b.op("Where", [allowed, scores, neg])
        probs = b.op("Softmax", [scores], axis=-1, name=f"probs_{i}")  # float32
        sums = b.op("ReduceSum", [b.op("Mul", [probs, qmask4]), sum_axes], keepdims=0, name=f"attn_sums_{i}")
        probs_w = to_w(probs)
        probs_past = b.op("Slice", [probs_w, c_zero1, p1, ax_last])  # [batch, heads, seq, past]
        probs_new = b.op("Slice", [probs_w, p1, t1, ax_last])  # [batch, heads, seq, seq]
        ctx = b.op("Add", [b.op("MatMul", [probs_past, pv]), b.op("MatMul", [probs_new, v_new])])  # [b, h, seq, hd]
        ctx = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]), ctx_shape])  # [batch, seq, hidden]
        attn = to_f32(linear(ctx, p + "attention.dense", cfg.attention_bias))
        if cfg.use_parallel_residual:
            m = mlp(layer_norm(x, p + "post_attention_layernorm"), p)
            x = b.op("Add", [b.op("Add", [m, attn]), x])
        else:
            a = b.op("Add", [attn, x])
            m = mlp(layer_norm(a, p + "post_attention_layernorm"), p)
            x = b.op("Add", [m, a])
        outputs_kv += [(k_new, f"new_key_values.{i}.key"), (v_new, f"new_key_values.{i}.value")]
        outputs_sums.append((sums, f"attention_sums.{i}"))

    hf = layer_norm(x, "gpt_neox.final_layer_norm")
    logits = to_f32(b.op("MatMul", [to_w(hf), w("embed_out.weight", transpose=True)]))

    # ---- name the outputs (Identity nodes keep internal names free of contract names)
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="out_logits"))
    for src, dst in outputs_kv + outputs_sums:
        b.nodes.append(helper.make_node("Identity", [src], [dst], name=f"out_{dst}"))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", cfg.vocab_size])]
    for i in range(L):
        for kv in ("key", "value"):
            outputs.append(helper.make_tensor_value_info(f"new_key_values.{i}.{kv}", welem, ["batch", nh, "seq", hd]))
    for i in range(L):
        outputs.append(helper.make_tensor_value_info(f"attention_sums.{i}", TensorProto.FLOAT,
                                                     ["batch", nh, "past_plus_seq"]))

    graph = helper.make_graph(b.nodes, graph_name, inputs, outputs, initializer=b.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="h2o_export",
        doc_string="GPT-NeoX decoder step, h2o-engine graph contract v1 (docs/architecture.md)",
    )
    return model
