"""Export orchestration: checkpoint (or random-init config) -> output folder with model.onnx
[+ model.onnx.data], manifest.json and tokenizer.json.

Everything that can be checked is checked before a byte is written (config, the memory and
disk space the export needs, weight names, shapes and dtypes, tokenizer, output folder); the
files are written into a temporary folder next to the output and moved into place at the end,
with Ctrl-C, SIGTERM and SIGHUP held back during that move, so a failed or interrupted export leaves
nothing behind and an earlier export in the same folder either stays whole or is replaced whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from . import __version__
from .config import (F32_MAX, PREPEND_BOS_KEY, PYTHIA_SIZES, NeoxConfig, declared_bos, load_config_file,
                     pythia_config, show)
from .config_llama import LLAMA_SIZES, LlamaConfig, llama_size_config
from .errors import ExportError, ExportInterrupted
from .quantize import WeightFormat
from .graph_ops import GRAPH_OPS
from .resources import DISK_MARGIN, disk_free, gib, memory_available, memory_needed
from .weights import DTYPE_NAMES, DTYPES, RandomWeights, SafetensorsWeights, expected_tensors, is_norm

# onnx and the graph modules are imported when the export starts writing (export()): the checks
# before it need only numpy, so bad input is refused without loading onnx.

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_FILES = (MODEL_FILE, DATA_FILE, MANIFEST_FILE, TOKENIZER_FILE)
FORMAT_VERSION = 1
# Protobuf cannot hold a message over 2 GiB; weights above this go to model.onnx.data.
EXTERNAL_THRESHOLD = 2_000_000_000
# Largest |value| of a standard normal draw taken as possible (over 10^10 draws the maximum is
# about 6.5): random weights are initializer_range times at most this.
NORMAL_MAX = 8.0
FLOAT_MAX = {"fp32": F32_MAX, "fp16": 65504.0}
SIZES = ", ".join([s[len("pythia-"):] for s in PYTHIA_SIZES] + list(LLAMA_SIZES))
CHECKPOINT_FILES = "config.json, model.safetensors (or model.safetensors.index.json and its shards) and tokenizer.json"
MAX_INIT_SEED = 2**64 - 1
# How keys are cached (manifest `key_cache`, absent = rotated): rotated at their position, or
# unrotated and rotated by the graph at the positions the engine feeds (rolling positions).
KEY_CACHES = ("rotated", "unrotated")  # the engine reads the manifest's init_seed as an unsigned 64-bit integer


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    external_data: bool


def tokenizer_vocab_size(path: Path, data: Optional[bytes] = None) -> int:
    """Number of ids the tokenizer can produce (model vocab + added tokens)."""
    from tokenizers import Tokenizer

    try:
        if data is None:
            return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
        return Tokenizer.from_str(data.decode("utf-8")).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise ExportError(f"{path}: not a Hugging Face tokenizers JSON file ({str(e)[:200]}); "
                          f"give the model family's tokenizer.json") from None


def resolve_random_config(spec: str) -> tuple[dict, NeoxConfig, str]:
    """`--random-init` argument: a Pythia size or a config.json path -> (raw, config, label)."""
    p = Path(spec)
    if spec.strip() == "":
        raise ExportError(f"--random-init is empty; give a Pythia size ({SIZES}) or the path of a config.json")
    if p.is_dir():
        raise ExportError(f"--random-init {spec} is a folder; give the path of a config.json (such as "
                          f"{p / 'config.json'}) or a Pythia size, or --checkpoint {spec} to export its weights")
    if spec.endswith(".json") or p.exists() or p.is_symlink():
        if not p.exists():
            raise ExportError(f"--random-init {spec} does not exist; give a Pythia size ({SIZES}) or the path of "
                              f"an existing GPT-NeoX config.json")
        raw, cfg = load_config_file(p)
        return raw, cfg, str(p)
    raw = llama_size_config(spec)
    if raw is not None:
        return raw, LlamaConfig.from_dict(raw, f"size {spec!r}"), raw["_name_or_path"]
    raw = pythia_config(spec)
    return raw, NeoxConfig.from_dict(raw, f"Pythia size {spec!r}"), raw["_name_or_path"]


def llama_declared_bos(raw: dict, cfg, ckpt: Optional[Path]) -> Optional[int]:
    """The BOS a Llama-family model declares (the manifest's prepend_bos_token_id): config.json's
    prepend_bos_token_id when given; else, for model_type llama, bos_token_id when the checkpoint's
    tokenizer adds it: add_bos_token of config.json or tokenizer_config.json, else whether
    tokenizer.json's post-processor puts the BOS first (Llama 2/3 and TinyLlama do, SmolLM2's
    byte-level one does not), else true (transformers' LlamaTokenizer). Qwen2's tokenizer adds none;
    a random-init shape declares none (its ids come from a borrowed tokenizer that adds none)."""
    explicit = declared_bos(raw, "config.json", cfg.vocab_size)
    if explicit is not None or cfg.model_type != "llama" or cfg.bos_token_id is None or ckpt is None:
        return explicit
    add = raw.get("add_bos_token")
    tc = ckpt / "tokenizer_config.json"
    if add is None and tc.is_file():
        try:
            add = json.loads(tc.read_text(encoding="utf-8")).get("add_bos_token")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
            raise ExportError(f"{tc}: cannot read add_bos_token ({e}); correct or remove the file") from None
    if add is not None and not isinstance(add, bool):
        raise ExportError(f"add_bos_token must be true or false, got {show(add)}; correct it")
    if add is None and (ckpt / "tokenizer.json").is_file():
        add = _post_processor_adds(ckpt / "tokenizer.json", cfg.bos_token_id)
    return cfg.bos_token_id if add in (None, True) else None


def _post_processor_adds(path: Path, bos: int) -> bool:
    """Whether tokenizer.json's post-processor (TemplateProcessing, alone or in a Sequence) starts a
    single sequence with the special token whose id is `bos`."""
    try:
        post = json.loads(path.read_text(encoding="utf-8")).get("post_processor") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ExportError(f"{path}: cannot read its post_processor ({e}); correct or remove the file") from None
    steps = post.get("processors", []) if post.get("type") == "Sequence" else [post]
    for step in steps:
        if not isinstance(step, dict) or step.get("type") != "TemplateProcessing":
            continue
        first = (step.get("single") or [{}])[0]
        special = first.get("SpecialToken", {}).get("id") if isinstance(first, dict) else None
        ids = (step.get("special_tokens") or {}).get(special, {}).get("ids", []) if special else []
        if ids[:1] == [bos]:
            return True
    return False


def default_name(checkpoint: Optional[Union[str, Path]], random_init: Optional[str]) -> str:
    """The manifest's name when --name is not given (and --out's default, models/<name>): the
    checkpoint folder's name, or random-<config file stem | pythia-SIZE>."""
    if checkpoint is not None:
        return Path(checkpoint).resolve().name
    p = Path(random_init)
    if random_init.endswith(".json") or p.is_file():
        return f"random-{p.stem}"
    try:
        return "random-" + pythia_config(random_init)["_name_or_path"]
    except ExportError:
        return f"random-{random_init}"


