"""fp16 exports (float16 weights and K/V; float32 layer norms, softmax, logits and attention
sums) against the float32 transformers reference.

Tolerance, and why: rounding the weights to float16 alone moves every value by up to 2^-11
(4.9e-4) relative, and the K/V outputs are float16 by contract, so no fp16 graph can match the
fp32 reference to fp32 tolerances. The yardstick is transformers itself run in float16 on the
same checkpoint: for every case and output kind (logits, K/V, attention sums) the export's
max abs error against fp32 must be at most 2x transformers-fp16's error + 1e-4 (the export keeps
more in float32, so it is usually *below* transformers-fp16). Absolute caps guard against a
yardstick that is itself broken: logits 2e-2, K/V 1e-2, attention sums 5e-3 (the tiny models
have O(1) activations: float16's relative 4.9e-4 over 2 layers gives ~1e-3 to 4e-3).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import FIXTURE  # noqa: E402

from h2o_export import graph_parity as ref  # noqa: E402
from h2o_export.reference import load_model  # noqa: E402
from h2o_export.exporter import export  # noqa: E402

CAPS = {"logits": 2e-2, "kv": 1e-2, "attention_sums": 5e-3}
LOOSE = {"logits": np.inf, "kv": np.inf, "attention_sums": np.inf}


def _kind(name: str) -> str:
    return "logits" if name == "logits" else "kv" if name.startswith("new_key") else "attention_sums"


def _by_kind(diffs: dict) -> dict:
    out: dict = {}
    for name, d in diffs.items():
        out[_kind(name)] = max(out.get(_kind(name), 0.0), d)
    return out


@pytest.mark.parametrize("config", [dict(use_parallel_residual=True, rotary_pct=0.25),
                                    dict(use_parallel_residual=False, rotary_pct=1.0)],
                         ids=["parallel_rot0.25", "sequential_rot1.0"])
def test_fp16_within_justified_tolerance(tmp_path, config):
    hf = ref.make_tiny_checkpoint(tmp_path / "hf", 512, 21, tokenizer=FIXTURE / "tokenizer.json", **config)
    res = export(tmp_path / "onnx", checkpoint=hf, dtype="fp16", log=lambda m: None)
    assert res.manifest["dtype"] == "float16"
    sess = ref.ort_session(tmp_path / "onnx/model.onnx")
    types = {o.name: o.type for o in sess.get_outputs()} | {i.name: i.type for i in sess.get_inputs()}
    assert types["logits"] == types["attention_sums.0"] == "tensor(float)"
    assert types["new_key_values.0.key"] == types["past_key_values.0.value"] == "tensor(float16)"

    m32, m16 = load_model(hf), load_model(hf, "float16")
    tokens = json.loads((FIXTURE / "golden.json").read_text())["tokens"]
    failures = []
    for name, step in ref.standard_cases(m32, tokens, 2).items():
        want = ref.run_hf(m32, step)
        ours = _by_kind(ref.compare(ref.run_onnx(sess, step, res.manifest), want, step, LOOSE))
        theirs = _by_kind(ref.compare(ref.run_hf(m16, step), want, step, LOOSE))
        for kind, err in ours.items():
            limit = min(2 * theirs[kind] + 1e-4, CAPS[kind])
            if err > limit:
                failures.append(f"{name} {kind}: {err:.2e} > {limit:.2e} (transformers fp16: {theirs[kind]:.2e})")
    assert not failures, "; ".join(failures)
