"""Checkpoint formats and output forms: sharded safetensors, float16/bfloat16 checkpoints,
external data, tied embeddings, random init (seeded, at Pythia shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from common import FIXTURE, TEST_DATA  # noqa: E402

from h2o_export import graph_parity as ref  # noqa: E402
from h2o_export.reference import load_model  # noqa: E402
from h2o_export.config import PYTHIA_SIZES, pythia_config  # noqa: E402
from h2o_export.exporter import export  # noqa: E402

TOKENIZER = FIXTURE / "tokenizer.json"
TOL = {"logits": 1e-4, "kv": 1e-5, "attention_sums": 1e-5}
QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    hf = ref.make_tiny_checkpoint(tmp / "hf", 512, 5, tokenizer=TOKENIZER, use_parallel_residual=False)
    res = export(tmp / "onnx", checkpoint=hf, **QUIET)
    _, golden = ref.read_golden(FIXTURE / "golden.json")
    step = golden["continuation_slots"][0]
    out = ref.run_onnx(ref.ort_session(tmp / "onnx/model.onnx"), step, res.manifest)
    return hf, res.manifest, step, out


def _same_outputs(path: Path, manifest: dict, step, want: dict):
    got = ref.run_onnx(ref.ort_session(path), step, manifest)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_sharded_checkpoint(base, tmp_path):
    hf, manifest, step, want = base
    d = tmp_path / "sharded"
    d.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (d / f).write_bytes((hf / f).read_bytes())
    tensors = load_file(hf / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for j, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        fname = f"model-{j + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, d / fname)
        weight_map.update({n: fname for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    res = export(tmp_path / "out", checkpoint=d, **QUIET)
    assert res.manifest["source"]["weight_files"] == ["model-00001-of-00002.safetensors",
                                                      "model-00002-of-00002.safetensors"]
    _same_outputs(tmp_path / "out/model.onnx", res.manifest, step, want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoint(base, tmp_path, dtype):
    """Pythia checkpoints are stored in float16 (bfloat16 for pythia-1b): an fp32 export of such
    a checkpoint equals transformers loading it in float32."""
    import torch
    from safetensors.torch import load_file as tload, save_file as tsave

    hf, manifest, step, _ = base
    d = tmp_path / dtype
    d.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (d / f).write_bytes((hf / f).read_bytes())
    tsave({k: v.to(getattr(torch, dtype)) for k, v in tload(hf / "model.safetensors").items()},
          d / "model.safetensors", metadata={"format": "pt"})
    res = export(tmp_path / "out", checkpoint=d, **QUIET)
    got = ref.run_onnx(ref.ort_session(tmp_path / "out/model.onnx"), step, res.manifest)
    ref.compare(got, ref.run_hf(load_model(d), step), step, TOL)


def test_external_data(base, tmp_path):
    hf, manifest, step, want = base
    res = export(tmp_path / "out", checkpoint=hf, external_data="always", **QUIET)
    assert res.external_data and res.manifest["external_data"] == "model.onnx.data"
    data = tmp_path / "out/model.onnx.data"
    assert data.stat().st_size > (tmp_path / "out/model.onnx").stat().st_size
    _same_outputs(tmp_path / "out/model.onnx", res.manifest, step, want)
    # re-exporting inline over it removes the stale data file
    res = export(tmp_path / "out", checkpoint=hf, force=True, **QUIET)
    assert not res.external_data and not data.exists()
    _same_outputs(tmp_path / "out/model.onnx", res.manifest, step, want)


def test_tied_embeddings(tmp_path):
    hf = ref.make_tiny_checkpoint(tmp_path / "hf", 512, 8, tokenizer=TOKENIZER, tie_word_embeddings=True)
    t = load_file(hf / "model.safetensors")
    assert "embed_out.weight" not in t  # transformers stores the tied matrix once
    res = export(tmp_path / "out", checkpoint=hf, **QUIET)
    _, golden = ref.read_golden(FIXTURE / "golden.json")
    step = golden["prefill"][0]
    got = ref.run_onnx(ref.ort_session(tmp_path / "out/model.onnx"), step, res.manifest)
    ref.compare(got, ref.run_hf(load_model(hf), step), step, TOL)


def test_random_init_from_config_is_seeded(base, tmp_path):
    hf, _, step, _ = base
    outs = {}
    for label, seed in (("a", 1), ("b", 1), ("c", 2)):
        res = export(tmp_path / label, random_init=str(hf / "config.json"), init_seed=seed, tokenizer=TOKENIZER, **QUIET)
        m = res.manifest
        assert m["random_init"] is True and m["init_seed"] == seed and "seed" not in m and m["source"]["path"] is None
        outs[label] = (m["source"]["sha256"], ref.run_onnx(ref.ort_session(tmp_path / label / "model.onnx"), step, m))
    assert outs["a"][0] == outs["b"][0] != outs["c"][0]
    np.testing.assert_array_equal(outs["a"][1]["logits"], outs["b"][1]["logits"])
    assert all(np.isfinite(v).all() for v in outs["c"][1].values())


def test_random_init_pythia_shape(tmp_path):
    res = export(tmp_path / "p14m", random_init="pythia-14m", init_seed=0, tokenizer=TOKENIZER, dtype="fp16", **QUIET)
    m = res.manifest
    assert (m["num_layers"], m["num_heads"], m["head_dim"], m["hidden_size"], m["vocab_size"]) == (6, 4, 32, 128, 50304)
    assert m["rotary_dims"] == 8 and m["dtype"] == "float16" and m["name"] == "random-pythia-14m"
    step = ref.Step(np.array([[5, 6, 7]]), np.array([[0, 1, 2]]), np.ones((1, 3), np.int64))
    out = ref.run_onnx(ref.ort_session(tmp_path / "p14m/model.onnx"), step, m)
    assert out["logits"].shape == (1, 3, 50304) and np.isfinite(out["logits"]).all()
    np.testing.assert_allclose(out["attention_sums.5"].sum(axis=2), 3.0, atol=1e-4)


def test_pythia_table_matches_the_compiled_configs():
    """The numbers carried into config.py agree with tests/data/pythia-configs.json (compiled
    from EleutherAI's configs; tests/data/README.md)."""
    models = json.loads((TEST_DATA / "pythia-configs.json").read_text())["models"]
    assert set(models) == set(PYTHIA_SIZES)
    for name, entry in models.items():
        want = entry["config"]
        got = pythia_config(name)
        for k, v in want.items():
            if not k.endswith("_derived"):
                assert got[k] == v, f"{name}.{k}: {got[k]} != {v}"