def _tensor_nbytes(cfg, name: str, shape: tuple[int, ...], itemsize: int, weights: WeightFormat) -> int:
    fmt = weights.head if name == cfg.head_name else weights
    if fmt.quantized and len(shape) == 2 and name != cfg.embed_name:
        return fmt.nbytes(shape[0], shape[1], itemsize) + fmt.prefill_nbytes(shape[0], shape[1])
    return math.prod(shape) * (4 if is_norm(name) else itemsize)


def weights_nbytes(cfg: NeoxConfig, dtype: str, weights: WeightFormat = WeightFormat()) -> int:
    """Bytes of the graph's initializers (the linears' weights quantized under int8/int4, with
    their prefill copies).
    Arithmetic on one layer times the layer count, so any layer count costs the same."""
    itemsize = 2 if dtype == "fp16" else 4
    total = 0
    for name, shape in expected_tensors(dataclasses.replace(cfg, num_layers=1)):
        n = _tensor_nbytes(cfg, name, shape, itemsize, weights)
        total += n * cfg.num_layers if name.startswith(cfg.layer_prefix) else n
    return total


def _check_checkpoint(ckpt: Path) -> None:
    if str(ckpt) == "":
        raise ExportError(f"--checkpoint is empty; give the folder of a Hugging Face checkpoint ({CHECKPOINT_FILES})")
    if not ckpt.exists():
        what = "is a broken symbolic link" if ckpt.is_symlink() else "does not exist"
        raise ExportError(f"--checkpoint {ckpt} {what}; give the folder of a Hugging Face checkpoint "
                          f"({CHECKPOINT_FILES})")
    if not ckpt.is_dir():
        hint = (f" (for the checkpoint this file belongs to, pass its folder: --checkpoint {ckpt.parent})"
                if ckpt.name.endswith((".json", ".safetensors")) else "")
        raise ExportError(f"--checkpoint {ckpt} is a file, not a folder; give the folder that holds "
                          f"{CHECKPOINT_FILES}{hint}")
    try:
        next(ckpt.iterdir(), None)
    except OSError as e:
        raise ExportError(f"--checkpoint {ckpt}: cannot read the folder ({e.strerror}); "
                          f"give a checkpoint folder you can read") from None


