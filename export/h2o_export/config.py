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
from typing import Any, Optional

from .config_fields import F32_MAX, F32_TINY, MAX_DIM, FieldReader, show  # noqa: F401 (re-exported)
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


# Limits of the checks (NeoxConfig.from_dict): every dimension fits a signed 32-bit integer (ONNX
# shapes, the engine's indices); RoPE's base and the layer norms' epsilon go into float32 graph
# constants, so they must be positive normal float32 numbers; a config.json is a small file.
MAX_CONFIG_BYTES = 16 << 20
DEFAULT_INITIALIZER_RANGE = 0.02  # transformers' GPTNeoXConfig default

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
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dims(self) -> int:
        # int(head_dim * rotary_pct), as HF GPTNeoXAttention.rotary_ndims and the RoPE init do.
        return int(self.head_dim * self.rotary_pct)

    # What the exporter and the graph ask every architecture (config_llama.LlamaConfig has the same)
    model_type = "gpt_neox"
    rope_scaling = None

    @property
    def kv_heads(self) -> int:
        return self.num_heads  # GPT-NeoX: one K/V per query head

    @property
    def embed_name(self) -> str:
        return "gpt_neox.embed_in.weight"

    @property
    def head_name(self) -> str:
        return "embed_out.weight"

    @property
    def layer_prefix(self) -> str:
        return "gpt_neox.layers."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str) -> "NeoxConfig":
        """Check every field the export reads (type, finite, range) and the relations between them;
        the first problem is an ExportError naming `origin`, the field, its value and the rule."""
        if not isinstance(raw, dict):
            raise ExportError(f"{origin}: expected a JSON object (a Hugging Face config.json), got {show(raw)}")

        fields = FieldReader(raw, origin)
        bad, integer, number, boolean = fields.bad, fields.integer, fields.number, fields.boolean
        token_id = fields.token_id

        missing = [f for f in REQUIRED_FIELDS if f not in raw]
        if "rotary_emb_base" not in raw and "rope_theta" not in raw:
            missing.append("rotary_emb_base")
        if "model_type" in raw and (not isinstance(raw["model_type"], str)
                                    or raw["model_type"] not in SUPPORTED_MODEL_TYPES):
            raise ExportError(
                f"{origin}: model_type {show(raw['model_type'])} is not supported; this exporter supports "
                f"{', '.join(repr(t) for t in SUPPORTED_MODEL_TYPES)} (GPT-NeoX / Pythia), 'llama' and 'qwen2' only"
            )
        if missing:
            raise ExportError(
                f"{origin}: missing config field(s) {', '.join(missing)}; a GPT-NeoX config.json "
                f"(as written by transformers' GPTNeoXConfig.save_pretrained) must have them"
            )
        if raw.get("rope_scaling") not in (None, {}):
            raise ExportError(
                f"{origin}: rope_scaling {show(raw['rope_scaling'])} is not supported (Pythia uses "
                f"plain RoPE); remove it or use a checkpoint without RoPE scaling"
            )
        act = raw["hidden_act"]
        if not isinstance(act, str) or act not in SUPPORTED_ACTIVATIONS:
            raise ExportError(
                f"{origin}: hidden_act {show(act)} is not supported; supported: "
                f"{', '.join(repr(a) for a in SUPPORTED_ACTIVATIONS)} (exact erf GELU, as in Pythia)"
            )

        def same(name: str, value: float, alias: str, rule: str, low: float, high: float) -> None:
            """`alias` (the newer transformers name of `name`), when present, must say the same."""
            if alias in raw:
                other = number(alias, low, high, rule)
                if other != value:
                    raise ExportError(
                        f"{origin}: {name} {show(raw[name])} and {alias} {show(raw[alias])} disagree; they are "
                        f"two names of one setting, so the config is ambiguous: make them equal (or drop {alias})"
                    )

        hidden_size = integer("hidden_size")
        num_heads = integer("num_attention_heads")
        vocab_size = integer("vocab_size")
        pct_rule = "a number in (0, 1] (the share of each head's dims that RoPE rotates; Pythia: 0.25)"
        rotary_pct = number("rotary_pct", 0.0, 1.0, pct_rule)
        if rotary_pct == 0.0:
            raise bad("rotary_pct", pct_rule)
        same("rotary_pct", rotary_pct, "partial_rotary_factor", pct_rule, 0.0, 1.0)
        base_rule = (f"a positive number within float32's range ({F32_TINY:.2g} to {F32_MAX:.3g}; "
                     f"Pythia: 10000)")
        base_field = "rotary_emb_base" if "rotary_emb_base" in raw else "rope_theta"
        rotary_base = number(base_field, F32_TINY, F32_MAX, base_rule)
        if base_field == "rotary_emb_base":
            same("rotary_emb_base", rotary_base, "rope_theta", base_rule, F32_TINY, F32_MAX)
        rope_params = raw.get("rope_parameters")
        if rope_params is not None:  # transformers 5's form of the same settings
            if not isinstance(rope_params, dict) or rope_params.get("rope_type", "default") != "default":
                raise ExportError(
                    f"{origin}: rope_parameters {show(rope_params)} is not supported (Pythia uses plain RoPE, "
                    f"rope_type \"default\"); remove it or use a checkpoint without RoPE scaling"
                )
            for key, mine, field in (("rope_theta", rotary_base, base_field),
                                     ("partial_rotary_factor", rotary_pct, "rotary_pct")):
                if key in rope_params and rope_params[key] != mine:
                    raise ExportError(
                        f"{origin}: rope_parameters.{key} {show(rope_params[key])} and {field} {show(raw[field])} "
                        f"disagree; the config is ambiguous: make them equal"
                    )

        cfg = cls(
            hidden_size=hidden_size,
            num_layers=integer("num_hidden_layers"),
            num_heads=num_heads,
            intermediate_size=integer("intermediate_size"),
            vocab_size=vocab_size,
            max_position_embeddings=integer("max_position_embeddings"),
            rotary_pct=rotary_pct,
            rotary_base=rotary_base,
            layer_norm_eps=number(
                "layer_norm_eps", F32_TINY, F32_MAX,
                f"a positive number within float32's range ({F32_TINY:.2g} to {F32_MAX:.3g}; Pythia: 1e-05)"),
            use_parallel_residual=boolean("use_parallel_residual", True),
            tie_word_embeddings=boolean("tie_word_embeddings", False),
            attention_bias=boolean("attention_bias", True),
            initializer_range=number(
                "initializer_range", 0.0, F32_MAX,
                "a finite number >= 0 (the random init's standard deviation; transformers' default 0.02)",
                raw.get("initializer_range", DEFAULT_INITIALIZER_RANGE)),
            bos_token_id=token_id("bos_token_id", vocab_size),
            eos_token_id=token_id("eos_token_id", vocab_size),
        )
        if cfg.hidden_size % cfg.num_heads != 0:
            raise ExportError(
                f"{origin}: hidden_size {cfg.hidden_size} is not divisible by num_attention_heads "
                f"{cfg.num_heads}; each head takes hidden_size / num_attention_heads dims: correct one of them"
            )
        if cfg.rotary_dims == 0 or cfg.rotary_dims % 2 != 0:
            raise ExportError(
                f"{origin}: rotary dims int(head_dim {cfg.head_dim} * rotary_pct {show(raw['rotary_pct'])}) = "
                f"{cfg.rotary_dims} must be even and at least 2 (GPT-NeoX's rotate_half rotates pairs of dims); "
                f"correct rotary_pct"
            )
        return cfg


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is refused (json.loads would keep the last silently)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def load_config_file(path: Path, missing: str = "") -> tuple[dict[str, Any], NeoxConfig]:
    """Read and check a config.json; returns (raw dict, checked config). `missing` is the sentence
    that follows "no file at PATH" when it does not exist (what the user should give instead)."""
    if path.is_dir():
        raise ExportError(f"{path} is a folder, not a config.json file; {missing or 'give the path of the file'}")
    if not path.exists():
        raise ExportError(f"no config.json at {path}; {missing or 'a Hugging Face checkpoint folder has one'}")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ExportError(f"{path}: {size} bytes is too large for a config.json (a GPT-NeoX one is about 1 KB); "
                              f"give the model's config.json")
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ExportError(f"cannot read {path} ({e.strerror or e}); check that it is a readable file") from None
    except UnicodeDecodeError as e:
        raise ExportError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); "
                          f"give the model's config.json") from None
    try:
        raw = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                          f"give the model's config.json") from None
    except _DuplicateKey as e:
        raise ExportError(f"{path}: field {e.args[0]} appears more than once, so its value is ambiguous; "
                          f"keep one") from None
    except RecursionError:
        raise ExportError(f"{path}: nested too deeply to be a config.json; give the model's config.json") from None
    return raw, config_from_dict(raw, str(path))


def config_from_dict(raw: Any, origin: str):
    """The checked config of either family: LlamaConfig for model_type llama / qwen2, else NeoxConfig
    (which refuses every other model_type, naming it)."""
    from .config_llama import MOE_FIELDS, LlamaConfig, is_llama_family

    if is_llama_family(raw):
        return LlamaConfig.from_dict(raw, origin)
    if isinstance(raw, dict) and raw.get("model_type") not in (None, *SUPPORTED_MODEL_TYPES):
        moe = next((f for f in MOE_FIELDS if raw.get(f) not in (None, 0, 1)), None)
        if moe is not None:  # name what makes it unsupported, not only its type
            raise ExportError(
                f"{origin}: model_type {show(raw['model_type'])} with {moe} {show(raw[moe])} is a mixture of "
                f"experts, which is not supported; this exporter supports 'gpt_neox' (GPT-NeoX / Pythia), 'llama' "
                f"and 'qwen2' (dense) only")
    return NeoxConfig.from_dict(raw, origin)


