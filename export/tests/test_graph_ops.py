"""`export.py --graph-ops fused` (issue 31): the same float operations as the default graph in
fewer nodes, so its outputs must be the default graph's bit for bit; and `--accuracy-level`.

Each case exports one checkpoint twice (--graph-ops plain, the default, and fused), runs the same
calls through onnxruntime (one thread, its default optimisations, as the engine) and compares
every output with np.array_equal: a prefill of batch 2 whose second row is left-padded (mask 0
on its first 5 columns), a decode step whose past holds the prefill's K/V plus 3 empty, masked
slots with garbage in them, and a 7-token chunk on that past. No tolerance: any change of float
order shows as a difference in some logit (docs/perf/prefill-graph.md says why each rewrite is
exact). The default graph itself stays byte for byte the committed fixture's
(test_quantized.py::test_fp32_graph_unchanged).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from common import EXPORT_DIR, FIXTURE, REPO  # noqa: E402

from h2o_export import graph_parity as gp  # noqa: E402
from h2o_export import graph_stream as gs  # noqa: E402
from h2o_export.exporter import export  # noqa: E402

CHECKPOINTS = {"tiny": FIXTURE / "hf", "pythia-micro": REPO / "models/pythia-micro"}
# case -> (checkpoint, export options shared by the plain and the fused export)
CASES = {
    "tiny": ("tiny", {}),
    "pythia-micro": ("pythia-micro", {}),
    "tiny-layer-masks": ("tiny", dict(layer_masks=True)),
    "tiny-fp16": ("tiny", dict(dtype="fp16")),
    "pythia-micro-int4": ("pythia-micro", dict(weights="int4")),
    "tiny-int8-acc4": ("tiny", dict(weights="int8")),
    "tiny-int8-dq": ("tiny", dict(weights="int8-dq")),
}


def _export(root: Path, case: str, graph_ops: str) -> Path:
    model, opts = CASES[case]
    ckpt = CHECKPOINTS[model]
    if not (ckpt / "model.safetensors").is_file():
        pytest.skip(f"{ckpt}/model.safetensors is absent (it is committed; check out the repository fully)")
    out = root / f"{case}-{graph_ops}"
    export(out, checkpoint=ckpt, name=case, graph_ops=graph_ops, log=lambda _: None, **opts)
    return out


def _run(session, manifest: dict, step: gp.Step) -> dict:
    dt = np.float16 if manifest["dtype"] == "float16" else np.float32
    feeds = step.feeds(manifest["num_layers"], manifest["num_heads"], manifest["head_dim"], dt)
    if manifest.get("attention_masks") == "per_layer":
        mask = feeds.pop("attention_mask")
        feeds.update({f"attention_mask.{i}": mask for i in range(manifest["num_layers"])})
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, gp.with_logits_from(feeds, session, 0))))


def _steps(manifest: dict, first: dict | None) -> list[gp.Step]:
    """The prefill, then (given its outputs) the decode step and the chunk on its past."""
    rng = np.random.default_rng(7)
    vocab, layers = manifest["tokenizer_vocab_size"], manifest["num_layers"]
    seq = 24
    if first is None:
        ids = rng.integers(0, vocab, (2, seq))
        mask = np.ones((2, seq), np.int64)
        mask[1, :5] = 0  # row 1 left-padded
        pos = np.stack([np.arange(seq), np.maximum(np.arange(seq) - 5, 0)])
        return [gp.Step(ids, pos, mask)]
    dt = first["new_key_values.0.key"].dtype
    past = []
    for i in range(layers):
        k, v = first[f"new_key_values.{i}.key"], first[f"new_key_values.{i}.value"]
        junk = rng.standard_normal(k.shape[:2] + (3, k.shape[3])).astype(dt)  # 3 empty slots, masked
        past.append((np.concatenate([k, junk], axis=2), np.concatenate([v, junk * 2], axis=2)))
    cache_mask = np.ones((2, seq + 3), np.int64)
    cache_mask[1, :5] = 0
    cache_mask[:, seq:] = 0
    steps = []
    for new in (1, 7):
        ids = rng.integers(0, vocab, (2, new))
        pos = np.stack([np.arange(seq, seq + new), np.arange(seq - 5, seq - 5 + new)])
        steps.append(gp.Step(ids, pos, np.concatenate([cache_mask, np.ones((2, new), np.int64)], axis=1), past))
    return steps


@pytest.mark.parametrize("case", list(CASES))
def test_fused_graph_is_bit_identical(tmp_path, case):
    plain, fused = _export(tmp_path, case, "plain"), _export(tmp_path, case, "fused")
    manifest = json.loads((plain / "manifest.json").read_text())
    s_plain, s_fused = gs.graph_session(plain), gs.graph_session(fused)
    first = _run(s_plain, manifest, _steps(manifest, None)[0])
    for label, step in zip(("prefill", "decode", "chunk"), _steps(manifest, None) + _steps(manifest, first)):
        want, got = _run(s_plain, manifest, step), _run(s_fused, manifest, step)
        assert want.keys() == got.keys()
        differ = [k for k in want if not np.array_equal(want[k], got[k])]
        assert not differ, (f"{case} {label}: fused differs from plain in {differ[:4]} "
                            f"(max |d| {max(np.abs(want[k].astype(np.float64) - got[k]).max() for k in differ):.3g})")


def test_fused_graph_nodes_and_manifest(tmp_path):
    """fused: no Erf, Neg or per-layer Where (one Where builds the mask bias), a BiasGelu per layer,
    the contrib opset, `graph_ops` in the manifest; plain's manifest has no such key."""
    plain, fused = _export(tmp_path, "tiny", "plain"), _export(tmp_path, "tiny", "fused")
    ops = [n.op_type for n in onnx.load(str(fused / "model.onnx")).graph.node]
    layers = json.loads((fused / "manifest.json").read_text())["num_layers"]
    assert "Erf" not in ops and "Neg" not in ops and ops.count("Where") == 1
    assert ops.count("BiasGelu") == layers and ops.count("Softmax") == layers
    model = onnx.load(str(fused / "model.onnx"))
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), ("com.microsoft", 1)}
    assert json.loads((fused / "manifest.json").read_text())["graph_ops"] == "fused"
    assert "graph_ops" not in json.loads((plain / "manifest.json").read_text())
    plain_ops = [n.op_type for n in onnx.load(str(plain / "model.onnx")).graph.node]
    assert len(ops) < len(plain_ops), (len(ops), len(plain_ops))


