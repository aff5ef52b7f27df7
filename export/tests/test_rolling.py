"""Rolling positions (issue 32, StreamingLLM's renumbering): a graph that caches keys unrotated
(`export.py --key-cache unrotated`, `make export-micro-rolling`) and a policy's `@rolling`.

1. The engine (`h2o ppl`) vs the PyTorch reference of the same rule (reference.py, positions.py:
   keys cached unrotated, rotated by their rank at every step), for sink, local and h2o:
   lockstep (the reference replays the engine's trace: per-token NLL within 1e-4, no victim
   violations) and free running (PPL within 1e-3 relative, kept sets identical in >= 99% of
   (step, layer, head)), on pythia-micro (300 tokens) and on the tiny fixture re-exported with
   128 positions, streamed over 512 tokens: 4x the model's positions.
2. The new graph on absolute positions (the engine feeding each slot's original position as
   its key position) computes today's graph: per-token NLL within 1e-5 and the same evictions.
3. Refusals: `@rolling` on a graph with rotated keys names `make export-micro-rolling`; `full`
   past the model's positions says why (positions it was never trained on), on a rolling graph too.
4. The reference with a budget above the text is the full cache, bit for bit (nothing is
   renumbered when nothing is evicted).

A missing input (engine binary, exported model, checkpoint) skips with the reason, which
H2O_REQUIRE_ALL=1 turns into a failure (conftest.py).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from common import FIXTURE, REPO, data_path, engine_bin, engine_env  # noqa: E402

from h2o_export import reference as ref  # noqa: E402
from h2o_export import trace as tr  # noqa: E402
from h2o_export.errors import ReferenceError  # noqa: E402
from h2o_export.positions import key_positions, rolling_spec, split_rolling  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NLL_TOL = 1e-4  # lockstep, absolute per token (as test_parity)
PPL_REL_TOL = 1e-3  # free running
SAME_GRAPH_NLL_TOL = 1e-5  # the rolling graph on absolute positions vs today's graph
SHARE_FLOOR = 0.99

MICRO_HF = REPO / "models/pythia-micro"
MICRO = MICRO_HF / "onnx"
MICRO_ROLLING = MICRO_HF / "onnx-rolling"
SPECS = {"pythia-micro": ["sink:4+60@rolling", "local:64@rolling", "h2o:48+16@rolling"],
         "tiny-128": ["sink:4+28@rolling", "local:32@rolling", "h2o:24+8@rolling"]}
TOKENS = {"pythia-micro": 300, "tiny-128": 512}
SHORT_POSITIONS = 128


def _need(path: Path, how: str) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent: run `{how}` first")


def run_engine(model: Path, spec: str, n: int, out: Path) -> tuple[dict, dict]:
    """(OUT.json, TRACE.json) of `h2o ppl` for `spec` on the first n tokens."""
    if not engine_bin().is_file():
        pytest.skip(f"engine binary {engine_bin()} not built: run `cargo build --release` (or set H2O_BIN)")
    stem = out / "".join(c if c.isalnum() else "_" for c in f"{model.name}-{spec}")
    js, trace = stem.with_suffix(".json"), stem.with_suffix(".trace.json")
    cmd = [str(engine_bin()), "ppl", "--model", str(model), "--data", str(data_path()), "--tokens", str(n),
           "--policy", spec, "--json", str(js), "--trace", str(trace), "--threads", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), timeout=600)
    assert p.returncode == 0, f"engine failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}"
    return json.loads(js.read_text()), json.loads(trace.read_text())


def engine_refusal(model: Path, spec: str, n: int) -> str:
    """The engine's error output for a run it must refuse (exit 2)."""
    cmd = [str(engine_bin()), "ppl", "--model", str(model), "--data", str(data_path()), "--tokens", str(n),
           "--policy", spec, "--threads", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), timeout=600)
    assert p.returncode == 2, f"{' '.join(cmd)}: exit {p.returncode}, expected 2\n{p.stdout}\n{p.stderr}"
    return p.stderr


