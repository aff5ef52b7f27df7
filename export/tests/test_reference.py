"""Tests of the PyTorch reference (h2o_export.reference, policies, trace; the CLI export/reference.py)
on tiny random GPT-NeoX models."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch

from common import FIXTURE, data_path  # noqa: E402

from h2o_export.commands import reference as cli  # noqa: E402  (export/reference.py)
from h2o_export import reference as ref  # noqa: E402
from h2o_export import trace as tr  # noqa: E402
from h2o_export.errors import ReferenceError  # noqa: E402
from h2o_export.graph_parity import TINY_DEFAULTS  # noqa: E402
from h2o_export.policies import parse_policy  # noqa: E402

N_TOKENS = 48
POLICIES = ["local:8", "sink:2+6", "h2o:5+3", "h2o:6+0", "h2o:0+8", "h2o-layer:5+3", "h2o-layer:3+1", "tova:8",
            "tova-head:8", "scissor:8@window=4@recent=2", "knorm:8", "random:8@rng=1", "h2o:5+3@pyramid",
            "tova:8@pyramid"]
LAYERS = 2  # TINY_DEFAULTS


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(parallel_residual: bool = True, vocab: int = 96, seed: int = 0):
    """A small random GPT-NeoX (eager attention). A large init range makes attention peaky, so
    accumulated scores differ clearly and H2O's choices are far from ties."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    fields = dict(TINY_DEFAULTS, intermediate_size=128, max_position_embeddings=256,
                  use_parallel_residual=parallel_residual, initializer_range=0.2)
    cfg = GPTNeoXConfig(vocab_size=vocab, attn_implementation="eager", **fields)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 96, (N_TOKENS,), generator=g).tolist()


@pytest.fixture(scope="module")
def results(model, tokens):
    """Free-running results and per-step observations for every policy in POLICIES."""
    out = {}
    for spec in POLICIES + ["full"]:
        views = []
        res = ref.run_reference(model, tokens, spec, observer=lambda v, views=views: views.append(
            ref.StepView(v.pos, v.layer, v.positions.clone(), v.scores.clone(), v.victims.clone())))
        out[spec] = (res, views)
    return out


def hf_nll(model, tokens) -> list[float]:
    with torch.inference_mode():
        logits = model(torch.tensor([tokens])).logits[0].double()  # [n, vocab]
    logp = torch.log_softmax(logits, dim=-1)
    return [-float(logp[i, tokens[i + 1]]) for i in range(len(tokens) - 1)]


# ---------------------------------------------------------------------------------- specs


def test_parse_policy_canonical_forms():
    assert parse_policy("full").budget is None
    assert parse_policy(" local:256 ").spec == "local:256"
    p = parse_policy("sink:4+252")
    assert (p.kind, p.sinks, p.recent, p.budget) == ("sink", 4, 252, 256)
    p = parse_policy("h2o:192+64")
    assert (p.kind, p.heavy, p.recent, p.scope, p.budget) == ("h2o", 192, 64, "head", 256)
    p = parse_policy("h2o-layer:192+64")
    assert (p.scope, p.spec) == ("layer", "h2o-layer:192+64")


def test_parse_policy_new_families_and_options():
    p = parse_policy("tova:64")
    assert (p.kind, p.scope, p.budget, p.uses_scores, p.spec) == ("tova", "layer", 64, True, "tova:64")
    assert parse_policy("tova-head:64").scope == "head"
    p = parse_policy("scissor:64@recent=4@window=32")
    assert (p.kind, p.window, p.recent, p.budget, p.spec) == ("scissor", 32, 4, 64, "scissor:64@window=32@recent=4")
    assert parse_policy("scissor:80@window=400@recent=10").spec == "scissor:80"
    assert (parse_policy("knorm:9").budget, parse_policy("random:9").rng) == (9, 0)
    p = parse_policy("random:9@pyramid@rng=7")
    assert (p.rng, p.schedule, p.spec) == (7, "pyramid", "random:9@rng=7@pyramid")
    assert parse_policy("h2o:1+2@uniform") == parse_policy("h2o:1+2")


