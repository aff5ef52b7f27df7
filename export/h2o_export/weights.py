"""Where the weights come from: a safetensors checkpoint (one file or a sharded index) read one
tensor at a time, or seeded random values at the config's shapes.

Both sources hand out one tensor per call as a fresh numpy array (HF layout, e.g. Linear
weights [out, in]); nothing keeps the whole model in memory. The safetensors reader is a small
reader of the documented format (8-byte little-endian header length, JSON header, raw
little-endian data) so that bfloat16 checkpoints can be read without torch and so that each
tensor is read with a plain file read instead of a memory map (a map of a 5 GB file counts
towards the process's resident memory as it is touched).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .config import NeoxConfig
from .errors import ExportError

# The model dtypes (--dtype): weights and K/V. Here rather than in onnx_builder so that the
# exporter checks its input without importing onnx (a refusal is then quick).
DTYPES = {"fp32": np.float32, "fp16": np.float16}
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16"}

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Buffers some GPT-NeoX checkpoints carry that are not weights (causal-mask and RoPE caches of
# older transformers versions); they are recomputed by the graph, so they are ignored.
IGNORED_TENSORS = re.compile(
    r"^gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)$"
    r"|^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$|^model\.rotary_emb\.inv_freq$"
)

_DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # read as raw 16-bit words, widened to float32 below
}


def is_norm(name: str) -> bool:
    """A normalisation's weight or bias (kept float32; random init: weight 1, bias 0)."""
    return "layernorm" in name or "layer_norm" in name or name == "model.norm.weight"


def llama_tensors(cfg) -> list[tuple[str, tuple[int, ...]]]:
    """(HF name, shape) of every tensor a Llama / Qwen2 graph needs, in the order the graph uses them."""
    H, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [(cfg.embed_name, (V, H))]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", (H,)))
        for proj, n in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            out.append((p + f"self_attn.{proj}.weight", (n, H)))
            if cfg.qkv_bias:
                out.append((p + f"self_attn.{proj}.bias", (n,)))
        out.append((p + "self_attn.o_proj.weight", (H, q)))
        if cfg.o_bias:
            out.append((p + "self_attn.o_proj.bias", (H,)))
        out += [
            (p + "post_attention_layernorm.weight", (H,)),
            (p + "mlp.gate_proj.weight", (I, H)),
            (p + "mlp.up_proj.weight", (I, H)),
            (p + "mlp.down_proj.weight", (H, I)),
        ]
    out += [("model.norm.weight", (H,)), (cfg.head_name, (V, H))]
    return out


