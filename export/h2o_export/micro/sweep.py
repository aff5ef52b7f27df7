"""A sweep of pythia-micro trainings side by side on one GPU (issue 15), and the chooser.

`write_plan` (on the CPU machine, with the transformers that will read the checkpoints) writes
sweep.json and one model spec per run; `run_sweep` (on the GPU machine) starts every run as its
own `train_micro.py train` process sharing the GPU, each with its own folder (train_log.jsonl,
console.log, ckpt/step-N/), all stopped by one wall-time budget; `choose` then reads the logs,
picks the checkpoint of lowest held-out validation loss among the candidate runs (the control
runs are reported, never chosen) and writes what comes back: choice.json (every run's
validation minimum and its sink score per layer), the chosen checkpoint as shards small enough
for the device tool, and every run's logs. `claim` summarises the follow-up evaluation on
wiki.test.raw (reported, never used for the choice).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .model import fp32_bytes, model_config, model_spec

PLAN_FORMAT = "h2o-micro-sweep/1"
MAX_MODEL_BYTES = 40_000_000  # the model card's size limit (float32 weights)
SHARD_MIB = 14.0  # shards of the chosen checkpoint: each file that comes back must stay under 16 MiB


@dataclass
class Run:
    """One training of the sweep: its name, whether it may be chosen, its shape and BOS, and
    the extra `train` flags (weight decay, ...)."""

    name: str
    candidate: bool = True
    bos: bool = True
    width: Optional[int] = None
    layers: Optional[int] = None
    tiny: bool = False
    args: list[str] = field(default_factory=list)

    def fields(self) -> dict:
        return model_config(self.tiny, self.width, self.layers, 0 if self.bos else None)


def default_runs() -> list[Run]:
    """The GPU sweep: the BOS recipe at weight decay 0.1 and 0.3, a wider and shallower BOS model
    of the same size (384 x 3 layers: 384 x 8 would be 69 MB, over the card's 40 MB), and the
    no-BOS control (the old recipe's windows)."""
    return [
        Run("bos-wd0.1", args=["--weight-decay", "0.1"]),
        Run("bos-wd0.3", args=["--weight-decay", "0.3"]),
        Run("bos-w384x3", width=384, layers=3, args=["--weight-decay", "0.1"]),
        Run("nobos-wd0.1", candidate=False, bos=False, args=["--weight-decay", "0.1"]),
    ]


# The GPU runs' common flags: the old recipe's windows, batch, LR schedule and validation windows.
GPU_COMMON = ["--seq", "2048", "--batch", "64", "--lr", "2e-3", "--warmup", "100", "--val-windows", "16",
              "--sink-windows", "2", "--val-points", "24", "--patience", "4"]


def rehearsal_runs() -> list[Run]:
    """The CPU rehearsal of the same sweep: tiny models (2 layers) with the same axes."""
    return [
        Run("bos-wd0.1", tiny=True, args=["--weight-decay", "0.1"]),
        Run("bos-wd0.3", tiny=True, args=["--weight-decay", "0.3"]),
        Run("bos-w96", tiny=True, width=96, args=["--weight-decay", "0.1"]),
        Run("nobos-wd0.1", candidate=False, bos=False, tiny=True, args=["--weight-decay", "0.1"]),
    ]


# The rehearsal's common flags: short windows on a small slice of the training stream, so the
# validation loss turns within two minutes on two cores and the stopping rule fires.
REHEARSAL_COMMON = ["--seq", "128", "--batch", "8", "--lr", "3e-3", "--warmup", "20", "--val-windows", "8",
                    "--sink-windows", "2", "--eval-every", "10", "--patience", "3", "--train-tokens", "10000",
                    "--calib-start", "5", "--calib-steps", "10"]


def write_plan(plan_dir: Path, runs: list[Run], common: list[str], budget_s: float) -> dict:
    """sweep.json + specs/NAME.json (fields, config.json, expected weights, made by this
    machine's transformers) in plan_dir; refuses a run whose weights pass MAX_MODEL_BYTES."""
    names = [r.name for r in runs]
    if len(set(names)) != len(names) or not runs:
        raise ValueError(f"run names must be unique and at least one: {names}")
    if not any(r.candidate for r in runs):
        raise ValueError("no candidate run: every run is a control")
    (plan_dir / "specs").mkdir(parents=True, exist_ok=True)
    entries = []
    for r in runs:
        f = r.fields()
        size = fp32_bytes(f)
        if size > MAX_MODEL_BYTES:
            raise ValueError(f"run {r.name}: {size / 1e6:.1f} MB of float32 weights, over the model card's "
                             f"{MAX_MODEL_BYTES / 1e6:.0f} MB; use fewer layers or a smaller width")
        spec = model_spec(f)
        (plan_dir / "specs" / f"{r.name}.json").write_text(json.dumps(spec, indent=2) + "\n")
        entries.append(asdict(r) | {"spec": f"specs/{r.name}.json", "bytes": size, "params": spec["parameters"]})
    plan = {"format": PLAN_FORMAT, "budget_s": budget_s, "common": common, "runs": entries}
    (plan_dir / "sweep.json").write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def read_plan(path: Path) -> dict:
    plan = json.loads(path.read_text())
    if plan.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path}: not a sweep plan (format {plan.get('format')!r}, expected {PLAN_FORMAT!r})")
    return plan


def run_command(train_script: Path, plan: dict, plan_dir: Path, run: dict, data: Path, work: Path,
                train_seconds: float, extra: list[str]) -> list[str]:
    """The `train_micro.py train` command line of one run."""
    return [sys.executable, str(train_script), "train", "--spec", str(plan_dir / run["spec"]),
            "--data", str(data), "--out", str(work / run["name"]), "--train-seconds", f"{train_seconds:.0f}",
            "--skip-eval", "--bos" if run["bos"] else "--no-bos",
            *plan["common"], *run["args"], *extra]


def run_sweep(plan_path: Path, data: Path, work: Path, budget_s: float, reserve_s: float, extra: list[str],
              log: Callable[[str], None], threads_per_run: int = 0) -> dict[str, int]:
    """Start every run of the plan at once; each trains until budget_s - reserve_s after the
    start (its own wall clock), then saves; a run still going at budget_s - 10 s is stopped
    (SIGTERM, then SIGKILL). Returns {name: exit status} (negative: killed)."""
    plan = read_plan(plan_path)
    train_script = Path(__file__).resolve().parents[2] / "train_micro.py"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads_per_run:
        env["OMP_NUM_THREADS"] = str(threads_per_run)
    procs = {}
    for run in plan["runs"]:
        (work / run["name"]).mkdir(parents=True, exist_ok=True)
        cmd = run_command(train_script, plan, plan_path.parent, run, data, work, budget_s - reserve_s, extra)
        console = open(work / run["name"] / "console.log", "w")
        procs[run["name"]] = (subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, env=env), console)
        log(f"started {run['name']}: {' '.join(cmd[1:])}")
    hard = t0 + budget_s - 10
    while any(p.poll() is None for p, _ in procs.values()) and time.time() < hard:
        time.sleep(1)
    for name, (p, _) in procs.items():
        if p.poll() is None:
            log(f"{name} still running at the budget's end: stopping it")
            p.send_signal(signal.SIGTERM)
    for name, (p, console) in procs.items():
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        console.close()
    status = {name: p.returncode for name, (p, _) in procs.items()}
    log(f"runs ended after {time.time() - t0:.0f}s: {status}")
    return status


