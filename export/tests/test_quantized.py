"""Quantized exports (`export.py --weights int8|int4`, issue 16; `int8-dq`, issue 31): the
quantizers, the graph and manifest they give, the engine running them, and what they cost against
fp32.

Models, exported once per session from what the repository holds: the tiny fixture's checkpoint
(tests/fixtures/tiny/hf) and pythia-micro (models/pythia-micro, trained safetensors), each as
fp32, int8, int4 (block 32, LM head in the same format) and int8-dq, plus two variants on the tiny one
(int4 --dtype fp16; int4 --block-size 128 --lm-head int8, a block wider than the hidden size).
Text: the committed WikiText-2 excerpt (tests/data/wiki.test.excerpt.raw), 256 tokens.

Tolerances and why:
- engine vs onnxruntime's Python run of the same graph (h2o_export.graph_stream, which lays the
  cache out in the engine's slots): the graph gets the same float32 inputs in both, so ONNX
  Runtime's kernels return the same floats; only the host's float64 log-softmax differs in
  summation order: per-token NLL within 1e-9 (measured ~1e-14), and the same victims at every
  step. An exact layout matters: in int8/int4 graphs MatMulNBits quantizes its activations to
  int8 (accuracy_level 4), so a summation-order difference of 1e-7 (e.g. masked empty columns)
  can flip a rounding and grow through the layers: on pythia-micro the same text with the
  cache compacted instead of slotted moves per-token NLLs by up to 0.2 and PPL by up to 0.6%
  (docs/perf/quantization.md). Each decode step's attention row must sum to 1 within 1e-5.
  DynamicQuantizeMatMul (int8-dq) quantizes each call's activations with one scale for the
  whole tensor, the same in both runs since the inputs are.
- quantized vs fp32 graph, one prefill (64 tokens) and one decode step on the same inputs:
  logits' RMS difference relative to the logits' spread, attention sums' largest difference
  per query; measured int8 1.2-1.9e-2 and 0.8-16e-3, int4 0.12-0.19 and 0.8-21e-2 (8-bit
  weights and activations: ~0.7% error per matmul; 4-bit weights: ~9%). Bounds: int8 0.05 and
  0.05, int4 0.4 and 0.5 (wrong packing, scales or wiring give errors of order 1).
- int8-dq against fp32 (per-column int8 weights, per-call uint8 activations): measured logits
  1.1-3.6e-2, attention sums 0.8-25e-3; bounds as int8's (0.05, 0.05).
- streaming PPL over 256 tokens, engine, full cache: int8 within 2% of fp32, int4 within 15%,
  int8-dq within 2% (measured: pythia-micro +0.5%, +8.3%, +0.01%; tiny -0.04%, -0.8%,
  -0.25%). The module prints the table.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

from common import EXPORT_DIR, FIXTURE, REPO, WIKI_EXCERPT, engine_bin, engine_env  # noqa: E402

from h2o_export import graph_parity as gp  # noqa: E402
from h2o_export import graph_stream as gs  # noqa: E402
from h2o_export.exporter import export  # noqa: E402
from h2o_export.quantize import dequantize_blockwise, quantize_blockwise, quantize_per_column  # noqa: E402
from h2o_export.reference import load_tokens  # noqa: E402

N_TOKENS = 256
NLL_TOL = 1e-9
ROW_SUM_TOL = 1e-5
CLOSE = {"int8": dict(logits=0.05, sums=0.05, ppl=0.02), "int4": dict(logits=0.4, sums=0.5, ppl=0.15),
         "int8-dq": dict(logits=0.05, sums=0.05, ppl=0.02)}
CHECKPOINTS = {"tiny": FIXTURE / "hf", "pythia-micro": REPO / "models/pythia-micro"}
# name -> (checkpoint, export options)
EXPORTS = {f"{m}-{w}": (m, dict(weights=w)) for m in CHECKPOINTS for w in ("fp32", "int8", "int4", "int8-dq")}
EXPORTS["tiny-int8-dq-head-fp32"] = ("tiny", dict(weights="int8-dq", lm_head="fp32"))
EXPORTS["tiny-int4-fp16"] = ("tiny", dict(weights="int4", dtype="fp16"))
EXPORTS["tiny-int4-b128-head8"] = ("tiny", dict(weights="int4", block_size=128, lm_head="int8"))
# int4 with an int8-dq prefill copy (--prefill-weights; test_prefill_route.py checks its routing)
EXPORTS["pythia-micro-int4-pd"] = ("pythia-micro", dict(weights="int4", prefill_weights="int8-dq"))
POLICIES = {"tiny": ["full", "local:64", "h2o:32+32"], "pythia-micro": ["full", "local:64", "h2o:48+16"]}
ENGINE_CASES = [(e, p) for e, (m, o) in EXPORTS.items() if o["weights"] != "fp32" for p in POLICIES[m]]

REPORT: dict = {}  # export -> policy -> {"engine_ppl", "max_abs_nll_diff"}


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """At the end: the PPL of each export and policy (engine), and the change against fp32."""
    yield
    if not REPORT:
        return
    lines = ["quantized exports: engine PPL over 256 tokens (change vs fp32) | max |dNLL| engine vs onnxruntime"]
    for name, pols in sorted(REPORT.items(), key=lambda kv: list(EXPORTS).index(kv[0])):
        base = REPORT.get(f"{EXPORTS[name][0]}-fp32", {})
        for pol, r in pols.items():
            ref = base.get(pol, {}).get("engine_ppl")
            change = f"{100 * (r['engine_ppl'] / ref - 1):+.2f}%" if ref else "-"
            diff = f"{r['max_abs_nll_diff']:.1e}" if "max_abs_nll_diff" in r else "-"
            lines.append(f"  {name:22s} {pol:10s} {r['engine_ppl']:12.6f} ({change:>7s}) | {diff}")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name -> export folder, each exported on first use into one session tmp dir."""
    root = tmp_path_factory.mktemp("quantized")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            model, opts = EXPORTS[name]
            ckpt = CHECKPOINTS[model]
            if not (ckpt / "model.safetensors").is_file():
                pytest.skip(f"{ckpt}/model.safetensors is absent (it is committed; check out the repository fully)")
            export(root / name, checkpoint=ckpt, name=name, log=lambda _: None, **opts)
            done[name] = root / name
        return done[name]

    return get


