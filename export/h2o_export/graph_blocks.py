"""The blocks of the decoder-step graph, one builder each: graph inputs, the masks (shared by all
layers, or one set per layer with per-layer mask inputs), RoPE, embedding, attention, MLP, one
transformer layer, the head, graph outputs.

Each block adds its nodes through a `GraphBuilder` (onnx_builder.py) and returns the names of
what it produced. `graph.build_graph` calls them in a fixed order (node names are numbered in
creation order, so the order is part of the exported bytes). Shapes are given as
[batch, seq, hidden] etc.; `past` is the number of cached slots, `seq` the new tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from .config import NeoxConfig
from .onnx_builder import GraphBuilder
from .rope import inv_freq_np

# Large negative finite score for masked entries (as transformers' eager mask, finfo.min): with
# it every masked probability underflows to exactly 0 and a fully masked row stays finite.
MASK_VALUE = float(np.finfo(np.float32).min)

# The input naming the first new token whose logits the graph computes (exporter 1.3.0).
LOGITS_FROM = "logits_from"

i64, f32 = np.int64, np.float32


def _past_dims(i: int, layer_masks: bool) -> tuple[str, str]:
    """Layer i's symbolic (past, past + seq) dimensions: shared by all layers, or its own."""
    return (f"past_{i}", f"past_plus_seq_{i}") if layer_masks else ("past", "past_plus_seq")


def graph_inputs(cfg: NeoxConfig, welem: int, layer_masks: bool = False) -> list:
    """input_ids, position_ids [batch, seq]; attention_mask [batch, past+seq] (with layer_masks:
    attention_mask.{i} [batch, past_i+seq] per layer); per layer past K/V [batch, kv_heads, past,
    head_dim] in the model dtype (kv_heads = heads for GPT-NeoX); logits_from int64 [1]: the first
    new token whose logits are computed (0: all of them)."""
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
    ]
    if layer_masks:
        inputs += [helper.make_tensor_value_info(f"attention_mask.{i}", TensorProto.INT64,
                                                 ["batch", _past_dims(i, True)[1]]) for i in range(cfg.num_layers)]
    else:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "past_plus_seq"]))
    for i in range(cfg.num_layers):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", welem,
                                                        ["batch", cfg.kv_heads, _past_dims(i, layer_masks)[0],
                                                         cfg.head_dim]))
    inputs.append(helper.make_tensor_value_info(LOGITS_FROM, TensorProto.INT64, [1]))
    return inputs


def graph_outputs(cfg: NeoxConfig, welem: int, layer_masks: bool = False) -> list:
    """logits float32 [batch, seq - logits_from, vocab]; per layer new K/V [batch, kv_heads, seq,
    head_dim] in the model dtype; per layer attention_sums float32 [batch, heads, past+seq]
    (past_i with layer_masks)."""
    nh, hd = cfg.num_heads, cfg.head_dim
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "logits_seq", cfg.vocab_size])]
    for i in range(cfg.num_layers):
        for kv in ("key", "value"):
            outputs.append(helper.make_tensor_value_info(f"new_key_values.{i}.{kv}", welem,
                                                         ["batch", cfg.kv_heads, "seq", hd]))
    for i in range(cfg.num_layers):
        outputs.append(helper.make_tensor_value_info(f"attention_sums.{i}", TensorProto.FLOAT,
                                                     ["batch", nh, _past_dims(i, layer_masks)[1]]))
    return outputs


@dataclass
class Masks:
    """What every layer's attention needs from the inputs."""

    allowed: str  # bool [batch, 1, seq, past+seq]: mask column is 1 and causal inside the new block
    qmask4: str  # float32 [batch, 1, seq, 1]: 1 for real (non-padding) new queries
    neg: str  # float32 scalar MASK_VALUE
    past_len: str  # int64 [1]
    total_len: str  # int64 [1]: past + seq
    ax1: str  # int64 [1] constant 1 (an axis), shared with the RoPE block