@pytest.mark.parametrize("bad,why", [
    ("scissor:8", "recent window 10 is larger than its budget 8"), ("scissor:80@window=0", "history window is 0"),
    ("random:4@seed=1", "unknown option `@seed=1`"), ("random:4@rng", "takes a number (@rng=N)"),
    ("random:4@rng=1@rng=2", "`@rng` is given twice"), ("h2o:1+1@pyramid@uniform", "schedule is given twice"),
    ("h2o:4+4@rng=1", "`@rng` applies to random only, not `h2o`"),
    ("tova:4@recent=1", "`@recent` applies to scissor only, not `tova`"), ("full@pyramid", "no budget to schedule"),
    ("tova:1+2", "`tova` takes one number (tova:B)"), ("h2o:１+2", "accepted forms"), ("random:0@rng=3", "budget is 0"),
])
def test_parse_policy_refuses_bad_options(bad, why):
    with pytest.raises(ReferenceError, match="accepted forms") as e:
        parse_policy(bad)
    assert why in str(e.value)


def test_accepted_forms_are_the_engines():
    """The grammar's help text is the engine's ACCEPTED_FORMS (src/policy/spec/grammar.rs), word for word."""
    import re
    from h2o_export.policies import ACCEPTED_FORMS
    from common import REPO

    rust = (REPO / "src/policy/spec/grammar.rs").read_text(encoding="utf-8")
    literal = re.search(r'pub const ACCEPTED_FORMS: &str = "(.*?)";', rust, re.S).group(1)
    assert re.sub(r"\\\n\s*", "", literal) == ACCEPTED_FORMS


def test_pyramid_schedule_is_the_engines():
    """The same integers as src/policy/schedule.rs's tests: the total kept, budgets falling."""
    from h2o_export.policies.schedule import free_parts

    assert free_parts("pyramid", 192, 8, 0) == [375, 323, 271, 219, 165, 113, 61, 9]
    assert free_parts("pyramid", 10, 2, 1) == [19, 1]
    assert free_parts("uniform", 7, 3, 1) == [7, 7, 7]
    p = parse_policy("h2o:192+64@pyramid")
    assert [p.for_layer(li, 8).spec for li in (0, 7)] == ["h2o:375+64", "h2o:9+64"]
    assert sum(p.for_layer(li, 8).budget for li in range(8)) == 8 * 256
    with pytest.raises(ReferenceError, match="layer 0's budget 439 exceeds the model's 438 positions"):
        parse_policy("h2o:192+64@pyramid", max_positions=438, layers=8)


def test_random_keys_are_the_engines():
    """The numbers src/policy/random.rs's tests check."""
    from h2o_export.policies.random import random_key

    # 24-bit keys: exact in float32, so the engine's f32 literals convert back to the same numbers
    assert random_key(7, 3, 2, 1000) == float(torch.tensor(0.6370028, dtype=torch.float32))
    assert random_key(0, 0, 0, 0) == float(torch.tensor(0.09899372, dtype=torch.float32))


def test_knorm_rounds_squared_norms_to_12_bits():
    from h2o_export.policies.knorm import rounded_square_norm

    k = torch.tensor([[3.0, 4.0], [4097.0 ** 0.5, 0.0], [1.0, 2.0 ** -7], [1.0, 2.0 ** -5]])
    assert rounded_square_norm(k).tolist() == [25.0, 4098.0, 1.0, 1.0 + 2.0 ** -10]