def _tokens(model_dir: Path) -> list[int]:
    return load_tokens(model_dir / "tokenizer.json", WIKI_EXCERPT, N_TOKENS)


def _engine_ppl(model_dir: Path, spec: str, out: Path) -> tuple[dict, dict]:
    """`h2o ppl --json --trace` (one thread) -> (result, trace)."""
    if not engine_bin().is_file():
        pytest.skip(f"engine binary {engine_bin()} not built: run `cargo build --release` (or set H2O_BIN)")
    stem = out / f"{model_dir.name}-{spec.replace(':', '_').replace('+', '_')}"
    cmd = [str(engine_bin()), "ppl", "--model", str(model_dir), "--data", str(WIKI_EXCERPT), "--tokens",
           str(N_TOKENS), "--policy", spec, "--json", f"{stem}.json", "--trace", f"{stem}.trace.json",
           "--threads", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), timeout=300)
    assert p.returncode == 0, f"engine failed: {' '.join(cmd)}\n{p.stderr[-3000:]}"
    return (json.loads(Path(f"{stem}.json").read_text(encoding="utf-8")),
            json.loads(Path(f"{stem}.trace.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def engine_runs(exported, tmp_path_factory):
    """(export, policy) -> the engine's (result, trace); every case of a model run at once, two in parallel."""
    out = tmp_path_factory.mktemp("engine")
    cache: dict[tuple[str, str], tuple[dict, dict]] = {}

    def get(name: str, spec: str) -> tuple[dict, dict]:
        if (name, spec) not in cache:
            model = EXPORTS[name][0]
            todo = [(e, p) for e in EXPORTS if EXPORTS[e][0] == model for p in POLICIES[model]]
            dirs = {e: exported(e) for e, _ in todo}
            with ThreadPoolExecutor(max_workers=2) as pool:
                for key, res in zip(todo, pool.map(lambda c: _engine_ppl(dirs[c[0]], c[1], out), todo)):
                    cache[key] = res
        return cache[(name, spec)]

    return get


def _evictions(trace: dict) -> dict[int, list]:
    """pos -> evicted [layer][head], for the steps that evict something."""
    return {s["pos"]: s["evicted"] for s in trace["steps"] if any(v for row in s["evicted"] for v in row)}


# ---------- the quantizer ----------


@pytest.mark.parametrize("bits", [4, 8])
def test_quantizer_matches_onnxruntime_bit_for_bit(bits):
    """quantize_blockwise == ONNX Runtime's own symmetric quantizer (what MatMulNBitsQuantizer and
    GenAI's builder call), on weights with all-zero blocks, magnitude ties, exact halves and a K
    that is not a multiple of the block; and the dequantized weight is within one step."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    ort_quantize = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    rng = np.random.default_rng(bits)
    for block in (16, 32, 64, 128, 256):
        for k, n, scale in ((256, 24, 0.02), (200, 7, 3.0), (64, 5, 1.0)):
            w = (rng.standard_normal((n, k)) * scale).astype(np.float32)
            w[0, :block] = 0  # an all-zero block
            w[1] = np.round(w[1] * 4) / 4  # ties of magnitude and exact halves
            w[2, :2] = [-1.0, 1.0]
            blocks = -(-k // block)
            packed = np.zeros((n, blocks, block * bits // 8), np.uint8)
            scales = np.zeros((n, blocks), np.float32)
            zp = np.zeros((n, -(-blocks * bits // 8)), np.uint8)
            w_kn = np.ascontiguousarray(np.pad(w, ((0, 0), (0, blocks * block - k))).T)  # [K, N], as ORT takes it
            ort_quantize(packed, w_kn, scales, zp, block, n, blocks * block, True)
            ours_p, ours_s = quantize_blockwise(w, bits, block)
            assert np.array_equal(ours_p, packed), f"bits {bits} block {block} K {k}: packed values differ"
            assert np.array_equal(ours_s, scales), f"bits {bits} block {block} K {k}: scales differ"
            deq = dequantize_blockwise(ours_p, ours_s, bits, k)
            step = np.repeat(np.abs(ours_s), block, axis=1)[:, :k]
            assert (np.abs(deq - w) <= step * (1 + 1e-6)).all()
            assert (deq[0, :block] == 0).all()


def test_per_column_quantizer_matches_onnxruntime_bit_for_bit():
    """quantize_per_column == ONNX Runtime's quantize_data (symmetric int8, one call per output
    column, what quantize_dynamic(per_channel=True) stores) on columns with an all-zero one,
    exact halves after scaling and ties of magnitude; values within half a step."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    rng = np.random.default_rng(31)
    for n, k, scale in ((24, 256, 0.02), (7, 200, 3.0), (5, 64, 1.0)):
        w = (rng.standard_normal((n, k)) * scale).astype(np.float32)
        w[0] = 0  # an all-zero column of W^T
        w[1] = np.round(w[1] * 4) / 4  # exact quarters: ties when scaled
        w[2, :2] = [-1.0, 1.0]
        w[3, :3] = [127.0, -127.0, 63.5]  # scale 1: 63.5 rounds half to even
        q, scales = quantize_per_column(w)
        assert q.shape == (k, n) and q.dtype == np.int8 and scales.shape == (n,)
        for col in range(n):
            _, want_scale, want_q = quantize_data(w[col], TensorProto.INT8, True)
            assert scales[col] == want_scale, f"column {col}: scale {scales[col]} vs {want_scale}"
            assert np.array_equal(q[:, col], want_q), f"column {col}: values differ"
        deq = q.T.astype(np.float32) * scales[:, None]
        assert (np.abs(deq - w) <= scales[:, None] * 0.5 * (1 + 1e-6)).all()
        assert (q[:, 0] == 0).all() and scales[0] == 1.0


# ---------- the graph and the manifest ----------


def test_fp32_graph_unchanged(tmp_path):
    """--weights fp32 (the default) exports the graph as before, byte for byte: the committed
    tiny fixture (regenerate it with `make fixtures` when the fp32 graph changes on purpose)."""
    name = json.loads((FIXTURE / "manifest.json").read_text())["name"]  # the graph's name is in the bytes
    res = export(tmp_path / "out", checkpoint=FIXTURE / "hf", name=name, weights="fp32", log=lambda _: None)
    assert (tmp_path / "out/model.onnx").read_bytes() == (FIXTURE / "model.onnx").read_bytes()
    assert res.manifest["weights"] == {"format": "fp32"}


@pytest.mark.parametrize("name", ["pythia-micro-int8", "pythia-micro-int4", "tiny-int4-b128-head8"])
def test_quantized_graph_and_manifest(exported, name):
    d = exported(name)
    manifest = json.loads((d / "manifest.json").read_text())
    fmt = EXPORTS[name][1]
    w = manifest["weights"]
    layers = manifest["num_layers"]
    linears = [f"gpt_neox.layers.{i}.{s}" for i in range(layers)
               for s in ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")]
    assert w["format"] == fmt["weights"] and w["block_size"] == fmt.get("block_size", 32)
    assert w["lm_head"] == fmt.get("lm_head", fmt["weights"]) and w["accuracy_level"] == 4 and w["symmetric"]
    assert w["quantized"] == linears + ["embed_out"]
    model = onnx.load(str(d / "model.onnx"))
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17), ("com.microsoft", 1)}
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 4 * layers + 1 and all(n.domain == "com.microsoft" for n in nbits)
    attrs = {n.input[1].rsplit(".", 1)[0]: {a.name: a.i for a in n.attribute} for n in nbits}
    assert all(a["accuracy_level"] == 4 and a["block_size"] == w["block_size"] for a in attrs.values())
    bits = {name: a["bits"] for name, a in attrs.items()}
    assert bits["embed_out"] == (8 if w["lm_head"] == "int8" else 4 if w["lm_head"] == "int4" else None)
    inits = {t.name for t in model.graph.initializer}
    # no float weight is left beside a MatMul (the attention MatMuls take activations only)
    assert not any(n.op_type == "MatMul" and set(n.input) & inits for n in model.graph.node)
    assert "gpt_neox.embed_in.weight" in inits  # the embedding stays a float Gather


@pytest.mark.parametrize("name", ["pythia-micro-int8-dq", "tiny-int8-dq-head-fp32"])
def test_int8_dq_graph_and_manifest(exported, name):
    """--weights int8-dq: every Linear a com.microsoft DynamicQuantizeMatMul on an int8 [K, N]
    weight with a float32 scale per column and the bias fused; no MatMulNBits, no float weight
    beside a MatMul; the head as asked (int8-dq by default, a float MatMul with --lm-head fp32)."""
    d = exported(name)
    manifest = json.loads((d / "manifest.json").read_text())
    w = manifest["weights"]
    head = EXPORTS[name][1].get("lm_head", "int8-dq")
    layers = manifest["num_layers"]
    linears = [f"gpt_neox.layers.{i}.{s}" for i in range(layers)
               for s in ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")]
    assert w["format"] == "int8-dq" and w["op"] == "com.microsoft.DynamicQuantizeMatMul"
    assert w["lm_head"] == head and w["symmetric"] and "block_size" not in w and "accuracy_level" not in w
    assert w["quantized"] == linears + (["embed_out"] if head == "int8-dq" else [])
    model = onnx.load(str(d / "model.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert len(dq) == 4 * layers + (head == "int8-dq") and all(n.domain == "com.microsoft" for n in dq)
    assert not any(n.op_type == "MatMulNBits" for n in model.graph.node)
    for n in dq:
        b, scale = inits[n.input[1]], inits[n.input[2]]
        assert b.data_type == onnx.TensorProto.INT8 and scale.data_type == onnx.TensorProto.FLOAT
        k, cols = b.dims
        assert list(scale.dims) == [cols]
        if n.input[1].startswith("embed_out"):  # Pythia's head has no bias
            assert len(n.input) == 3
        else:  # no zero point; the bias fused
            assert len(n.input) == 5 and n.input[3] == "" and n.input[4] in inits
    float_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and set(n.input) & set(inits)]
    assert len(float_matmuls) == (0 if head == "int8-dq" else 1)  # only an fp32 head keeps a float weight
    assert "gpt_neox.embed_in.weight" in inits


@pytest.mark.parametrize("name", [n for n in EXPORTS if EXPORTS[n][0] == "pythia-micro"])
def test_weight_bytes_estimate_matches_the_file(exported, name):
    """exporter.weights_nbytes (the disk-space check and the 2 GB protobuf limit) counts each
    format's bytes: within 0.1% of the initializers' bytes (the rest: the graph's small constants)."""
    from h2o_export.config import load_config_file
    from h2o_export.exporter import weights_nbytes
    from h2o_export.quantize import WeightFormat

    d = exported(name)
    opts = EXPORTS[name][1]
    _, cfg = load_config_file(CHECKPOINTS["pythia-micro"] / "config.json")
    fmt = WeightFormat.parse(opts["weights"], lm_head=opts.get("lm_head"), prefill=opts.get("prefill_weights"))
    est = weights_nbytes(cfg, opts.get("dtype", "fp32"), fmt)
    model = onnx.load(str(d / "model.onnx"))
    real = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    assert abs(real - est) <= 1e-3 * est, f"{name}: estimated {est} bytes, the file holds {real}"


@pytest.mark.parametrize("weights", ["int8", "int4", "int8-dq"])
@pytest.mark.parametrize("model", list(CHECKPOINTS))
def test_quantized_graph_close_to_fp32(exported, model, weights):
    """One 64-token prefill and one decode step on the same inputs: quantized vs fp32 graph."""
    base, quant = exported(f"{model}-fp32"), exported(f"{model}-{weights}")
    manifest = json.loads((base / "manifest.json").read_text())
    ids = np.array(_tokens(base)[:65])
    pre = gp.Step(ids[None, :64], np.arange(64)[None], np.ones((1, 64), np.int64))
    s_base, s_quant = gs.graph_session(base), gs.graph_session(quant)
    want = gp.run_onnx(s_base, pre, manifest)
    past = [(want[f"new_key_values.{i}.key"], want[f"new_key_values.{i}.value"]) for i in range(manifest["num_layers"])]
    dec = gp.Step(ids[None, 64:], np.array([[64]]), np.ones((1, 65), np.int64), past)
    tol = CLOSE[weights]
    for label, step in (("prefill", pre), ("decode", dec)):
        a, b = gp.run_onnx(s_quant, step, manifest), gp.run_onnx(s_base, step, manifest)
        lb = b["logits"]
        rel = np.sqrt(((a["logits"] - lb) ** 2).mean()) / np.sqrt(((lb - lb.mean(-1, keepdims=True)) ** 2).mean())
        queries = step.input_ids.shape[1]
        sums = max(np.abs(a[f"attention_sums.{i}"] - b[f"attention_sums.{i}"]).max()
                   for i in range(manifest["num_layers"])) / queries
        assert rel <= tol["logits"], f"{model} {weights} {label}: logits differ by {rel:.3g} (relative RMS)"
        assert sums <= tol["sums"], f"{model} {weights} {label}: attention sums differ by {sums:.3g} per query"
        assert all(np.isfinite(v).all() for v in a.values())


# ---------- the engine on quantized graphs ----------


@pytest.mark.parametrize("name,spec", ENGINE_CASES, ids=[f"{e}-{p}" for e, p in ENGINE_CASES])
def test_engine_matches_onnxruntime(exported, engine_runs, name, spec):
    """h2o ppl on the quantized graph == onnxruntime's Python run of it in the engine's slot
    layout: the same per-token NLLs (1e-9) and the same victims at every step."""
    d = exported(name)
    doc, trace = engine_runs(name, spec)
    res = gs.run_graph(d, _tokens(d), spec)
    assert trace["tokens"] == res["trace"]["tokens"], "engine tokenization differs from load_tokens"
    assert len(doc["nll"]) == N_TOKENS - 1 and all(math.isfinite(x) for x in doc["nll"])
    worst = max(abs(a - b) for a, b in zip(doc["nll"], res["nll"]))
    base = f"{EXPORTS[name][0]}-fp32"
    REPORT.setdefault(base, {})[spec] = {"engine_ppl": engine_runs(base, spec)[0]["ppl"]}
    REPORT.setdefault(name, {})[spec] = {"engine_ppl": doc["ppl"], "max_abs_nll_diff": worst}
    assert worst <= NLL_TOL, f"{name} {spec}: engine and onnxruntime NLLs differ by {worst:.3g}"
    assert _evictions(trace) == _evictions(res["trace"]), f"{name} {spec}: the engine evicted other positions"
    if spec != "full":
        assert _evictions(trace), f"{name} {spec}: nothing was evicted"
    assert res["max_row_sum_error"] <= ROW_SUM_TOL


@pytest.mark.parametrize("weights", ["int8", "int4", "int8-dq"])
@pytest.mark.parametrize("model", list(CHECKPOINTS))
def test_quantized_ppl_close_to_fp32(engine_runs, model, weights):
    full = {w: engine_runs(f"{model}-{w}", "full")[0]["ppl"] for w in ("fp32", weights)}
    change = full[weights] / full["fp32"] - 1
    assert abs(change) <= CLOSE[weights]["ppl"], (
        f"{model} {weights}: PPL {full[weights]:.4f} vs fp32 {full['fp32']:.4f} ({100 * change:+.2f}%)")


def test_prefill_copy_ppl_is_int4s(engine_runs):
    """int4 with an int8-dq prefill copy: `h2o ppl` streams one token a step, so every step is a
    decode step on the int4 weights: the PPL is the plain int4 graph's, to the bit, and within
    int4's bound of fp32."""
    ppl = {n: engine_runs(f"pythia-micro-{n}", "full")[0]["ppl"] for n in ("fp32", "int4", "int4-pd")}
    assert ppl["int4-pd"] == ppl["int4"], ppl
    assert abs(ppl["int4-pd"] / ppl["fp32"] - 1) <= CLOSE["int4"]["ppl"], ppl


def test_info_shows_the_weight_format(exported):
    if not engine_bin().is_file():
        pytest.skip(f"engine binary {engine_bin()} not built: run `cargo build --release` (or set H2O_BIN)")
    p = subprocess.run([str(engine_bin()), "info", "--model", str(exported("tiny-int4-b128-head8")), "--threads", "1"],
                       capture_output=True, text=True, env=engine_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("weight format")]
    assert lines and lines[0].split(None, 2)[2] == "int4 (MatMulNBits, block 128, LM head int8)", p.stdout
    p = subprocess.run([str(engine_bin()), "info", "--model", str(exported("tiny-int8-dq-head-fp32")), "--threads", "1"],
                       capture_output=True, text=True, env=engine_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("weight format")]
    assert lines[0].split(None, 2)[2] == "int8-dq (DynamicQuantizeMatMul, a scale per column, LM head fp32)", p.stdout


# ---------- bad options ----------


@pytest.mark.parametrize("args,says", [
    (["--weights", "int3"], "--weights must be one of fp32, int8, int4"),
    (["--weights", "int4", "--block-size", "48"], "--block-size must be a power of two from 16 to 256"),
    (["--weights", "int8", "--block-size", "8"], "--block-size must be a power of two from 16 to 256"),
    (["--weights", "int4", "--block-size", "512"], "--block-size must be a power of two from 16 to 256"),
    (["--weights", "int4", "--block-size", "big"], "--block-size must be an integer"),
    (["--block-size", "32"], "--block-size only applies to --weights int8 or int4"),
    (["--lm-head", "int8"], "--lm-head only applies to --weights int8, int4 or int8-dq"),
    (["--weights", "int4", "--lm-head", "int2"], "--lm-head must be one of fp32, int8, int4, int8-dq"),
    (["--weights", "int8-dq", "--block-size", "32"], "--block-size does not apply to --weights int8-dq"),
    (["--weights", "int8-dq", "--accuracy-level", "4"], "drop it for --weights int8-dq"),
    (["--weights", "int8-dq", "--lm-head", "int4"], "the LM head is int8-dq (the default) or fp32"),
    (["--weights", "int4", "--lm-head", "int8-dq"], "--lm-head int8-dq needs --weights int8-dq"),
    (["--weights", "int8-dq", "--dtype", "fp16"], "--weights int8-dq needs --dtype fp32"),
    (["--prefill-weights", "int8-dq"], "--weights fp32 has no quantized weights to copy"),
    (["--weights", "int8-dq", "--prefill-weights", "int8-dq"], "already prefills with DynamicQuantizeMatMul"),
    (["--weights", "int4", "--prefill-weights", "int4"], "--prefill-weights must be int8-dq, got 'int4'"),
    (["--weights", "int4", "--prefill-min-tokens", "8"], "--prefill-min-tokens only applies with --prefill-weights"),
    (["--weights", "int4", "--prefill-weights", "int8-dq", "--prefill-min-tokens", "1"], "of at least 2"),
    (["--weights", "int4", "--prefill-weights", "int8-dq", "--prefill-min-tokens", "x"], "of at least 2, got 'x'"),
    (["--weights", "int4", "--prefill-weights", "int8-dq", "--dtype", "fp16"],
     "--prefill-weights int8-dq needs --dtype fp32"),
])
def test_bad_weight_options_are_one_line_errors(tmp_path, args, says):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(EXPORT_DIR / "export.py"), "--checkpoint", str(FIXTURE / "hf"),
                        "--out", str(out), *args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=""))
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: ") and says in p.stderr, p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