def read_run(run_dir: Path) -> dict:
    """A run's summary from its train_log.jsonl (complete or cut short): its start record, the
    evaluations, the end record if any, and the evaluation of lowest validation loss."""
    recs = [json.loads(ln) for ln in (run_dir / "train_log.jsonl").read_text().splitlines() if ln.strip()] \
        if (run_dir / "train_log.jsonl").is_file() else []
    start = next((r for r in recs if r.get("event") == "start"), None)
    end = next((r for r in recs if r.get("event") == "end"), None)
    evals = [r for r in recs if r.get("event") == "eval" and (run_dir / r["checkpoint"] / "model.safetensors").is_file()]
    best = min(evals, key=lambda r: (r["val_loss"], r["step"])) if evals else None
    return {"start": start, "end": end, "evals": evals, "best": best}


def choose(plan: dict, work: Path, status: Optional[dict] = None) -> dict:
    """The choice among the plan's candidate runs: lowest held-out validation loss over every
    saved evaluation (ties: the earlier step); every run's figures reported."""
    rows = []
    for run in plan["runs"]:
        r = read_run(work / run["name"])
        b, last = r["best"], (r["evals"][-1] if r["evals"] else None)
        rows.append({
            "name": run["name"], "candidate": run["candidate"], "bos": run["bos"], "args": run["args"],
            "width": r["start"]["fields"]["hidden_size"] if r["start"] else None,
            "layers": r["start"]["fields"]["num_hidden_layers"] if r["start"] else None,
            "params": run["params"], "exit_status": (status or {}).get(run["name"]),
            "stop": r["end"]["stop"] if r["end"] else "no end record (stopped or failed)",
            "steps": r["end"]["steps"] if r["end"] else (last["step"] if last else 0),
            "tokens": r["end"]["tokens_seen"] if r["end"] else (last["tokens"] if last else 0),
            "evals": len(r["evals"]),
            "best_step": b["step"] if b else None, "best_tokens": b["tokens"] if b else None,
            "best_val_loss": b["val_loss"] if b else None, "best_checkpoint": b["checkpoint"] if b else None,
            "sink_at_best": b["sink"] if b else None, "last_val_loss": last["val_loss"] if last else None,
            "sink_at_last": last["sink"] if last else None,
            "val_curve": [[e["step"], round(e["val_loss"], 5)] for e in r["evals"]],
        })
    pool = [x for x in rows if x["candidate"] and x["best_val_loss"] is not None]
    if not pool:
        raise RuntimeError("no candidate run saved a checkpoint; see the runs' console.log")
    chosen = min(pool, key=lambda x: (x["best_val_loss"], x["name"]))
    return {"criterion": "lowest held-out validation loss (wiki.valid's held-out articles) among candidate runs",
            "chosen": chosen["name"], "chosen_checkpoint": f"{chosen['name']}/{chosen['best_checkpoint']}",
            "chosen_val_loss": chosen["best_val_loss"], "runs": rows}