def test_new_family_scores(model, tokens):
    """tova: this step's attention; scissor: minus the below-mean count over its window; knorm:
    minus the rounded squared key norm, fixed; random: the key of (rng, layer, head, position)."""
    from h2o_export.policies.random import random_key

    seen = {}
    for spec in ["tova-head:8", "scissor:8@window=3@recent=2", "knorm:8", "random:8@rng=1", "full"]:
        views = []
        ref.run_reference(model, tokens[:14], spec, observer=lambda v, views=views: views.append(
            ref.StepView(v.pos, v.layer, v.positions.clone(), v.scores.clone(), v.victims.clone())))
        seen[spec] = views
    full = {(v.pos, v.layer): v for v in seen["full"]}
    for v in seen["tova-head:8"]:
        if v.pos < 8:  # the caches agree with the full one until the first eviction
            assert torch.allclose(v.scores, full[(v.pos, v.layer)].scores - _prev(full, v), atol=1e-6)
    for v in seen["random:8@rng=1"]:
        want = [[random_key(1, v.layer, h, int(p)) for p in row] for h, row in enumerate(v.positions.tolist())]
        assert v.scores.tolist() == want
    knorm = {(v.pos, v.layer): v for v in seen["knorm:8"]}
    for (t, layer), v in knorm.items():
        if t > 0:
            before = knorm[(t - 1, layer)]
            for h in range(v.scores.shape[0]):
                old = dict(zip(before.positions[h].tolist(), before.scores[h].tolist()))
                assert all(old[p] == s for p, s in zip(v.positions[h].tolist(), v.scores[h].tolist()) if p in old)
    for v in seen["scissor:8@window=3@recent=2"]:
        assert ((v.scores <= 0) & (v.scores >= -3)).all() and (v.scores == v.scores.round()).all()


def _prev(full: dict, v) -> torch.Tensor:
    """Accumulated scores of the full cache before step v.pos, padded with the new token's 0."""
    if v.pos == 0:
        return torch.zeros_like(v.scores)
    prev = full[(v.pos - 1, v.layer)].scores
    return torch.cat((prev, torch.zeros(prev.shape[0], 1)), dim=1)


@pytest.mark.parametrize("bad", ["", "lru:5", "local", "local:4+4", "sink:4", "h2o:5", "full:3", "h2o:-1+4",
                                 "local:x", "h2o:1.5+2"])
def test_parse_policy_refuses_malformed(bad):
    with pytest.raises(ReferenceError, match="accepted forms"):
        parse_policy(bad)


def test_parse_policy_refuses_zero_and_oversized_budgets():
    for spec in ["local:0", "sink:0+0", "h2o:0+0", "h2o-layer:0+0"]:
        with pytest.raises(ReferenceError, match="budget is 0"):
            parse_policy(spec)
    with pytest.raises(ReferenceError, match="exceeds the model's 256 positions"):
        parse_policy("h2o:200+57", max_positions=256)
    assert parse_policy("h2o:200+56", max_positions=256).budget == 256


# ---------------------------------------------------------------------------------- victim choice


def test_choose_victims_hand_built_scores_and_ties():
    pol = parse_policy("h2o:2+1")
    # t = 4, candidates at positions 0..4 for two heads; the recent window is {4}.
    pos = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    scores = torch.tensor([[0.5, 0.1, 0.1, 0.9, 0.0],   # tie 0.1 at 1 and 2: evict the older (1), then 2
                           [0.2, 0.7, 0.3, 0.05, 0.0]])  # lowest 0.05 at 3, then 0.2 at 0
    v = pol.choose_victims(4, pos, scores)
    assert v.tolist() == [[1, 2], [3, 0]]
    # layer scope: summed scores [0.7, 0.8, 0.4, 0.95, 0] -> evict 2 then 0 on every head
    v = parse_policy("h2o-layer:2+1").choose_victims(4, pos, scores)
    assert v.tolist() == [[2, 0], [2, 0]]
    # local ignores scores: everything outside the window goes, oldest first
    v = parse_policy("local:3").choose_victims(4, pos, scores)
    assert v.tolist() == [[0, 1], [0, 1]]
    # sink keeps position 0 and the last two
    v = parse_policy("sink:1+2").choose_victims(4, pos, scores)
    assert v.tolist() == [[1, 2], [1, 2]]
    # under budget: nothing
    assert parse_policy("h2o:4+1").choose_victims(4, pos, scores).shape == (2, 0)


# ---------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("parallel", [True, False])
def test_full_matches_transformers_forward(parallel, tokens):
    m = tiny_model(parallel_residual=parallel)
    res = ref.run_reference(m, tokens, "full")
    want = hf_nll(m, tokens)
    assert len(res["nll"]) == len(tokens) - 1 == res["n_tokens"] - 1
    assert max(abs(a - b) for a, b in zip(res["nll"], want)) < 1e-4
    assert math.isclose(res["ppl"], math.exp(sum(want) / len(want)), rel_tol=1e-4)
    # full never evicts
    assert all(ev == [[]] * 4 for s in res["trace"]["steps"] for ev in s["evicted"])


