"""The decoder-step graph of the Llama family (LlamaForCausalLM, Qwen2ForCausalLM), contract version 1
(docs/architecture.md, "Graph contract"): the same inputs, outputs, masks and logits_from as
Pythia's graph (graph.py), with past/new K/V per KV head. Semantics follow transformers'
modeling_llama / modeling_qwen2 with eager attention:

  x = embed_tokens[input_ids]
  per layer:  x = x + o_proj(Attention(RMSNorm1(x)));  x = x + down(silu(gate(h)) * up(h)), h = RMSNorm2(x)
  logits = RMSNorm_f(x[:, logits_from:]) @ lm_head^T   (lm_head = embed_tokens when tied)
  Attention: q = h Wq^T (+bq) [batch, heads, seq, head_dim], k, v = h Wk^T (+bk), h Wv^T (+bv)
  [batch, kv_heads, seq, head_dim]; RoPE over the whole head (rotate_half) at position_ids with the
  config's inv_freq (rope_theta, linear or llama3 scaling: rope.scaled_inv_freq_np); query head h
  reads KV head h // G (G = heads / kv_heads, transformers' repeat_kv order):
  scores = q @ [past_k | k]^T * head_dim^-0.5, masked, softmax in float32.

Grouped-query attention without repeating K/V: q [batch, heads, seq, hd] is viewed as
[batch, kv_heads, G*seq, hd] (query heads of one group are adjacent), multiplied with the KV
head's keys, and the scores viewed back as [batch, heads, seq, past+seq]; probabilities go the
same way into the product with the values. The cache is read in place, as in Pythia's graph.
RMSNorm is written out (opset 17 has no RMSNormalization): x * 1/sqrt(mean(x^2) + eps) * w in float32.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import graph_blocks as blocks
from . import graph_route
from .config_llama import LlamaConfig
from .graph import IR_VERSION, OPSET
from .onnx_builder import CONTRIB_DOMAIN, GraphBuilder, TensorSink
from .quantize import WeightFormat
from .rope import scaled_inv_freq_np

i64, f32 = np.int64, np.float32


def rms_norm(b: GraphBuilder, x: str, weight: str) -> str:
    """transformers' LlamaRMSNorm on x float32 [batch, seq, hidden]: x * rsqrt(mean(x^2) + eps) * w."""
    var = b.op("ReduceMean", [b.op("Mul", [x, x])], axes=[-1], keepdims=1)  # [batch, seq, 1]
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(np.float32(b.layer_norm_eps), f32)])])])
    return b.op("Mul", [b.weight(weight, keep_f32=True), b.op("Mul", [x, inv])], name="rms_norm")