def _read_tokenizer(tok_path: Path, flag: str, given: bool) -> bytes:
    """The tokenizer file's bytes (checked for what it is before it is read)."""
    if given and str(tok_path) in ("", "."):
        raise ExportError("--tokenizer is empty; give the path of the model's tokenizer.json")
    if tok_path.is_dir():
        raise ExportError(f"{flag} {tok_path} is a folder, not a file; give the tokenizer.json file itself"
                          + (f" (such as {tok_path / TOKENIZER_FILE})" if (tok_path / TOKENIZER_FILE).is_file() else ""))
    if not tok_path.exists():
        if given:
            raise ExportError(f"--tokenizer {tok_path} does not exist; give the path of the model family's "
                              f"tokenizer.json (e.g. ../shared/data/pythia-tokenizer.json for Pythia)")
        raise ExportError(f"no tokenizer at {tok_path}; put the model's tokenizer.json in the --checkpoint folder "
                          f"or pass --tokenizer PATH")
    try:
        size = tok_path.stat().st_size
        if size > 1 << 30:
            raise ExportError(f"{flag} {tok_path}: {size} bytes is too large for a tokenizer.json; give the model's "
                              f"tokenizer.json")
        return tok_path.read_bytes()
    except OSError as e:
        raise ExportError(f"{flag} {tok_path}: cannot read the file ({e.strerror}); give a tokenizer.json you can "
                          f"read") from None


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def _check_out(out: Path, force: bool, checkpoint: Optional[Path]) -> None:
    """The output folder can take the export (without --force: is new or empty)."""
    if str(out) == "":
        raise ExportError("--out is empty; give the output folder (created if missing)")
    if out.is_symlink() and not out.exists():
        raise ExportError(f"--out {out} is a broken symbolic link; remove it or give another folder")
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is a file, not a folder; give a folder path "
                              f"(it is created if missing)")
        try:
            nonempty = next(out.iterdir(), None) is not None
        except OSError as e:
            raise ExportError(f"--out {out}: cannot read the folder ({e.strerror}); give a folder you can "
                              f"read and write") from None
        if nonempty and not force:
            raise ExportError(f"--out {out} already exists and is not empty; pass --force to replace its "
                              f"{', '.join(OUTPUT_FILES)} (other files are left alone), or give another --out")
        if checkpoint is not None and out.resolve() == checkpoint.resolve():
            raise ExportError(f"--out {out} is the --checkpoint folder: the export would replace the checkpoint's "
                              f"tokenizer.json; give another --out")
        for f in OUTPUT_FILES:
            t = out / f
            if t.is_dir() and not t.is_symlink():
                raise ExportError(f"--out {out}: {t} is a folder; the export writes a file of that name: "
                                  f"remove it or give another --out")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ExportError(f"--out {out}: the folder is not writable; give a folder you can write to")
        stage = out.absolute().parent
    else:
        stage = _nearest_existing(out.parent)
        if not stage.is_dir():
            raise ExportError(f"--out {out}: cannot create the folder because {stage} is a file, not a folder; "
                              f"give --out a path whose parent folders are folders, not files (or do not exist yet)")
    if not os.access(stage, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: cannot write in {stage} (not writable), where the export is staged and "
                          f"its folder created; give --out in a folder you can write to")


