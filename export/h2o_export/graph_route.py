"""The layer stack, once, or twice behind an If on the step's new tokens (`--prefill-weights
int8-dq`, quantize.py): a prefill (seq >= prefill_min_tokens) runs the layers on the int8 copies
(DynamicQuantizeMatMul), any shorter step on the MatMulNBits weights. Both branches read the
same outer-scope values (masks, RoPE tables, past K/V, norms and biases, stored once) and return
the same values in the same order: the residual stream after the last layer, then per layer
(new key, new value) and the attention sums; the LM head follows outside the If.

One If per step, not one per linear: ONNX Runtime's If costs ~13 us a call on the 2-core Xeon
(96 If-wrapped [1024 x 1024] MatMulNBits: 4.80 ms a one-row step against 3.57 ms without),
1.2 ms a decode step at Pythia-410m's 96 linears, where one If costs 0.013 ms.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from .onnx_builder import GraphBuilder

# (source value, graph output name) pairs, as the graph builders collect them
Outputs = list[tuple[str, str]]
# builds the layers on the residual stream x: (x after the last layer, K/V outputs, sums outputs)
Stack = Callable[[str], tuple[str, Outputs, Outputs]]


def layer_stack(b: GraphBuilder, x: str, build: Stack) -> tuple[str, Outputs, Outputs]:
    """`build(x)` into the graph, or with `b.weights.prefill` into both branches of an If on
    seq >= prefill_min_tokens (then: the prefill copies; else: the layers' own weights)."""
    if b.weights.prefill is None:
        return build(x)
    seq = b.op("Shape", ["input_ids"], start=1, end=2, name="route_seq")  # int64 [1]
    cond = b.op("GreaterOrEqual", [seq, b.const([b.weights.prefill_min_tokens], np.int64)],
                name="is_prefill")  # bool [1]
    main, scope = b.nodes, b.scope
    try:
        # decode first: quantizing each linear for MatMulNBits also stores its prefill copy
        b.nodes, b.scope = [], scope + 1
        x_d, kv_d, sums_d = build(x)
        decode = _branch(b, "decode", x_d, kv_d, sums_d)
        b.nodes, b.scope, b.prefill_branch = [], scope + 2, True
        prefill = _branch(b, "prefill", *build(x))
    finally:
        b.nodes, b.scope, b.prefill_branch = main, scope, False
    outs = b.op("If", [cond], n_out=1 + len(kv_d) + len(sums_d), name="prefill_route",
                then_branch=prefill, else_branch=decode)
    kv = [(o, dst) for o, (_, dst) in zip(outs[1:1 + len(kv_d)], kv_d)]
    sums = [(o, dst) for o, (_, dst) in zip(outs[1 + len(kv_d):], sums_d)]
    return outs[0], kv, sums


def _branch(b: GraphBuilder, name: str, x: str, kv: Outputs, sums: Outputs):
    """The nodes built since `b.nodes` was emptied, as an If branch returning x, the K/V and the
    sums in that order (float32: --prefill-weights needs --dtype fp32)."""
    values = [x] + [src for src, _ in kv] + [src for src, _ in sums]
    return helper.make_graph(b.nodes, name, [],
                             [helper.make_tensor_value_info(v, TensorProto.FLOAT, None) for v in values])