def masks(b: GraphBuilder, mask: str = "attention_mask", past_key: str = "past_key_values.0.key") -> Masks:
    """The masks of the layers that read `mask` [batch, past+seq] with past = axis 2 of `past_key`
    (the shared mask and layer 0's past; with per-layer masks, layer i's own)."""
    ax0, ax1 = b.const([0], i64), b.const([1], i64)
    s1 = b.op("Shape", ["input_ids"], start=1, end=2, name="seq_len")  # [1]
    p1 = b.op("Shape", [past_key], start=2, end=3, name="past_len")  # [1]
    t1 = b.op("Add", [p1, s1], name="total_len")  # [1]
    s0, p0, t0 = (b.op("Squeeze", [x, ax0]) for x in (s1, p1, t1))
    zero, one = b.const(0, i64), b.const(1, i64)
    kv_idx = b.op("Range", [zero, t0, one], name="kv_idx")  # [past+seq]
    q_idx = b.op("Range", [zero, s0, one], name="q_idx")  # [seq]
    q_lim = b.op("Unsqueeze", [b.op("Add", [q_idx, p0]), ax1])  # [seq, 1]: new query i sees kv <= past+i
    causal = b.op("LessOrEqual", [kv_idx, q_lim], name="causal")  # [seq, past+seq]
    pad = b.op("Cast", [mask], to=TensorProto.BOOL)  # [batch, past+seq]
    pad4 = b.op("Unsqueeze", [pad, b.const([1, 2], i64)])  # [batch, 1, 1, past+seq]
    allowed = b.op("And", [pad4, causal], name="allowed")  # [batch, 1, seq, past+seq]
    qmask = b.op("Slice", [mask, p1, t1, ax1])  # [batch, seq]: own column = not padding
    qmask4 = b.op("Unsqueeze", [b.op("Cast", [qmask], to=TensorProto.FLOAT), b.const([1, 3], i64)])  # [batch,1,seq,1]
    neg = b.const(MASK_VALUE, f32)
    return Masks(allowed, qmask4, neg, p1, t1, ax1)


def rope(b: GraphBuilder, cfg: NeoxConfig, ax1: str) -> Callable[[str], str]:
    """Cos/sin tables from position_ids (float32, as transformers computes them) and the function
    rotating x float32 [batch, heads, seq, head_dim] (rope.py states the convention)."""
    rd, hd = cfg.rotary_dims, cfg.head_dim
    if rd == 0:
        return lambda x: x
    pos = b.op("Unsqueeze", [b.op("Cast", ["position_ids"], to=TensorProto.FLOAT), b.const([2], i64)])  # [b,s,1]
    freqs = b.op("Mul", [pos, b.const(inv_freq_np(rd, cfg.rotary_base), f32)])  # [batch, seq, rd/2]
    emb = b.op("Concat", [freqs, freqs], axis=-1)  # [batch, seq, rd]
    cos = b.op("Unsqueeze", [b.op("Cos", [emb]), ax1], name="rope_cos")  # [batch, 1, seq, rd]
    sin = b.op("Unsqueeze", [b.op("Sin", [emb]), ax1], name="rope_sin")
    ax3 = b.const([3], i64)
    c0, c_half, c_rd, c_hd = (b.const([v], i64) for v in (0, rd // 2, rd, hd))

    def apply(x: str) -> str:
        x_rot = b.op("Slice", [x, c0, c_rd, ax3]) if rd < hd else x
        x1 = b.op("Slice", [x_rot, c0, c_half, ax3])
        x2 = b.op("Slice", [x_rot, c_half, c_rd, ax3])
        rot_half = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
        y = b.op("Add", [b.op("Mul", [x_rot, cos]), b.op("Mul", [rot_half, sin])])
        if rd < hd:
            y = b.op("Concat", [y, b.op("Slice", [x, c_rd, c_hd, ax3])], axis=-1)
        return y

    return apply


@dataclass
class AttentionConsts:
    """Shape and axis constants shared by every layer's attention."""

    qkv_shape: str
    ctx_shape: str
    split_sizes: str
    sum_axes: str
    c_zero1: str
    ax_last: str
    scale: np.float32  # head_dim^-0.5 (a fresh constant is made per use, as it always was)


def attention_consts(b: GraphBuilder, cfg: NeoxConfig) -> AttentionConsts:
    nh, hd = cfg.num_heads, cfg.head_dim
    scale = np.float32(hd ** -0.5)
    qkv_shape = b.const([0, 0, nh, 3 * hd], i64)
    ctx_shape = b.const([0, 0, cfg.hidden_size], i64)
    split_sizes = b.const([hd, hd, hd], i64)
    sum_axes = b.const([2], i64)
    c_zero1, ax_last = b.const([0], i64), b.const([3], i64)
    return AttentionConsts(qkv_shape, ctx_shape, split_sizes, sum_axes, c_zero1, ax_last, scale)


def embedding(b: GraphBuilder) -> str:
    """x float32 [batch, seq, hidden] = embed_in[input_ids]."""
    x = b.op("Gather", [b.weight("gpt_neox.embed_in.weight"), "input_ids"], axis=0, name="embed")
    return b.to_f32(x)


def _qk_t(b: GraphBuilder, q: str, k: str) -> str:
    """q @ k^T for q [b, h, seq, hd], k [b, h, n, hd] -> [b, h, seq, n]. ONNX Runtime fuses
    the Transpose into the MatMul (FusedMatMul transB=1), so the cache is not copied."""
    return b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])


