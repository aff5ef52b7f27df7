"""Export orchestration: checkpoint (or random-init config) -> output folder with model.onnx
[+ model.onnx.data], manifest.json and tokenizer.json.

Everything that can be checked is checked before a byte is written (config, weight names,
shapes and dtypes, tokenizer, output folder); the files are written into a temporary folder
next to the output and moved into place at the end, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import onnx

from . import __version__
from .config import PREPEND_BOS_KEY, NeoxConfig, declared_bos, load_config_file, pythia_config
from .errors import ExportError
from .graph import OPSET, build_graph, input_names, output_names
from .graph_blocks import MASK_VALUE
from .onnx_builder import DTYPE_NAMES, DTYPES, TensorSink
from .quantize import WeightFormat
from .weights import RandomWeights, SafetensorsWeights, expected_tensors

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_FILES = (MODEL_FILE, DATA_FILE, MANIFEST_FILE, TOKENIZER_FILE)
FORMAT_VERSION = 1
# Protobuf cannot hold a message over 2 GiB; weights above this go to model.onnx.data.
EXTERNAL_THRESHOLD = 2_000_000_000


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    external_data: bool


def tokenizer_vocab_size(path: Path) -> int:
    """Number of ids the tokenizer can produce (model vocab + added tokens)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise ExportError(f"{path}: not a Hugging Face tokenizers JSON file ({e})") from e


def resolve_random_config(spec: str) -> tuple[dict, NeoxConfig, str]:
    """`--random-init` argument: a Pythia size or a config.json path -> (raw, config, label)."""
    p = Path(spec)
    if spec.endswith(".json") or p.is_file():
        raw, cfg = load_config_file(p)
        return raw, cfg, str(p)
    raw = pythia_config(spec)
    return raw, NeoxConfig.from_dict(raw, f"Pythia size {spec!r}"), raw["_name_or_path"]


def weights_nbytes(cfg: NeoxConfig, dtype: str, weights: WeightFormat = WeightFormat()) -> int:
    """Bytes of the graph's initializers (the linears' weights quantized under int8/int4)."""
    itemsize = 2 if dtype == "fp16" else 4
    total = 0
    for name, shape in expected_tensors(cfg):
        fmt = weights.head if name == "embed_out.weight" else weights
        if fmt.quantized and len(shape) == 2 and name != "gpt_neox.embed_in.weight":
            total += fmt.nbytes(shape[0], shape[1], itemsize)
            continue
        n = math.prod(shape)
        total += n * (4 if "layernorm" in name or "layer_norm" in name else itemsize)
    return total


