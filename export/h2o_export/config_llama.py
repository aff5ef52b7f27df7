"""Llama-family architecture description (LlamaForCausalLM, Qwen2ForCausalLM): read and check a
Hugging Face config.json, refuse what the graph does not implement, and the carried table of
public shapes for `--random-init`.

What the graph implements (transformers' modeling_llama / modeling_qwen2, eager attention):
RMSNorm, SwiGLU MLP (silu), grouped-query attention (num_key_value_heads dividing
num_attention_heads), rotary embedding over the whole head (rotate_half) with rope_theta and the
`linear` or `llama3` rope_scaling (inv_freq adjusted as transformers' rope_init_fns do, rope.py),
Qwen2's q/k/v bias (always on in Qwen2; Llama's `attention_bias` puts one on q, k, v and o),
`head_dim` when given (hidden_size need not be num_heads x head_dim), tied or untied LM head.
Refused, in one line naming the field and its value: sliding-window attention, mixture of
experts, other rope types, other activations, MLP bias, heads that do not divide.

`LLAMA_SIZES` carries ../shared/data/llama-configs.json (sha256 ef8609350eeb9d02ed1403031ac8b3de
68fe03f809e7fbcd00e63978e074df24): the architecture numbers of four public checkpoints as their
published config.json files give them, numbers only, so the exporter needs nothing outside the project.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .config_fields import F32_MAX, F32_TINY, FieldReader
from .config_fields import show as _show
from .errors import ExportError

LLAMA_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# name: config.json fields (see module docstring; copied from ../shared/data/llama-configs.json).
LLAMA_SIZES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
                     "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "head_dim": 64, "hidden_act": "silu",
                     "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 100000.0,
                     "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": True,
                     "vocab_size": 49152, "bos_token_id": 0, "eos_token_id": 0},
    "qwen2.5-0.5b": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
                     "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "head_dim": 64, "hidden_act": "silu",
                     "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
                     "rope_scaling": None, "qkv_bias": True, "use_sliding_window": False,
                     "tie_word_embeddings": True, "vocab_size": 151936, "bos_token_id": 151643,
                     "eos_token_id": 151643},
    "tinyllama-1.1b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                       "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                       "num_key_value_heads": 4, "head_dim": 64, "hidden_act": "silu",
                       "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
                       "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False,
                       "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2},
    "llama-3.2-1b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                     "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "head_dim": 64, "hidden_act": "silu",
                     "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
                     "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                     "attention_bias": False, "tie_word_embeddings": True, "vocab_size": 128256,
                     "bos_token_id": 128000, "eos_token_id": 128001},
}

DEFAULT_INITIALIZER_RANGE = 0.02
DEFAULT_ROPE_THETA = {"llama": 10000.0, "qwen2": 10000.0}  # LlamaConfig / Qwen2Config defaults

REQUIRED_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "vocab_size", "max_position_embeddings", "rms_norm_eps", "hidden_act")
# Config fields that switch on a mixture of experts (Mixtral, Qwen2-MoE, DeepSeek, ...): any of them
# with a value above 0 / 1 is refused.
MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")
ROPE_TYPES = ("default", "linear", "llama3")


def is_llama_family(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("model_type") in LLAMA_MODEL_TYPES


def llama_size_config(size: str) -> Optional[dict[str, Any]]:
    """The carried config.json of a public Llama-family shape ("smollm2-135m", ...), or None."""
    key = size.lower().strip()
    cfg = LLAMA_SIZES.get(key)
    if cfg is None:
        return None
    return {**cfg, "_name_or_path": key}


@dataclass(frozen=True)
class LlamaConfig:
    """The architecture numbers the Llama-family graph needs, checked."""

    model_type: str  # "llama" | "qwen2"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rotary_base: float
    rope_scaling: Optional[dict]  # None | {"rope_type": "linear", "factor"} | {"rope_type": "llama3", ...}
    layer_norm_eps: float  # rms_norm_eps
    tie_word_embeddings: bool
    qkv_bias: bool  # q/k/v projections carry a bias (Qwen2 always; Llama with attention_bias)
    o_bias: bool  # the output projection carries one (Llama with attention_bias)
    initializer_range: float
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None

    # the graph contract's constants for this family
    use_parallel_residual = False

    @property
    def rotary_dims(self) -> int:
        return self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads

    @property
    def embed_name(self) -> str:
        return "model.embed_tokens.weight"

    @property
    def head_name(self) -> str:
        return "lm_head.weight"

    @property
    def layer_prefix(self) -> str:
        return "model.layers."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str) -> "LlamaConfig":
        """Check every field the export reads and refuse what the graph does not implement; the first
        problem is an ExportError naming `origin`, the field, its value and the rule."""
        mt = raw.get("model_type")
        if mt not in LLAMA_MODEL_TYPES:
            raise ExportError(f"{origin}: model_type {_show(mt)} is not a Llama-family type "
                              f"({', '.join(repr(t) for t in LLAMA_MODEL_TYPES)})")

        fields = FieldReader(raw, origin)
        bad, integer, number, boolean = fields.bad, fields.integer, fields.number, fields.boolean
        token_id = functools.partial(fields.token_id, first_of_list=True)

        missing = [f for f in REQUIRED_FIELDS if f not in raw]
        if missing:
            raise ExportError(f"{origin}: missing config field(s) {', '.join(missing)}; a {mt} config.json (as "
                              f"written by transformers' save_pretrained) must have them")
        archs = raw.get("architectures")
        if archs is not None:
            want = LLAMA_MODEL_TYPES[mt]
            if not isinstance(archs, list) or archs != [want]:
                raise ExportError(f"{origin}: architectures {_show(archs)} is not supported for model_type "
                                  f"{_show(mt)}; this exporter reads [\"{want}\"] only")
        # ---- what the graph does not implement, refused by name
        if raw.get("use_sliding_window") is True:
            raise ExportError(f"{origin}: use_sliding_window true (sliding_window {_show(raw.get('sliding_window'))}) "
                              f"is not supported: the graph attends to every cached token; export a config with "
                              f"use_sliding_window false")
        lt = raw.get("layer_types")
        if lt is not None and (not isinstance(lt, list) or any(t != "full_attention" for t in lt)):
            raise ExportError(f"{origin}: layer_types {_show(lt)} is not supported: every layer must be "
                              f"\"full_attention\" (no sliding-window layers)")
        if mt == "llama" and raw.get("sliding_window") not in (None, 0):
            raise ExportError(f"{origin}: sliding_window {_show(raw['sliding_window'])} is not supported: the graph "
                              f"attends to every cached token; remove it")
        for f in MOE_FIELDS:
            v = raw.get(f)
            if v not in (None, 0, 1) or (f == "moe_intermediate_size" and v not in (None, 0)):
                raise ExportError(f"{origin}: {f} {_show(v)} means a mixture of experts, which is not supported "
                                  f"(dense Llama / Qwen2 MLPs only)")
        act = raw["hidden_act"]
        if act != "silu":
            raise ExportError(f"{origin}: hidden_act {_show(act)} is not supported; supported: 'silu' (SwiGLU, as "
                              f"in Llama and Qwen2)")
        if raw.get("mlp_bias") not in (None, False):
            raise ExportError(f"{origin}: mlp_bias {_show(raw['mlp_bias'])} is not supported (Llama and Qwen2 MLPs "
                              f"have no bias); use a checkpoint with mlp_bias false")
        if "rope_parameters" in raw and raw["rope_parameters"] is not None:
            raise ExportError(f"{origin}: rope_parameters {_show(raw['rope_parameters'])} (transformers 5's form) "
                              f"is not read; give rope_theta and rope_scaling as transformers 4 writes them")

        hidden = integer("hidden_size")
        heads = integer("num_attention_heads")
        kv_heads = heads if raw.get("num_key_value_heads") is None else integer("num_key_value_heads")
        if heads % kv_heads != 0:
            raise ExportError(f"{origin}: num_attention_heads {heads} is not divisible by num_key_value_heads "
                              f"{kv_heads}; each KV head serves an equal group of query heads: correct one of them")
        if raw.get("head_dim") is not None:
            head_dim = integer("head_dim")
        else:
            if hidden % heads != 0:
                raise ExportError(f"{origin}: hidden_size {hidden} is not divisible by num_attention_heads {heads} "
                                  f"and no head_dim is given; give head_dim or correct one of them")
            head_dim = hidden // heads
        if head_dim % 2 != 0:
            raise bad("head_dim", "even (rotate_half rotates pairs of dims)", head_dim)
        base_rule = f"a positive number within float32's range ({F32_TINY:.2g} to {F32_MAX:.3g})"
        theta = number("rope_theta", F32_TINY, F32_MAX, base_rule, raw.get("rope_theta", DEFAULT_ROPE_THETA[mt]))
        if raw.get("partial_rotary_factor") not in (None, 1, 1.0):
            raise ExportError(f"{origin}: partial_rotary_factor {_show(raw['partial_rotary_factor'])} is not supported "
                              f"(Llama and Qwen2 rotate the whole head)")
        scaling = _rope_scaling(raw.get("rope_scaling"), origin)
        vocab = integer("vocab_size")
        if mt == "qwen2":
            if raw.get("qkv_bias") not in (None, True):
                raise bad("qkv_bias", "true or absent (Qwen2's q, k and v projections always carry a bias)")
            if raw.get("attention_bias") not in (None, False):
                raise bad("attention_bias", "false or absent (Qwen2's output projection has no bias)")
            qkv_bias, o_bias = True, False
        else:
            qkv_bias = o_bias = boolean("attention_bias", False)
        return cls(
            model_type=mt,
            hidden_size=hidden,
            num_layers=integer("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=integer("intermediate_size"),
            vocab_size=vocab,
            max_position_embeddings=integer("max_position_embeddings"),
            rotary_base=theta,
            rope_scaling=scaling,
            layer_norm_eps=number("rms_norm_eps", F32_TINY, F32_MAX,
                                  f"a positive number within float32's range ({F32_TINY:.2g} to {F32_MAX:.3g})"),
            tie_word_embeddings=boolean("tie_word_embeddings", False),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            initializer_range=number(
                "initializer_range", 0.0, F32_MAX, "a finite number >= 0 (the random init's standard deviation)",
                raw.get("initializer_range", DEFAULT_INITIALIZER_RANGE)),
            bos_token_id=token_id("bos_token_id", vocab),
            eos_token_id=token_id("eos_token_id", vocab),
        )


def _rope_scaling(v: Any, origin: str) -> Optional[dict]:
    """config.json's rope_scaling checked: None, or the manifest's {"rope_type": "linear", "factor"} or
    {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}."""
    if v is None or v == {}:
        return None
    if not isinstance(v, dict):
        raise ExportError(f"{origin}: rope_scaling must be an object or null, got {_show(v)}")
    kind = v.get("rope_type", v.get("type"))
    if kind not in ROPE_TYPES:
        raise ExportError(f"{origin}: rope_scaling rope_type {_show(kind)} is not supported; supported: "
                          f"{', '.join(repr(t) for t in ROPE_TYPES)}")
    if kind == "default":
        return None

    def positive(key: str) -> float:
        x = v.get(key)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)) or x <= 0:
            raise ExportError(f"{origin}: rope_scaling {key} must be a positive number, got {_show(x)}")
        return float(x)

    if kind == "linear":
        return {"rope_type": "linear", "factor": positive("factor")}
    low, high = positive("low_freq_factor"), positive("high_freq_factor")
    if not low < high:
        raise ExportError(f"{origin}: rope_scaling low_freq_factor {_show(v['low_freq_factor'])} must be below "
                          f"high_freq_factor {_show(v['high_freq_factor'])}")
    omp = v.get("original_max_position_embeddings")
    if isinstance(omp, bool) or not isinstance(omp, int) or omp < 1:
        raise ExportError(f"{origin}: rope_scaling original_max_position_embeddings must be a positive integer, "
                          f"got {_show(omp)}")
    return {"rope_type": "llama3", "factor": positive("factor"), "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": omp}