@dataclass
class AttentionOut:
    attn: str  # float32 [batch, seq, hidden], after the output projection
    k_new: str  # rotated keys of the new tokens, model dtype [batch, heads, seq, head_dim]
    v_new: str  # values of the new tokens, model dtype [batch, heads, seq, head_dim]
    sums: str  # float32 [batch, heads, past+seq]: probabilities summed over the real queries


def attention(b: GraphBuilder, cfg: NeoxConfig, i: int, h1: str, m: Masks,
              rope_fn: Callable[[str], str], c: AttentionConsts) -> AttentionOut:
    """Layer i's attention on the normalised input h1 float32 [batch, seq, hidden].

    Concat-free: the past cache is read in place (never copied into a [past+seq] buffer):
    scores = [q @ past_k^T | q @ k^T] (only this small [batch, heads, seq, past+seq] tensor is
    concatenated) and ctx = probs[..., :past] @ past_v + probs[..., past:] @ v."""
    p = f"gpt_neox.layers.{i}."
    qkv = b.linear(b.to_w(h1), p + "attention.query_key_value", cfg.attention_bias)  # [batch, seq, 3*hidden]
    qkv = b.op("Transpose", [b.op("Reshape", [qkv, c.qkv_shape])], perm=[0, 2, 1, 3])  # [batch, heads, seq, 3*hd]
    q, k, v = b.op("Split", [qkv, c.split_sizes], n_out=3, axis=3)  # each [batch, heads, seq, head_dim]
    q, k = rope_fn(b.to_f32(q)), rope_fn(b.to_f32(k))
    k_new, v_new = b.to_w(k), v  # rotated key and value, model dtype [batch, heads, seq, hd]
    pk, pv = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
    if b.half:
        # scale q before the float16 product so the scores stay well inside float16 range
        qs = b.op("Cast", [b.op("Mul", [q, b.const(c.scale, f32)])], to=b.welem)
        scores = b.op("Concat", [_qk_t(b, qs, pk), _qk_t(b, qs, k_new)], axis=-1)
        scores = b.op("Cast", [scores], to=TensorProto.FLOAT)
    else:
        sc = b.const(c.scale, f32)
        scores = b.op("Concat", [b.op("Mul", [_qk_t(b, q, pk), sc]), b.op("Mul", [_qk_t(b, q, k_new), sc])],
                      axis=-1)  # [batch, heads, seq, past+seq]
    scores = b.op("Where", [m.allowed, scores, m.neg])
    probs = b.op("Softmax", [scores], axis=-1, name=f"probs_{i}")  # float32
    sums = b.op("ReduceSum", [b.op("Mul", [probs, m.qmask4]), c.sum_axes], keepdims=0, name=f"attn_sums_{i}")
    probs_w = b.to_w(probs)
    probs_past = b.op("Slice", [probs_w, c.c_zero1, m.past_len, c.ax_last])  # [batch, heads, seq, past]
    probs_new = b.op("Slice", [probs_w, m.past_len, m.total_len, c.ax_last])  # [batch, heads, seq, seq]
    ctx = b.op("Add", [b.op("MatMul", [probs_past, pv]), b.op("MatMul", [probs_new, v_new])])  # [b, h, seq, hd]
    ctx = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]), c.ctx_shape])  # [batch, seq, hidden]
    attn = b.to_f32(b.linear(ctx, p + "attention.dense", cfg.attention_bias))
    return AttentionOut(attn, k_new, v_new, sums)