def kept_share(a: dict, b: dict, last: int) -> float:
    """Share of (step, layer, head) whose kept positions are identical in both traces."""
    def padded(t: dict) -> dict:
        steps = {int(s["pos"]): s for s in t["steps"] if int(s["pos"]) <= last}
        empty = [[[] for _ in range(int(t["heads"]))] for _ in range(int(t["layers"]))]
        return dict(t, steps=[steps.get(p, {"pos": p, "evicted": empty}) for p in range(last + 1)])

    same = total = 0
    for (_, ka), (_, kb) in zip(tr.iter_kept_sets(padded(a)), tr.iter_kept_sets(padded(b))):
        for la, lb in zip(ka, kb):
            for ha, hb in zip(la, lb):
                total += 1
                same += ha == hb
    return same / total


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (rolling graph folder, HF checkpoint): pythia-micro's (make export-micro-rolling)
    and the tiny fixture's, re-exported here with max_position_embeddings 128."""
    from h2o_export.exporter import export

    if not data_path().is_file():
        pytest.skip(f"text not found at {data_path()}")
    _need(MICRO_ROLLING / "model.onnx", "make export-micro-rolling")
    tmp = tmp_path_factory.mktemp("rolling")
    hf = tmp / "tiny-128-hf"
    shutil.copytree(FIXTURE / "hf", hf)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["max_position_embeddings"] = SHORT_POSITIONS
    (hf / "config.json").write_text(json.dumps(cfg, indent=2))
    if not (hf / "tokenizer.json").exists():
        shutil.copy(FIXTURE / "tokenizer.json", hf / "tokenizer.json")
    onnx = tmp / "tiny-128"
    export(onnx, checkpoint=hf, name="tiny-128", key_cache="unrotated", log=lambda _m: None)
    return {"pythia-micro": (MICRO_ROLLING, MICRO_HF), "tiny-128": (onnx, hf), "_tmp": tmp}


_LOADED: dict = {}


def _reference_model(hf: Path):
    if hf not in _LOADED:
        _LOADED[hf] = ref.load_model(hf)
    return _LOADED[hf]


CASES = [(m, s) for m, specs in SPECS.items() for s in specs]


