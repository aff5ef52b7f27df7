"""Runs the jobs of a sweep (`h2o sweep plan --out JOBS`) on Ray, one task per job.

Each task asks Ray for its job's needs (`needs.cpus` CPUs, `needs.memory_bytes` of memory, one
GPU when `needs.provider` is cuda) and runs the same per-job entry as the local runner and a
Slurm array task: `h2o sweep run JOBS --results DIR --index I`, which measures job I in an
`h2o bench-one` child and writes DIR/<id>.json (or skips the job when that file is there). So
`h2o sweep merge DIR` merges Ray's results exactly as the local ones. Jobs whose result file is
there already are not submitted; rerunning the command runs the jobs left.

Without --address Ray starts on this machine (--num-cpus CPUs, default all); with it, the driver
joins that cluster, whose workers must see the same paths (the h2o binary, JOBS, --results: a
shared file system). Exit 0 when every job has a result that measured, 1 when a job failed
(its record says why), 2 when a task could not run its job at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import checkout

# Environment the driver hands to every task (where the engine finds ONNX Runtime, its text).
FORWARDED_ENV = ("ORT_DYLIB_PATH", "H2O_DATA")


@dataclass(frozen=True)
class Job:
    """One line of a JOBS file, as far as scheduling needs it."""

    index: int
    id: str
    cpus: int
    memory_bytes: int
    gpu: bool
    label: str


def read_jobs(path: Path) -> list[Job]:
    """The jobs of a JOBS file, in order (blank lines skipped, as `h2o sweep run` reads it); the
    index of each is what `--index` takes."""
    jobs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            needs = d["needs"]
            jobs.append(Job(index=len(jobs), id=d["id"], cpus=max(1, int(needs.get("cpus", 1))),
                            memory_bytes=int(needs["memory_bytes"]), gpu=needs["provider"] == "cuda",
                            label=d["job"]["experiment"]["label"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} line {number}: not a sweep job ({e!r})") from None
    if not jobs:
        raise ValueError(f"{path} holds no jobs")
    return jobs


def job_command(h2o: Path, jobs: Path, results: Path, index: int) -> list[str]:
    """The per-job entry every back end runs: job `index` of `jobs` into `results`."""
    return [str(h2o), "sweep", "run", str(jobs), "--results", str(results), "--index", str(index)]


def run_job(command: list[str], env: dict) -> tuple[int, str]:
    """Runs one job's command (in a Ray worker): (exit code, the tail of its stderr)."""
    full = dict(os.environ)
    full.update(env)
    done = subprocess.run(command, capture_output=True, text=True, env=full)
    return done.returncode, done.stderr[-2000:]


def default_h2o() -> Optional[Path]:
    """The engine: this checkout's target/release/h2o, else `h2o` on PATH."""
    built = checkout() / "target/release/h2o"
    if built.is_file():
        return built
    found = shutil.which("h2o")
    return Path(found) if found else None


def run_sweep(h2o: Path, jobs_path: Path, results: Path, address: Optional[str] = None,
              num_cpus: Optional[int] = None, log=print) -> int:
    """Submits every job of `jobs_path` without a result in `results` as a Ray task and waits for
    all of them; returns the exit code (0 all measured, 1 a job failed, 2 a task could not run)."""
    import ray

    h2o, jobs_path, results = h2o.resolve(), jobs_path.resolve(), results.resolve()
    jobs = read_jobs(jobs_path)
    todo = [j for j in jobs if not (results / f"{j.id}.json").exists()]
    log(f"{len(jobs)} jobs, {len(jobs) - len(todo)} with a result already; results: {results}")
    if not todo:
        return 0
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(run_job)
        pending = {}
        for j in todo:
            options = {"num_cpus": j.cpus, "num_gpus": 1 if j.gpu else 0, "memory": j.memory_bytes}
            ref = task.options(**options).remote(job_command(h2o, jobs_path, results, j.index), env)
            pending[ref] = j
        failed = broken = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            j = pending.pop(ready[0])
            code, err = ray.get(ready[0])
            what = f"job {j.index} {j.label} ({j.id})"
            if code == 0:
                log(f"done: {what}")
            elif code == 1:
                failed += 1
                log(f"failed: {what}: its record in {results} says why")
            else:
                broken += 1
                last = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
                log(f"error: {what} did not run: {last}")
    finally:
        ray.shutdown()
    log(f"{len(todo)} ran on Ray ({failed} failed, {broken} did not run); merge: h2o sweep merge {results} "
        f"--jobs {jobs_path} --out NAME")
    return 2 if broken else 1 if failed else 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="h2o-sweep-ray", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jobs", type=Path, help="the JOBS file (from `h2o sweep plan --out`)")
    ap.add_argument("--results", type=Path, required=True, help="folder of the result files (<job id>.json)")
    ap.add_argument("--h2o", type=Path, default=None, help="the h2o binary (default: target/release/h2o of "
                                                          "this checkout, else h2o on PATH)")
    ap.add_argument("--address", default=None, help="a running Ray cluster's address (default: start Ray here)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the Ray started here (default: all)")
    args = ap.parse_args(argv)
    h2o = args.h2o or default_h2o()
    if h2o is None or not h2o.is_file():
        print(f"error: --h2o: no h2o binary at {h2o or 'target/release/h2o or on PATH'}; build it "
              "(cargo build --release) or name it with --h2o", file=sys.stderr)
        return 2
    if args.num_cpus is not None and args.num_cpus < 1:
        print(f"error: --num-cpus {args.num_cpus}: give at least 1", file=sys.stderr)
        return 2
    try:
        return run_sweep(h2o, args.jobs, args.results, args.address, args.num_cpus)
    except (OSError, ValueError) as e:
        print(f"error: JOBS: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