@pytest.mark.parametrize("spec", [f"local:{N_TOKENS}", f"sink:2+{N_TOKENS}", f"h2o:10+{N_TOKENS}",
                                  f"h2o-layer:{N_TOKENS}+1"])
def test_budget_larger_than_text_equals_full(spec, model, tokens, results):
    full = results["full"][0]
    res = ref.run_reference(model, tokens, spec)
    assert res["nll"] == full["nll"]
    assert res["ppl"] == full["ppl"]


@pytest.mark.parametrize("spec", POLICIES)
def test_bounded_policies_change_the_result(spec, results):
    assert results[spec][0]["nll"] != results["full"][0]["nll"]


# ---------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("spec", POLICIES)
def test_invariants_per_step(spec, results, tokens):
    res, views = results[spec]
    assert len(views) == (len(tokens) - 1) * LAYERS
    kept_trace = dict(tr.iter_kept_sets(res["trace"]))
    for v in views:
        pol = parse_policy(spec).for_layer(v.layer, LAYERS)
        t = v.pos
        heads, n = v.positions.shape
        # every head sees the candidates 'kept after t-1' plus t
        assert (v.positions[:, -1] == t).all()
        keep = torch.ones(heads, n, dtype=torch.bool)
        keep.scatter_(1, v.victims, False)
        rank = v.scores.sum(0, keepdim=True).expand_as(v.scores) if pol.scope == "layer" else v.scores
        kept_rows = []
        for h in range(heads):
            pos = v.positions[h].tolist()
            kept = [p for p, k in zip(pos, keep[h].tolist()) if k]
            kept_rows.append(kept)
            assert len(set(pos)) == len(pos), "positions unique"
            assert len(kept) == min(pol.budget, n) <= pol.budget
            recent = [p for p in pos if p > t - pol.recent]
            sinks = [p for p in pos if p < pol.sinks]
            assert set(recent) <= set(kept) and set(sinks) <= set(kept)
            if pol.uses_scores and pol.kind != "h2o" and n > pol.budget:
                # the others keep the budget's best by score (recent window first), ties to the younger
                others = sorted((float(rank[h, i]), p) for i, p in enumerate(pos) if p <= t - pol.recent)
                assert set(kept) - set(recent) == {p for _, p in others[len(others) - (pol.budget - len(recent)):]}
            if pol.kind == "h2o" and n > pol.budget:
                others = [(float(rank[h, i]), p) for i, p in enumerate(pos) if p <= t - pol.recent]
                # keep the H largest; ties: the lowest score, then the oldest, goes first
                brute = {p for _, p in sorted(others)[len(others) - pol.heavy:]} if pol.heavy else set()
                assert set(kept) - set(recent) == brute
            # the trace reconstructs the same kept set
            assert kept_trace[t][v.layer][h] == kept
        if pol.scope == "layer":
            assert all(row == kept_rows[0] for row in kept_rows)
    assert res["kept_final"] == tr.kept_sets(res["trace"])


def test_h2o_layer_keeps_identical_positions_across_heads(results):
    for spec in ["h2o-layer:5+3", "h2o-layer:3+1"]:
        for _, kept in tr.iter_kept_sets(results[spec][0]["trace"]):
            for layer in kept:
                assert all(h == layer[0] for h in layer)
    # and per-head h2o really differs between heads somewhere (the test above is not vacuous)
    final = results["h2o:5+3"][0]["kept_final"]
    assert any(len({tuple(h) for h in layer}) > 1 for layer in final)


def test_scores_accumulate_attention(model, tokens):
    """Scores of the full cache: a token's score = sum of the probabilities it got from every query
    since it entered (its own included), so the scores of step t sum to t+1 per head."""
    seen = []
    ref.run_reference(model, tokens[:12], "full", observer=lambda v: seen.append((v.pos, v.scores.clone())))
    for t, s in seen:
        assert torch.allclose(s.sum(dim=1), torch.full((4,), float(t + 1)), atol=1e-5)


# ---------------------------------------------------------------------------------- traces and replay


