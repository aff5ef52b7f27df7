"""Parity of the engine with the PyTorch reference on a model that declares a BOS (issue 15).

The tiny fixture's checkpoint is copied with `"prepend_bos_token_id": 0` in its config.json and
exported (the exporter writes the declaration into the manifest). Both sides then feed the BOS
first, at position 0, and score only the text: N text tokens give N-1 NLLs. For each policy the
engine's `h2o ppl --json --trace` is checked against the reference replaying the engine's trace
(lockstep: per-token NLL within 1e-4, no victim violations) and running on its own (PPL within
1e-3 relative, the same kept sets at >= 90% of (step, layer, head) as test_parity.py's floor
for this fixture); the trace's tokens are the
BOS then the text, and the JSON names the BOS. The same text without the declaration gives
other NLLs (the BOS is really fed).

A missing input (engine binary, fixture) skips with the reason; H2O_REQUIRE_ALL=1 (`make test`,
CI) turns that into a failure (conftest.py).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from common import FIXTURE, data_path, engine_bin, engine_env  # noqa: E402

from h2o_export import reference as ref  # noqa: E402
from h2o_export import trace as tr  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 0
N_TOKENS = 200
NLL_TOL = 1e-4
PPL_REL_TOL = 1e-3
SHARE_FLOOR = 0.90  # as test_parity.py for the tiny fixture (random weights: rare near-ties)
POLICIES = ["full", "local:32", "sink:1+31", "h2o:16+16", "h2o-layer:16+16", "tova:32"]


@pytest.fixture(scope="module")
def bos_model(tmp_path_factory):
    """(exported dir, reference model, text ids) of the tiny fixture declaring BOS 0."""
    for need, why in [(FIXTURE / "hf" / "config.json", "make fixtures"),
                      (engine_bin(), "cargo build --release (or set H2O_BIN)")]:
        if not need.is_file():
            pytest.skip(f"{need} is absent: run `{why}` first")
    if not data_path().is_file():
        pytest.skip(f"text not found at {data_path()}: unset H2O_DATA or point it at a text file")
    from h2o_export.exporter import export

    tmp = tmp_path_factory.mktemp("tiny_bos")
    hf = tmp / "hf"
    shutil.copytree(FIXTURE / "hf", hf)
    cfg = json.loads((hf / "config.json").read_text(encoding="utf-8"))
    cfg["prepend_bos_token_id"] = BOS
    (hf / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    onnx = tmp / "onnx"
    export(onnx, checkpoint=hf, name="tiny-bos", log=lambda _m: None)
    model = ref.load_model(hf)
    ids = ref.load_tokens(onnx / "tokenizer.json", data_path(), N_TOKENS)
    return onnx, model, ids


def engine_ppl(onnx: Path, spec: str, out: Path) -> tuple[dict, dict]:
    doc, trace = out.with_suffix(".json"), out.with_suffix(".trace.json")
    cmd = [str(engine_bin()), "ppl", "--model", str(onnx), "--data", str(data_path()), "--tokens", str(N_TOKENS),
           "--policy", spec, "--json", str(doc), "--trace", str(trace), "--threads", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), timeout=600)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr[-3000:]}"
    return json.loads(doc.read_text(encoding="utf-8")), json.loads(trace.read_text(encoding="utf-8"))


def test_manifest_declares_the_bos(bos_model):
    onnx, _, _ = bos_model
    assert json.loads((onnx / "manifest.json").read_text())["prepend_bos_token_id"] == BOS


@pytest.mark.parametrize("spec", POLICIES)
def test_engine_matches_the_reference_with_a_declared_bos(bos_model, spec, tmp_path):
    onnx, model, ids = bos_model
    doc, trace = engine_ppl(onnx, spec, tmp_path / "run")
    assert doc["prepend_bos_token_id"] == BOS and doc["n_tokens"] == N_TOKENS
    assert len(doc["nll"]) == N_TOKENS - 1, "N text tokens give N-1 predictions"
    assert trace["prepend_bos_token_id"] == BOS
    assert trace["tokens"] == [BOS] + ids, "the trace's tokens are what was fed: the BOS, then the text"

    locked = ref.run_reference(model, ids, spec, replay=trace)
    assert locked["prepend_bos_token_id"] == BOS
    worst = max(abs(a - b) for a, b in zip(doc["nll"], locked["nll"]))
    assert len(locked["nll"]) == len(doc["nll"])
    assert worst <= NLL_TOL, f"{spec}: lockstep NLL differs by {worst:.3g}"
    rep = locked.get("replay", {"n_violations": 0, "victims_checked": 0})
    assert rep["n_violations"] == 0, f"{spec}: victim violations {rep.get('violations', [])[:5]}"
    if spec != "full":
        assert rep["victims_checked"] > 0, f"{spec}: the engine's trace evicts nothing"
        # the BOS sits at position 0 like any token: a sink of 1 keeps it, a local window evicts it
        evicted0 = any(0 in row for s in trace["steps"] for layer in s["evicted"] for row in layer)
        if spec.startswith(("sink", "local")):
            assert evicted0 == spec.startswith("local"), f"{spec}: position 0 evicted: {evicted0}"

    free = ref.run_reference(model, ids, spec)
    assert math.isclose(doc["ppl"], free["ppl"], rel_tol=PPL_REL_TOL)
    # kept sets after every step the engine evicted at (between them both only add the new token)
    theirs = dict(tr.iter_kept_sets(free["trace"]))
    same = total = 0
    for pos, kept in tr.iter_kept_sets(trace):
        for mine_l, theirs_l in zip(kept, theirs[pos]):
            same += sum(a == b for a, b in zip(mine_l, theirs_l))
            total += len(mine_l)
    assert same >= SHARE_FLOOR * total, f"{spec}: kept sets identical at only {same}/{total} (step, layer, head)"


def test_the_bos_is_really_fed(bos_model, tmp_path):
    onnx, _, _ = bos_model
    with_bos, _ = engine_ppl(onnx, "full", tmp_path / "bos")
    without, _ = engine_ppl(FIXTURE, "full", tmp_path / "plain")
    assert "prepend_bos_token_id" in without and without["prepend_bos_token_id"] is None
    assert len(with_bos["nll"]) == len(without["nll"]) == N_TOKENS - 1
    assert with_bos["nll"] != without["nll"]