@pytest.mark.parametrize("name,spec", CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_engine_matches_reference_on_rolling_positions(models, name, spec):
    onnx, hf = models[name]
    n = TOKENS[name]
    doc, trace = run_engine(onnx, spec, n, models["_tmp"])
    assert doc["policy"] == spec and trace["policy"] == spec
    assert len(doc["nll"]) == n - 1 and all(math.isfinite(x) for x in doc["nll"])
    model = _reference_model(hf)
    ids = ref.load_tokens(onnx / "tokenizer.json", data_path(), n)
    assert trace["tokens"] == ids
    if name == "tiny-128":
        assert n > 2 * model.config.max_position_embeddings  # streams past the model's positions

    lock = ref.run_reference(model, ids, spec, replay=trace)
    diffs = [abs(a - b) for a, b in zip(doc["nll"], lock["nll"])]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    assert diffs[worst] <= NLL_TOL, f"{name} {spec}: lockstep NLL differs by {diffs[worst]:.3g} at {worst}"
    assert lock["replay"]["n_violations"] == 0, lock["replay"]["violations"][:5]
    assert lock["replay"]["victims_checked"] > 0

    free = ref.run_reference(model, ids, spec)
    assert free["policy"] == spec
    rel = abs(doc["ppl"] - free["ppl"]) / free["ppl"]
    assert rel <= PPL_REL_TOL, f"{name} {spec}: PPL engine {doc['ppl']} vs reference {free['ppl']}"
    share = kept_share(trace, free["trace"], n - 2)
    assert share >= SHARE_FLOOR, f"{name} {spec}: kept sets identical in only {100 * share:.3f}%"


def test_rolling_positions_differ_from_absolute(models):
    """The renumbering changes what sink computes (its sinks sit right before the window), and
    the reference agrees with itself that local's contiguous window keeps its relative distances."""
    onnx, hf = models["pythia-micro"]
    model = _reference_model(hf)
    ids = ref.load_tokens(onnx / "tokenizer.json", data_path(), 300)
    rolled = ref.run_reference(model, ids, "sink:4+60@rolling")
    plain = ref.run_reference(model, ids, "sink:4+60")
    assert rolled["trace"]["steps"] == plain["trace"]["steps"]  # the same tokens are kept
    assert max(abs(a - b) for a, b in zip(rolled["nll"], plain["nll"])) > 1e-3


@pytest.mark.parametrize("spec", ["h2o:48+16", "sink:4+60", "full"])
def test_rolling_graph_on_absolute_positions_is_todays_graph(models, spec):
    _need(MICRO / "model.onnx", "make export-micro")
    today, today_trace = run_engine(MICRO, spec, 300, models["_tmp"])
    new, new_trace = run_engine(MICRO_ROLLING, spec, 300, models["_tmp"])
    worst = max(abs(a - b) for a, b in zip(today["nll"], new["nll"]))
    assert worst <= SAME_GRAPH_NLL_TOL, f"{spec}: the rolling graph differs by {worst:.3g}"
    assert new_trace["steps"] == today_trace["steps"], f"{spec}: evictions differ"
    manifest = json.loads((MICRO_ROLLING / "manifest.json").read_text())
    assert manifest["key_cache"] == "unrotated"
    assert "key_cache" not in json.loads((MICRO / "manifest.json").read_text())


def test_refusals(models):
    _need(MICRO / "model.onnx", "make export-micro")
    err = engine_refusal(MICRO, "h2o:48+16@rolling", 300)
    assert "caches its keys rotated" in err and "make export-micro-rolling" in err, err
    onnx, _ = models["tiny-128"]
    for graph in (onnx, MICRO_ROLLING):
        limit = json.loads((graph / "manifest.json").read_text())["max_position_embeddings"]
        err = engine_refusal(graph, "full", limit + 1)
        assert f"--tokens {limit + 1} is beyond the model's {limit} positions" in err, err
        assert "never trained on" in err and "@rolling" in err, err
    err = engine_refusal(onnx, "sink:4+28", 512)  # absolute positions: refused the same way
    assert "never trained on" in err, err
    with pytest.raises(ReferenceError, match="bounded"):
        split_rolling("full@rolling")


def test_reference_budget_above_text_is_full_bit_for_bit():
    _need(FIXTURE / "hf/config.json", "make fixtures")
    model = _reference_model(FIXTURE / "hf")
    ids = ref.load_tokens(FIXTURE / "tokenizer.json", data_path(), 200)
    full = ref.run_reference(model, ids, "full")
    rolled = ref.run_reference(model, ids, "h2o:600+600@rolling")
    assert rolled["nll"] == full["nll"]
    assert rolled["policy"] == "h2o:600+600@rolling"


def test_spec_option_and_positions():
    assert split_rolling("sink:4+252@rolling") == ("sink:4+252", True)
    assert split_rolling(" h2o:1+2@rolling@pyramid ") == ("h2o:1+2@pyramid", True)
    assert split_rolling("local:8") == ("local:8", False)
    assert rolling_spec("h2o:1+2@pyramid", True) == "h2o:1+2@pyramid@rolling"
    with pytest.raises(ReferenceError, match="twice"):
        split_rolling("local:8@rolling@rolling")
    # uniform budgets: the new token right after the cache, entries 0..n-1
    assert key_positions([3, 3]) == (3, [[0, 1, 2], [0, 1, 2]])
    # per-layer counts: the newest entry of every layer right before the new token
    assert key_positions([4, 2, 0]) == (4, [[0, 1, 2, 3], [2, 3], []])
