"""Bad input to the exporter (issue 28), table-driven over the real command line
(`python export/export.py ...` in a subprocess): each row writes its bad config or file into a
scratch folder, runs the exporter, and checks the exit code, the words of the one `error:` line
on stderr, that no traceback was printed, and that every file of the scratch folder is unchanged
byte for byte (nothing written: no output folder, no `.partial` sibling, no parent folders).

Classes (several inputs each): config values that would give silent wrong results (NaN,
Infinity, -Infinity, negative, zero, out of range, a string or a bool instead of a number, null,
missing, heads that do not divide the hidden size, two names of one setting that disagree, a key
given twice); flags that conflict or would be ignored; a config too large for the machine's
memory; paths that are missing, of the wrong kind or not writable, each named with its flag.
Then: Ctrl-C and SIGTERM during an export (exit 130 / 143, one line, nothing half-written, the
previous export of the same --out untouched), MemoryError and a full disk in the middle of an
export, the manifest's last guard against NaN, and real configs that must still pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from common import EXPORT_DIR, FIXTURE, TEST_DATA  # noqa: E402

EXPORT = EXPORT_DIR / "export.py"
CKPT = FIXTURE / "hf"
TOKENIZER = FIXTURE / "tokenizer.json"
TINY_CONFIG = json.loads((CKPT / "config.json").read_text())
DEL = object()  # a config field to remove


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------


def snapshot(p: Path):
    """A path's content: bytes, a link's target, a folder's entries (recursively), or None."""
    if p.is_symlink():
        return ("link", os.readlink(p))
    if p.is_dir():
        return {c.name: snapshot(c) for c in sorted(p.iterdir())}
    if p.is_file():
        return p.read_bytes()
    return None if not p.exists() else ("special",)