def rope(b: GraphBuilder, cfg: LlamaConfig, ax1: str) -> Callable[[str], str]:
    """Cos/sin [batch, 1, seq, head_dim] from position_ids and the config's (scaled) inv_freq, and the
    function rotating x float32 [batch, heads, seq, head_dim] over the whole head (rotate_half)."""
    hd = cfg.head_dim
    pos = b.op("Unsqueeze", [b.op("Cast", ["position_ids"], to=TensorProto.FLOAT), b.const([2], i64)])  # [b,s,1]
    inv = scaled_inv_freq_np(hd, cfg.rotary_base, cfg.rope_scaling)
    freqs = b.op("Mul", [pos, b.const(inv, f32)])  # [batch, seq, hd/2]
    emb = b.op("Concat", [freqs, freqs], axis=-1)  # [batch, seq, hd]
    cos = b.op("Unsqueeze", [b.op("Cos", [emb]), ax1], name="rope_cos")  # [batch, 1, seq, hd]
    sin = b.op("Unsqueeze", [b.op("Sin", [emb]), ax1], name="rope_sin")
    ax3 = b.const([3], i64)
    c0, c_half, c_hd = (b.const([v], i64) for v in (0, hd // 2, hd))

    def apply(x: str) -> str:
        x1 = b.op("Slice", [x, c0, c_half, ax3])
        x2 = b.op("Slice", [x, c_half, c_hd, ax3])
        rot_half = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
        return b.op("Add", [b.op("Mul", [x, cos]), b.op("Mul", [rot_half, sin])])

    return apply


class _Consts:
    """Shape constants shared by every layer. Shapes whose last axis may be empty (past = 0) are
    built from the lengths, since Reshape cannot infer a -1 dimension of an empty tensor."""

    def __init__(self, b: GraphBuilder, cfg: LlamaConfig):
        self.b = b
        self.q_heads = b.const([0, 0, cfg.num_heads, cfg.head_dim], i64)  # [batch, seq, heads, hd]
        self.kv_heads = b.const([0, 0, cfg.num_kv_heads, cfg.head_dim], i64)
        self.q_grouped = b.const([0, cfg.num_kv_heads, -1, cfg.head_dim], i64)  # [b, kv, G*seq, hd]
        self.ctx_per_head = b.const([0, cfg.num_heads, -1, cfg.head_dim], i64)  # [b, heads, seq, hd]
        self.ctx = b.const([0, 0, cfg.num_heads * cfg.head_dim], i64)
        self.sum_axes = b.const([2], i64)
        self.c_zero1, self.ax_last = b.const([0], i64), b.const([3], i64)
        self.scale = np.float32(cfg.head_dim ** -0.5)
        seq = b.op("Shape", ["input_ids"], start=1, end=2, name="gqa_seq")  # [1]
        self.seq = seq
        self.head_prefix = b.const([0, cfg.num_heads], i64)
        self.kv_prefix = b.const([0, cfg.num_kv_heads], i64)
        self.group_seq = b.op("Mul", [seq, b.const([cfg.num_heads // cfg.num_kv_heads], i64)])  # [1]: G*seq
        self._shapes: dict[str, tuple[str, str]] = {}

    def shapes(self, n: str) -> tuple[str, str]:
        """For a key length n ([1]): ([0, heads, seq, n], [0, kv, G*seq, n]), made once per n and
        node list (each If branch makes its own: a branch cannot read the other's values)."""
        key = f"{self.b.scope}:{n}"
        if key not in self._shapes:
            b = self.b
            self._shapes[key] = (b.op("Concat", [self.head_prefix, self.seq, n], axis=0),
                                 b.op("Concat", [self.kv_prefix, self.group_seq, n], axis=0))
        return self._shapes[key]


def _heads(b: GraphBuilder, x: str, shape: str) -> str:
    """[batch, seq, n*hd] -> [batch, n, seq, hd]."""
    return b.op("Transpose", [b.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _grouped_qk(b: GraphBuilder, q: str, k: str, n: str, c: _Consts) -> str:
    """q [b, heads, seq, hd] against k [b, kv, n, hd] -> scores [b, heads, seq, n] (head h reads kv h // G)."""
    qg = b.op("Reshape", [q, c.q_grouped])  # [b, kv, G*seq, hd]
    return b.op("Reshape", [blocks._qk_t(b, qg, k), c.shapes(n)[0]])  # [b, kv, G*seq, n] -> [b, heads, seq, n]


def _grouped_pv(b: GraphBuilder, p: str, v: str, n: str, c: _Consts) -> str:
    """probabilities p [b, heads, seq, n] times v [b, kv, n, hd] -> [b, heads, seq, hd]."""
    pg = b.op("Reshape", [p, c.shapes(n)[1]])  # [b, kv, G*seq, n]
    return b.op("Reshape", [b.op("MatMul", [pg, v]), c.ctx_per_head])


def attention(b: GraphBuilder, cfg: LlamaConfig, i: int, h1: str, m: blocks.Masks,
              rope_fn: Callable[[str], str], c: _Consts) -> blocks.AttentionOut:
    """Layer i's self-attention on the normalised input h1 float32 [batch, seq, hidden]."""
    p = f"model.layers.{i}.self_attn."
    hw = b.to_w(h1)
    q = _heads(b, b.linear(hw, p + "q_proj", cfg.qkv_bias), c.q_heads)  # [batch, heads, seq, hd]
    k = _heads(b, b.linear(hw, p + "k_proj", cfg.qkv_bias), c.kv_heads)  # [batch, kv_heads, seq, hd]
    v = _heads(b, b.linear(hw, p + "v_proj", cfg.qkv_bias), c.kv_heads)
    q, k = rope_fn(b.to_f32(q)), rope_fn(b.to_f32(k))
    k_new, v_new = b.to_w(k), v  # model dtype [batch, kv_heads, seq, hd]
    pk, pv = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
    if b.half:
        qs = b.op("Cast", [b.op("Mul", [q, b.const(c.scale, f32)])], to=b.welem)
        scores = b.op("Concat", [_grouped_qk(b, qs, pk, m.past_len, c), _grouped_qk(b, qs, k_new, c.seq, c)],
                      axis=-1)
        scores = b.op("Cast", [scores], to=TensorProto.FLOAT)
    else:
        sc = b.const(c.scale, f32)
        scores = b.op("Concat", [b.op("Mul", [_grouped_qk(b, q, pk, m.past_len, c), sc]),
                                 b.op("Mul", [_grouped_qk(b, q, k_new, c.seq, c), sc])], axis=-1)  # [b, h, s, n]
    scores = b.op("Where", [m.allowed, scores, m.neg])
    probs = b.op("Softmax", [scores], axis=-1, name=f"probs_{i}")  # float32 [batch, heads, seq, past+seq]
    sums = b.op("ReduceSum", [b.op("Mul", [probs, m.qmask4]), c.sum_axes], keepdims=0, name=f"attn_sums_{i}")
    probs_w = b.to_w(probs)
    probs_past = b.op("Slice", [probs_w, c.c_zero1, m.past_len, c.ax_last])  # [batch, heads, seq, past]
    probs_new = b.op("Slice", [probs_w, m.past_len, m.total_len, c.ax_last])  # [batch, heads, seq, seq]
    ctx = b.op("Add", [_grouped_pv(b, probs_past, pv, m.past_len, c),
                       _grouped_pv(b, probs_new, v_new, c.seq, c)])  # [batch, heads, seq, hd]
    ctx = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]), c.ctx])  # [batch, seq, heads*hd]
    attn = b.to_f32(b.linear(ctx, p + "o_proj", cfg.o_bias))  # [batch, seq, hidden]
    return blocks.AttentionOut(attn, k_new, v_new, sums)


def mlp(b: GraphBuilder, x: str, p: str) -> str:
    """down_proj(silu(gate_proj(x)) * up_proj(x)), float32 [batch, seq, hidden] in and out."""
    xw = b.to_w(x)
    g = b.to_f32(b.linear(xw, p + "mlp.gate_proj", False))
    u = b.to_f32(b.linear(xw, p + "mlp.up_proj", False))
    a = b.op("Mul", [b.op("Mul", [g, b.op("Sigmoid", [g])], name="silu"), u])
    return b.to_f32(b.linear(b.to_w(a), p + "mlp.down_proj", False))


def head(b: GraphBuilder, cfg: LlamaConfig, x: str) -> str:
    """logits float32 [batch, seq - logits_from, vocab] = RMSNorm_f(x[:, logits_from:]) @ lm_head^T."""
    x = b.op("Slice", [x, blocks.LOGITS_FROM, b.const([np.iinfo(np.int64).max], i64), b.const([1], i64)],
             name="logits_rows")  # [batch, seq - logits_from, hidden]
    hf = rms_norm(b, x, "model.norm.weight")
    return b.to_f32(b.linear(b.to_w(hf), cfg.head_name[: -len(".weight")], False, b.weights.head))


def build_graph(
    cfg: LlamaConfig,
    dtype: str,
    get_tensor: Callable[[str], np.ndarray],
    sink: TensorSink,
    graph_name: str,
    weights: WeightFormat = WeightFormat(),
    layer_masks: bool = False,
) -> tuple[onnx.ModelProto, list[str], int]:
    """The Llama-family decoder-step model; arguments and result as graph.build_graph's."""
    b = GraphBuilder(sink, dtype, get_tensor, cfg.layer_norm_eps, weights)
    inputs = blocks.graph_inputs(cfg, b.welem, layer_masks)
    if layer_masks:
        ms = [blocks.masks(b, f"attention_mask.{i}", f"past_key_values.{i}.key") for i in range(cfg.num_layers)]
    else:
        ms = [blocks.masks(b)] * cfg.num_layers
    rope_fn = rope(b, cfg, ms[0].ax1)
    consts = _Consts(b, cfg)
    x = b.to_f32(b.op("Gather", [b.weight(cfg.embed_name), "input_ids"], axis=0, name="embed"))  # [b, s, hidden]

    def stack(x: str):
        kv_out, sums_out = [], []
        for i in range(cfg.num_layers):
            p = f"model.layers.{i}."
            att = attention(b, cfg, i, rms_norm(b, x, p + "input_layernorm.weight"), ms[i], rope_fn, consts)
            x = b.op("Add", [x, att.attn])
            x = b.op("Add", [x, mlp(b, rms_norm(b, x, p + "post_attention_layernorm.weight"), p)])
            kv_out += [(att.k_new, f"new_key_values.{i}.key"), (att.v_new, f"new_key_values.{i}.value")]
            sums_out.append((att.sums, f"attention_sums.{i}"))
        return x, kv_out, sums_out

    x, kv_out, sums_out = graph_route.layer_stack(b, x, stack)
    b.identity(head(b, cfg, x), "logits")
    for src, dst in kv_out + sums_out:
        b.identity(src, dst)

    graph = helper.make_graph(b.nodes, graph_name, inputs, blocks.graph_outputs(cfg, b.welem, layer_masks),
                              initializer=b.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    if b.quantized:
        opsets.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=IR_VERSION,
        producer_name="h2o_export",
        doc_string=f"{cfg.model_type} decoder step (grouped-query attention), h2o-engine graph contract v1 "
                   f"(docs/architecture.md)",
    )
    return model, b.quantized, b.prefill_bytes
