"""int4 with an int8-dq prefill (`export.py --weights int4 --prefill-weights int8-dq`, issue 31;
graph_route.py, quantize.py): one If on the step's new tokens picks the layers' weights.

Oracles, none of them the routing code: the plain int4 export of the same checkpoint (what a
decode step and any step under `--prefill-min-tokens` must give, bit for bit) and an int8-dq
export of a checkpoint whose linear weights were replaced by their int4 values
(`dequantize_blockwise(quantize_blockwise(w))`, written as safetensors here): what a prefill's
K/V and attention sums must be, bit for bit (its LM head is fp32, so the logits are compared
with a bound instead: the hybrid's head is the int4 one). Same inputs and one thread in every
session, so ONNX Runtime's kernels return the same floats wherever the graphs compute the same
thing.

The logits of a prefill against the plain int4 graph's (relative RMS over the logits' spread):
the difference is DynamicQuantizeMatMul's int8 activations (one scale per call, where
MatMulNBits quantizes per block of 32) and the int8 re-rounding of the int4 weights. Measured:
pythia-micro, random ids, 0.050 (64 tokens) and 0.045 (4-token chunk); tiny-qwen2 0.027; on
WikiText text (64 and 128 tokens) 0.038-0.039, while the hybrid's prefill is as far from fp32 as
int4's is (0.194 against 0.191; int8-dq alone 0.036). Bound 0.1: a wiring error (a layer skipped,
a copy of other weights) gives errors of order 1, and the K/V and sums are checked bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from common import REPO

from h2o_export import graph_parity as gp
from h2o_export import graph_stream as gs
from h2o_export.exporter import export
from h2o_export.quantize import dequantize_blockwise, quantize_blockwise

CKPT = REPO / "models/pythia-micro"
QUIET = dict(log=lambda _: None)
LOGITS_BOUND = 0.1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> export folder: the hybrid (min tokens 4), the plain int4 graph, and the oracle
    int8-dq graph of the int4-valued checkpoint."""
    if not (CKPT / "model.safetensors").is_file():
        pytest.skip(f"{CKPT}/model.safetensors is absent (it is committed; check out the repository fully)")
    from safetensors.numpy import load_file, save_file

    root = tmp_path_factory.mktemp("prefill_route")
    export(root / "hybrid", checkpoint=CKPT, weights="int4", prefill_weights="int8-dq", **QUIET)
    export(root / "int4", checkpoint=CKPT, weights="int4", **QUIET)
    tensors = load_file(str(CKPT / "model.safetensors"))
    for name, w in tensors.items():
        if name.startswith("gpt_neox.layers.") and name.endswith(".weight") and w.ndim == 2:
            packed, scales = quantize_blockwise(w, 4, 32)
            tensors[name] = dequantize_blockwise(packed, scales, 4, w.shape[1])
    (root / "int4-valued").mkdir()
    save_file(tensors, str(root / "int4-valued/model.safetensors"))
    for f in ("config.json", "tokenizer.json"):
        shutil.copyfile(CKPT / f, root / "int4-valued" / f)
    export(root / "oracle", checkpoint=root / "int4-valued", weights="int8-dq", lm_head="fp32", **QUIET)
    return {n: root / n for n in ("hybrid", "int4", "oracle")}


def _run(d: Path, step: gp.Step) -> dict:
    manifest = json.loads((d / "manifest.json").read_text())
    return gp.run_onnx(gs.graph_session(d), step, manifest)