def run_export(args: list[str], timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH="")
    env.pop("H2O_EXPORT_DEBUG", None)
    return subprocess.run([sys.executable, str(EXPORT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@dataclass
class Row:
    id: str
    argv: list[str]  # "{t}" is the scratch folder
    setup: Optional[Callable[[Path], Optional[Callable[[], None]]]] = None  # may return an undo
    exit: int = 2
    words: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = (".",)  # paths under the scratch folder; "." = all of it
    absent_words: tuple[str, ...] = ()  # words the message must not contain (a misleading one)
    skip: Optional[Callable[[], Optional[str]]] = None


def check_row(row: Row, t: Path) -> None:
    if row.skip is not None and (why := row.skip()):
        pytest.skip(why)
    undo = row.setup(t) if row.setup else None
    try:
        before = {u: snapshot(t / u) for u in row.unchanged}
        p = run_export([a.replace("{t}", str(t)) for a in row.argv], cwd=t)
        after = {u: snapshot(t / u) for u in row.unchanged}
    finally:
        if callable(undo):
            undo()
    shown = f"args {row.argv}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr + p.stdout, shown
    assert p.returncode == row.exit, f"exit {p.returncode}, expected {row.exit}\n{shown}"
    if row.exit != 0:
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line\n{shown}"
    low = p.stderr.lower()
    for w in row.words:
        assert w.lower() in low, f"stderr lacks {w!r}\n{shown}"
    for w in row.absent_words:
        assert w.lower() not in low, f"stderr says {w!r}, which is misleading here\n{shown}"
    for u in row.unchanged:
        assert after[u] == before[u], f"{u} changed\n{shown}"


# ---------------------------------------------------------------------------------------------
# setups
# ---------------------------------------------------------------------------------------------


def _edited(changes: dict) -> dict:
    cfg = dict(TINY_CONFIG)
    for k, v in changes.items():
        if v is DEL:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


def config(**changes):
    """t/config.json: the tiny fixture's config with changes (json.dumps writes NaN and Infinity
    as the literals NaN, Infinity, -Infinity, which Python's json module reads back)."""
    def setup(t: Path):
        (t / "config.json").write_text(json.dumps(_edited(changes), indent=2))
    return setup


def config_text(text: str):
    def setup(t: Path):
        (t / "config.json").write_text(text)
    return setup


def checkpoint(**changes):
    """t/ckpt: a copy of the tiny fixture's checkpoint with its config.json changed."""
    def setup(t: Path):
        shutil.copytree(CKPT, t / "ckpt")
        (t / "ckpt/config.json").write_text(json.dumps(_edited(changes), indent=2))
    return setup


def ckpt_copy(edit: Callable[[Path], None]):
    def setup(t: Path):
        shutil.copytree(CKPT, t / "ckpt")
        edit(t / "ckpt")
    return setup


def previous_export(t: Path):
    """t/out: an earlier export of the fixture (what --force would replace), plus a user file."""
    p = run_export(["--checkpoint", str(CKPT), "--out", str(t / "out")])
    assert p.returncode == 0, p.stderr
    (t / "out/notes.txt").write_text("user file")


def both(*setups):
    def setup(t: Path):
        undos = [s(t) for s in setups]
        undos = [u for u in undos if callable(u)]
        return (lambda: [u() for u in reversed(undos)]) if undos else None
    return setup


def _chattr(p: Path, flag: str) -> bool:
    return shutil.which("chattr") is not None and subprocess.run(
        ["chattr", flag, str(p)], capture_output=True).returncode == 0


def unwritable(rel: str, make: bool = True):
    """t/rel made unwritable: mode 0555 for a normal user; for root (whom modes do not stop) the
    immutable attribute. Undone afterwards."""
    def setup(t: Path):
        p = t / rel
        if make:
            p.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            mode = p.stat().st_mode
            p.chmod(0o555)
            return lambda: p.chmod(mode)
        if not _chattr(p, "+i"):
            pytest.skip("running as root on a file system without chattr +i: no way to make a folder unwritable")
        return lambda: _chattr(p, "-i")
    return setup


def out_file(t: Path):
    (t / "out").write_text("a file where the output folder should be")


def broken_link(rel: str):
    def setup(t: Path):
        (t / rel).symlink_to(t / "nowhere")
    return setup


RANDOM = ["--random-init", "{t}/config.json", "--tokenizer", str(TOKENIZER), "--out", "{t}/out"]
FROM_CKPT = ["--checkpoint", "{t}/ckpt", "--out", "{t}/out"]
FIXTURE_CKPT = ["--checkpoint", str(CKPT), "--out", "{t}/out"]
P14M = ["--random-init", "14m", "--tokenizer", str(TOKENIZER), "--out", "{t}/out"]


def shown(v) -> str:
    """A value as config.json spells it (and the message repeats it)."""
    if isinstance(v, float) and v != v:
        return "NaN"
    if isinstance(v, float) and abs(v) == float("inf"):
        return "Infinity" if v > 0 else "-Infinity"
    return json.dumps(v)


def cfg_rows(field_: str, values: list, words: tuple[str, ...] = ()) -> list[Row]:
    """One row per bad value of a config field, through --random-init CONFIG.json; the message
    names the config file, the field and the value as written ("missing" for DEL)."""
    rows = []
    for v in values:
        said = "missing" if v is DEL else shown(v)
        rows.append(Row(f"{field_}={said}", RANDOM, config(**{field_: v}), words=("config.json", field_, said) + words))
    return rows


NAN, INF = float("nan"), float("inf")

CONFIG_ROWS = [
    *cfg_rows("layer_norm_eps", [NAN, INF, -INF, -1e-5, 0, "1e-05", True, None, 1e-40, DEL]),
    *cfg_rows("rotary_pct", [NAN, INF, 0, 0.0, -0.25, 1.5, "0.25", False, None, DEL]),
    *cfg_rows("rotary_emb_base", [NAN, INF, -INF, 0, -10000, "10000", True, 1e-40, 1e39]),
    *cfg_rows("initializer_range", [NAN, INF, -INF, -0.02, "0.02", True, None]),
    *cfg_rows("hidden_size", [NAN, INF, 64.0, 64.5, "64", True, 0, -64, 2**31, None, DEL]),
    *cfg_rows("num_attention_heads", [NAN, 0, -4, 4.0, "4"]),
    *cfg_rows("num_hidden_layers", [0, -2, 2.0, NAN, False]),
    *cfg_rows("intermediate_size", [0, -256, "256", INF]),
    *cfg_rows("vocab_size", [0, -512, NAN, None, "512", DEL]),
    *cfg_rows("max_position_embeddings", [0, -1, INF, 2**63, 2048.0]),
    *cfg_rows("use_parallel_residual", [1, 0, "true", None]),
    *cfg_rows("tie_word_embeddings", ["false", 0]),
    *cfg_rows("attention_bias", [1, None]),
    *cfg_rows("bos_token_id", [-1, 512, 0.0, NAN, [0], "0", True]),
    *cfg_rows("eos_token_id", [-1, 100000, [0, 2], 1.5, INF]),
    Row("heads do not divide hidden", RANDOM, config(num_attention_heads=3),
        words=("config.json", "hidden_size 64", "not divisible", "num_attention_heads 3")),
    Row("heads do not divide hidden (7)", RANDOM, config(num_attention_heads=7),
        words=("config.json", "not divisible", "7")),
    Row("heads larger than hidden", RANDOM, config(num_attention_heads=128),
        words=("config.json", "not divisible")),
    Row("odd rotary dims", RANDOM, config(rotary_pct=0.1, partial_rotary_factor=0.1), words=("config.json", "rotary dims", "= 1")),
    Row("no rotary dims", RANDOM, config(rotary_pct=0.05, partial_rotary_factor=DEL), words=("config.json", "rotary dims", "= 0")),
    Row("model_type null", RANDOM, config(model_type=None), words=("config.json", "model_type null")),
    Row("model_type mistral", RANDOM, config(model_type="mistral"), words=("model_type \"mistral\"", "gpt_neox")),
    Row("model_type number", RANDOM, config(model_type=5), words=("model_type 5",)),
    Row("model_type missing", RANDOM, config(model_type=DEL), words=("missing", "model_type")),
    Row("hidden_act relu", RANDOM, config(hidden_act="relu"), words=("hidden_act \"relu\"", "gelu")),
    Row("hidden_act null", RANDOM, config(hidden_act=None), words=("hidden_act null",)),
    Row("hidden_act list", RANDOM, config(hidden_act=["gelu"]), words=("hidden_act [\"gelu\"]",)),
    Row("no rotary base at all", RANDOM, config(rotary_emb_base=DEL, rope_theta=DEL),
        words=("missing", "rotary_emb_base")),
    Row("rope_theta alone NaN", RANDOM, config(rotary_emb_base=DEL, rope_theta=NAN),
        words=("rope_theta", "NaN")),
    Row("rope_theta disagrees", RANDOM, config(rope_theta=500000),
        words=("rotary_emb_base 10000", "rope_theta 500000", "disagree")),
    Row("rope_theta NaN beside a good base", RANDOM, config(rope_theta=NAN), words=("rope_theta", "NaN")),
    Row("partial_rotary_factor disagrees", RANDOM, config(partial_rotary_factor=0.5),
        words=("rotary_pct 0.25", "partial_rotary_factor 0.5", "disagree")),
    Row("partial_rotary_factor out of range", RANDOM, config(partial_rotary_factor=2),
        words=("partial_rotary_factor", "(0, 1]")),
    Row("rope_parameters theta disagrees", RANDOM,
        config(rope_parameters={"rope_type": "default", "rope_theta": 1, "partial_rotary_factor": 0.25}),
        words=("rope_parameters.rope_theta", "disagree")),
    Row("rope_parameters scaling", RANDOM, config(rope_parameters={"rope_type": "linear", "factor": 2.0}),
        words=("rope_parameters", "not supported")),
    Row("rope_scaling linear", RANDOM, config(rope_scaling={"type": "linear", "factor": 2.0}),
        words=("rope_scaling", "not supported")),
    Row("key given twice", RANDOM,
        config_text(json.dumps(TINY_CONFIG)[:-1] + ', "hidden_size": 128}'),
        words=("config.json", "hidden_size", "more than once")),
    Row("config is a list", RANDOM, config_text("[1, 2]"), words=("config.json", "JSON object")),
    Row("config is not JSON", RANDOM, config_text("{hidden_size: 64"), words=("config.json", "not valid JSON")),
    Row("config is empty", RANDOM, config_text(""), words=("config.json", "not valid JSON")),
    Row("config is not UTF-8", RANDOM, lambda t: (t / "config.json").write_bytes(b"\xff\xfe{}"),
        words=("config.json", "UTF-8")),
    Row("declared BOS beyond the tokenizer", RANDOM, config(prepend_bos_token_id=600),
        words=("prepend_bos_token_id", "600")),
    # the same checks through --checkpoint (the config is read before any weight)
    Row("checkpoint: layer_norm_eps NaN", FROM_CKPT, checkpoint(layer_norm_eps=NAN),
        words=("ckpt/config.json", "layer_norm_eps", "NaN")),
    Row("checkpoint: rotary_emb_base -Infinity", FROM_CKPT, checkpoint(rotary_emb_base=-INF),
        words=("ckpt/config.json", "rotary_emb_base", "-Infinity")),
    Row("checkpoint: hidden_size string", FROM_CKPT, checkpoint(hidden_size="64"),
        words=("ckpt/config.json", "hidden_size", '"64"')),
    Row("checkpoint: eos list", FROM_CKPT, checkpoint(eos_token_id=[0, 1]),
        words=("ckpt/config.json", "eos_token_id", "[0, 1]")),
    Row("checkpoint: heads do not divide", FROM_CKPT, checkpoint(num_attention_heads=5),
        words=("ckpt/config.json", "not divisible")),
    Row("checkpoint: initializer_range negative", FROM_CKPT, checkpoint(initializer_range=-1),
        words=("ckpt/config.json", "initializer_range", "-1")),
]

FLAG_ROWS = [
    Row("--init-seed and --seed", P14M + ["--init-seed", "1", "--seed", "2"], words=("--seed", "--init-seed")),
    Row("--seed and --init-seed", P14M + ["--seed", "2", "--init-seed", "1"], words=("--seed", "--init-seed")),
    Row("--init-seed and --seed, same value", P14M + ["--init-seed", "1", "--seed", "1"],
        words=("--seed", "old name", "--init-seed")),
    Row("--init-seed twice", P14M + ["--init-seed", "1", "--init-seed", "2"], words=("--init-seed", "twice")),
    Row("--init-seed with --checkpoint", FIXTURE_CKPT + ["--init-seed", "3"],
        words=("--init-seed", "only applies to --random-init")),
    Row("--init-seed 0 with --checkpoint", FIXTURE_CKPT + ["--init-seed", "0"],
        words=("--init-seed", "only applies to --random-init")),
    Row("--seed with --checkpoint", FIXTURE_CKPT + ["--seed", "0"], words=("--seed", "only applies to --random-init")),
    Row("--init-seed negative", P14M + ["--init-seed", "-1"], words=("--init-seed", "-1")),
    Row("--init-seed beyond u64", P14M + ["--init-seed", str(2**64)], words=("--init-seed", str(2**64))),
    Row("--init-seed not a number", P14M + ["--init-seed", "1.5"], words=("--init-seed", "1.5")),
    Row("--dtype twice", FIXTURE_CKPT + ["--dtype", "fp16", "--dtype", "fp32"], words=("--dtype", "twice")),
    Row("--out twice", FIXTURE_CKPT + ["--out", "{t}/other"], words=("--out", "twice")),
    Row("--weights twice", FIXTURE_CKPT + ["--weights", "int8", "--weights", "int4"], words=("--weights", "twice")),
    Row("--force twice", FIXTURE_CKPT + ["--force", "--force"], words=("--force", "twice")),
    Row("--block-size with fp32", FIXTURE_CKPT + ["--block-size", "32"], words=("--block-size", "only applies")),
    Row("--lm-head fp32 with fp32", FIXTURE_CKPT + ["--lm-head", "fp32"], words=("--lm-head", "only applies")),
    Row("--lm-head int8 with fp32", FIXTURE_CKPT + ["--weights", "fp32", "--lm-head", "int8"],
        words=("--lm-head", "only applies")),
    Row("--dtype fp8", FIXTURE_CKPT + ["--dtype", "fp8"], words=("--dtype", "fp8")),
    Row("unknown flag", FIXTURE_CKPT + ["--bogus"], words=("--bogus",)),
    Row("no source", ["--out", "{t}/out"], words=("--checkpoint", "--random-init")),
    Row("two sources", FIXTURE_CKPT + ["--random-init", "14m"], words=("--checkpoint", "--random-init")),
    Row("empty --out", ["--checkpoint", str(CKPT), "--out", ""], words=("--out", "empty")),
    Row("empty --checkpoint", ["--checkpoint", "", "--out", "{t}/out"], words=("--checkpoint", "empty")),
    Row("empty --tokenizer", FIXTURE_CKPT + ["--tokenizer", ""], words=("--tokenizer", "empty")),
    Row("empty --random-init", ["--random-init", "", "--tokenizer", str(TOKENIZER), "--out", "{t}/out"],
        words=("--random-init", "empty")),
    Row("empty --name", FIXTURE_CKPT + ["--name", ""], words=("--name", "empty")),
    Row("--name with a slash and no --out", ["--checkpoint", str(CKPT), "--name", "../escape"],
        words=("--name", "--out")),
    Row("random init without tokenizer", ["--random-init", "14m", "--out", "{t}/out"], words=("--tokenizer",)),
    Row("unknown Pythia size", P14M[:1] + ["3b"] + P14M[2:], words=("unknown Pythia size", "2.8b")),
    Row("initializer_range overflows fp16", RANDOM + ["--dtype", "fp16"], config(initializer_range=10000.0),
        words=("initializer_range", "float16", "--dtype fp32")),
    Row("initializer_range overflows fp32", RANDOM, config(initializer_range=1e38),
        words=("initializer_range", "float32")),
]

MEMORY_ROWS = [
    Row("huge hidden_size", RANDOM, config(hidden_size=1_000_000, num_attention_heads=8, intermediate_size=4_000_000),
        words=("config.json", "memory", "available")),
    Row("huge vocab_size", RANDOM, config(vocab_size=2_000_000_000), words=("config.json", "memory", "embed_in")),
    Row("huge intermediate_size", RANDOM, config(intermediate_size=1_000_000_000),
        words=("config.json", "memory", "dense_h_to_4h")),
    Row("huge num_hidden_layers", RANDOM, config(num_hidden_layers=2_000_000_000),
        words=("config.json", "memory", "2000000000 layers")),
    Row("huge hidden_size through a checkpoint", FROM_CKPT,
        checkpoint(hidden_size=2**30, num_attention_heads=1, intermediate_size=4),
        words=("ckpt/config.json", "memory")),
]


def _no_sys() -> Optional[str]:
    return None if Path("/sys").is_dir() else "no /sys"


PATH_ROWS = [
    Row("--checkpoint missing", ["--checkpoint", "{t}/nowhere", "--out", "{t}/out"],
        words=("--checkpoint", "nowhere", "does not exist")),
    Row("--checkpoint is a file", ["--checkpoint", str(CKPT / "config.json"), "--out", "{t}/out"],
        words=("--checkpoint", "is a file, not a folder", f"--checkpoint {CKPT}"), absent_words=("does not exist",)),
    Row("--checkpoint is the weights file", ["--checkpoint", str(CKPT / "model.safetensors"), "--out", "{t}/out"],
        words=("--checkpoint", "is a file, not a folder"), absent_words=("does not exist",)),
    Row("--checkpoint is a broken link", FROM_CKPT, broken_link("ckpt"), words=("--checkpoint", "broken symbolic link")),
    Row("--checkpoint without config.json", FROM_CKPT, ckpt_copy(lambda d: (d / "config.json").unlink()),
        words=("--checkpoint", "no config.json")),
    Row("--checkpoint with a config.json folder", FROM_CKPT,
        ckpt_copy(lambda d: ((d / "config.json").unlink(), (d / "config.json").mkdir())),
        words=("--checkpoint", "config.json is a folder")),
    Row("--checkpoint without weights", FROM_CKPT, ckpt_copy(lambda d: (d / "model.safetensors").unlink()),
        words=("--checkpoint", "no model.safetensors")),
    Row("--checkpoint with a weights folder", FROM_CKPT,
        ckpt_copy(lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors").mkdir())),
        words=("--checkpoint", "model.safetensors", "not a regular file")),
    Row("--checkpoint index naming a path", FROM_CKPT,
        ckpt_copy(lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"gpt_neox.embed_in.weight": "../../etc/passwd"}})))),
        words=("weight_map", "../../etc/passwd", "not the name of a shard")),
    Row("--checkpoint index naming a number", FROM_CKPT,
        ckpt_copy(lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"gpt_neox.embed_in.weight": 5}})))),
        words=("weight_map", "5")),
    Row("--checkpoint without tokenizer", FROM_CKPT, ckpt_copy(lambda d: (d / "tokenizer.json").unlink()),
        words=("no tokenizer", "--tokenizer")),
    Row("--tokenizer missing", FIXTURE_CKPT + ["--tokenizer", "{t}/nope.json"],
        words=("--tokenizer", "nope.json", "does not exist")),
    Row("--tokenizer is a folder", FIXTURE_CKPT + ["--tokenizer", str(CKPT)],
        words=("--tokenizer", "is a folder, not a file"), absent_words=("does not exist",)),
    Row("--tokenizer is not a tokenizer", FIXTURE_CKPT + ["--tokenizer", str(CKPT / "config.json")],
        words=("not a Hugging Face tokenizers JSON file",)),
    Row("--random-init config missing", ["--random-init", "{t}/nope.json", "--tokenizer", str(TOKENIZER),
                                         "--out", "{t}/out"], words=("--random-init", "nope.json", "does not exist")),
    Row("--random-init is a folder", ["--random-init", str(CKPT), "--tokenizer", str(TOKENIZER), "--out", "{t}/out"],
        words=("--random-init", "is a folder", "--checkpoint")),
    Row("--out is a file", FIXTURE_CKPT, out_file, words=("--out", "is a file, not a folder")),
    Row("--out is a file, with --force", FIXTURE_CKPT + ["--force"], out_file, words=("--out", "is a file")),
    Row("--out under a file", ["--checkpoint", str(CKPT), "--out", "{t}/out/x/y"], out_file,
        words=("--out", "is a file", "not files")),
    Row("--out is a broken link", FIXTURE_CKPT, broken_link("out"), words=("--out", "broken symbolic link")),
    Row("--out in an unwritable folder", ["--checkpoint", str(CKPT), "--out", "{t}/ro/out"], unwritable("ro"),
        words=("--out", "not writable", "write"), absent_words=("cannot read",)),
    Row("--out deep in an unwritable folder", ["--checkpoint", str(CKPT), "--out", "{t}/ro/a/b/out"],
        unwritable("ro"), words=("--out", "not writable"), absent_words=("cannot read",)),
    Row("--out is an unwritable folder, with --force", ["--checkpoint", str(CKPT), "--out", "{t}/ro", "--force"],
        unwritable("ro"), words=("--out", "not writable"), absent_words=("cannot read",)),
    Row("--out on /sys", ["--checkpoint", str(CKPT), "--out", "/sys/h2o-export-test"], words=("--out", "/sys"),
        absent_words=("cannot read",), skip=_no_sys),
    Row("--out exists without --force", FIXTURE_CKPT, previous_export, words=("--out", "already exists", "--force")),
    Row("--out is the checkpoint", ["--checkpoint", "{t}/ckpt", "--out", "{t}/ckpt", "--force"], checkpoint(),
        words=("--out", "--checkpoint folder")),
    Row("--out holds a model.onnx folder", FIXTURE_CKPT + ["--force"],
        lambda t: (t / "out/model.onnx").mkdir(parents=True), words=("--out", "model.onnx is a folder")),
]


