#!/usr/bin/env python3
"""Prefill time with subnormals kept against flushed (`h2o --denormals keep|flush`), ONNX Runtime
alone: each setting in its own process (ONNX Runtime sets flush-to-zero on the thread of a
process's first session only), alternating ROUNDS times; per process one warm-up and RUNS timed
512-token prefills of MODEL (last token's logits, as `h2o speed`), min / p25 / median printed.

    PYTHONPATH=export .venv/bin/python docs/perf/denormals-ab.py models/random-410m/onnx-fp32-fused
"""

import argparse
import json
import subprocess
import sys
import time


def child(model: str, denormals: str, tokens: int, threads: int, runs: int) -> None:
    import onnxruntime as ort

    from h2o_export.graph import with_logits_from
    from h2o_export.profile import prefill_feeds, session_options

    manifest = json.load(open(f"{model}/manifest.json", encoding="utf-8"))
    sess = ort.InferenceSession(f"{model}/model.onnx", session_options(threads, denormals),
                                providers=["CPUExecutionProvider"])
    feeds = with_logits_from(prefill_feeds(manifest, tokens), sess, tokens - 1)
    sess.run(None, feeds)
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    print(json.dumps({"denormals": denormals, "ms": ms}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=("keep", "flush"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.model, a.child, a.tokens, a.threads, a.runs)
        return
    print(f"{a.model}: {a.tokens}-token prefill, {a.threads} threads, {a.runs} runs a process (ms)")
    print("| round | denormals | min | p25 | median |\n| --- | --- | ---: | ---: | ---: |")
    for r in range(1, a.rounds + 1):
        for d in ("keep", "flush"):
            out = subprocess.run([sys.executable, __file__, a.model, "--child", d, "--tokens", str(a.tokens),
                                  "--threads", str(a.threads), "--runs", str(a.runs)],
                                 check=True, capture_output=True, text=True).stdout
            ms = json.loads(out.strip().splitlines()[-1])["ms"]
            n = len(ms)
            print(f"| {r} | {d} | {ms[0]:.0f} | {ms[n // 4]:.0f} | {(ms[(n - 1) // 2] + ms[n // 2]) / 2:.0f} |")


if __name__ == "__main__":
    main()
