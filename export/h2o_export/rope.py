"""Rotary position embedding as GPT-NeoX applies it, written once for the whole package.

Convention (transformers' GPTNeoX, "rotate_half"): of each head's `head_dim` dims the first
`rotary_dims` are rotated, the rest pass through; for position p and i < rotary_dims / 2,
inv_freq[i] = 1 / base^(2i / rotary_dims), angle = p * inv_freq (repeated for both halves), and
    x_rot = x * cos(angle) + rotate_half(x) * sin(angle),  rotate_half(x) = [-x2, x1]
where x1, x2 are the two halves of the rotated part.

Three users: the ONNX graph (`inv_freq_np`; the graph computes cos/sin from position_ids
itself, see graph_blocks.rope), the PyTorch reference loop (`tables`, `apply`, with the
checkpoint's own inv_freq buffer) and pythia-micro's training evaluation (the same, from
config fields). torch is imported lazily: the exporter needs only numpy.
"""

from __future__ import annotations

import numpy as np


def inv_freq_np(rotary_dims: int, base: float) -> np.ndarray:
    """[rotary_dims / 2] float32, evaluated in float32 as transformers' RoPE init does."""
    exponent = np.arange(0, rotary_dims, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dims)
    return (np.float32(1.0) / np.power(np.float32(base), exponent, dtype=np.float32)).astype(np.float32)


def inv_freq(rotary_dims: int, base: float):
    """[rotary_dims / 2] float32 torch tensor, transformers' formula (its `inv_freq` buffer)."""
    import torch

    return 1.0 / (base ** (torch.arange(0, rotary_dims, 2, dtype=torch.float32) / rotary_dims))


def tables(inv_freq_t, n: int, dtype=None, scale: float = 1.0):
    """cos, sin for positions 0..n-1: each [n, rotary_dims] (the two halves repeat), computed in
    float32, times `scale` (transformers' attention_scaling, 1 for plain RoPE), cast to dtype."""
    import torch

    freqs = torch.arange(n, dtype=torch.float32)[:, None] * inv_freq_t.float()[None, :]  # [n, rotary_dims/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [n, rotary_dims]
    cos, sin = emb.cos() * scale, emb.sin() * scale
    if dtype is not None:
        cos, sin = cos.to(dtype), sin.to(dtype)
    return cos, sin


def apply(x, cos, sin):
    """Rotate the first rotary_dims (= cos.shape[-1]) dims of x [..., head_dim]; cos/sin
    broadcast against x[..., :rotary_dims]."""
    import torch

    rd = cos.shape[-1]
    xr, xp = x[..., :rd], x[..., rd:]
    half = rd // 2
    rotated_half = torch.cat((-xr[..., half:], xr[..., :half]), dim=-1)
    return torch.cat((xr * cos + rotated_half * sin, xp), dim=-1)


def scaled_inv_freq_np(head_dim: int, base: float, scaling) -> np.ndarray:
    """[head_dim / 2] float32: Llama-family inv_freq with `scaling` (the manifest's rope_scaling: None,
    {"rope_type": "linear", "factor"} or {"rope_type": "llama3", ...}) applied as transformers'
    rope_init_fns (_compute_linear_scaling_rope_parameters, _compute_llama3_parameters) do, op by op
    in float32. torch evaluates `scalar / tensor` as reciprocal(tensor) * scalar, so that is what
    is written here (the test compares the result with transformers' own, element for element)."""
    f32 = np.float32
    # base ** exponent evaluated as float64 then rounded: equals torch's float32 pow element for
    # element on every shape tried, where numpy's float32 power is off by an ulp in places
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(f32) / f32(head_dim)
    inv = (f32(1.0) / np.power(np.float64(f32(base)), exponent.astype(np.float64)).astype(f32)).astype(f32)
    if scaling is None:
        return inv
    kind = scaling["rope_type"]
    factor = f32(scaling["factor"])
    if kind == "linear":
        return (inv / factor).astype(f32)
    if kind != "llama3":
        raise ValueError(f"rope_type {kind!r} is not supported")
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    low_wavelen = old / low  # python floats, as transformers computes them
    high_wavelen = old / high
    wavelen = ((f32(1) / inv) * f32(2 * np.pi)).astype(f32)
    inv_l = np.where(wavelen > low_wavelen, inv / factor, inv).astype(f32)
    smooth = (((f32(1) / wavelen) * f32(old) - f32(low)) / f32(high - low)).astype(f32)
    smoothed = ((f32(1) - smooth) * inv_l / factor + smooth * inv_l).astype(f32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, inv_l).astype(f32)