def expected_tensors(cfg: NeoxConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(HF name, shape) of every tensor the graph needs, in the order the graph uses them."""
    if cfg.model_type != "gpt_neox":
        return llama_tensors(cfg)
    H, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    out: list[tuple[str, tuple[int, ...]]] = [("gpt_neox.embed_in.weight", (V, H))]
    for i in range(cfg.num_layers):
        p = f"gpt_neox.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (H,)),
            (p + "input_layernorm.bias", (H,)),
            (p + "attention.query_key_value.weight", (3 * H, H)),
        ]
        if cfg.attention_bias:
            out.append((p + "attention.query_key_value.bias", (3 * H,)))
        out.append((p + "attention.dense.weight", (H, H)))
        if cfg.attention_bias:
            out.append((p + "attention.dense.bias", (H,)))
        out += [
            (p + "post_attention_layernorm.weight", (H,)),
            (p + "post_attention_layernorm.bias", (H,)),
            (p + "mlp.dense_h_to_4h.weight", (I, H)),
            (p + "mlp.dense_h_to_4h.bias", (I,)),
            (p + "mlp.dense_4h_to_h.weight", (H, I)),
            (p + "mlp.dense_4h_to_h.bias", (H,)),
        ]
    out += [
        ("gpt_neox.final_layer_norm.weight", (H,)),
        ("gpt_neox.final_layer_norm.bias", (H,)),
        ("embed_out.weight", (V, H)),
    ]
    return out


@dataclass(frozen=True)
class _Entry:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int


def _read_header(path: Path) -> dict[str, _Entry]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ExportError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise ExportError(f"{path}: not a safetensors file (header length {n} is invalid)")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise ExportError(f"--checkpoint: cannot read {path} ({e.strerror or e}); check that the checkpoint's "
                          f"files are readable") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
    if not isinstance(header, dict):
        raise ExportError(f"{path}: not a safetensors file (header is not a JSON object)")
    base = 8 + n
    entries: dict[str, _Entry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"{path}: malformed header entry for tensor {name!r}") from e
        if not (0 <= begin <= end and base + end <= size):
            raise ExportError(
                f"{path}: tensor {name!r} lies outside the file (truncated download? "
                f"re-download the checkpoint)"
            )
        if dtype in _DTYPES and end - begin != math.prod(shape) * _DTYPES[dtype].itemsize:
            raise ExportError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape}")
        entries[name] = _Entry(path, dtype, shape, base + begin, end - begin)
    return entries


class SafetensorsWeights:
    """Tensors of a checkpoint directory: model.safetensors or model.safetensors.index.json."""

    def __init__(self, checkpoint: Path):
        self.dir = checkpoint
        single, index = checkpoint / SINGLE_FILE, checkpoint / INDEX_FILE
        if single.is_file():
            self.files = [single]
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError("weight_map is not an object")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise ExportError(f"{index}: not a safetensors index with a weight_map ({e})") from e
            odd = [f for f in weight_map.values() if not isinstance(f, str) or f in ("", ".", "..") or Path(f).name != f]
            if odd:
                raise ExportError(f"{index}: weight_map names {json.dumps(odd[0])}, which is not the name of a shard "
                                  f"file in the checkpoint folder; re-download the checkpoint's index")
            self.files = sorted({checkpoint / f for f in weight_map.values()})
            absent = [p.name for p in self.files if not p.is_file()]
            if absent:
                raise ExportError(
                    f"{index} names shard file(s) that are missing: {', '.join(absent)}; "
                    f"download the complete checkpoint"
                )
        else:
            for p in (single, index):
                if p.exists():
                    raise ExportError(f"--checkpoint {checkpoint}: {p} is not a regular file (a folder?); it must be "
                                      f"the checkpoint's {p.name}")
            other = [p.name for p in checkpoint.glob("*.bin")] if checkpoint.is_dir() else []
            hint = (
                f" (found {', '.join(other)}: PyTorch pickles are not read; convert them to "
                f"safetensors, e.g. load with transformers and save_pretrained(safe_serialization=True))"
                if other
                else ""
            )
            raise ExportError(f"no {SINGLE_FILE} or {INDEX_FILE} in --checkpoint {checkpoint}{hint}")
        self.entries: dict[str, _Entry] = {}
        self.tied = ("embed_out.weight", "gpt_neox.embed_in.weight")  # (head, embedding): check() sets them
        for path in self.files:
            for name, entry in _read_header(path).items():
                if name in self.entries:
                    raise ExportError(f"tensor {name!r} appears in both {self.entries[name].file} and {path}")
                self.entries[name] = entry
        if index.is_file() and not single.is_file():
            for name, fname in weight_map.items():
                if name in self.entries and self.entries[name].file.name != fname:
                    raise ExportError(f"{index}: {name!r} is listed in {fname} but stored in "
                                      f"{self.entries[name].file.name}")

    def check(self, cfg: NeoxConfig) -> None:
        """Every tensor the config needs is present with its shape and a float dtype; nothing else."""
        expected = dict(expected_tensors(cfg))
        if cfg.tie_word_embeddings and cfg.head_name not in self.entries:
            expected.pop(cfg.head_name)
        problems = []
        missing = [n for n in expected if n not in self.entries]
        if missing:
            problems.append(f"missing {len(missing)} tensor(s): {_short(missing)}")
        wrong = [
            f"{n} has shape {list(self.entries[n].shape)}, config needs {list(s)}"
            for n, s in expected.items()
            if n in self.entries and self.entries[n].shape != s
        ]
        if wrong:
            problems.append("mismatched shape(s): " + _short(wrong))
        bad_dtype = [f"{n} ({e.dtype})" for n, e in self.entries.items() if n in expected and e.dtype not in _DTYPES]
        if bad_dtype:
            problems.append("unsupported dtype(s) (need F32, F16, BF16 or F64): " + _short(bad_dtype))
        unexpected = [n for n in self.entries if n not in expected and not IGNORED_TENSORS.match(n)
                      and not (n == cfg.head_name and cfg.tie_word_embeddings)]
        if unexpected:
            arch = "GPT-NeoX" if cfg.model_type == "gpt_neox" else cfg.model_type
            problems.append(f"{len(unexpected)} tensor(s) that a {arch} model with this config does not have: "
                            + _short(unexpected))
        self.tied = (cfg.head_name, cfg.embed_name)
        if problems:
            raise ExportError(
                f"weights in {self.dir} do not match its config.json "
                f"({cfg.num_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}): "
                + "; ".join(problems)
            )

    def get(self, name: str) -> np.ndarray:
        if name == self.tied[0] and name not in self.entries:
            name = self.tied[1]  # tie_word_embeddings: the LM head is the input embedding
        e = self.entries[name]
        dt = _DTYPES[e.dtype]
        arr = np.fromfile(e.file, dtype=dt, count=e.nbytes // dt.itemsize, offset=e.offset)
        if arr.size * dt.itemsize != e.nbytes:
            raise ExportError(f"{e.file}: tensor {name!r} ends past the end of the file, which changed or was "
                              f"truncated while exporting; re-download the checkpoint")
        if e.dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.reshape(e.shape)

    def sha256(self) -> str:
        """sha256 of the weight files' bytes, in sorted file order (one file: its sha256sum)."""
        h = hashlib.sha256()
        for path in self.files:
            with open(path, "rb") as f:
                while chunk := f.read(16 << 20):
                    h.update(chunk)
        return h.hexdigest()

    def source(self) -> dict:
        return {
            "path": str(self.dir.resolve()),
            "weight_files": [p.name for p in self.files],
            "sha256": self.sha256(),
        }


class RandomWeights:
    """Seeded random weights at the config's shapes, initialised like transformers'
    GPTNeoXPreTrainedModel._init_weights: Linear and Embedding weights ~ N(0, initializer_range),
    biases 0, LayerNorm weight 1 and bias 0. Each tensor has its own stream derived from
    (seed, tensor index), so any tensor can be produced alone. With tie_word_embeddings the
    output embedding is the input embedding."""

    def __init__(self, cfg: NeoxConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.names = {n: (i, s) for i, (n, s) in enumerate(expected_tensors(cfg))}

    def check(self, cfg: NeoxConfig) -> None:
        return None  # shapes come from the config itself

    def get(self, name: str) -> np.ndarray:
        if name == self.cfg.head_name and self.cfg.tie_word_embeddings:
            # tied (config tie_word_embeddings): the output embedding is the input one, as in
            # transformers and in a tied checkpoint (SafetensorsWeights.get), not a draw of its own
            name = self.cfg.embed_name
        index, shape = self.names[name]
        if is_norm(name):
            return (np.ones if name.endswith(".weight") else np.zeros)(shape, dtype=np.float32)
        if name.endswith(".bias"):
            return np.zeros(shape, dtype=np.float32)
        rng = np.random.default_rng([self.seed, index])
        if len(shape) == 2 and name != self.cfg.embed_name:
            # Linear weight [out, in]: drawn as [in, out] and returned as a transposed view, so
            # that the graph's [in, out] layout needs no transposing copy (i.i.d. values either way)
            arr = rng.standard_normal(shape[::-1], dtype=np.float32)
            arr *= np.float32(self.cfg.initializer_range)
            return arr.T
        arr = rng.standard_normal(shape, dtype=np.float32)
        arr *= np.float32(self.cfg.initializer_range)
        return arr


def _short(items: Iterable[str], limit: int = 6) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