def export(
    out_dir: Union[str, Path],
    *,
    checkpoint: Optional[Union[str, Path]] = None,
    random_init: Optional[str] = None,
    init_seed: int = 0,
    dtype: str = "fp32",
    weights: str = "fp32",
    block_size: Optional[int] = None,
    lm_head: Optional[str] = None,
    name: Optional[str] = None,
    tokenizer: Optional[Union[str, Path]] = None,
    force: bool = False,
    external_data: str = "auto",
    check: bool = True,
    log=print,
) -> ExportResult:
    """Export one model. Exactly one of `checkpoint` (an HF GPT-NeoX directory) and
    `random_init` (a Pythia size such as "2.8b", or a config.json path) must be given.
    `weights` "int8"/"int4" stores every Linear (the layers' and the LM head, unless `lm_head`
    says otherwise) block-quantized for MatMulNBits with `block_size` (quantize.py); the input
    embedding stays in `dtype`."""
    if (checkpoint is None) == (random_init is None):
        raise ExportError("give exactly one of --checkpoint DIR or --random-init SIZE|CONFIG.json")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    wfmt = WeightFormat.parse(weights, block_size, lm_head)
    if external_data not in ("auto", "always", "never"):
        raise ExportError(f"--external-data must be auto, always or never, got {external_data!r}")
    if isinstance(init_seed, bool) or not isinstance(init_seed, int) or init_seed < 0:
        raise ExportError(f"--init-seed must be a non-negative integer, got {init_seed!r}")

    # ---- source: config + weights + tokenizer
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if not ckpt.is_dir():
            raise ExportError(f"checkpoint folder {ckpt} does not exist (expected a Hugging Face model folder "
                              f"with config.json, model.safetensors and tokenizer.json)")
        raw, cfg = load_config_file(ckpt / "config.json")
        weights = SafetensorsWeights(ckpt)
        label = name or ckpt.resolve().name
        tok_path = Path(tokenizer) if tokenizer else ckpt / TOKENIZER_FILE
        if not tok_path.is_file():
            raise ExportError(f"no tokenizer at {tok_path}; put the model's tokenizer.json in the checkpoint "
                              f"folder or pass --tokenizer PATH")
    else:
        raw, cfg, src_label = resolve_random_config(random_init)
        weights = RandomWeights(cfg, init_seed)
        label = name or f"random-{Path(src_label).stem if src_label.endswith('.json') else src_label}"
        if tokenizer is None:
            raise ExportError("--random-init needs --tokenizer PATH (the tokenizer.json of the model family, "
                              "e.g. ../shared/data/pythia-tokenizer.json for Pythia sizes)")
        tok_path = Path(tokenizer)
        if not tok_path.is_file():
            raise ExportError(f"no tokenizer file at {tok_path}")
    weights.check(cfg)
    tok_vocab = tokenizer_vocab_size(tok_path)
    if tok_vocab > cfg.vocab_size:
        raise ExportError(f"tokenizer {tok_path} has {tok_vocab} ids but the model's vocab_size is "
                          f"{cfg.vocab_size}; they do not belong together")
    bos = declared_bos(raw, "config.json", tok_vocab)

    # ---- output folder
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"output path {out} exists and is not a folder")
        if any(out.iterdir()) and not force:
            raise ExportError(f"output folder {out} already exists; pass --force to overwrite its "
                              f"{', '.join(OUTPUT_FILES)} (other files are left alone)")
    out.parent.mkdir(parents=True, exist_ok=True)

    nbytes = weights_nbytes(cfg, dtype, wfmt)
    use_external = external_data == "always" or (external_data == "auto" and nbytes > EXTERNAL_THRESHOLD)
    if external_data == "never" and nbytes > EXTERNAL_THRESHOLD:
        raise ExportError(f"weights are {nbytes / 1e9:.2f} GB, over protobuf's 2 GB limit; "
                          f"use --external-data auto or always")

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        log(f"exporting {label}: {cfg.num_layers} layers, hidden {cfg.hidden_size}, heads {cfg.num_heads}, "
            f"vocab {cfg.vocab_size}, {DTYPE_NAMES[dtype]}, "
            + (f"{wfmt.name} linears (block {wfmt.block_size}, LM head {wfmt.lm_head}), " if wfmt.quantized else "")
            + f"weights {nbytes / 1e9:.2f} GB"
            + (f" -> {DATA_FILE}" if use_external else ""))
        sink = TensorSink(tmp / DATA_FILE if use_external else None)
        digest = hashlib.sha256() if random_init is not None else None

        def get_tensor(hf_name: str):
            arr = weights.get(hf_name)
            if digest is not None:
                digest.update((arr if arr.flags.c_contiguous else np.ascontiguousarray(arr.T)).data)
            return arr

        try:
            model, quantized = build_graph(cfg, dtype, get_tensor, sink, graph_name=label, weights=wfmt)
        finally:
            sink.close()
        onnx.save_model(model, str(tmp / MODEL_FILE))
        del model
        if check:
            onnx.checker.check_model(str(tmp / MODEL_FILE))

        if random_init is not None:
            source = {"path": None, "random_init_from": src_label, "sha256": digest.hexdigest(),
                      "sha256_of": "the float32 random weights as drawn (linear weights as [in, out]), in graph order"}
        else:
            source = weights.source()
            source["sha256_of"] = "the safetensors weight file(s), concatenated in the order listed"
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": label,
            "model_type": "gpt_neox",
            "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads,
            "head_dim": cfg.head_dim,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "vocab_size": cfg.vocab_size,
            "rotary_dims": cfg.rotary_dims,
            "rotary_base": cfg.rotary_base,
            "max_position_embeddings": cfg.max_position_embeddings,
            "layer_norm_eps": cfg.layer_norm_eps,
            "use_parallel_residual": cfg.use_parallel_residual,
            "dtype": DTYPE_NAMES[dtype],
            "weights": wfmt.manifest(quantized),
            "opset": OPSET,
            "inputs": input_names(cfg.num_layers),
            "outputs": output_names(cfg.num_layers),
            "mask_value": MASK_VALUE,
            "external_data": DATA_FILE if use_external else None,
            "exporter_version": __version__,
            "source": source,
            "random_init": random_init is not None,
            "tokenizer_vocab_size": tok_vocab,
            "bos_token_id": raw.get("bos_token_id"),
            "eos_token_id": raw.get("eos_token_id"),
        }
        if random_init is not None:
            manifest["init_seed"] = init_seed
        if bos is not None:
            manifest[PREPEND_BOS_KEY] = bos
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(tok_path, tmp / TOKENIZER_FILE)

        # ---- move into place
        out.mkdir(exist_ok=True)
        for f in OUTPUT_FILES:
            target = out / f
            if (tmp / f).exists():
                os.replace(tmp / f, target)
            elif target.exists():
                target.unlink()  # a stale model.onnx.data from an earlier, larger export
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out}/{MODEL_FILE}" + (f" + {DATA_FILE}" if use_external else "") + f", {MANIFEST_FILE}, {TOKENIZER_FILE}")
    return ExportResult(out, manifest, use_external)
