"""A sweep of pythia-micro trainings side by side on one GPU, and the chooser (issue 15).

Subcommands
  plan     (here, with the transformers that will read the checkpoints) write sweep.json and
           one model spec per run into --out: the GPU sweep (BOS at weight decay 0.1 and 0.3,
           BOS at 384 x 3 layers, the no-BOS control), or with --rehearsal the same axes on
           tiny models for a CPU rehearsal
  run      (on the GPU machine) start every run of --plan at once as its own
           `train_micro.py train` process, stop them all within --budget seconds, choose the
           checkpoint of lowest held-out validation loss among the candidate runs and write
           into --out: choice.json, logs.tar.gz, model/ (config.json, train_log.jsonl, the
           weights in shards under 16 MiB)
  choose   the chooser alone, on the folders of an earlier `run` (--work)
  claim    issue 15's must-show (full < h2o < local at 256 and 512, h2o's gap at most half of
           local's) from `h2o ppl --json` files of one model (wiki.test.raw: reported only)

The command line over h2o_export.micro.sweep; export/gpu/train_sweep.sh runs `run` on the GPU,
export/gpu/README.md says what to carry and what comes back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T_START = time.time()

from ..micro import sweep  # noqa: E402
from ..micro.train import make_log  # noqa: E402


def cmd_plan(args) -> None:
    runs = sweep.rehearsal_runs() if args.rehearsal else sweep.default_runs()
    if args.runs:
        keep = args.runs.split(",")
        unknown = sorted(set(keep) - {r.name for r in runs})
        if unknown:
            raise ValueError(f"unknown run(s) {unknown}; the plan has {[r.name for r in runs]}")
        runs = [r for r in runs if r.name in keep]
    common = sweep.REHEARSAL_COMMON if args.rehearsal else sweep.GPU_COMMON
    plan = sweep.write_plan(Path(args.out), runs, common, args.budget)
    for r in plan["runs"]:
        print(f"{r['name']:<14} candidate={r['candidate']!s:<5} bos={r['bos']!s:<5} {r['params']:,} parameters "
              f"({r['bytes'] / 1e6:.1f} MB) {' '.join(r['args'])}")
    print(f"wrote {args.out}/sweep.json (budget {args.budget:.0f}s; common flags: {' '.join(common)})")


def cmd_run(args) -> None:
    log = make_log(T_START)
    plan_path = Path(args.plan)
    plan = sweep.read_plan(plan_path)
    budget = args.budget or plan["budget_s"]
    elapsed = time.time() - T_START
    status = sweep.run_sweep(plan_path, Path(args.data), Path(args.work), budget - elapsed, args.reserve,
                             args.extra, log, args.threads_per_run)
    finish(plan, Path(args.work), Path(args.out), status, log)


def cmd_choose(args) -> None:
    finish(sweep.read_plan(Path(args.plan)), Path(args.work), Path(args.out), None, make_log(T_START))


def finish(plan: dict, work: Path, out: Path, status, log) -> None:
    choice = sweep.choose(plan, work, status)
    files = sweep.write_results(choice, plan, work, out)
    print(sweep.format_choice(choice), flush=True)
    log(f"wrote {out}: {', '.join(files)}")


def cmd_claim(args) -> None:
    ppl = sweep.read_ppl_files([Path(p) for p in args.ppl_json])
    missing = [p for p in sweep.claim_policies() if p not in ppl]
    if missing:
        raise ValueError(f"no result for {missing}; run `h2o ppl --json` with those policies")
    res = sweep.claim(ppl)
    for b in ("256", "512"):
        c = res[b]
        print(f"budget {b}: full {ppl['full']:.3f}  {c['h2o']} {ppl[c['h2o']]:.3f}  {c['local']} {ppl[c['local']]:.3f}"
              f"  full<h2o<local {c['full<h2o<local']}  h2o gap {c['h2o_gap']:.3f} <= half of local gap "
              f"{c['local_gap']:.3f}: {c['h2o_gap<=half_local_gap']}")
    print(f"issue 15's claim holds: {res['holds']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"ppl": ppl, "claim": res}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--out", default=".carry/micro")
    p.add_argument("--rehearsal", action="store_true", help="tiny models and short windows, for the CPU")
    p.add_argument("--runs", default="", help="comma-separated subset of the plan's run names")
    p.add_argument("--budget", type=float, default=450.0, help="default wall-time budget of `run`, seconds")
    r = sub.add_parser("run")
    r.add_argument("--plan", default=".carry/micro/sweep.json")
    r.add_argument("--data", default=".carry/micro", help="folder with train.npy and valid.npy")
    r.add_argument("--work", required=True, help="the runs' folders (checkpoints along the way)")
    r.add_argument("--out", required=True, help="what comes back: choice.json, logs.tar.gz, model/")
    r.add_argument("--budget", type=float, default=0.0,
                   help="wall-time budget in seconds from this script's start (default: the plan's)")
    r.add_argument("--reserve", type=float, default=30.0,
                   help="seconds kept after the runs' training deadline for their last save and the choice")
    r.add_argument("--threads-per-run", type=int, default=0, help="OMP_NUM_THREADS of each run (0: torch's default)")
    r.add_argument("extra", nargs="*", help="after --: more `train` flags for every run")
    c = sub.add_parser("choose")
    c.add_argument("--plan", default=".carry/micro/sweep.json")
    c.add_argument("--work", required=True)
    c.add_argument("--out", required=True)
    k = sub.add_parser("claim")
    k.add_argument("ppl_json", nargs="+", help="`h2o ppl --json` files: full, local:256, h2o:192+64, local:512, "
                                               "h2o:384+128")
    k.add_argument("--out", default=None)
    args = ap.parse_args()
    try:
        {"plan": cmd_plan, "run": cmd_run, "choose": cmd_choose, "claim": cmd_claim}[args.cmd](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
