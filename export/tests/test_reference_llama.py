"""The PyTorch reference (reference.py) on the Llama-family fixtures: full-cache NLLs equal to
transformers' forward pass, and the grouped-query rule checked against transformers' own
attention probabilities (output_attentions, eager): a KV head's h2o score is the attention its
token received, summed over the steps and over the query heads sharing that KV head."""

from __future__ import annotations

import json

import pytest
import torch

from common import REPO

from h2o_export.reference import load_model, run_reference

FIXTURES = {n: REPO / f"tests/fixtures/{n}" for n in ("tiny-llama", "tiny-qwen2")}
pytestmark = pytest.mark.usefixtures("one_thread")


def _tokens(name: str, n: int = 40) -> list[int]:
    return json.loads((FIXTURES[name] / "golden.json").read_text())["tokens"][:n]


@pytest.mark.parametrize("name", FIXTURES)
def test_full_cache_equals_transformers(name):
    model = load_model(FIXTURES[name] / "hf")
    text = _tokens(name)
    run = run_reference(model, text, "full")
    bos = run["prepend_bos_token_id"]
    assert bos == (0 if name == "tiny-llama" else None)  # as the exporter's manifest declares
    fed = ([bos] if bos is not None else []) + text
    with torch.no_grad():
        logp = model(torch.tensor([fed])).logits[0].double().log_softmax(-1)
    first = 1 if bos is not None else 0
    want = [-float(logp[t, fed[t + 1]]) for t in range(first, len(fed) - 1)]
    assert len(run["nll"]) == len(text) - 1
    assert max(abs(a - b) for a, b in zip(run["nll"], want)) < 1e-4
    assert run["trace"]["heads"] == 2 and len(run["kept_final"][0]) == 2  # the cache per KV head


@pytest.mark.parametrize("name", FIXTURES)
def test_h2o_score_is_attention_summed_over_the_group(name):
    """No eviction (budget above the text): after the last step each KV head's h2o score of token j
    equals transformers' attention to j summed over every query position and over the two query
    heads that read that KV head (heads 2g and 2g+1)."""
    model = load_model(FIXTURES[name] / "hf")
    text = _tokens(name, 24)
    seen = {}

    def observer(view):
        seen[view.layer] = view  # the last step's view of each layer wins

    run = run_reference(model, text, "h2o:50+50", observer=observer)
    bos = run["prepend_bos_token_id"]
    fed = ([bos] if bos is not None else []) + text
    n = len(fed) - 1  # the loop feeds every token but the last
    with torch.no_grad():
        att = model(torch.tensor([fed[:n]]), output_attentions=True).attentions  # per layer [1, 4, n, n]
    for layer, a in enumerate(att):
        per_query_head = a[0].sum(dim=1)  # [4, n]: received over all query positions
        want = per_query_head.view(2, 2, n).sum(dim=1)  # [2 KV heads, n]: query heads 2g, 2g+1
        got = seen[layer].scores  # [2, n], positions ascending
        assert seen[layer].positions.tolist() == [list(range(n))] * 2
        torch.testing.assert_close(got, want.float(), atol=2e-5, rtol=1e-5)
        # and not a single query head's, nor the mean
        assert (got - per_query_head[::2]).abs().max() > 1e-2


@pytest.mark.parametrize("name", FIXTURES)
def test_eviction_keeps_budget_per_kv_head(name):
    model = load_model(FIXTURES[name] / "hf")
    run = run_reference(model, _tokens(name), "h2o:4+4")
    assert all(len(head) == 8 for layer in run["kept_final"] for head in layer)
    assert all(len(layer) == 2 for step in run["trace"]["steps"] for layer in step["evicted"])


def test_graph_stream_matches_reference_under_eviction():
    """The exported graph streamed in the engine's slot layout (graph_stream.run_graph, which folds the
    query heads' sums per KV head) against the reference loop, under h2o eviction on tiny-qwen2 (no
    declared BOS, so both feed the same tokens): the same victims at every step, PPL within 1e-6."""
    from h2o_export.graph_stream import run_graph

    text = json.loads((FIXTURES["tiny-qwen2"] / "golden.json").read_text())["tokens"] * 2
    g = run_graph(FIXTURES["tiny-qwen2"], text, "h2o:8+8")
    r = run_reference(load_model(FIXTURES["tiny-qwen2"] / "hf"), text, "h2o:8+8")
    assert g["trace"]["heads"] == r["trace"]["heads"] == 2
    assert g["trace"]["steps"] == r["trace"]["steps"]
    assert abs(g["ppl"] / r["ppl"] - 1) < 1e-6
    assert g["max_row_sum_error"] < 1e-5