def write_results(choice: dict, plan: dict, work: Path, out: Path) -> list[str]:
    """What comes back from the GPU: out/choice.json (with the plan), out/logs.tar.gz (every
    run's train_log.jsonl, console.log and run.json; work/*.log and work/*.csv) and out/model/ (the chosen
    checkpoint's config.json, train_log.jsonl and weights in shards of at most SHARD_MIB)."""
    from .model import reshard

    out.mkdir(parents=True, exist_ok=True)
    (out / "choice.json").write_text(json.dumps(choice | {"plan": plan}, indent=2) + "\n")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for extra in sorted(work.glob("*.log")) + sorted(work.glob("*.csv")):  # the runner's own, GPU samples
            tar.add(extra, arcname=extra.name)
        for run in plan["runs"]:
            for f in ("train_log.jsonl", "console.log", "run.json"):
                p = work / run["name"] / f
                if p.is_file():
                    tar.add(p, arcname=f"{run['name']}/{f}")
    model = out / "model"
    model.mkdir(exist_ok=True)
    src = work / choice["chosen_checkpoint"]
    shutil.copyfile(src / "config.json", model / "config.json")
    shutil.copyfile(work / choice["chosen"] / "train_log.jsonl", model / "train_log.jsonl")
    names = reshard(src, model, SHARD_MIB)
    return ["choice.json", "logs.tar.gz", "model/config.json", "model/train_log.jsonl"] + [f"model/{n}" for n in names]


def format_choice(choice: dict) -> str:
    """The chooser's table, one line per run."""
    lines = [f"{'run':<14} {'cand':>4} {'stop':<20} {'steps':>6} {'tokens':>8} {'best val':>9} {'@step':>6} "
             f"{'last val':>9}  sink per layer at best (mean over heads / max head)"]
    for x in choice["runs"]:
        sink = x["sink_at_best"]
        s = (" ".join(f"{m:.3f}/{h:.2f}" for m, h in zip(sink["mean"], sink["max_head"])) if sink else "-")
        lines.append(f"{x['name']:<14} {'yes' if x['candidate'] else 'no':>4} {x['stop'][:20]:<20} {x['steps']:>6} "
                     f"{x['tokens'] / 1e6:>7.1f}M {_f(x['best_val_loss']):>9} {_i(x['best_step']):>6} "
                     f"{_f(x['last_val_loss']):>9}  {s}")
    lines.append(f"chosen: {choice['chosen_checkpoint']} (validation loss {choice['chosen_val_loss']:.4f})")
    return "\n".join(lines)


def _f(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4f}"


def _i(v: Optional[int]) -> str:
    return "-" if v is None else str(v)


CLAIM_BUDGETS = ((256, "local:256", "h2o:192+64"), (512, "local:512", "h2o:384+128"))


def claim(ppl: dict[str, float]) -> dict:
    """Issue 15's must-show on one model's PPLs {policy: ppl} (wiki.test.raw, reported only):
    at each budget full < h2o < local and h2o's gap to full at most half of local's."""
    full = ppl["full"]
    out = {}
    for budget, loc, h2o in CLAIM_BUDGETS:
        lo, hh = ppl[loc], ppl[h2o]
        out[str(budget)] = {"local": loc, "h2o": h2o, "full<h2o<local": full < hh < lo,
                            "h2o_gap": hh - full, "local_gap": lo - full,
                            "h2o_gap<=half_local_gap": lo > full and (hh - full) <= 0.5 * (lo - full)}
    out["holds"] = all(v["full<h2o<local"] and v["h2o_gap<=half_local_gap"] for v in out.values()
                       if isinstance(v, dict))
    return out


def claim_policies() -> list[str]:
    return ["full"] + [p for _, loc, h2o in CLAIM_BUDGETS for p in (loc, h2o)]


def read_ppl_files(paths: list[Path]) -> dict[str, float]:
    """{policy: ppl} from `h2o ppl --json` (or reference.py) result files."""
    out = {}
    for p in paths:
        doc = json.loads(p.read_text())
        if not math.isfinite(doc["ppl"]):
            raise ValueError(f"{p}: ppl is {doc['ppl']}")
        out[doc["policy"]] = doc["ppl"]
    return out
