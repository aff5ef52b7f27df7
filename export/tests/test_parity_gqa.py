"""Parity of the engine (`h2o ppl`) with the PyTorch reference on the grouped-query-attention
fixtures tests/fixtures/tiny-llama and tiny-qwen2 (4 query heads, 2 KV heads; issue 26): the
checks of test_parity.py (lockstep: per-token NLL within 1e-4 and no victim violations when the
reference replays the engine's trace; free running: PPL within 1e-3 relative and the kept-set
share of (step, layer, KV head) above 90%, the tiny fixture's floor and reason) for every policy
family and `@pyramid`. Both sides store K/V per KV head and rank by the sum of the attention the
group's query heads gave (docs/architecture.md, "Grouped-query attention"), so the traces list
victims per KV head: `heads` in the trace is num_key_value_heads.

tiny-llama declares a BOS (prepend_bos_token_id 0): both feed it first, and the trace's tokens
start with it. Skips and H2O_REQUIRE_ALL as test_parity.py.
"""

from __future__ import annotations

import json
import math

import pytest

from common import REPO  # noqa: E402

import test_parity as tp  # noqa: E402
from h2o_export import reference as ref  # noqa: E402
from h2o_export.policies import parse_policy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

POLICIES = ["full", "local:32", "sink:4+28", "h2o:16+16", "h2o-layer:16+16", "tova:32", "tova-head:32",
            "scissor:32@window=16@recent=4", "knorm:32", "random:32@rng=3",
            "h2o:16+16@pyramid", "tova:32@pyramid", "scissor:32@window=16@recent=4@pyramid",
            "random:32@rng=3@pyramid"]
GQA_MODELS = {
    name: dict(onnx=REPO / "tests/fixtures" / name, hf=REPO / "tests/fixtures" / name / "hf", n_tokens=256,
               policies=POLICIES, big_budgets=[], share_floor=0.90, how="make fixtures")
    for name in ("tiny-llama", "tiny-qwen2")
}
CASES = [(m, p) for m in GQA_MODELS for p in POLICIES]


class GqaRuns(tp.ModelRuns):
    """test_parity.ModelRuns on a GQA fixture."""

    def __init__(self, name, tmp):
        cfg = GQA_MODELS[name]
        self.name, self.cfg, self.tmp = name, cfg, tmp
        self.model = ref.load_model(cfg["hf"])
        # the BOS the export declares (tiny-llama: 0); ref.load_model derives None from hf/ here, a
        # disagreement between the reference and the exporter left to them (reported), so the
        # reference is told the manifest's declaration to compare like with like
        bos = json.loads((cfg["onnx"] / "manifest.json").read_text()).get("prepend_bos_token_id")
        setattr(self.model.config, ref.PREPEND_BOS_KEY, bos)
        self.ids = ref.load_tokens(cfg["onnx"] / "tokenizer.json", tp.data_path(), cfg["n_tokens"])
        self._engine, self._ref, self._layer_masks = {}, {}, None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cache: dict = {}

    def get(name):
        if name not in cache:
            cfg = GQA_MODELS[name]
            if not (cfg["onnx"] / "model.onnx").is_file():
                pytest.skip(f"{cfg['onnx'] / 'model.onnx'} is absent: run `make fixtures` first")
            if not tp.engine_bin().is_file():
                pytest.skip(f"engine binary {tp.engine_bin()} not built: run `cargo build --release`")
            cache[name] = GqaRuns(name, tmp_path_factory.mktemp(name.replace("-", "_")))
        return cache[name]

    return get


def check_doc(r, spec, doc, trace):
    n = r.cfg["n_tokens"]
    assert doc["policy"] == parse_policy(spec).spec
    assert len(doc["nll"]) == n - 1 and all(math.isfinite(x) for x in doc["nll"])
    cfg = r.model.config
    assert (trace["layers"], trace["heads"]) == (cfg.num_hidden_layers, cfg.num_key_value_heads), \
        "the trace lists victims per KV head"
    assert cfg.num_key_value_heads < cfg.num_attention_heads, "the fixture groups its query heads"
    bos = json.loads((r.cfg["onnx"] / "manifest.json").read_text()).get("prepend_bos_token_id")
    assert trace["tokens"] == ([bos] if bos is not None else []) + r.ids


@pytest.mark.parametrize("model,spec", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_lockstep(runs, model, spec):
    r = runs(model)
    doc, trace = r.engine(spec)
    check_doc(r, spec, doc, trace)
    res = r.reference(spec, replay=True)
    rep = res.get("replay", {"n_violations": 0, "victims_checked": 0, "violations": []})
    worst = max(abs(a - b) for a, b in zip(doc["nll"], res["nll"]))
    assert worst <= tp.NLL_TOL, f"{model} {spec}: lockstep NLL differs by {worst:.3g}"
    assert rep["n_violations"] == 0, f"{model} {spec}: victim violations: {rep['violations'][:5]}"
    if parse_policy(spec).kind != "full":
        assert rep["victims_checked"] > 0, f"{model} {spec}: the engine's trace evicts nothing"


@pytest.mark.parametrize("model,spec", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_free_running(runs, model, spec):
    r = runs(model)
    doc, trace = r.engine(spec)
    res = r.reference(spec, replay=False)
    last = len(trace["tokens"]) - 2
    share, _total, first = tp.kept_share(trace, res["trace"], last)
    rel = abs(doc["ppl"] - res["ppl"]) / res["ppl"]
    assert rel <= tp.PPL_REL_TOL, f"{model} {spec}: PPL engine {doc['ppl']} vs reference {res['ppl']}"
    assert share >= r.cfg["share_floor"], (
        f"{model} {spec}: {100 * share:.3f}% of (step, layer, KV head) keep the same positions "
        f"(first difference at step {first})"
    )
