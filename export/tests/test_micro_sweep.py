"""Tests of the sweep runner's pieces (h2o_export.micro.sweep; the CLI export/micro_sweep.py):
the plan, the chooser, what comes back from the GPU (within the device tool's limits) and the
claim summary. The processes themselves are rehearsed by export/gpu/train_sweep.sh."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from h2o_export.micro import model as mm  # noqa: E402
from h2o_export.micro import sweep  # noqa: E402


def test_plan_specs_and_size_limit(tmp_path):
    runs = [sweep.Run("a", tiny=True), sweep.Run("ctl", candidate=False, bos=False, tiny=True, args=["--lr", "1e-3"])]
    plan = sweep.write_plan(tmp_path, runs, ["--seq", "64"], 120)
    assert sweep.read_plan(tmp_path / "sweep.json") == plan
    a = json.loads((tmp_path / plan["runs"][0]["spec"]).read_text())
    ctl = json.loads((tmp_path / plan["runs"][1]["spec"]).read_text())
    assert a["config_json"]["prepend_bos_token_id"] == 0 and "prepend_bos_token_id" not in ctl["config_json"]
    cmd = sweep.run_command(Path("train_micro.py"), plan, tmp_path, plan["runs"][1], Path("d"), Path("w"), 90, [])
    assert cmd[2:] == ["train", "--spec", str(tmp_path / "specs/ctl.json"), "--data", "d", "--out", "w/ctl",
                       "--train-seconds", "90", "--skip-eval", "--no-bos", "--seq", "64", "--lr", "1e-3"]
    # the GPU plan's models stay within the card's 40 MB; 384 wide needs few layers for that
    assert all(mm.fp32_bytes(r.fields()) <= sweep.MAX_MODEL_BYTES for r in sweep.default_runs())
    with pytest.raises(ValueError, match="69.4 MB of float32 weights, over the model card's 40 MB"):
        sweep.write_plan(tmp_path / "big", [sweep.Run("wide", width=384)], [], 60)
    with pytest.raises(ValueError, match="no candidate run"):
        sweep.write_plan(tmp_path / "ctl", runs[1:], [], 60)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="not a sweep plan"):
        sweep.read_plan(tmp_path / "bad.json")


def _fake_run(work: Path, name: str, curve: list[float], end: bool = True, missing: tuple = ()) -> None:
    """A run folder as `train` leaves it: train_log.jsonl with evaluations every 10 steps, a
    checkpoint per evaluation (except the steps in `missing`), an end record when `end`."""
    d = work / name
    recs = [{"event": "start", "fields": mm.model_config(tiny=True)}]
    for i, loss in enumerate(curve):
        step = 10 * (i + 1)
        ck = f"ckpt/step-{step:06d}"
        if step not in missing:
            (d / ck).mkdir(parents=True)
            (d / ck / "model.safetensors").write_bytes(b"x")
            (d / ck / "config.json").write_text("{}")
        recs.append({"event": "eval", "step": step, "tokens": step * 100, "val_loss": loss, "checkpoint": ck,
                     "sink": {"mean": [0.1 * i, 0.2], "max_head": [0.3, 0.4]}})
    if end:
        recs.append({"event": "end", "stop": "validation minimum", "steps": 10 * len(curve),
                     "tokens_seen": 1000 * len(curve)})
    d.mkdir(parents=True, exist_ok=True)
    (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def _plan(*names_candidate):
    return {"runs": [{"name": n, "candidate": c, "bos": c, "args": [], "params": 1} for n, c in names_candidate]}


def test_chooser_picks_the_lowest_validation_loss_among_candidates(tmp_path):
    _fake_run(tmp_path, "a", [4.0, 3.2, 3.3])
    _fake_run(tmp_path, "b", [4.0, 3.5, 3.1, 3.1, 3.3], end=False)  # stopped at the budget: no end record
    _fake_run(tmp_path, "ctl", [3.0, 3.2])  # the control: lower, but never chosen
    _fake_run(tmp_path, "c", [2.0, 3.6], missing=(10,))  # its best evaluation's checkpoint is missing
    choice = sweep.choose(_plan(("a", True), ("b", True), ("ctl", False), ("c", True)), tmp_path)
    assert choice["chosen"] == "b" and choice["chosen_checkpoint"] == "b/ckpt/step-000030"  # tie: the earlier step
    assert choice["chosen_val_loss"] == 3.1
    rows = {r["name"]: r for r in choice["runs"]}
    assert rows["b"]["stop"].startswith("no end record") and rows["b"]["steps"] == 50
    assert rows["ctl"]["best_val_loss"] == 3.0 and rows["c"]["best_val_loss"] == 3.6
    assert rows["a"]["sink_at_best"] == {"mean": [0.1, 0.2], "max_head": [0.3, 0.4]}
    assert rows["a"]["val_curve"] == [[10, 4.0], [20, 3.2], [30, 3.3]]
    assert "chosen: b/ckpt/step-000030" in sweep.format_choice(choice)
    with pytest.raises(RuntimeError, match="no candidate run saved a checkpoint"):
        sweep.choose(_plan(("ctl", False), ("none", True)), tmp_path)


def test_results_fit_what_the_device_tool_brings_back(tmp_path):
    """A checkpoint of pythia-micro's size comes back as at most 8 files, each under 16 MiB, 64
    MiB in all, at most two folders down, names of letters, digits, '.', '_', '-'; the shards
    merge back to the same tensors."""
    work, out = tmp_path / "work", tmp_path / "out"
    _fake_run(work, "a", [3.0])
    g = torch.Generator().manual_seed(0)
    sd = {f"t{i}": torch.randn(1024, 1028, generator=g) for i in range(8)}  # 33.7 MB, as the model
    save_file(sd, str(work / "a/ckpt/step-000010/model.safetensors"))
    (work / "sweep.log").write_text("runner log\n")
    plan = _plan(("a", True))
    files = sweep.write_results(sweep.choose(plan, work), plan, work, out)
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert sorted(files) == on_disk and len(on_disk) <= 8
    sizes = [(out / f).stat().st_size for f in on_disk]
    assert max(sizes) < 16 * 2**20 and sum(sizes) < 64 * 2**20
    assert all(f.count("/") <= 2 and all(re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in f.split("/")) for f in on_disk)
    assert sum(f.startswith("model/model-") for f in on_disk) == 3
    mm.merge_shards(out / "model", tmp_path / "merged.safetensors")
    back = load_file(str(tmp_path / "merged.safetensors"))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    assert json.loads((out / "choice.json").read_text())["plan"] == plan


def test_claim():
    good = {"full": 10.0, "local:256": 20.0, "h2o:192+64": 14.0, "local:512": 16.0, "h2o:384+128": 12.0}
    assert sweep.claim(good)["holds"]
    half = dict(good, **{"h2o:192+64": 15.5})  # ordered, but the gap 5.5 is over half of 10
    c = sweep.claim(half)
    assert not c["holds"] and c["256"]["full<h2o<local"] and not c["256"]["h2o_gap<=half_local_gap"]
    swapped = dict(good, **{"h2o:384+128": 17.0})  # h2o worse than local (as today's pythia-micro at 256)
    assert not sweep.claim(swapped)["holds"] and not sweep.claim(swapped)["512"]["full<h2o<local"]
    below = dict(good, **{"h2o:192+64": 9.0, "local:256": 9.5})  # bounded caches better than full: no claim
    assert not sweep.claim(below)["256"]["h2o_gap<=half_local_gap"]
    assert sweep.claim_policies() == ["full", "local:256", "h2o:192+64", "local:512", "h2o:384+128"]
