"""h2o-sweep-ray end to end on the tiny fixture: a grid planned by `h2o sweep plan`, its jobs run as
Ray tasks on a Ray started here (2 CPUs, no dashboard), merged by `h2o sweep merge`; the merged
NLLs and PPLs equal `h2o bench` on the same experiments bit for bit, and a second run submits
nothing (every job has its result)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from common import EXPORT_DIR, FIXTURE, data_path, engine_bin, engine_env

pytest.importorskip("ray", reason="ray is not installed (the `test` extra: pip install -e 'export[test]')")

EXPS = "full,h2o:8+8,local:16"
SMALL = ["--ppl-tokens", "32", "--prompt", "16", "--gen", "4", "--warmup", "0", "--threads", "1"]


def h2o(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(engine_bin()), *map(str, args)], capture_output=True, text=True,
                          env=engine_env(), timeout=180)


def bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


@pytest.fixture(scope="module", autouse=True)
def engine():
    if not engine_bin().is_file():
        pytest.skip(f"no engine binary at {engine_bin()} (cargo build --release)")


def test_ray_runs_the_jobs_and_merges_as_bench(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    r = h2o("sweep", "plan", "--model", FIXTURE, "--data", data_path(), "--exp", EXPS, *SMALL, "--out", jobs)
    assert r.returncode == 0, r.stderr
    ids = [json.loads(line)["id"] for line in jobs.read_text().splitlines()]
    assert len(ids) == 3

    results = tmp_path / "results"
    driver = [sys.executable, str(EXPORT_DIR / "sweep_ray.py"), str(jobs), "--results", str(results),
              "--h2o", str(engine_bin()), "--num-cpus", "2"]
    r = subprocess.run(driver, capture_output=True, text=True, env=engine_env(), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 jobs, 0 with a result already" in r.stdout, r.stdout
    assert r.stdout.count("done: job ") == 3, r.stdout
    assert sorted(p.name for p in results.iterdir()) == sorted(f"{i}.json" for i in ids)

    # a rerun submits nothing: every job has its result (Ray is not even started)
    again = subprocess.run(driver, capture_output=True, text=True, env=engine_env(), timeout=120)
    assert again.returncode == 0, again.stderr
    assert "3 jobs, 3 with a result already" in again.stdout, again.stdout
    assert "done:" not in again.stdout

    merged = tmp_path / "merged"
    r = h2o("sweep", "merge", results, "--jobs", jobs, "--out", merged)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "merged.json").read_text())
    assert doc["complete"] is True
    exps = doc["experiments"]
    assert [e["spec"] for e in exps] == EXPS.split(",")

    bench = tmp_path / "bench"
    r = h2o("bench", "--model", FIXTURE, "--data", data_path(), "--exp", EXPS, *SMALL, "--name", "b",
            "--results", bench)
    assert r.returncode == 0, r.stderr
    for ours, theirs in zip(exps, json.loads((bench / "b.json").read_text())["experiments"], strict=True):
        assert ours["status"]["state"] == "ok", ours["status"]
        assert [bits(x) for x in ours["nlls"]] == [bits(x) for x in theirs["nlls"]], theirs["spec"]
        assert bits(ours["ppl"]["ppl"]) == bits(theirs["ppl"]["ppl"]), theirs["spec"]


def test_a_jobs_file_that_is_not_one_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    r = subprocess.run([sys.executable, str(EXPORT_DIR / "sweep_ray.py"), str(bad), "--results",
                        str(tmp_path / "r"), "--h2o", str(engine_bin())],
                       capture_output=True, text=True, env=engine_env(), timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("error: JOBS: ") and "line 1: not a sweep job" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