def _rows(rows):
    return [pytest.param(r, id=r.id) for r in rows]


@pytest.mark.parametrize("row", _rows(CONFIG_ROWS))
def test_bad_config_value(row, tmp_path):
    check_row(row, tmp_path)


@pytest.mark.parametrize("row", _rows(FLAG_ROWS))
def test_conflicting_or_ignored_flag(row, tmp_path):
    check_row(row, tmp_path)


@pytest.mark.parametrize("row", _rows(MEMORY_ROWS))
def test_config_too_large_for_memory(row, tmp_path):
    check_row(row, tmp_path)


@pytest.mark.parametrize("row", _rows(PATH_ROWS))
def test_bad_path(row, tmp_path):
    check_row(row, tmp_path)


# ---------------------------------------------------------------------------------------------
# what must still pass
# ---------------------------------------------------------------------------------------------


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (which Python's json reads by default)."""
    def refuse(c):
        raise ValueError(f"non-finite number {c} in the manifest")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("row", _rows([
    Row("tiny config as transformers 4.57 writes it", RANDOM, config(), exit=0, unchanged=("config.json",)),
    Row("rope_theta only", RANDOM, config(rotary_emb_base=DEL), exit=0, unchanged=("config.json",)),
    Row("equal aliases and default rope_parameters", RANDOM,
        config(rope_parameters={"rope_type": "default", "rope_theta": 10000, "partial_rotary_factor": 0.25}),
        exit=0, unchanged=("config.json",)),
    Row("rotary_pct 1, initializer_range 0, eos null", RANDOM,
        config(rotary_pct=1.0, partial_rotary_factor=1.0, initializer_range=0, eos_token_id=None), exit=0,
        unchanged=("config.json",)),
    Row("Pythia-14m shape, seed via --seed", P14M + ["--seed", "3"], exit=0, unchanged=()),
]))
def test_good_input_still_exports(row, tmp_path):
    check_row(row, tmp_path)
    m = strict_json((tmp_path / "out/manifest.json").read_text())
    assert m["num_layers"] >= 1 and m["rotary_dims"] >= 2


def test_real_pythia_configs_pass():
    """Every Pythia config (tests/data/pythia-configs.json, compiled from EleutherAI's) passes the
    checks, as transformers' GPTNeoXConfig would write it too (both names of each RoPE field)."""
    from h2o_export.config import NeoxConfig

    models = json.loads((TEST_DATA / "pythia-configs.json").read_text())["models"]
    for name, entry in models.items():
        raw = dict(entry["config"])
        NeoxConfig.from_dict(raw, name)
        raw.update(partial_rotary_factor=raw["rotary_pct"], rope_theta=raw["rotary_emb_base"], rope_scaling=None,
                   initializer_range=0.02, attention_bias=True)
        cfg = NeoxConfig.from_dict(raw, name)
        assert cfg.rotary_dims == entry["config"]["rotary_dims_derived"], name


# ---------------------------------------------------------------------------------------------
# interrupted exports
# ---------------------------------------------------------------------------------------------


def _partials(t: Path) -> list[Path]:
    return [p for p in t.rglob(".*partial*")]


def _default_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP back to their defaults (in a child, before exec)."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _python_signal_defaults():
    """In-process exports see Python's own dispositions (SIGINT raises KeyboardInterrupt, SIGTERM and
    SIGHUP default), whatever the shell that started the tests left ignored (a background job's
    SIGINT, nohup's SIGHUP); restored afterwards."""
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
              signal.SIGHUP: signal.SIG_DFL}
    old = {s: signal.signal(s, h) for s, h in wanted.items()}
    yield
    for s, h in old.items():
        signal.signal(s, h)