def _write_error(out: Path, e: OSError) -> ExportError:
    """An OSError while writing the output: one line naming --out, the file and the fix."""
    where = e.filename or out
    why = e.strerror or str(e)
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        fix = "free space on that file system or give --out on another one"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "give --out in a folder you can write to"
    elif e.errno == errno.ENOTDIR:
        fix = "give --out a path whose parent folders are folders, not files"
    else:
        fix = "give --out a folder on a writable file system with enough space"
    return ExportError(f"--out {out}: cannot write {where} ({why}); {fix}")


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP are recorded instead of acted on inside the block (the list it yields
    holds them); the caller decides what to do with them afterwards. A no-op outside the main
    thread, where Python cannot set handlers."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    old = {}
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        h = signal.getsignal(s)
        if h is signal.SIG_IGN:  # ignored (a background job's SIGINT, nohup's SIGHUP): stays ignored
            continue
        old[s] = h
        signal.signal(s, lambda signum, _frame: got.append(signum))
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _redeliver(got: list[int]) -> None:
    """Act on signals held back by `signals_held`, as if they came now."""
    for s in dict.fromkeys(got):
        if s == signal.SIGINT and signal.getsignal(s) is signal.default_int_handler:
            raise ExportInterrupted(s)
        signal.raise_signal(s)