@pytest.mark.parametrize("level", [1, 4])
def test_accuracy_level_reaches_every_node_and_the_manifest(tmp_path, level):
    out = tmp_path / "out"
    res = export(out, checkpoint=FIXTURE / "hf", name="tiny", weights="int4", accuracy_level=level, log=lambda _: None)
    assert res.manifest["weights"]["accuracy_level"] == level
    nbits = [n for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all({a.name: a.i for a in n.attribute}["accuracy_level"] == level for n in nbits)


@pytest.mark.parametrize("args,says", [
    (["--weights", "int8", "--accuracy-level", "1"], "ONNX Runtime has no 8-bit MatMulNBits kernel"),
    (["--weights", "int4", "--lm-head", "int8", "--accuracy-level", "1"], "(--lm-head int8)"),
    (["--weights", "int4", "--accuracy-level", "2"], "--accuracy-level must be 1 (float32 activations) or 4"),
    (["--weights", "int4", "--accuracy-level", "high"], "--accuracy-level must be 1 or 4"),
    (["--accuracy-level", "4"], "--accuracy-level only applies to --weights int8 or int4"),
    (["--graph-ops", "fast"], "--graph-ops"),
])
def test_bad_graph_options_are_one_line_errors(tmp_path, args, says):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(EXPORT_DIR / "export.py"), "--checkpoint", str(FIXTURE / "hf"),
                        "--out", str(out), *args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=""))
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: ") and says in p.stderr, p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_matmul_nbits_paths_probe():
    """The probe docs/perf/measure-issue31.sh runs: 8-bit weights with float32 activations have no
    MLAS kernel on any CPU (the reason --accuracy-level 1 is refused for int8)."""
    from h2o_export.profile import matmul_nbits_paths

    paths = {(r["bits"], r["block_size"], r["accuracy_level"]): r["path"] for r in matmul_nbits_paths(blocks=(32,))}
    assert paths[(8, 32, 1)] == "dequantize + sgemm"
    assert paths[(4, 32, 4)] == "MLAS QNBitGemm" and paths[(8, 32, 4)] == "MLAS QNBitGemm"