def _interrupt(t: Path, out: Path, signum: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """Start a --random-init 160m export (0.65 GB of weights into model.onnx.data) into `out`,
    wait until it has written part of its data file, send `signum`, and wait for the end."""
    env = dict(os.environ, PYTHONPATH="")
    cmd = [sys.executable, str(EXPORT), "--random-init", "160m", "--tokenizer", str(TOKENIZER), "--out", str(out),
           "--external-data", "always", *extra]
    # a shell that started the tests in the background may have left SIGINT ignored, and nohup SIGHUP;
    # the exporter keeps an inherited ignore, so the child starts with the default dispositions
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_signals)
    deadline = time.monotonic() + 120
    started = False
    while time.monotonic() < deadline and proc.poll() is None:
        data = [p / "model.onnx.data" for p in out.parent.glob(f".{out.name}.partial-*")]
        if any(d.is_file() and d.stat().st_size > 0 for d in data):
            started = True
            break
        time.sleep(0.02)
    if not started:
        proc.kill()
        so, se = proc.communicate()
        pytest.fail(f"the export never started writing (or finished first): rc {proc.returncode}\n{se[-2000:]}")
    proc.send_signal(signum)
    so, se = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, so, se)


@pytest.mark.parametrize("signum,code,says", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM"),
                                              (signal.SIGHUP, 129, "SIGHUP")])