def _steps(manifest: dict) -> dict:
    """A 64-token prefill, a 3-token prefill (under min tokens), a decode step and a 4-token
    chunk after 60 cached tokens (a prefill with a past), on the same token ids."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, manifest["vocab_size"], 65)
    layers, heads, hd = manifest["num_layers"], manifest["num_heads"], manifest["head_dim"]
    past = [(rng.standard_normal((1, heads, n, hd)).astype(np.float32),
             rng.standard_normal((1, heads, n, hd)).astype(np.float32)) for n in (64, 60) for _ in range(layers)]
    return {
        "prefill-64": gp.Step(ids[None, :64], np.arange(64)[None], np.ones((1, 64), np.int64)),
        "prefill-3": gp.Step(ids[None, :3], np.arange(3)[None], np.ones((1, 3), np.int64)),
        "decode": gp.Step(ids[None, 64:], np.array([[64]]), np.ones((1, 65), np.int64), past[:layers]),
        "chunk-4": gp.Step(ids[None, 60:64], np.arange(60, 64)[None], np.ones((1, 64), np.int64), past[layers:]),
    }


def _layer_outputs(out: dict) -> dict:
    return {k: v for k, v in out.items() if k != "logits"}


def test_graph_and_manifest(models):
    """One If in the main graph: then = a DynamicQuantizeMatMul per layer linear on an int8 copy,
    else = a MatMulNBits per layer linear; the LM head (MatMulNBits) outside; the manifest's
    prefill entry with the copies' bytes; the int4 graph's initializers all there, unchanged."""
    d = models["hybrid"]
    manifest = json.loads((d / "manifest.json").read_text())
    layers = manifest["num_layers"]
    model = onnx.load(str(d / "model.onnx"))
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    assert len(ifs) == 1
    branches = {a.name: a.g for a in ifs[0].attribute}
    ops = {k: [n.op_type for n in g.node] for k, g in branches.items()}
    assert ops["then_branch"].count("DynamicQuantizeMatMul") == 4 * layers and "MatMulNBits" not in ops["then_branch"]
    assert ops["else_branch"].count("MatMulNBits") == 4 * layers and "DynamicQuantizeMatMul" not in ops["else_branch"]
    assert [n.op_type for n in model.graph.node].count("MatMulNBits") == 1  # the head
    assert len(ifs[0].output) == 1 + 3 * layers
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    copies = [k for k in inits if ".prefill_" in k]
    assert len(copies) == 2 * 4 * layers
    pre = manifest["weights"]["prefill"]
    assert pre["format"] == "int8-dq" and pre["min_tokens"] == 4
    assert pre["bytes"] == sum(inits[k].nbytes for k in copies)
    plain = onnx.load(str(models["int4"] / "model.onnx"))
    for t in plain.graph.initializer:
        if not t.name.startswith("const_"):  # numbered small constants: numbering differs
            np.testing.assert_array_equal(inits[t.name], onnx.numpy_helper.to_array(t), err_msg=t.name)


def test_short_steps_are_the_int4_graph(models):
    """A decode step and a prefill under --prefill-min-tokens: every output bit for bit the plain
    int4 graph's."""
    manifest = json.loads((models["hybrid"] / "manifest.json").read_text())
    steps = _steps(manifest)
    for label in ("decode", "prefill-3"):
        got, want = _run(models["hybrid"], steps[label]), _run(models["int4"], steps[label])
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{label} {k}")


def test_prefills_run_the_int8_copy(models):
    """A 64-token prefill and a 4-token chunk after a past: K/V and attention sums bit for bit the
    oracle int8-dq graph's (of the int4-valued weights), not the int4 graph's; logits within the
    bound of the int4 graph's."""
    manifest = json.loads((models["hybrid"] / "manifest.json").read_text())
    steps = _steps(manifest)
    for label in ("prefill-64", "chunk-4"):
        got = _run(models["hybrid"], steps[label])
        oracle, int4 = _run(models["oracle"], steps[label]), _run(models["int4"], steps[label])
        for k, v in _layer_outputs(oracle).items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{label} {k}")
        assert any(not np.array_equal(got[k], v) for k, v in _layer_outputs(int4).items()), label
        a, b = got["logits"], int4["logits"]
        rel = np.sqrt(((a - b) ** 2).mean()) / np.sqrt(((b - b.mean(-1, keepdims=True)) ** 2).mean())
        assert 0 < rel <= LOGITS_BOUND, f"{label}: logits differ from the int4 graph's by {rel:.3g}"


def test_min_tokens_moves_the_switch(tmp_path, models):
    """--prefill-min-tokens 2: a 3-token prefill now runs the copy (its outputs leave the int4
    graph's); the manifest says 2."""
    export(tmp_path / "m2", checkpoint=CKPT, weights="int4", prefill_weights="int8-dq", prefill_min_tokens=2, **QUIET)
    manifest = json.loads((tmp_path / "m2/manifest.json").read_text())
    assert manifest["weights"]["prefill"]["min_tokens"] == 2
    step = _steps(manifest)["prefill-3"]
    got, int4, oracle = (_run(d, step) for d in (tmp_path / "m2", models["int4"], models["oracle"]))
    for k, v in _layer_outputs(oracle).items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert not np.array_equal(got["new_key_values.1.key"], int4["new_key_values.1.key"])


def test_llama_graph_routes_too(tmp_path):
    """The Llama-family builder takes the same If (tiny-qwen2, block 16): decode = the plain int4
    graph's bit for bit; a prefill leaves it, within the logits bound."""
    hf = REPO / "tests/fixtures/tiny-qwen2/hf"
    export(tmp_path / "h", checkpoint=hf, weights="int4", block_size=16, prefill_weights="int8-dq", **QUIET)
    export(tmp_path / "p", checkpoint=hf, weights="int4", block_size=16, **QUIET)
    manifest = json.loads((tmp_path / "h/manifest.json").read_text())
    layers, kv, hd = manifest["num_layers"], manifest["num_kv_heads"], manifest["head_dim"]
    rng = np.random.default_rng(1)
    ids = rng.integers(0, manifest["vocab_size"], 17)
    past = [(rng.standard_normal((1, kv, 16, hd)).astype(np.float32),
             rng.standard_normal((1, kv, 16, hd)).astype(np.float32)) for _ in range(layers)]
    dec = gp.Step(ids[None, 16:], np.array([[16]]), np.ones((1, 17), np.int64), past)
    pre = gp.Step(ids[None, :16], np.arange(16)[None], np.ones((1, 16), np.int64))
    got, want = _run(tmp_path / "h", dec), _run(tmp_path / "p", dec)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    a, b = _run(tmp_path / "h", pre)["logits"], _run(tmp_path / "p", pre)["logits"]
    rel = np.sqrt(((a - b) ** 2).mean()) / np.sqrt(((b - b.mean(-1, keepdims=True)) ** 2).mean())
    assert 0 < rel <= LOGITS_BOUND, rel


