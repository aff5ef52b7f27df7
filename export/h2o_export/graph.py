"""The decoder-step graph (docs/architecture.md, "Graph contract", version 1): the contract's
names and constants, and `build_graph`, which assembles the blocks of graph_blocks.py.

One graph serves prefill and decode: it takes `seq` new tokens and a past of `past` cached
slots (any subset of earlier tokens, in any order, some possibly masked out) and returns the
logits, the new tokens' K/V only, and per layer the attention probabilities summed over the
non-padding new queries. Semantics follow transformers' GPTNeoXForCausalLM (eager attention):

  x = embed_in[input_ids]
  per layer:  a = Attention(LN1(x));  parallel:  x = (MLP(LN2(x)) + a) + x
                                       else:      x' = a + x;  x = MLP(LN2(x')) + x'
  logits = LN_f(x[:, logits_from:]) @ embed_out^T   (logits_from = 0: every new token's)
  Attention: qkv = LN(x) @ Wqkv^T + b, viewed [batch, seq, heads, 3*head_dim] (per head q|k|v);
  RoPE (rotate_half convention) on the first rotary_dims of q and k at position_ids;
  scores = q @ [past_k | k]^T * head_dim^-0.5, masked, softmax in float32.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper

from . import graph_blocks as blocks
from . import graph_route
from .config import NeoxConfig
from .onnx_builder import CONTRIB_DOMAIN, GraphBuilder, TensorSink
from .quantize import WeightFormat

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; ONNX Runtime 1.31 loads it


def input_names(num_layers: int, layer_masks: bool = False, rolling_keys: bool = False) -> list[str]:
    """The graph's inputs, in order; with `layer_masks` one `attention_mask.{i}` per layer in
    place of the shared `attention_mask`; with `rolling_keys` one `key_positions.{i}` per layer
    after the past K/V; last `logits_from` (the first new token whose logits are computed)."""
    names = ["input_ids", "position_ids"]
    names += [f"attention_mask.{i}" for i in range(num_layers)] if layer_masks else ["attention_mask"]
    for i in range(num_layers):
        names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    if rolling_keys:
        names += [blocks.key_positions_name(i) for i in range(num_layers)]
    return names + [blocks.LOGITS_FROM]


def with_logits_from(feeds: dict, session, start: int = 0) -> dict:
    """`feeds` plus `logits_from` = `start` when `session`'s graph takes it (exporter 1.3.0 on;
    older graphs compute every new token's logits and take no such input)."""
    if any(i.name == blocks.LOGITS_FROM for i in session.get_inputs()):
        return {**feeds, blocks.LOGITS_FROM: np.array([start], np.int64)}
    return feeds


def output_names(num_layers: int) -> list[str]:
    names = ["logits"]
    for i in range(num_layers):
        names += [f"new_key_values.{i}.key", f"new_key_values.{i}.value"]
    names += [f"attention_sums.{i}" for i in range(num_layers)]
    return names


def build_graph(
    cfg: NeoxConfig,
    dtype: str,
    get_tensor: Callable[[str], np.ndarray],
    sink: TensorSink,
    graph_name: str,
    weights: WeightFormat = WeightFormat(),
    layer_masks: bool = False,
    graph_ops: str = "plain",
    rolling_keys: bool = False,
) -> tuple[onnx.ModelProto, list[str], int]:
    """Build the decoder-step model. `get_tensor(hf_name)` returns one HF-layout tensor (any
    float dtype); it is converted (transposed where a MatMul needs [in, out], or quantized for
    MatMulNBits), handed to the sink and dropped before the next one is requested. Returns the
    model, the HF names of the linears stored quantized (empty for fp32) and the bytes of the
    prefill copies (`weights.prefill`, graph_route.py; 0 without).

    `layer_masks`: one mask input per layer, `attention_mask.{i}` [batch, past_i + seq] with its
    own past length `past_i` (layer i's past K/V [batch, heads, past_i, head_dim] and attention
    sums [batch, heads, past_i + seq]), so layers can hold different numbers of cache slots. Each
    layer builds its masks from its own input with the same nodes the shared mask uses; without
    it the graph is the same, node for node, as before the option existed.

    `graph_ops` (blocks.GRAPH_OPS): "plain" (the default, the graph as before) or "fused" (the
    same float operations in fewer nodes and passes, some of them com.microsoft operators).
    `rolling_keys` (manifest `"key_cache": "unrotated"`): keys are cached before the rotary
    embedding; `new_key_values.{i}.key` is unrotated and each layer rotates its past keys by
    `key_positions.{i}` int64 [batch, heads, past_i], so the engine chooses the positions (the
    original ones, or renumbered within the cache: `@rolling`). Without it the graph is the same,
    node for node, as before the option existed."""
    if graph_ops not in blocks.GRAPH_OPS:
        raise ValueError(f"graph_ops must be one of {blocks.GRAPH_OPS}, got {graph_ops!r}")
    fused = graph_ops == "fused"
    b = GraphBuilder(sink, dtype, get_tensor, cfg.layer_norm_eps, weights)
    inputs = blocks.graph_inputs(cfg, b.welem, layer_masks, rolling_keys)
    if layer_masks:
        ms = [blocks.masks(b, f"attention_mask.{i}", f"past_key_values.{i}.key", fused)
              for i in range(cfg.num_layers)]
    else:
        ms = [blocks.masks(b, fused=fused)] * cfg.num_layers
    rope_fn = blocks.rope(b, cfg, ms[0].ax1, fused)
    consts = blocks.attention_consts(b, cfg)

    def stack(x: str):
        kv_out, sums_out = [], []
        for i in range(cfg.num_layers):
            key_rope = blocks.past_key_rope(b, cfg, i) if rolling_keys else None
            x, att = blocks.layer(b, cfg, i, x, ms[i], rope_fn, consts, fused, key_rope)
            kv_out += [(att.k_new, f"new_key_values.{i}.key"), (att.v_new, f"new_key_values.{i}.value")]
            sums_out.append((att.sums, f"attention_sums.{i}"))
        return x, kv_out, sums_out

    x, kv_out, sums_out = graph_route.layer_stack(b, blocks.embedding(b), stack)
    b.identity(blocks.head(b, x), "logits")
    for src, dst in kv_out + sums_out:
        b.identity(src, dst)

    graph = helper.make_graph(b.nodes, graph_name, inputs, blocks.graph_outputs(cfg, b.welem, layer_masks),
                              initializer=b.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    if b.quantized or fused:
        opsets.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=IR_VERSION,
        producer_name="h2o_export",
        doc_string="GPT-NeoX decoder step, h2o-engine graph contract v1 (docs/architecture.md)",
    )
    return model, b.quantized, b.prefill_bytes