def test_interrupt_leaves_the_previous_export_whole(tmp_path, signum, code, says):
    """Ctrl-C / SIGTERM / SIGHUP while exporting over an earlier export with --force: one line,
    exit 130 / 143 / 129, the earlier export byte for byte as it was, no partial folder left."""
    previous_export(tmp_path)
    before = snapshot(tmp_path)
    p = _interrupt(tmp_path, tmp_path / "out", signum, ["--force"])
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted") and says in lines[0], p.stderr
    assert "is as it was" in lines[0], p.stderr
    assert snapshot(tmp_path) == before, "the earlier export or the folder around it changed"
    assert not _partials(tmp_path)


def test_interrupt_of_a_first_export_leaves_nothing(tmp_path):
    """Ctrl-C on an export into a new folder (parents created by the export): none of it remains."""
    p = _interrupt(tmp_path, tmp_path / "a/b/out", signal.SIGINT)
    assert p.returncode == 130 and len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))


# ---------------------------------------------------------------------------------------------
# failures in the middle of an export (in process: MemoryError and a full disk cannot be caused
# on demand from outside), and the manifest's last guard
# ---------------------------------------------------------------------------------------------


def _cli(capsys, *args) -> tuple[int, list[str]]:
    from h2o_export.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.splitlines()