def export(
    out_dir: Union[str, Path],
    *,
    checkpoint: Optional[Union[str, Path]] = None,
    random_init: Optional[str] = None,
    init_seed: Optional[int] = None,
    dtype: str = "fp32",
    weights: str = "fp32",
    block_size: Optional[int] = None,
    lm_head: Optional[str] = None,
    name: Optional[str] = None,
    tokenizer: Optional[Union[str, Path]] = None,
    force: bool = False,
    external_data: str = "auto",
    check: bool = True,
    layer_masks: bool = False,
    graph_ops: str = "plain",
    accuracy_level: Optional[int] = None,
    key_cache: str = "rotated",
    prefill_weights: Optional[str] = None,
    prefill_min_tokens: Optional[int] = None,
    log=print,
) -> ExportResult:
    """Export one model. Exactly one of `checkpoint` (an HF GPT-NeoX directory) and
    `random_init` (a Pythia size such as "2.8b", or a config.json path) must be given;
    `init_seed` only with `random_init` (default 0).
    `weights` "int8"/"int4" stores every Linear (the layers' and the LM head, unless `lm_head`
    says otherwise) block-quantized for MatMulNBits with `block_size` (quantize.py); the input
    embedding stays in `dtype`. `layer_masks` gives every layer its own attention-mask input
    (`attention_mask.{i}`; graph.build_graph), so layers may hold different numbers of cache slots
    (per-layer budgets); the manifest then says `"attention_masks": "per_layer"`.
    `graph_ops` "fused" builds the same arithmetic with fewer nodes (graph_blocks.GRAPH_OPS; the
    manifest then says `"graph_ops": "fused"`); `accuracy_level` is MatMulNBits' (quantize.py).
    `key_cache` "unrotated" caches keys before the rotary embedding and rotates them in the graph by
    the `key_positions.{i}` the engine feeds (rolling positions, `@rolling`); the manifest then says
    `"key_cache": "unrotated"` ("rotated", the default, leaves the graph as it always was).
    `prefill_weights` "int8-dq" (with int8/int4 weights) adds an int8 copy of the layers' weights
    that steps of at least `prefill_min_tokens` new tokens run on (graph_route.py; quantize.py).
    Ctrl-C / SIGTERM / SIGHUP while exporting: ExportInterrupted (nothing written, or, if it came while the
    finished export was moved into place, that move completed; `complete` says which)."""
    if (checkpoint is None) == (random_init is None):
        raise ExportError("give exactly one of --checkpoint DIR or --random-init SIZE|CONFIG.json")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    wfmt = WeightFormat.parse(weights, block_size, lm_head, accuracy_level, prefill_weights, prefill_min_tokens)
    if wfmt.dynamic and dtype == "fp16":
        raise ExportError("--weights int8-dq needs --dtype fp32 (DynamicQuantizeMatMul takes float32 activations); "
                          "use --weights int8 or int4 with --dtype fp16")
    if wfmt.prefill is not None and dtype == "fp16":
        raise ExportError(f"--prefill-weights {wfmt.prefill} needs --dtype fp32 (DynamicQuantizeMatMul takes float32 "
                          f"activations); drop --prefill-weights for --dtype fp16")
    if graph_ops not in GRAPH_OPS:
        raise ExportError(f"--graph-ops must be one of {', '.join(GRAPH_OPS)}, got {graph_ops!r}")
    if key_cache not in KEY_CACHES:
        raise ExportError(f"--key-cache must be one of {', '.join(KEY_CACHES)}, got {key_cache!r}")
    rolling_keys = key_cache == "unrotated"
    if external_data not in ("auto", "always", "never"):
        raise ExportError(f"--external-data must be auto, always or never, got {external_data!r}")
    if init_seed is not None:
        if checkpoint is not None:
            raise ExportError("--init-seed only applies to --random-init (a checkpoint's weights are not drawn); "
                              "drop it")
        if isinstance(init_seed, bool) or not isinstance(init_seed, int) or not 0 <= init_seed <= MAX_INIT_SEED:
            raise ExportError(f"--init-seed must be an integer from 0 to {MAX_INIT_SEED}, got {init_seed!r}")
    if name is not None and (not isinstance(name, str) or name.strip() == ""):
        raise ExportError("--name is empty; give a name for the manifest, or leave --name out for the default")
    out = Path(out_dir)
    if str(out_dir) == "":
        raise ExportError("--out is empty; give the output folder (created if missing)")

    # ---- source: config (checked first: nothing below loops over a config's layers before it)
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        _check_checkpoint(ckpt)
        cfg_path = ckpt / "config.json"
        if not cfg_path.exists():
            raise ExportError(f"--checkpoint {ckpt} has no config.json; a Hugging Face checkpoint folder holds "
                              f"{CHECKPOINT_FILES}")
        if cfg_path.is_dir():
            raise ExportError(f"--checkpoint {ckpt}: {cfg_path} is a folder, not a file; it must be the model's "
                              f"config.json")
        raw, cfg = load_config_file(cfg_path)
        origin = str(ckpt / "config.json")
        label = name or ckpt.resolve().name
    else:
        ckpt = None
        init_seed = 0 if init_seed is None else init_seed
        raw, cfg, src_label = resolve_random_config(random_init)
        origin = src_label if src_label.endswith(".json") or Path(src_label).exists() else f"Pythia size {random_init!r}"
        label = name or f"random-{Path(src_label).stem if src_label.endswith('.json') else src_label}"
        if tokenizer is None:
            raise ExportError("--random-init needs --tokenizer PATH (the tokenizer.json of the model family, "
                              "e.g. ../shared/data/pythia-tokenizer.json for Pythia sizes)")
        limit = FLOAT_MAX[dtype]
        if cfg.initializer_range * NORMAL_MAX > limit:
            raise ExportError(
                f"{origin}: initializer_range {show(cfg.initializer_range)} draws random weights beyond "
                f"{DTYPE_NAMES[dtype]}'s range (±{limit:.6g}); give a smaller initializer_range (transformers' "
                f"default: 0.02)" + (" or --dtype fp32" if dtype == "fp16" else ""))

    # ---- what the machine must hold: refused here rather than running out half way
    nbytes = weights_nbytes(cfg, dtype, wfmt)
    use_external = external_data == "always" or (external_data == "auto" and nbytes > EXTERNAL_THRESHOLD)
    if external_data == "never" and nbytes > EXTERNAL_THRESHOLD:
        raise ExportError(f"weights are {nbytes / 1e9:.2f} GB, over protobuf's 2 GB limit; "
                          f"use --external-data auto or always")
    parts, avail = memory_needed(cfg, nbytes, inline=not use_external), memory_available()
    need = sum(b for _, b in parts)
    if avail is not None and need > avail:
        what, most = max(parts, key=lambda p: p[1])
        raise ExportError(
            f"{origin}: exporting this model needs about {gib(need)} of memory, most of it for {what} "
            f"({gib(most)}), but only {gib(avail)} is available (MemAvailable, cgroup and ulimit -v); check "
            f"hidden_size, intermediate_size, vocab_size and num_hidden_layers"
            + ("" if use_external else ", or pass --external-data always")
            + ", or export on a machine with more memory")

    # ---- weights and tokenizer
    if ckpt is not None:
        try:
            source = SafetensorsWeights(ckpt)
        except OSError as e:
            raise ExportError(f"--checkpoint {ckpt}: cannot read {e.filename} ({e.strerror})") from None
        tok_given = tokenizer is not None
        tok_path = Path(tokenizer) if tok_given else ckpt / TOKENIZER_FILE
    else:
        source = RandomWeights(cfg, init_seed)
        tok_given, tok_path = True, Path(tokenizer)
    source.check(cfg)
    tok_bytes = _read_tokenizer(tok_path, "--tokenizer" if tok_given else "--checkpoint's", tok_given)
    tok_vocab = tokenizer_vocab_size(tok_path, tok_bytes)
    # A Llama-family shape drawn at random has no tokenizer of its own: it borrows one (the manifest says
    # which, "own": false) whose ids may run past its vocabulary; the engine refuses those ids when fed.
    borrowed = random_init is not None and cfg.model_type != "gpt_neox"
    if tok_vocab > cfg.vocab_size and not borrowed:
        raise ExportError(f"tokenizer {tok_path} has {tok_vocab} ids but the model's vocab_size is "
                          f"{cfg.vocab_size}; they do not belong together: give the model's own tokenizer")
    if cfg.model_type == "gpt_neox":
        bos = declared_bos(raw, "config.json", tok_vocab)
    else:
        bos = llama_declared_bos(raw, cfg, ckpt)

    # ---- output folder and its disk
    _check_out(out, force, ckpt)
    free, total = disk_free(out)
    writes = nbytes + len(tok_bytes) + DISK_MARGIN
    if total == 0:
        raise ExportError(f"--out {out} is on a file system that holds no files (such as /proc or /sys); give "
                          f"--out on a disk")
    if free is not None and writes > free:
        raise ExportError(f"--out {out}: the export writes about {gib(writes)} but the file system holding it has "
                          f"{gib(free)} free; free space or give --out on another file system")

    # ---- write: parents, a temporary sibling, then everything moved into place at once
    import onnx

    from .graph import OPSET, build_graph, input_names, output_names
    from .graph_blocks import MASK_VALUE
    from .onnx_builder import TensorSink

    created: list[Path] = []  # parent folders this export made (removed again if it fails)
    tmp: Optional[Path] = None
    done = False
    try:
        try:
            with signals_held() as got:
                missing_parents = []
                p = out.absolute().parent
                while not p.exists():
                    missing_parents.append(p)
                    p = p.parent
                for d in reversed(missing_parents):
                    d.mkdir()
                    created.append(d)
                tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent))
            _redeliver(got)
            log(f"exporting {label} ({cfg.model_type}): {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
                f"heads {cfg.num_heads}" + (f" (KV {cfg.kv_heads})" if cfg.kv_heads != cfg.num_heads else "") + ", "
                f"vocab {cfg.vocab_size}, {DTYPE_NAMES[dtype]}, "
                + (f"{wfmt.name} linears ({f'block {wfmt.block_size}' if wfmt.block_size else 'a scale per column'}, "
                   f"LM head {wfmt.lm_head}"
                   + (f"; prefill from {wfmt.prefill_min_tokens} tokens on an {wfmt.prefill} copy" if wfmt.prefill else "")
                   + "), " if wfmt.quantized else "")
                + f"weights {nbytes / 1e9:.2f} GB"
                + (f" -> {DATA_FILE}" if use_external else ""))
            sink = TensorSink(tmp / DATA_FILE if use_external else None)
            digest = hashlib.sha256() if random_init is not None else None

            def get_tensor(hf_name: str):
                try:
                    arr = source.get(hf_name)
                except OSError as e:
                    raise ExportError(f"--checkpoint {ckpt}: cannot read {e.filename or hf_name} ({e.strerror}) "
                                      f"while exporting; check that the checkpoint's files are readable") from None
                if digest is not None:
                    digest.update((arr if arr.flags.c_contiguous else np.ascontiguousarray(arr.T)).data)
                return arr

            if cfg.model_type != "gpt_neox":
                from .graph_llama import build_graph as build_graph_llama

                build = build_graph_llama
                if graph_ops != "plain":
                    raise ExportError(f"--graph-ops {graph_ops} is built for GPT-NeoX graphs only; this checkpoint "
                                      f"is {cfg.model_type}: leave --graph-ops out (plain)")
                if rolling_keys:
                    raise ExportError(f"--key-cache unrotated is built for GPT-NeoX graphs only; this checkpoint "
                                      f"is {cfg.model_type}: leave --key-cache out (rotated)")
            else:
                build = build_graph
            try:
                extra = {"graph_ops": graph_ops, "rolling_keys": rolling_keys} if cfg.model_type == "gpt_neox" else {}
                model, quantized, prefill_bytes = build(cfg, dtype, get_tensor, sink, graph_name=label, weights=wfmt,
                                         layer_masks=layer_masks, **extra)
            finally:
                sink.close()
            onnx.save_model(model, str(tmp / MODEL_FILE))
            del model
            if check:
                onnx.checker.check_model(str(tmp / MODEL_FILE))

            if random_init is not None:
                src = {"path": None, "random_init_from": src_label, "sha256": digest.hexdigest(),
                       "sha256_of": "the float32 random weights as drawn (linear weights as [in, out]), in graph order"}
            else:
                src = source.source()
                src["sha256_of"] = "the safetensors weight file(s), concatenated in the order listed"
            manifest = {
                "format_version": FORMAT_VERSION,
                "name": label,
                "model_type": cfg.model_type,
                "num_layers": cfg.num_layers,
                "num_heads": cfg.num_heads,
                **({} if cfg.model_type == "gpt_neox" else {"num_kv_heads": cfg.num_kv_heads}),
                "head_dim": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "intermediate_size": cfg.intermediate_size,
                "vocab_size": cfg.vocab_size,
                "rotary_dims": cfg.rotary_dims,
                "rotary_base": cfg.rotary_base,
                **({} if cfg.model_type == "gpt_neox" else {"rope_scaling": cfg.rope_scaling}),
                "max_position_embeddings": cfg.max_position_embeddings,
                "layer_norm_eps": cfg.layer_norm_eps,
                "use_parallel_residual": cfg.use_parallel_residual,
                "dtype": DTYPE_NAMES[dtype],
                "weights": wfmt.manifest(quantized, prefill_bytes),
                "opset": OPSET,
                "inputs": input_names(cfg.num_layers, layer_masks, rolling_keys),
                "outputs": output_names(cfg.num_layers),
                "mask_value": MASK_VALUE,
                "external_data": DATA_FILE if use_external else None,
                "exporter_version": __version__,
                "source": src,
                "random_init": random_init is not None,
                "tokenizer_vocab_size": tok_vocab,
                "bos_token_id": cfg.bos_token_id,
                "eos_token_id": cfg.eos_token_id,
            }
            if random_init is not None:
                manifest["init_seed"] = init_seed
            if bos is not None:
                manifest[PREPEND_BOS_KEY] = bos
            if borrowed:
                manifest["tokenizer"] = {"source": f"{tok_path} (random init)", "own": False}
            if layer_masks:
                manifest["attention_masks"] = "per_layer"
            if graph_ops != "plain":  # absent = plain: the default export's manifest is as before
                manifest["graph_ops"] = graph_ops
            if rolling_keys:
                manifest["key_cache"] = "unrotated"
            try:
                # the last guard: JSON has no NaN or Infinity, and the engine must never read one
                text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
            except ValueError as e:
                raise ExportError(f"internal error: the manifest would hold a non-finite number ({e}); the config "
                                  f"checks missed it: please report this with the config.json") from None
            (tmp / MANIFEST_FILE).write_text(text, encoding="utf-8")
            (tmp / TOKENIZER_FILE).write_bytes(tok_bytes)

            # ---- move into place, with Ctrl-C / SIGTERM / SIGHUP held back: the folder ends up with the
            # earlier export whole or this one whole, never a mix
            with signals_held() as got:
                out.mkdir(exist_ok=True)
                for f in OUTPUT_FILES:
                    target = out / f
                    if (tmp / f).exists():
                        os.replace(tmp / f, target)
                    elif target.exists() or target.is_symlink():
                        target.unlink()  # a stale model.onnx.data from an earlier, larger export
                done = True
            if got:
                raise ExportInterrupted(got[0], complete=True)
        except OSError as e:
            raise _write_error(out, e) from None
    finally:
        with signals_held() as got:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if not done:
                for d in reversed(created):
                    try:
                        d.rmdir()
                    except OSError:
                        break
        if got and not done:
            _redeliver(got)
    log(f"wrote {out}/{MODEL_FILE}" + (f" + {DATA_FILE}" if use_external else "") + f", {MANIFEST_FILE}, {TOKENIZER_FILE}")
    return ExportResult(out, manifest, use_external)
