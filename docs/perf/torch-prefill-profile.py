#!/usr/bin/env python3
"""Where transformers eager spends one prefill: torch.profiler's self CPU time per aten op, the
counterpart of `export/profile_prefill.py` (ONNX Runtime's per-node profile) for issue 31.

Seeded random weights of a Pythia shape (h2o_export.speed.random_init_model, the same model
`export/torch_speed.py --random-init SIZE --init-seed 0` times), eager attention, float32,
one forward of TOKENS random ids with use_cache=True and logits_to_keep=1 (what generate's
first step computes). Prints the forward's wall time over RUNS timed runs and the op table of
one more, profiled:

    PYTHONPATH=export .venv/bin/python docs/perf/torch-prefill-profile.py --size 410m --tokens 512 --threads 2
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from h2o_export.speed import random_init_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="410m", help="Pythia shape (160m, 410m, 1b, ...)")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed runs after two warm-ups")
    ap.add_argument("--rows", type=int, default=12, help="op rows to print")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, _, _ = random_init_model(a.size, 0)
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(2):
            model(ids, use_cache=True, logits_to_keep=1)
        ms = []
        for _ in range(a.runs):
            t = time.perf_counter()
            model(ids, use_cache=True, logits_to_keep=1)
            ms.append((time.perf_counter() - t) * 1e3)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(ids, use_cache=True, logits_to_keep=1)
    print(f"transformers eager, random {a.size}, {a.tokens} tokens, {a.threads} threads: "
          f"forward ms {', '.join(f'{x:.0f}' for x in ms)}")
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    print("| aten op | calls | self ms | share |\n| --- | ---: | ---: | ---: |")
    for e in events[:a.rows]:
        self_ms = e.self_cpu_time_total / 1e3
        print(f"| {e.key} | {e.count} | {self_ms:.1f} | {100 * self_ms / total:.1f}% |")
    print(f"| all ops | | {total:.1f} | 100% |")


if __name__ == "__main__":
    main()