def _fail_on_tensor(monkeypatch, exc: BaseException, after: int = 3):
    """Make the checkpoint reader raise `exc` on its `after`-th tensor (files already being written)."""
    from h2o_export import weights

    real = weights.SafetensorsWeights.get
    calls = {"n": 0}

    def get(self, name):
        calls["n"] += 1
        if calls["n"] == after:
            raise exc
        return real(self, name)

    monkeypatch.setattr(weights.SafetensorsWeights, "get", get)


@pytest.mark.parametrize("exc,code,says", [
    (MemoryError(), 2, "error: out of memory while exporting"),
    (OSError(5, "Input/output error", "model.safetensors"), 2, "error: --checkpoint"),
    (KeyboardInterrupt(), 130, "error: interrupted (Ctrl-C)"),
    (RuntimeError("boom"), 2, "error: internal error (RuntimeError: boom)"),
])
def test_failure_mid_export_is_one_line_and_leaves_the_previous_export(capsys, tmp_path, monkeypatch, exc, code,
                                                                       says):
    previous_export(tmp_path)
    before = snapshot(tmp_path)
    _fail_on_tensor(monkeypatch, exc)
    monkeypatch.delenv("H2O_EXPORT_DEBUG", raising=False)
    rc, err = _cli(capsys, "--checkpoint", CKPT, "--out", tmp_path / "out", "--force", "--external-data", "always")
    assert rc == code and len(err) == 1 and err[0].startswith(says), err
    assert snapshot(tmp_path) == before and not _partials(tmp_path)


