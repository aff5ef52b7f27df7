"""Node-by-node ONNX building: where weights go (`TensorSink`) and the one builder every graph
block writes through (`GraphBuilder`: nodes, constants, weights, dtype casts, linear, layer norm).

Weights are handed to a `TensorSink`, which either keeps them in the protobuf or appends each
one to the external-data file as soon as it is produced, so a model larger than memory can be
exported (only one tensor is alive at a time). `GraphBuilder.linear` is the one place a weight
meets a MatMul: a plain MatMul (+ Add) on the model-dtype weight, with --weights int8/int4 a
`com.microsoft` MatMulNBits on the block-quantized weight, with --weights int8-dq a `com.microsoft`
DynamicQuantizeMatMul on the per-column int8 weight (quantize.py), bias fused in both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ExportError
from .quantize import WeightFormat, dequantize_blockwise, quantize_blockwise, quantize_per_column
from .weights import DTYPE_NAMES, DTYPES  # noqa: F401  (the model dtypes, defined where onnx is not needed)

EXTERNAL_ALIGN = 4096
CONTRIB_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators (MatMulNBits)


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


class GraphBuilder:
    """Collects nodes and initializers. Node and constant names are numbered in creation order,
    so the same calls in the same order give the same graph, byte for byte.

    `dtype` ("fp32"|"fp16") is the model dtype of weights and K/V; layer norms, RoPE, softmax and
    the residual stream stay float32 (`to_w` / `to_f32` cast at the boundaries, no-ops in fp32).
    `get_tensor(hf_name)` returns one Hugging Face-layout tensor (any float dtype). `weights` is
    the linears' format; `quantized` lists (HF names) the linears built as MatMulNBits.

    With `weights.prefill` (graph_route.py) each layer linear's MatMulNBits weights get an int8
    copy beside them as they are quantized; while `prefill_branch` is set, `linear` builds the
    DynamicQuantizeMatMul on that copy instead (the decode branch is built first). A block that
    caches a value it made must key it by `scope` (the node list it lives in).
    `prefill_bytes` counts the copies' bytes. An initializer asked for twice (a bias or a layer
    norm read by both branches) is stored once."""

    def __init__(self, sink: TensorSink, dtype: str, get_tensor: Callable[[str], np.ndarray], layer_norm_eps: float,
                 weights: WeightFormat = WeightFormat()):
        if dtype not in DTYPES:
            raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.sink = sink
        self.weights = weights
        self.quantized: list[str] = []
        self.get_tensor = get_tensor
        self.wdt = DTYPES[dtype]
        self.welem = helper.np_dtype_to_tensor_dtype(np.dtype(self.wdt))
        self.half = dtype == "fp16"
        self.layer_norm_eps = layer_norm_eps
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._stored: set[str] = set()  # names of the checkpoint tensors stored as initializers
        self.prefill_branch = False
        self.prefill_bytes = 0
        self.scope = 0  # which node list `nodes` is (graph_route: the main graph 0, then each branch)
        self._n = 0

    # ---- raw nodes and initializers

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

    def identity(self, src: str, dst: str) -> None:
        """Name a graph output (Identity nodes keep internal names free of contract names)."""
        self.nodes.append(helper.make_node("Identity", [src], [dst], name=f"out_{dst}"))

    # ---- weights

    def _load(self, hf_name: str, transpose: bool, out_dtype) -> np.ndarray:
        arr = self.get_tensor(hf_name)
        if not np.isfinite(arr).all():
            raise ExportError(f"weight {hf_name} contains NaN or infinite values; the checkpoint is damaged")
        if transpose:
            arr = arr.T
        arr = np.ascontiguousarray(arr, dtype=out_dtype)
        if out_dtype == np.float16 and not np.isfinite(arr).all():
            raise ExportError(f"weight {hf_name} has values beyond float16 range; export with --dtype fp32")
        return arr

    def weight(self, hf_name: str, transpose: bool = False, keep_f32: bool = False) -> str:
        """The checkpoint tensor `hf_name` as an initializer of the same name (model dtype, or
        float32 with keep_f32; transposed to [in, out] for a MatMul with transpose)."""
        if hf_name in self._stored:
            return hf_name
        arr = self._load(hf_name, transpose, np.float32 if keep_f32 else self.wdt)
        self.initializers.append(self.sink.add(hf_name, arr))
        self._stored.add(hf_name)
        return hf_name

    # ---- dtype boundaries

    def to_w(self, x: str) -> str:
        """float32 -> model dtype."""
        return self.op("Cast", [x], to=self.welem) if self.half else x

    def to_f32(self, x: str) -> str:
        """model dtype -> float32."""
        return self.op("Cast", [x], to=TensorProto.FLOAT) if self.half else x

    # ---- the two layers that hold weights

    def linear(self, x: str, hf: str, bias: bool, fmt: Optional[WeightFormat] = None) -> str:
        """x @ W^T (+ b) for the checkpoint's Linear `hf` (x and result in the model dtype): a
        MatMul on W^T [in, out] (+ Add), or MatMulNBits on the quantized W with the bias fused.
        `fmt`: the weight format (default: the layers' one; only the layers' linears get a
        prefill copy)."""
        layer = fmt is None
        fmt = fmt or self.weights
        if self.prefill_branch and layer:
            return self._prefill_matmul(x, hf, bias)
        if fmt.dynamic:
            return self._dynamic_quantize_matmul(x, hf, bias)
        if fmt.quantized:
            return self._matmul_nbits(x, hf, bias, fmt, prefill_copy=layer and fmt.prefill is not None)
        y = self.op("MatMul", [x, self.weight(hf + ".weight", transpose=True)])
        return self.op("Add", [y, self.weight(hf + ".bias")]) if bias else y

    def _matmul_nbits(self, x: str, hf: str, bias: bool, fmt: WeightFormat, prefill_copy: bool = False) -> str:
        """com.microsoft MatMulNBits: inputs A, B uint8 [N, K/block, block*bits/8], scales
        [N, K/block] (model dtype), no zero points (symmetric), no g_idx, bias [N]. With
        `prefill_copy` also the int8 copy `_prefill_matmul` multiplies by."""
        w = self._load(hf + ".weight", False, np.float32)  # [N = out, K = in], HF layout
        n, k = w.shape
        packed, scales = quantize_blockwise(w, fmt.bits, fmt.block_size)
        del w
        if prefill_copy:
            # the weight MatMulNBits multiplies by, [N, K] float32, re-quantized per output column
            q8, s8 = quantize_per_column(dequantize_blockwise(packed, scales, fmt.bits, k))  # [K, N], [N]
            self.initializers.append(self.sink.add(f"{hf}.prefill_Q8", q8))
            self.initializers.append(self.sink.add(f"{hf}.prefill_scales", s8))
            self.prefill_bytes += q8.nbytes + s8.nbytes
        q_name, s_name = f"{hf}.weight_Q{fmt.bits}", f"{hf}.weight_scales"
        self.initializers.append(self.sink.add(q_name, packed))
        scales = scales.astype(self.wdt)
        if not np.isfinite(scales).all():
            raise ExportError(f"weight {hf}.weight has values beyond float16 range; export with --dtype fp32")
        self.initializers.append(self.sink.add(s_name, scales))
        inputs = [x, q_name, s_name] + (["", "", self.weight(hf + ".bias")] if bias else [])
        self.quantized.append(hf)
        return self.op("MatMulNBits", inputs, name="matmul_nbits", domain=CONTRIB_DOMAIN, K=k, N=n,
                       bits=fmt.bits, block_size=fmt.block_size, accuracy_level=fmt.accuracy_level)

    def _dynamic_quantize_matmul(self, x: str, hf: str, bias: bool) -> str:
        """com.microsoft DynamicQuantizeMatMul (int8-dq): inputs A float32 [..., K], B int8 [K, N]
        (W^T), b_scale float32 [N] (one per output column), no zero point (symmetric), bias [N]."""
        w = self._load(hf + ".weight", False, np.float32)  # [N = out, K = in], HF layout
        q, scales = quantize_per_column(w)  # [K, N] int8, [N] float32
        del w
        q_name, s_name = f"{hf}.weight_Q8", f"{hf}.weight_scales"
        self.initializers.append(self.sink.add(q_name, q))
        self.initializers.append(self.sink.add(s_name, scales))
        inputs = [x, q_name, s_name] + (["", self.weight(hf + ".bias")] if bias else [])
        self.quantized.append(hf)
        return self.op("DynamicQuantizeMatMul", inputs, name="dq_matmul", domain=CONTRIB_DOMAIN)

    def _prefill_matmul(self, x: str, hf: str, bias: bool) -> str:
        """The prefill branch's linear: com.microsoft DynamicQuantizeMatMul on the int8 copy that
        `_matmul_nbits` stored for `hf` (inputs as in `_dynamic_quantize_matmul`)."""
        inputs = [x, f"{hf}.prefill_Q8", f"{hf}.prefill_scales"] + (["", self.weight(hf + ".bias")] if bias else [])
        return self.op("DynamicQuantizeMatMul", inputs, name="prefill_matmul", domain=CONTRIB_DOMAIN)

    def layer_norm(self, x: str, hf: str) -> str:
        """LayerNorm over the last axis, float32 in and out, float32 scale and shift."""
        return self.op(
            "LayerNormalization",
            [x, self.weight(hf + ".weight", keep_f32=True), self.weight(hf + ".bias", keep_f32=True)],
            axis=-1,
            epsilon=self.layer_norm_eps,
        )
