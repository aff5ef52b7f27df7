"""Parity of the Rust engine (`h2o ppl`) with the PyTorch reference (h2o_export.reference), issue 4.

For each model and policy the engine streams the first N tokens of WikiText-2 raw test (the
committed excerpt tests/data/wiki.test.excerpt.raw, its first article: the same tokens as the
whole file) (`h2o ppl ... --json OUT --trace TRACE`) and the reference checks it two ways:

1. lockstep: the reference replays the engine's eviction trace (`run_reference(..., replay=trace)`):
   per-token NLL equal within 1e-4 (absolute) and no victim violations (every victim the engine
   chose is, by the reference's own accumulated scores, the lowest or within 1e-5 relative of it);
2. free running: the reference with the policy on its own: PPL within 1e-3 relative of the
   engine's, and the share of (step, layer, head) whose kept positions are identical in both
   traces (`trace.iter_kept_sets`), reported and held above a floor.

Floors for the kept-set share: pythia-micro (trained) must be above 99% (issue 4). The tiny
fixture has random weights; its activations are O(1) (tests/fixtures/tiny/README.md), so its
attention is peaked and near-ties between eviction candidates are rarer than one would fear:
the reference in float32 and the same reference in float64 keep identical sets at 100% of
(step, layer, head) for every policy here (measured when this test was written). The engine
differs from the float32 reference only by summation order (ONNX Runtime vs torch), a smaller
perturbation than float32 vs float64, so a floor of 90% leaves room for a few near-ties
(one divergence persists for the rest of the text in that head) while still catching a policy
that chooses differently.

Also: a bounded cache whose budget exceeds the text (h2o:600+600, local:1000) gives the same
per-token NLL and PPL as `full`.

Every family is covered (full, local, sink, h2o, h2o-layer, tova, tova-head, scissor with its
default and a short history window, knorm, random) and per-layer budget schedules
(`@pyramid`), and the authors' variants (knorm `@skip=2`, scissor `@sinks=4` and `@normalized`,
issue 32). A scheduled policy (or knorm's whole first layers) needs a graph with one attention
mask per layer: the test
exports one from the same checkpoint (`--layer-masks`) into a temporary folder, and checks that
this graph gives the shared-mask graph's per-token NLLs and trace bit for bit under a uniform
policy.

Models: (a) the tiny fixture tests/fixtures/tiny (ONNX) with its checkpoint in hf/, 512 tokens;
(b) models/pythia-micro/onnx (made by `make export-micro`) with the checkpoint
models/pythia-micro, 300 tokens (`make test` exports it first).

A missing input (engine binary, exported model, checkpoint) skips with the reason, which
H2O_REQUIRE_ALL=1 (`make test`, CI) turns into a failure (conftest.py).

Environment: H2O_BIN (default target/release/h2o), H2O_DATA (default
tests/data/wiki.test.excerpt.raw), ORT_DYLIB_PATH (default .venv's onnxruntime library when found), H2O_PARITY_REPORT (write the agreement summary as JSON
there). Torch runs in this process with one thread; each model is loaded once; the engine runs
of one model go in parallel subprocesses (one thread each).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest

from common import FIXTURE, REPO, data_path, engine_bin, engine_env  # noqa: E402

from h2o_export import reference as ref  # noqa: E402
from h2o_export import trace as tr  # noqa: E402
from h2o_export.policies import parse_policy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NLL_TOL = 1e-4  # lockstep, absolute per token
PPL_REL_TOL = 1e-3  # free running
SAME_PPL_REL_TOL = 1e-6  # budget > text vs full: the same computation up to summation order

MODELS = {
    "tiny": dict(
        onnx=FIXTURE,
        hf=FIXTURE / "hf",
        n_tokens=512,
        policies=["full", "local:64", "sink:4+60", "h2o:32+32", "h2o-layer:32+32", "tova:64", "tova-head:64",
                  "scissor:64", "scissor:64@window=16@recent=4", "knorm:64", "random:64@rng=3",
                  "h2o:32+32@pyramid", "tova:64@pyramid", "scissor:64@window=16@recent=4@pyramid",
                  "random:64@rng=3@pyramid"],
        big_budgets=["h2o:600+600", "local:1000"],
        share_floor=0.90,
        how="make fixtures",
    ),
    "pythia-micro": dict(
        onnx=REPO / "models/pythia-micro/onnx",
        hf=REPO / "models/pythia-micro",
        n_tokens=300,
        policies=["full", "local:64", "sink:4+60", "h2o:48+16", "h2o-layer:48+16", "tova:64", "tova-head:64",
                  "scissor:64@window=32", "knorm:64", "random:64@rng=3", "h2o:48+16@pyramid", "tova:64@pyramid",
                  "sink:4+60@pyramid",
                  # the authors' variants (issue 32): knorm's whole first layers, scissor's sinks and
                  # its count normalised by the steps seen
                  "knorm:64@skip=2", "scissor:64@window=32@sinks=4", "scissor:64@window=32@normalized"],
        big_budgets=[],
        share_floor=0.99,
        how="make export-micro",
    ),
}
# uniform policies run on both graphs of a model: the per-layer-mask graph must give the same bits
SAME_GRAPH_SPECS = {"tiny": "h2o:32+32", "pythia-micro": "tova:64"}
CASES = [(m, p) for m, cfg in MODELS.items() for p in cfg["policies"]]
BIG_CASES = [(m, p) for m, cfg in MODELS.items() for p in cfg["big_budgets"]]

REPORT: dict = {}  # model -> policy -> figures; written to $H2O_PARITY_REPORT at the end


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """At the end of the module: print the agreement table and write $H2O_PARITY_REPORT."""
    yield REPORT
    if not REPORT:
        return
    lines = ["parity (engine vs PyTorch reference): model policy | lockstep max|dNLL| violations/victims | "
             "free ppl engine / ref, kept-set share"]
    for model, pols in REPORT.items():
        for pol, r in pols.items():
            if "vs_full" in r:
                v = r["vs_full"]
                lines.append(f"  {model:12s} {pol:16s} | budget above the text: ppl {v['engine_ppl']:.6f} "
                             f"vs full {v['full_ppl']:.6f}, max |dNLL| {v['max_abs_nll_diff']:.2e}")
                continue
            lock, free = r.get("lockstep", {}), r.get("free", {})
            share = free.get("kept_share")
            lines.append(
                f"  {model:12s} {pol:16s} | {lock.get('max_abs_nll_diff', float('nan')):.2e} "
                f"{lock.get('n_violations', '-')}/{lock.get('victims_checked', '-')} | "
                f"{r.get('engine_ppl', float('nan')):.6f} / {free.get('ppl', float('nan')):.6f}, "
                f"{'-' if share is None else f'{100 * share:.3f}%'}"
            )
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)
    out = os.environ.get("H2O_PARITY_REPORT")
    if out:
        doc = {
            "what": "engine (h2o ppl) vs PyTorch reference (h2o_export.reference) on WikiText-2 raw test",
            "tolerances": {"lockstep_nll_abs": NLL_TOL, "victim_rel": tr.DEFAULT_REL_TOL,
                           "free_ppl_rel": PPL_REL_TOL},
            "models": REPORT,
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


class ModelRuns:
    """One model: its reference weights, tokens and the engine's results (run lazily, once)."""

    def __init__(self, name: str, tmp: Path):
        cfg = MODELS[name]
        self.name, self.cfg, self.tmp = name, cfg, tmp
        self.model = ref.load_model(cfg["hf"])
        self.ids = ref.load_tokens(cfg["onnx"] / "tokenizer.json", data_path(), cfg["n_tokens"])
        self._engine: dict[str, tuple[dict, dict] | str] = {}  # spec -> (OUT, TRACE) or the failure
        self._ref: dict[tuple[str, bool], dict] = {}
        self._layer_masks: Optional[Path] = None

    def layer_mask_graph(self) -> Path:
        """The model exported with one attention mask per layer (once, into the test's folder)."""
        if self._layer_masks is None:
            from h2o_export.exporter import export

            out = self.tmp / "layer-masks"
            export(out, checkpoint=self.cfg["hf"], name=self.name, layer_masks=True, log=lambda _m: None)
            self._layer_masks = out
        return self._layer_masks

    def graph_for(self, spec: str) -> Path:
        """The graph a spec runs on: the per-layer-mask export for policies whose layers differ
        (a schedule, knorm's whole first layers; and for the `#layer-masks` marker this test adds
        to a spec), else the model's own."""
        if spec.endswith("#layer-masks") or not parse_policy(spec.split("#")[0]).same_in_every_layer:
            return self.layer_mask_graph()
        return self.cfg["onnx"]

    def engine_all(self, specs: list[str]) -> None:
        todo = [s for s in specs if s not in self._engine]
        if not todo:
            return
        for s in todo:
            self.graph_for(s)  # export before the parallel runs
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for spec, res in zip(todo, pool.map(self._run_engine, todo)):
                self._engine[spec] = res

    def engine(self, spec: str) -> tuple[dict, dict]:
        """(OUT.json, TRACE.json) of `h2o ppl` for this policy."""
        if spec not in self._engine:
            self.engine_all(self.cfg["policies"] + self.cfg["big_budgets"] + [spec])
        got = self._engine[spec]
        if isinstance(got, str):
            pytest.fail(got, pytrace=False)
        return got

    def _run_engine(self, spec: str) -> tuple[dict, dict] | str:
        stem = self.tmp / "".join(c if c.isalnum() else "_" for c in spec)
        out, trace = stem.with_suffix(".json"), stem.with_suffix(".trace.json")
        cmd = [str(engine_bin()), "ppl", "--model", str(self.graph_for(spec)), "--data", str(data_path()),
               "--tokens", str(self.cfg["n_tokens"]), "--policy", spec.split("#")[0], "--json", str(out),
               "--trace", str(trace), "--threads", "1"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), timeout=600)
        elapsed = time.perf_counter() - t0
        if p.returncode != 0:
            return (f"engine failed (exit {p.returncode}): {' '.join(cmd)}\nstdout: {p.stdout[-2000:]}\n"
                    f"stderr: {p.stderr[-4000:]}")
        try:
            doc = json.loads(out.read_text(encoding="utf-8"))
            tr = json.loads(trace.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            return f"engine ran ({' '.join(cmd)}) but its JSON output cannot be read: {e}"
        doc["_wall_s"] = elapsed
        return doc, tr

    def reference(self, spec: str, replay: bool) -> dict:
        """The reference free running (replay=False) or replaying the engine's trace."""
        key = (spec, replay)
        if key not in self._ref:
            if parse_policy(spec).kind == "full" and (spec, not replay) in self._ref:
                # full never evicts: replaying its (empty) trace is the free run
                self._ref[key] = self._ref[(spec, not replay)]
            else:
                trace = self.engine(spec)[1] if replay else None
                t0 = time.perf_counter()
                res = ref.run_reference(self.model, self.ids, spec, replay=trace, model_name=self.name)
                res["_wall_s"] = time.perf_counter() - t0
                self._ref[key] = res
        return self._ref[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> ModelRuns, created on first use (skips when the engine, the data or the model is absent)."""
    cache: dict[str, ModelRuns] = {}

    def get(name: str) -> ModelRuns:
        if name not in cache:
            cfg = MODELS[name]
            if not data_path().is_file():
                pytest.skip(f"text not found at {data_path()}: unset H2O_DATA or point it at a text file")
            if not (cfg["onnx"] / "model.onnx").is_file():
                pytest.skip(f"{cfg['onnx'] / 'model.onnx'} is absent: run `{cfg['how']}` first")
            if not (cfg["hf"] / "config.json").is_file():
                pytest.skip(f"{cfg['hf']}: no HF checkpoint (config.json) for the reference")
            if not engine_bin().is_file():
                pytest.skip(f"engine binary {engine_bin()} not built: run `cargo build --release` (or set H2O_BIN)")
            cache[name] = ModelRuns(name, tmp_path_factory.mktemp(name.replace("-", "_")))
        return cache[name]

    return get


def _entry(model: str, spec: str) -> dict:
    return REPORT.setdefault(model, {}).setdefault(spec, {})


def _padded(trace: dict, last: int) -> dict:
    """The trace with steps 0..last only, a step with no victims added where one is missing."""
    steps = {int(s["pos"]): s for s in trace["steps"] if int(s["pos"]) <= last}
    empty = [[[] for _ in range(int(trace["heads"]))] for _ in range(int(trace["layers"]))]
    return dict(trace, steps=[steps.get(p, {"pos": p, "evicted": empty}) for p in range(last + 1)])


def kept_share(a: dict, b: dict, last: int) -> tuple[float, int, Optional[int]]:
    """(share of (step, layer, head) with identical kept positions, count, first differing step)."""
    same = total = 0
    first_diff = None
    for (pa, ka), (pb, kb) in zip(tr.iter_kept_sets(_padded(a, last)), tr.iter_kept_sets(_padded(b, last))):
        assert pa == pb
        for la, lb in zip(ka, kb):
            for ha, hb in zip(la, lb):
                total += 1
                if ha == hb:
                    same += 1
                elif first_diff is None:
                    first_diff = pa
    return same / total, total, first_diff


def check_engine_doc(runs_: ModelRuns, spec: str, doc: dict, trace: dict) -> None:
    n = runs_.cfg["n_tokens"]
    assert doc["policy"] == parse_policy(spec).spec
    assert doc["n_tokens"] == n
    assert len(doc["nll"]) == n - 1
    assert all(math.isfinite(x) for x in doc["nll"])
    assert math.isclose(doc["ppl"], math.exp(math.fsum(doc["nll"]) / (n - 1)), rel_tol=1e-9)
    assert trace["format"] == tr.TRACE_FORMAT
    assert trace["policy"] == doc["policy"]
    assert trace["tokens"] == runs_.ids, "engine tokenization differs from reference.load_tokens"
    layers = len(runs_.model.gpt_neox.layers)
    assert (trace["layers"], trace["heads"]) == (layers, runs_.model.config.num_attention_heads)


@pytest.mark.parametrize("model,spec", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_lockstep(runs, model, spec):
    r = runs(model)
    doc, trace = r.engine(spec)
    check_engine_doc(r, spec, doc, trace)
    res = r.reference(spec, replay=True)
    rep = res.get("replay", {"n_violations": 0, "victims_checked": 0, "violations": []})
    diffs = [abs(a - b) for a, b in zip(doc["nll"], res["nll"])]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    e = _entry(model, spec)
    e["engine_ppl"] = doc["ppl"]
    e["engine_kv_bytes"] = doc.get("kv_bytes")
    e["lockstep"] = {
        "ppl": res["ppl"],
        "max_abs_nll_diff": diffs[worst],
        "victims_checked": rep["victims_checked"],
        "n_violations": rep["n_violations"],
    }
    assert diffs[worst] <= NLL_TOL, (
        f"{model} {spec}: lockstep NLL differs by {diffs[worst]:.3g} at prediction {worst} "
        f"(engine {doc['nll'][worst]!r}, reference {res['nll'][worst]!r})"
    )
    assert rep["n_violations"] == 0, f"{model} {spec}: victim violations: {rep['violations'][:5]}"
    if parse_policy(spec).kind != "full":
        assert rep["victims_checked"] > 0, f"{model} {spec}: the engine's trace evicts nothing"


@pytest.mark.parametrize("model,spec", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_free_running(runs, model, spec):
    r = runs(model)
    doc, trace = r.engine(spec)
    res = r.reference(spec, replay=False)
    n = r.cfg["n_tokens"]
    share, total, first = kept_share(trace, res["trace"], n - 2)
    rel = abs(doc["ppl"] - res["ppl"]) / res["ppl"]
    _entry(model, spec)["free"] = {
        "ppl": res["ppl"],
        "ppl_rel_diff": rel,
        "kept_share": share,
        "kept_compared": total,
        "first_differing_step": first,
        "share_floor": r.cfg["share_floor"],
    }
    assert rel <= PPL_REL_TOL, f"{model} {spec}: PPL engine {doc['ppl']} vs reference {res['ppl']} (rel {rel:.3g})"
    assert share >= r.cfg["share_floor"], (
        f"{model} {spec}: only {100 * share:.3f}% of (step, layer, head) keep the same positions "
        f"(floor {100 * r.cfg['share_floor']:.0f}%; first difference at step {first})"
    )


@pytest.mark.parametrize("model", list(SAME_GRAPH_SPECS))
def test_layer_mask_graph_equals_shared_mask_graph(runs, model):
    """Under a uniform policy the per-layer-mask graph computes what the shared-mask graph does:
    the same per-token NLLs and the same trace, bit for bit."""
    r = runs(model)
    spec = SAME_GRAPH_SPECS[model]
    shared, shared_trace = r.engine(spec)
    per_layer, per_layer_trace = r.engine(spec + "#layer-masks")
    assert per_layer["nll"] == shared["nll"], f"{model} {spec}: per-layer-mask graph NLLs differ"
    assert per_layer_trace["steps"] == shared_trace["steps"], f"{model} {spec}: traces differ"
    assert json.loads((r.layer_mask_graph() / "manifest.json").read_text())["attention_masks"] == "per_layer"


@pytest.mark.parametrize("model,spec", BIG_CASES, ids=[f"{m}-{p}" for m, p in BIG_CASES])
def test_budget_above_text_equals_full(runs, model, spec):
    r = runs(model)
    full, _ = r.engine("full")
    doc, trace = r.engine(spec)
    check_engine_doc(r, spec, doc, trace)
    assert all(not v for s in trace["steps"] for row in s["evicted"] for v in row), f"{spec} evicted something"
    worst = max(abs(a - b) for a, b in zip(doc["nll"], full["nll"]))
    _entry(model, spec)["vs_full"] = {"engine_ppl": doc["ppl"], "full_ppl": full["ppl"], "max_abs_nll_diff": worst}
    assert math.isclose(doc["ppl"], full["ppl"], rel_tol=SAME_PPL_REL_TOL), (
        f"{model}: {spec} PPL {doc['ppl']!r} vs full {full['ppl']!r}"
    )
    assert worst <= NLL_TOL
    # and the reference agrees that the bounded policy is the full cache here
    res = r.reference(spec, replay=False)
    assert res["ppl"] == r.reference("full", replay=False)["ppl"]