def test_too_little_disk_is_refused_up_front(capsys, tmp_path, monkeypatch):
    from h2o_export import exporter

    monkeypatch.setattr(exporter, "disk_free", lambda p: (1 << 20, 1 << 30))
    rc, err = _cli(capsys, "--checkpoint", CKPT, "--out", tmp_path / "out")
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: --out {tmp_path / 'out'}: the export writes"), err
    assert "1 MiB free" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_disk_full_names_out(capsys, tmp_path, monkeypatch):
    """A write error while saving model.onnx names --out and the fix (not "cannot read")."""
    import onnx

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / ".out.partial-x/model.onnx"))

    monkeypatch.setattr(onnx, "save_model", full)
    rc, err = _cli(capsys, "--checkpoint", CKPT, "--out", tmp_path / "out")
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --out {tmp_path / 'out'}: cannot write") and "free space" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_signal_while_moving_into_place_completes_the_move(capsys, tmp_path, monkeypatch):
    """Ctrl-C during the final renames is held back until they are done: --out then holds the
    whole new export (never a mix of old and new files), and the line says so (exit 130)."""
    from h2o_export import exporter

    previous_export(tmp_path)
    real = os.replace
    sent = []

    def replace(src, dst):
        if not sent:
            sent.append(1)
            signal.raise_signal(signal.SIGINT)
        return real(src, dst)

    monkeypatch.setattr(exporter.os, "replace", replace)
    rc, err = _cli(capsys, "--random-init", "14m", "--tokenizer", TOKENIZER, "--out", tmp_path / "out", "--force",
                   "--init-seed", "7")
    assert sent and rc == 130 and len(err) == 1 and "holds the new export" in err[0], err
    m = strict_json((tmp_path / "out/manifest.json").read_text())
    assert m["init_seed"] == 7 and m["num_layers"] == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "model.onnx", "notes.txt",
                                                                    "tokenizer.json"]
    assert not _partials(tmp_path)


