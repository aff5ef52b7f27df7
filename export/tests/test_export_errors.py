"""Bad input gets one clear error (exit status 2, one `error: ...` line naming the problem and
the fix) and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from common import EXPORT_DIR, FIXTURE  # noqa: E402

from h2o_export import graph_parity as ref  # noqa: E402
from h2o_export.cli import main  # noqa: E402

TOKENIZER = FIXTURE / "tokenizer.json"


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    return ref.make_tiny_checkpoint(tmp_path_factory.mktemp("good") / "hf", 512, 3, tokenizer=TOKENIZER)


@pytest.fixture
def ckpt(good_ckpt, tmp_path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(good_ckpt, d)
    return d


def run_cli(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("error:")]
    return rc, (errors[0] if len(errors) == 1 and err[-1] == errors[0] else "\n".join(err))


def edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def edit_weights(d: Path, fn) -> None:
    tensors = load_file(d / "model.safetensors")
    fn(tensors)
    save_file(tensors, d / "model.safetensors")


def assert_error(capsys, tmp_path, args, *needles):
    out = tmp_path / "out"
    rc, line = run_cli(capsys, *args, "--out", out)
    assert rc == 2, line
    assert line.startswith("error: "), line
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    assert not out.exists(), "a failed export left its output folder"
    assert not list(tmp_path.glob(".out.partial-*")), "a failed export left a partial folder"


def test_good_checkpoint_exports(capsys, ckpt, tmp_path):
    rc, msg = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path / "out")
    assert rc == 0, msg
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]


def test_out_under_a_file_is_one_line_naming_the_path(capsys, ckpt, tmp_path):
    """Issue 19 item 10: an --out path below a file printed a traceback; now one error line."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "x"
    rc, line = run_cli(capsys, "--checkpoint", ckpt, "--out", out)
    assert rc == 2, line
    assert line.startswith("error: --out ") and str(blocker) in line and "not files" in line, line
    assert blocker.read_text() == "not a folder"


def test_missing_config_field(capsys, ckpt, tmp_path):
    edit_config(ckpt, rotary_pct=None)
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "missing config field", "rotary_pct")


def test_unsupported_architecture(capsys, ckpt, tmp_path):
    edit_config(ckpt, model_type="mistral")
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], 'model_type "mistral" is not supported', "gpt_neox")


def test_unsupported_activation(capsys, ckpt, tmp_path):
    edit_config(ckpt, hidden_act="relu")
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], 'hidden_act "relu"', "gelu")


def test_missing_weight(capsys, ckpt, tmp_path):
    edit_weights(ckpt, lambda t: t.pop("gpt_neox.layers.1.mlp.dense_4h_to_h.bias"))
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "missing 1 tensor(s)",
                 "gpt_neox.layers.1.mlp.dense_4h_to_h.bias")


def test_mismatched_weight_shape(capsys, ckpt, tmp_path):
    edit_config(ckpt, vocab_size=640)
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "mismatched shape",
                 "gpt_neox.embed_in.weight has shape [512, 64], config needs [640, 64]")


def test_config_with_more_layers_than_weights(capsys, ckpt, tmp_path):
    edit_config(ckpt, num_hidden_layers=3)
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "missing", "gpt_neox.layers.2.")


def test_unexpected_weight(capsys, ckpt, tmp_path):
    def add(t):
        t["gpt_neox.layers.0.attention.q_norm.weight"] = np.ones(16, np.float32)
    edit_weights(ckpt, add)
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "does not have", "q_norm")


def test_truncated_weights(capsys, ckpt, tmp_path):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "outside the file", "re-download")


def test_no_safetensors(capsys, ckpt, tmp_path):
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "no model.safetensors", "pytorch_model.bin")


def test_missing_checkpoint_folder(capsys, tmp_path):
    assert_error(capsys, tmp_path, ["--checkpoint", tmp_path / "nowhere"], "does not exist")


def test_missing_tokenizer(capsys, ckpt, tmp_path):
    (ckpt / "tokenizer.json").unlink()
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "no tokenizer", "--tokenizer")


def test_tokenizer_larger_than_vocab(capsys, ckpt, tmp_path):
    edit_config(ckpt, vocab_size=256)
    edit_weights(ckpt, lambda t: t.update({k: v[:256] for k, v in t.items() if k.endswith(("embed_in.weight",
                                                                                             "embed_out.weight"))}))
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "tokenizer", "500 ids", "vocab_size is 256")


def test_output_folder_exists(capsys, ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    rc, line = run_cli(capsys, "--checkpoint", ckpt, "--out", out)
    assert rc == 2 and line.startswith("error: ") and "already exists" in line and "--force" in line
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    rc, line = run_cli(capsys, "--checkpoint", ckpt, "--out", out, "--force")
    assert rc == 0, line
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "manifest.json", "model.onnx", "tokenizer.json"]


def test_unknown_random_size(capsys, tmp_path):
    assert_error(capsys, tmp_path, ["--random-init", "3b", "--tokenizer", TOKENIZER], "unknown Pythia size",
                 "2.8b")


def test_random_init_needs_tokenizer(capsys, tmp_path):
    assert_error(capsys, tmp_path, ["--random-init", "14m"], "--tokenizer")


def test_init_seed_without_random_init(capsys, ckpt, tmp_path):
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt, "--init-seed", "3"], "--init-seed only applies")
    # --seed, the flag's old name, is still accepted as an alias (and named as typed); any value,
    # the default 0 included, is refused: it would be ignored
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt, "--seed", "3"], "--seed only applies to --random-init")
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt, "--init-seed", "0"], "--init-seed only applies")


def test_entry_points(ckpt, tmp_path):
    """export/export.py and `python -m h2o_export` (the installed package, run from elsewhere) run as programs."""
    r = subprocess.run([sys.executable, str(EXPORT_DIR / "export.py"), "--checkpoint", str(ckpt / "nope"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "h2o_export", "--help"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0 and "--random-init" in r.stdout


def test_declared_bos_goes_into_the_manifest(capsys, ckpt, tmp_path):
    """A checkpoint declaring prepend_bos_token_id gets it in the manifest; one without gets no
    such field (Pythia's own models: their bos_token_id is only the tokenizer's id, never fed)."""
    rc, line = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path / "plain")
    assert rc == 0, line
    plain = json.loads((tmp_path / "plain/manifest.json").read_text())
    assert "prepend_bos_token_id" not in plain and plain["bos_token_id"] == 0
    edit_config(ckpt, prepend_bos_token_id=0)
    rc, line = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path / "bos")
    assert rc == 0, line
    assert json.loads((tmp_path / "bos/manifest.json").read_text())["prepend_bos_token_id"] == 0


@pytest.mark.parametrize("bad", [512, -1, "0", True, 0.0])
def test_declared_bos_must_be_a_token_id(capsys, ckpt, tmp_path, bad):
    edit_config(ckpt, prepend_bos_token_id=bad)
    assert_error(capsys, tmp_path, ["--checkpoint", ckpt], "prepend_bos_token_id", "must be a token id")
