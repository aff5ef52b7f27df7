"""GPT-NeoX architecture description: read and check a Hugging Face config.json, or build one
for a Pythia size (for `--random-init`).

Pythia architecture numbers (carried here so the exporter needs nothing outside the project)
come from `../shared/data/pythia-configs.json` (sha256 08e7fc83f948a4a67d14ce8c2f975a195a1e544b
5e526dc37751f4c58772a78e), which compiles them from EleutherAI's training configs:
EleutherAI/pythia@a19eecb807ec2c79a39ebf18108816e6ffffc1d5 models/<size>/pythia-<size>.yml
(hidden-size, num-layers, num-attention-heads; rotary-pct 0.25 in every yml), mapped to HF
field names with the rules of EleutherAI/gpt-neox tools/ckpts/convert_neox_to_hf.py
(intermediate_size = 4 * hidden_size, rotary_emb_base 10000, layer_norm_eps 1e-5,
gpt-j-residual -> use_parallel_residual true, no weight tying), and padded vocab sizes
(make_vocab_size_divisible_by 128 x model-parallel size: 50304, 50432 for 6.9b, 50688 for 12b)
confirmed by the v0 resolved training args (evals/pythia-v0/*/zero-shot/*.json in the same repo).
Every "-deduped" model has the architecture of its standard twin.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ExportError

SUPPORTED_MODEL_TYPES = ("gpt_neox",)
SUPPORTED_ACTIVATIONS = ("gelu",)

# name: (hidden_size, num_hidden_layers, num_attention_heads, vocab_size); see module docstring.
PYTHIA_SIZES: dict[str, tuple[int, int, int, int]] = {
    "pythia-14m": (128, 6, 4, 50304),
    "pythia-31m": (256, 6, 8, 50304),
    "pythia-70m": (512, 6, 8, 50304),
    "pythia-160m": (768, 12, 12, 50304),
    "pythia-410m": (1024, 24, 16, 50304),
    "pythia-1b": (2048, 16, 8, 50304),
    "pythia-1.4b": (2048, 24, 16, 50304),
    "pythia-2.8b": (2560, 32, 32, 50304),
    "pythia-6.9b": (4096, 32, 32, 50432),
    "pythia-12b": (5120, 36, 40, 50688),
}
# Shared by every Pythia size (same sources).
PYTHIA_COMMON: dict[str, Any] = {
    "model_type": "gpt_neox",
    "architectures": ["GPTNeoXForCausalLM"],
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "use_parallel_residual": True,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "hidden_act": "gelu",
    "attention_bias": True,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "initializer_range": 0.02,
}

# The declared BOS (docs/architecture.md, "Graph contract"): a checkpoint trained with this token
# at position 0 of every window says so in its config.json; the exporter copies it into the
# manifest, and the engine and the reference then feed it before the text (fed, not scored).
# Absent for Pythia's own models. Not `bos_token_id`: every GPT-NeoX config (and so every
# manifest written so far) carries that one, for models trained without a BOS in front.
PREPEND_BOS_KEY = "prepend_bos_token_id"


def declared_bos(raw: dict[str, Any], origin: str, vocab: int) -> int | None:
    """The config's `prepend_bos_token_id`: None when absent (or null), else an id below `vocab`."""
    v = raw.get(PREPEND_BOS_KEY)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab:
        raise ExportError(f"{origin}: {PREPEND_BOS_KEY} must be a token id in [0, {vocab}) or absent, got {v!r}")
    return v


# Fields a config.json must carry (HF GPTNeoXConfig names). No silent defaults for these: a
# checkpoint that lacks one is refused, since a guessed value would give a different model.
REQUIRED_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rotary_pct",
    "layer_norm_eps",
    "use_parallel_residual",
    "hidden_act",
)


def pythia_config(size: str) -> dict[str, Any]:
    """HF-style config.json dict for a Pythia size ("2.8b", "pythia-2.8b", "pythia-2.8b-deduped")."""
    key = size.lower().strip()
    if key.endswith("-deduped"):
        key = key[: -len("-deduped")]
    if not key.startswith("pythia-"):
        key = "pythia-" + key
    if key not in PYTHIA_SIZES:
        raise ExportError(
            f"unknown Pythia size {size!r}; known sizes: "
            + ", ".join(s[len("pythia-"):] for s in PYTHIA_SIZES)
            + " (or pass the path of a config.json)"
        )
    hidden, layers, heads, vocab = PYTHIA_SIZES[key]
    cfg = dict(PYTHIA_COMMON)
    cfg.update(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        vocab_size=vocab,
        _name_or_path=key,
    )
    return cfg