def test_manifest_never_holds_nan(capsys, tmp_path, monkeypatch):
    """The last guard: were a non-finite number to slip past the config checks, the manifest is
    not written (json.dumps(allow_nan=False)) and the export fails as a whole."""
    import dataclasses

    from h2o_export import config

    real = config.NeoxConfig.from_dict.__func__

    def from_dict(cls, raw, origin):
        return dataclasses.replace(real(cls, raw, origin), rotary_base=float("nan"))

    monkeypatch.setattr(config.NeoxConfig, "from_dict", classmethod(from_dict))
    rc, err = _cli(capsys, "--checkpoint", CKPT, "--out", tmp_path / "out")
    assert rc == 2 and len(err) == 1 and "non-finite" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_random_init_honours_tied_embeddings(tmp_path):
    """tie_word_embeddings true in a --random-init config: the LM head is the input embedding (it
    was a separate draw: the config value was silently ignored)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    (tmp_path / "config.json").write_text(json.dumps(_edited({"tie_word_embeddings": True})))
    p = run_export(["--random-init", str(tmp_path / "config.json"), "--tokenizer", str(TOKENIZER),
                    "--out", str(tmp_path / "out")])
    assert p.returncode == 0, p.stderr
    inits = {t.name: t for t in onnx.load(str(tmp_path / "out/model.onnx")).graph.initializer}
    emb = numpy_helper.to_array(inits["gpt_neox.embed_in.weight"])
    head = numpy_helper.to_array(inits["embed_out.weight"])
    np.testing.assert_array_equal(head.T if head.shape != emb.shape else head, emb)