def test_kept_sets_from_hand_built_trace():
    trace = {"format": tr.TRACE_FORMAT, "policy": "local:2", "tokens": [1, 2, 3, 4], "layers": 1, "heads": 2,
             "steps": [{"pos": 0, "evicted": [[[], []]]}, {"pos": 1, "evicted": [[[], []]]},
                       {"pos": 2, "evicted": [[[0], [1]]]}]}
    assert tr.kept_sets(trace, 1) == [[[0, 1], [0, 1]]]
    assert tr.kept_sets(trace) == [[[1, 2], [0, 2]]]
    bad = copy.deepcopy(trace)
    bad["steps"][1]["evicted"] = [[[5], []]]
    with pytest.raises(ReferenceError, match="not held"):
        tr.kept_sets(bad)
    bad = copy.deepcopy(trace)
    bad["format"] = "other"
    with pytest.raises(ReferenceError, match="h2o-evict-trace/1"):
        tr.kept_sets(bad)


@pytest.mark.parametrize("spec", POLICIES + ["full"])
def test_replay_own_trace(spec, model, tokens, results):
    res = results[spec][0]
    rep = ref.run_reference(model, tokens, spec, replay=res["trace"])
    assert rep["nll"] == res["nll"]
    assert rep["replay"]["n_violations"] == 0, rep["replay"]["violations"][:3]
    assert rep["trace"] == res["trace"]
    if spec != "full":
        assert rep["replay"]["victims_checked"] > 0


def _first_eviction_step(trace):
    return next(s for s in trace["steps"] if any(any(h) for layer in s["evicted"] for h in layer))


def test_replay_flags_a_victim_that_is_not_lowest(model, tokens, results):
    spec = "h2o:5+3"
    res, views = results[spec]
    trace = copy.deepcopy(res["trace"])
    step = _first_eviction_step(trace)
    t = step["pos"]
    # head 0 of layer 0: evict the best-scored heavy candidate instead of the lowest
    v = next(v for v in views if v.pos == t and v.layer == 0)
    cand = [(float(v.scores[0, i]), int(p)) for i, p in enumerate(v.positions[0].tolist()) if p <= t - 3]
    best = max(cand)[1]
    assert best not in step["evicted"][0][0]
    step["evicted"][0][0] = [best]
    # later steps of the original trace no longer fit this cache; drop them
    trace["steps"] = [s for s in trace["steps"] if s["pos"] <= t]
    rep = ref.run_reference(model, tokens, spec, replay=trace)
    kinds = {(x["step"], x["layer"], x["head"], x["kind"]) for x in rep["replay"]["violations"]}
    assert (t, 0, 0, "not-lowest") in kinds
    assert any(k[3] == "over-budget" for k in kinds)  # no evictions after t


def test_replay_flags_protected_victims_and_layer_scope(model, tokens, results):
    res = results["h2o-layer:5+3"][0]
    trace = copy.deepcopy(res["trace"])
    step = _first_eviction_step(trace)
    t = step["pos"]
    step["evicted"][1][2] = [t]  # the token just fed is in the recent window
    trace["steps"] = [s for s in trace["steps"] if s["pos"] <= t]
    rep = ref.run_reference(model, tokens, "h2o-layer:5+3", replay=trace)
    kinds = {(x["step"], x["layer"], x["head"], x["kind"]) for x in rep["replay"]["violations"]}
    assert (t, 1, 2, "protected") in kinds
    assert (t, 1, 2, "layer-scope") in kinds


def test_replay_refuses_inconsistent_traces(model, tokens, results):
    res = results["local:8"][0]
    with pytest.raises(ReferenceError, match="for policy local:8, not local:9"):
        ref.run_reference(model, tokens, "local:9", replay=res["trace"])
    with pytest.raises(ReferenceError, match="tokens differ"):
        ref.run_reference(model, tokens[:-1], "local:8", replay=res["trace"])
    bad = copy.deepcopy(res["trace"])
    step = _first_eviction_step(bad)
    step["evicted"][0][1] = [step["pos"] + 100]
    with pytest.raises(ReferenceError, match=r"head 1: victim position \d+ is not in the cache"):
        ref.run_reference(model, tokens, "local:8", replay=bad)
    bad = copy.deepcopy(res["trace"])
    _first_eviction_step(bad)["evicted"][0][1] = []
    with pytest.raises(ReferenceError, match="different counts"):
        ref.run_reference(model, tokens, "local:8", replay=bad)