def mlp(b: GraphBuilder, x: str, p: str) -> str:
    """dense_4h_to_h(GELU(dense_h_to_4h(x))), float32 [batch, seq, hidden] in and out."""
    u = b.linear(b.to_w(x), p + "mlp.dense_h_to_4h", True)
    u = b.to_f32(u)
    # exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))
    g = b.op("Mul", [b.op("Mul", [u, b.const(0.5, f32)]),
                     b.op("Add", [b.op("Erf", [b.op("Mul", [u, b.const(np.float32(0.5 ** 0.5), f32)])]),
                                  b.const(1.0, f32)])], name="gelu")
    return b.to_f32(b.linear(b.to_w(g), p + "mlp.dense_4h_to_h", True))


def layer(b: GraphBuilder, cfg: NeoxConfig, i: int, x: str, m: Masks, rope_fn: Callable[[str], str],
          c: AttentionConsts) -> tuple[str, AttentionOut]:
    """One transformer layer on the residual stream x float32 [batch, seq, hidden]:
    parallel:   x = (MLP(LN2(x)) + Attention(LN1(x))) + x
    sequential: a = Attention(LN1(x)) + x;  x = MLP(LN2(a)) + a"""
    p = f"gpt_neox.layers.{i}."
    h1 = b.layer_norm(x, p + "input_layernorm")
    att = attention(b, cfg, i, h1, m, rope_fn, c)
    if cfg.use_parallel_residual:
        mo = mlp(b, b.layer_norm(x, p + "post_attention_layernorm"), p)
        x = b.op("Add", [b.op("Add", [mo, att.attn]), x])
    else:
        a = b.op("Add", [att.attn, x])
        mo = mlp(b, b.layer_norm(a, p + "post_attention_layernorm"), p)
        x = b.op("Add", [mo, a])
    return x, att


def head(b: GraphBuilder, x: str) -> str:
    """logits float32 [batch, seq - logits_from, vocab] = LN_f(x[:, logits_from:]) @ embed_out^T
    (a linear without bias, in the LM head's weight format: --lm-head, by default the layers'
    --weights). Only the new tokens from `logits_from` on go through the head: a prefill that
    needs the last token's logits alone skips [seq - 1, hidden] x [hidden, vocab] of work, about
    30% of a 512-token prefill at Pythia-160m's 50,304-token vocabulary."""
    x = b.op("Slice", [x, LOGITS_FROM, b.const([np.iinfo(np.int64).max], i64), b.const([1], i64)],
             name="logits_rows")  # [batch, seq - logits_from, hidden]
    hf = b.layer_norm(x, "gpt_neox.final_layer_norm")
    return b.to_f32(b.linear(b.to_w(hf), "embed_out", False, b.weights.head))