@dataclass(frozen=True)
class NeoxConfig:
    """The architecture numbers the graph needs, checked."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rotary_pct: float
    rotary_base: float
    layer_norm_eps: float
    use_parallel_residual: bool
    tie_word_embeddings: bool
    attention_bias: bool
    initializer_range: float

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dims(self) -> int:
        # int(head_dim * rotary_pct), as HF GPTNeoXAttention.rotary_ndims and the RoPE init do.
        return int(self.head_dim * self.rotary_pct)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str) -> "NeoxConfig":
        if not isinstance(raw, dict):
            raise ExportError(f"{origin}: expected a JSON object (a Hugging Face config.json)")
        model_type = raw.get("model_type")
        if model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
            raise ExportError(
                f"{origin}: model_type {model_type!r} is not supported; this exporter supports "
                f"{', '.join(SUPPORTED_MODEL_TYPES)} (GPT-NeoX / Pythia) only"
            )
        missing = [f for f in REQUIRED_FIELDS if f not in raw]
        if "rotary_emb_base" not in raw and "rope_theta" not in raw:
            missing.append("rotary_emb_base")
        if missing:
            raise ExportError(
                f"{origin}: missing config field(s) {', '.join(missing)}; a GPT-NeoX config.json "
                f"(as written by transformers' GPTNeoXConfig.save_pretrained) must have them"
            )
        if raw.get("rope_scaling") not in (None, {}):
            raise ExportError(
                f"{origin}: rope_scaling {raw['rope_scaling']!r} is not supported (Pythia uses "
                f"plain RoPE); remove it or use a checkpoint without RoPE scaling"
            )
        act = raw["hidden_act"]
        if act not in SUPPORTED_ACTIVATIONS:
            raise ExportError(
                f"{origin}: hidden_act {act!r} is not supported; supported: "
                f"{', '.join(SUPPORTED_ACTIVATIONS)} (exact erf GELU, as in Pythia)"
            )

        def integer(name: str, minimum: int = 1) -> int:
            v = raw[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ExportError(f"{origin}: {name} must be an integer >= {minimum}, got {v!r}")
            return v

        def number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ExportError(f"{origin}: {name} must be a number, got {value!r}")
            return float(value)

        def boolean(name: str, value: Any) -> bool:
            if not isinstance(value, bool):
                raise ExportError(f"{origin}: {name} must be true or false, got {value!r}")
            return value

        cfg = cls(
            hidden_size=integer("hidden_size"),
            num_layers=integer("num_hidden_layers"),
            num_heads=integer("num_attention_heads"),
            intermediate_size=integer("intermediate_size"),
            vocab_size=integer("vocab_size"),
            max_position_embeddings=integer("max_position_embeddings"),
            rotary_pct=number("rotary_pct", raw["rotary_pct"]),
            rotary_base=number(
                "rotary_emb_base", raw["rotary_emb_base"] if "rotary_emb_base" in raw else raw["rope_theta"]
            ),
            layer_norm_eps=number("layer_norm_eps", raw["layer_norm_eps"]),
            use_parallel_residual=boolean("use_parallel_residual", raw["use_parallel_residual"]),
            tie_word_embeddings=boolean("tie_word_embeddings", raw.get("tie_word_embeddings", False)),
            attention_bias=boolean("attention_bias", raw.get("attention_bias", True)),
            initializer_range=number("initializer_range", raw.get("initializer_range", 0.02)),
        )
        if cfg.hidden_size % cfg.num_heads != 0:
            raise ExportError(
                f"{origin}: hidden_size {cfg.hidden_size} is not divisible by "
                f"num_attention_heads {cfg.num_heads}"
            )
        if not 0.0 <= cfg.rotary_pct <= 1.0:
            raise ExportError(f"{origin}: rotary_pct must be within [0, 1], got {cfg.rotary_pct}")
        if cfg.rotary_dims % 2 != 0:
            raise ExportError(
                f"{origin}: rotary dims int(head_dim * rotary_pct) = {cfg.rotary_dims} is odd; "
                f"GPT-NeoX's rotate_half needs an even count"
            )
        if cfg.rotary_base <= 0 or cfg.layer_norm_eps <= 0:
            raise ExportError(f"{origin}: rotary_emb_base and layer_norm_eps must be positive")
        return cfg


def load_config_file(path: Path) -> tuple[dict[str, Any], NeoxConfig]:
    """Read and check a config.json; returns (raw dict, checked config)."""
    if not path.is_file():
        raise ExportError(f"no config.json at {path}; a Hugging Face checkpoint directory has one")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not a readable JSON file ({e})") from e
    return raw, NeoxConfig.from_dict(raw, str(path))