def test_bad_inputs_are_refused(model, tokens):
    with pytest.raises(ReferenceError, match="at least 2 tokens"):
        ref.run_reference(model, tokens[:1], "full")
    with pytest.raises(ReferenceError, match="token ids must lie"):
        ref.run_reference(model, [0, 96], "full")
    with pytest.raises(ReferenceError, match="exceeds the model's 256 positions"):
        ref.run_reference(model, tokens, "local:300")


# ---------------------------------------------------------------------------------- CLI


def _cli_inputs():
    """The committed tiny fixture (checkpoint + tokenizer) and the committed WikiText-2 excerpt."""
    return FIXTURE / "hf", FIXTURE / "tokenizer.json", data_path()


def test_cli_run_and_replay(tmp_path):
    hf, tok, data = _cli_inputs()
    out = tmp_path / "h2o.json"
    rc = cli.main(["--hf-dir", str(hf), "--tokenizer", str(tok), "--data", str(data), "--tokens", "64",
                   "--policy", "h2o:12+4", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["policy"] == "h2o:12+4" and res["n_tokens"] == 64 and len(res["nll"]) == 63
    assert math.isfinite(res["ppl"]) and res["ppl"] > 1
    assert res["trace"]["format"] == tr.TRACE_FORMAT and len(res["trace"]["tokens"]) == 64
    assert ref.load_tokens(tok, data, 64) == res["trace"]["tokens"]
    # lockstep: replay the output (a whole result document is accepted), policy and tokens from the trace
    out2 = tmp_path / "replay.json"
    rc = cli.main(["--hf-dir", str(hf), "--replay", str(out), "--out", str(out2)])
    assert rc == 0
    rep = json.loads(out2.read_text())
    assert rep["nll"] == res["nll"] and rep["replay"]["n_violations"] == 0
    # with data given too, the tokens are checked against the trace
    rc = cli.main(["--hf-dir", str(hf), "--tokenizer", str(tok), "--data", str(data), "--replay", str(out),
                   "--out", str(out2)])
    assert rc == 0


def test_cli_bad_input_exit_code(tmp_path, capsys):
    hf, tok, data = _cli_inputs()
    rc = cli.main(["--hf-dir", str(hf), "--tokenizer", str(tok), "--data", str(data), "--tokens", "16",
                   "--policy", "h2o:12", "--out", str(tmp_path / "x.json")])
    assert rc == 2
    assert "accepted forms" in capsys.readouterr().err
    rc = cli.main(["--hf-dir", str(tmp_path / "nope"), "--tokenizer", str(tok), "--data", str(data),
                   "--tokens", "16", "--policy", "full", "--out", str(tmp_path / "x.json")])
    assert rc == 2
    assert "no config.json" in capsys.readouterr().err


def test_checkpoint_on_text_matches_transformers(tmp_path):
    """The CLI's checkpoint (the tiny fixture when present) on real text: full = transformers'
    forward within 1e-4 per token, and h2o-layer replays its own trace exactly."""
    hf, tok, data = _cli_inputs()
    model = ref.load_model(hf)
    ids = ref.load_tokens(tok, data, 64)
    full = ref.run_reference(model, ids, "full")
    want = hf_nll(model, ids)
    assert max(abs(a - b) for a, b in zip(full["nll"], want)) < 1e-4
    res = ref.run_reference(model, ids, "h2o-layer:8+8")
    rep = ref.run_reference(model, ids, "h2o-layer:8+8", replay=res["trace"])
    assert rep["nll"] == res["nll"] and rep["replay"]["n_violations"] == 0


# ---------------------------------------------------------------------------------- declared BOS

BOS = 7


@pytest.fixture(scope="module")
def bos_model(model):
    """The same weights, declaring a BOS (config prepend_bos_token_id, as a checkpoint trained with one)."""
    m = copy.deepcopy(model)
    m.config.prepend_bos_token_id = BOS
    return m


def test_declared_bos_is_fed_first_and_not_scored(bos_model, model, tokens, results):
    res = ref.run_reference(bos_model, tokens, "full")
    # N text tokens, N-1 predictions: text token i+1 from BOS + text 0..i, as transformers' forward on [BOS] + text
    assert res["n_tokens"] == len(tokens) and len(res["nll"]) == len(tokens) - 1 and res["complete"]
    want = hf_nll(model, [BOS] + tokens)[1:]
    assert max(abs(a - b) for a, b in zip(res["nll"], want)) < 1e-4
    assert res["nll"] != results["full"][0]["nll"]  # the BOS changes every prediction's context
    assert res["prepend_bos_token_id"] == BOS
    trace = res["trace"]
    assert trace["tokens"] == [BOS] + tokens and trace["prepend_bos_token_id"] == BOS
    assert [s["pos"] for s in trace["steps"]] == list(range(len(tokens)))  # BOS at 0, text i at i+1
    assert tr.text_tokens(trace) == tokens
    assert all(head == list(range(len(tokens))) for layer in res["kept_final"] for head in layer)


def test_declared_bos_is_a_cache_entry_like_any_other(bos_model, tokens):
    """sink:1+7 keeps position 0, the BOS; local:8 evicts it like any old token."""
    t = len(tokens) - 1  # the last position fed: the BOS shifts the text by one
    sink = ref.run_reference(bos_model, tokens, "sink:1+7")
    assert all(head == [0] + list(range(t - 6, t + 1)) for layer in sink["kept_final"] for head in layer)
    local = ref.run_reference(bos_model, tokens, "local:8")
    assert all(head == list(range(t - 7, t + 1)) for layer in local["kept_final"] for head in layer)


def test_declared_bos_trace_replays_and_is_refused_without_it(bos_model, model, tokens):
    res = ref.run_reference(bos_model, tokens, "h2o:5+3")
    rep = ref.run_reference(bos_model, tokens, "h2o:5+3", replay=res["trace"])
    assert rep["nll"] == res["nll"] and rep["replay"]["n_violations"] == 0 and rep["replay"]["victims_checked"] > 0
    with pytest.raises(ReferenceError, match="prepend_bos_token_id 7, the model declares None"):
        ref.run_reference(model, tokens, "h2o:5+3", replay=res["trace"])
    plain = ref.run_reference(model, tokens, "h2o:5+3")
    with pytest.raises(ReferenceError, match="prepend_bos_token_id None, the model declares 7"):
        ref.run_reference(bos_model, tokens, "h2o:5+3", replay=plain["trace"])
    bad = copy.deepcopy(res["trace"])
    bad["tokens"][0] = BOS + 1
    with pytest.raises(ReferenceError, match="do not start with it"):
        tr.text_tokens(bad)


def test_cli_checkpoint_declaring_bos(tmp_path, capsys):
    """A checkpoint whose config.json declares the BOS: --tokens N gives N-1 predictions, the
    trace holds the BOS first, and a replay from the trace alone feeds the text after it."""
    hf, tok, data = _cli_inputs()
    d = tmp_path / "hf"
    shutil.copytree(hf, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg | {"prepend_bos_token_id": 0}))
    out, out2 = tmp_path / "run.json", tmp_path / "replay.json"
    assert cli.main(["--hf-dir", str(d), "--tokenizer", str(tok), "--data", str(data), "--tokens", "40",
                     "--policy", "h2o:8+4", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_tokens"] == 40 and len(res["nll"]) == 39
    assert res["trace"]["tokens"] == [0] + ref.load_tokens(tok, data, 40)
    assert cli.main(["--hf-dir", str(d), "--replay", str(out), "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["nll"] == res["nll"]
    (d / "config.json").write_text(json.dumps(cfg | {"prepend_bos_token_id": 10**6}))
    assert cli.main(["--hf-dir", str(d), "--tokenizer", str(tok), "--data", str(data), "--tokens", "40",
                     "--policy", "full", "--out", str(out)]) == 2
    assert "prepend_bos_token_id must be a token id" in capsys.readouterr().err