def test_speed_floor_counts_the_decode_weights(models, tmp_path):
    """`h2o speed`'s floor reads the weights a decode step reads: the graph's initializers less
    the prefill copies and the input embedding (one row read), read from the file itself, plus at
    most the file's bytes that are not initializer data (nodes, both branches: 96 KB of 15 MB
    here). Counting the copies would put the figure 2.3x too high here."""
    import subprocess

    from common import WIKI_EXCERPT, engine_bin, engine_env

    if not engine_bin().is_file():
        pytest.skip(f"engine binary {engine_bin()} not built: run `cargo build --release` (or set H2O_BIN)")
    d = models["hybrid"]
    out = tmp_path / "speed.json"
    p = subprocess.run([str(engine_bin()), "speed", "--model", str(d), "--data", str(WIKI_EXCERPT), "--prompt", "16",
                        "--gen", "4", "--warmup", "0", "--rounds", "1", "--no-floor", "--threads", "1",
                        "--json", str(out)], capture_output=True, text=True, env=engine_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["weights"] == "int4+int8-dq-prefill"  # the format beside the model's name
    got = doc["weight_bytes_read_per_token"]
    model = onnx.load(str(d / "model.onnx"))
    sizes = {t.name: onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer}
    want = sum(n for k, n in sizes.items() if ".prefill_" not in k and k != "gpt_neox.embed_in.weight")
    graph_bytes = (d / "model.onnx").stat().st_size - sum(sizes.values())
    assert want <= got <= want + graph_bytes, (got, want, graph_bytes)


def test_info_names_the_copy(models):
    """`h2o info`: the int4 format line as for any int4 graph, then the copy's own line with the
    manifest's threshold and bytes (6,365,184 bytes = 6.07 MiB), within 80 columns."""
    import subprocess

    from common import engine_bin, engine_env

    if not engine_bin().is_file():
        pytest.skip(f"engine binary {engine_bin()} not built: run `cargo build --release` (or set H2O_BIN)")
    p = subprocess.run([str(engine_bin()), "info", "--model", str(models["hybrid"]), "--threads", "1"],
                       capture_output=True, text=True, env=engine_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    lines = {ln[:17].strip(): ln[17:] for ln in p.stdout.splitlines()}
    assert lines["weight format"] == "int4 (MatMulNBits, block 32, LM head int4)"
    nbytes = json.loads((models["hybrid"] / "manifest.json").read_text())["weights"]["prefill"]["bytes"]
    assert lines["prefill copy"] == f"int8-dq (DynamicQuantizeMatMul), 4+ new tokens, {nbytes / 2**20:.2f} MiB"
    assert len("prefill copy     " + lines["prefill copy"]) <= 80


def test_int8_weights_take_a_copy_too(tmp_path, models):
    """--weights int8 --prefill-weights int8-dq: a decode step is the plain int8 graph's bit for
    bit, a 64-token prefill leaves it (the copy runs); the manifest's copy bytes are the
    initializers'."""
    export(tmp_path / "h8", checkpoint=CKPT, weights="int8", prefill_weights="int8-dq", **QUIET)
    export(tmp_path / "p8", checkpoint=CKPT, weights="int8", **QUIET)
    manifest = json.loads((tmp_path / "h8/manifest.json").read_text())
    steps = _steps(manifest)
    got, want = _run(tmp_path / "h8", steps["decode"]), _run(tmp_path / "p8", steps["decode"])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    pre = _run(tmp_path / "h8", steps["prefill-64"]), _run(tmp_path / "p8", steps["prefill-64"])
    assert not np.array_equal(pre[0]["new_key_values.1.key"], pre[1]["new_key_values.1.key"])
    model = onnx.load(str(tmp_path / "h8/model.onnx"))
    copies = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer if ".prefill_" in t.name)
    assert manifest["weights"]["prefill"]["bytes"] == copies > 0
    import subprocess

    from common import engine_bin, engine_env

    if engine_bin().is_file():  # the engine's graph check takes it
        p = subprocess.run([str(engine_bin()), "info", "--model", str(tmp_path / "h8"), "--threads", "1"],
                           capture_output=True, text=True, env=engine_env(), timeout=120)
        assert p.returncode == 0 and "prefill copy     int8-dq" in p.stdout, p.stderr
