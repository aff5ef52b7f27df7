"""pythia-micro's model: its shape (GPTNeoXConfig fields), transformers models built from them,
Pythia's seeded initialisation, and checkpoints (config.json + float32 safetensors, sharded or
merged) under the transformers-4.x weight names the exporter and the reference read.

Architecture (see `model_config`): parallel residual, rotary on 25% of each head's dims with
base 10000, exact GELU, untied input/output embeddings, LayerNorm eps 1e-5, 2048 positions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import PREPEND_BOS_KEY

HEAD_DIM = 32


def model_config(tiny: bool = False, hidden: int | None = None, layers: int | None = None,
                 bos: int | None = None) -> dict:
    """GPTNeoXConfig fields of pythia-micro (or of the tiny smoke-test model), optionally at
    another width `hidden` (heads of HEAD_DIM dims, MLP 4 x hidden) or depth `layers`, and
    declaring `bos` (PREPEND_BOS_KEY) when trained with that token in front of every window."""
    cfg = dict(
        model_type="gpt_neox",
        architectures=["GPTNeoXForCausalLM"],
        vocab_size=4096,
        hidden_size=256,
        num_hidden_layers=8,
        num_attention_heads=8,
        intermediate_size=1024,
        hidden_act="gelu",
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=2048,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_bias=True,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=True,
        torch_dtype="float32",
    )
    if tiny:
        cfg.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
    if hidden is not None:
        if hidden % HEAD_DIM:
            raise ValueError(f"width {hidden} is not a multiple of the head size {HEAD_DIM}")
        cfg.update(hidden_size=hidden, num_attention_heads=hidden // HEAD_DIM, intermediate_size=4 * hidden)
    if layers is not None:
        cfg.update(num_hidden_layers=layers)
    if bos is not None:
        cfg[PREPEND_BOS_KEY] = bos
    return cfg


def fp32_bytes(fields: dict) -> int:
    """Size of the float32 weights of a model with these fields (what model.safetensors holds,
    less its small header)."""
    d, layers, ff, vocab = (fields["hidden_size"], fields["num_hidden_layers"], fields["intermediate_size"],
                            fields["vocab_size"])
    per_layer = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d  # attention, MLP, two LayerNorms
    return 4 * (2 * vocab * d + layers * per_layer + 2 * d)  # + embed_in, embed_out, final LayerNorm


def hf_config(fields: dict):
    """transformers' GPTNeoXConfig of the fields (the declared BOS is ours, not transformers':
    config_json writes it into config.json)."""
    from transformers import GPTNeoXConfig

    kw = {k: v for k, v in fields.items() if k not in ("model_type", "architectures", "torch_dtype",
                                                        "transformers_version", PREPEND_BOS_KEY)}
    cfg = GPTNeoXConfig(**kw)
    cfg.architectures = ["GPTNeoXForCausalLM"]
    return cfg


def build_model(fields: dict, attn: str):
    from transformers import GPTNeoXForCausalLM

    cfg = hf_config(fields)
    cfg._attn_implementation = attn
    return GPTNeoXForCausalLM(cfg)


# transformers 5 renamed the output projection; checkpoints use the 4.x name (what loads here)
RENAMES = {"lm_head.weight": "embed_out.weight"}
BUFFERS = ("inv_freq", "masked_bias", ".attention.bias")


def canonical_state_dict(model) -> dict:
    """The model's weights under the transformers-4.x names, float32 on the CPU, no buffers."""
    return {RENAMES.get(k, k): v.detach().to("cpu", torch.float32).contiguous()
            for k, v in model.state_dict().items() if not k.endswith(BUFFERS)}


def load_canonical(model, sd: dict) -> None:
    """Load 4.x-named weights into a model of the installed transformers (strict)."""
    back = {v: k for k, v in RENAMES.items()}
    names = {k for k in model.state_dict() if not k.endswith(BUFFERS)}
    mapped = {(back[k] if k in back and back[k] in names else k): v for k, v in sd.items()}
    missing, unexpected = names - set(mapped), set(mapped) - names
    if missing or unexpected:
        raise RuntimeError(f"weights do not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(mapped, strict=False)


def init_weights(model, fields: dict, init_seed: int) -> None:
    """Pythia's initialisation, drawn on the CPU from `init_seed` (device independent).

    Embeddings and input projections: normal(0, sqrt(2 / (5 d))) ("small_init"); the two
    projections back into the residual stream (attention.dense, mlp.dense_4h_to_h):
    normal(0, 2 / (L sqrt(d))) ("wang_init"); biases 0; LayerNorm weight 1, bias 0.
    """
    d, n_layers = fields["hidden_size"], fields["num_hidden_layers"]
    small, wang = math.sqrt(2.0 / (5 * d)), 2.0 / (n_layers * math.sqrt(d))
    gen = torch.Generator().manual_seed(init_seed)
    params = sorted((RENAMES.get(n, n), p) for n, p in model.named_parameters())
    with torch.no_grad():
        for name, p in params:
            if "layernorm" in name or "layer_norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                std = wang if (name.endswith("attention.dense.weight")
                               or name.endswith("dense_4h_to_h.weight")) else small
                p.copy_(torch.randn(p.shape, generator=gen) * std)


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(model, cfg_json: dict, expected: dict | None, out: Path, shard_mib: float) -> list[str]:
    """config.json + weights as float32 safetensors in `out` (made if missing), one file or
    shards of at most shard_mib."""
    sd = canonical_state_dict(model)
    if expected is not None:
        missing = [k for k in expected if k not in sd]
        if missing:
            raise RuntimeError(f"weights missing from the trained model: {missing[:5]}")
        bad = [k for k in expected if list(sd[k].shape) != expected[k]]
        if bad:
            raise RuntimeError(f"weight shapes differ from the expected ones: {bad[:5]}")
        sd = {k: sd[k] for k in expected}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
    return save_weights(sd, out, shard_mib)


def save_weights(sd: dict, out: Path, shard_mib: float) -> list[str]:
    """The state dict as model.safetensors, or as model-000NN-of-000MM.safetensors shards of at
    most shard_mib each (names in sorted order) when it is larger; returns the file names."""
    limit = int(shard_mib * 2**20) if shard_mib > 0 else None
    total = sum(t.numel() * t.element_size() for t in sd.values())
    if limit is None or total <= limit:
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    shards, cur, size = [], {}, 0
    for k in sorted(sd):
        n = sd[k].numel() * sd[k].element_size()
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = sd[k]
        size += n
    shards.append(cur)
    names = []
    for i, sh in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sh, str(out / name), metadata={"format": "pt"})
        names.append(name)
    return names


def reshard(src: Path, dst: Path, shard_mib: float) -> list[str]:
    """The weights of checkpoint folder `src` (model.safetensors) written to `dst` as by
    save_weights (shards of at most shard_mib when larger)."""
    return save_weights(load_file(str(Path(src) / "model.safetensors")), Path(dst), shard_mib)


def config_json(fields: dict) -> dict:
    """The config.json written next to the weights (what transformers here writes, plus dtype)."""
    cfg = hf_config(fields).to_diff_dict()
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    cfg["torch_dtype"] = "float32"
    if fields.get(PREPEND_BOS_KEY) is not None:
        cfg[PREPEND_BOS_KEY] = fields[PREPEND_BOS_KEY]
    return cfg


def model_spec(fields: dict) -> dict:
    """What `train_micro.py config` writes: the fields, the config.json and the expected weights
    (names and shapes) as made by the transformers installed here."""
    import transformers

    model = build_model(fields, "eager")
    expected = {k: list(v.shape) for k, v in canonical_state_dict(model).items()}
    return {"fields": fields, "config_json": config_json(fields), "expected_weights": expected,
            "transformers_version": transformers.__version__,
            "parameters": sum(math.prod(sh) for sh in expected.values())}


def merge_shards(src: Path, dst: Path) -> tuple[int, int]:
    """Join the model-*-of-*.safetensors shards of `src` into one file `dst`; returns (shards, tensors)."""
    shards = sorted(Path(src).glob("model-*-of-*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no model-*-of-*.safetensors in {src}")
    sd = {}
    for sh in shards:
        sd.update(load_file(str(sh)))
    save_file({k: sd[k] for k in sorted(sd)}, str(dst), metadata={"format": "pt"})
    return len(shards), len(sd)
