"""Where a prefill spends its time (issue 16): ONNX Runtime's per-node profile of one P-token
prefill of an exported model, summed per op type, for the graph's logits of every token
(logits_from 0) and of the last one only (logits_from P-1, what `h2o speed` asks for).

    .venv/bin/python export/profile_prefill.py --model models/random-160m/onnx --tokens 512 --threads 2

The command line over h2o_export.profile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..profile import DENORMALS, profile_prefill, table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="exported model directory")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=4, help="runs, the first a warm-up (default 4)")
    ap.add_argument("--logits", choices=("both", "all", "last"), default="both",
                    help="profile the prefill computing every token's logits (all), the last token's only "
                         "(last: what `h2o speed` asks for), or both (default)")
    ap.add_argument("--denormals", choices=DENORMALS, default="flush",
                    help="subnormal floats in ONNX Runtime's threads: flush to zero (the engine's default) "
                         "or keep (ONNX Runtime's default)")
    ap.add_argument("--json", type=Path, help="write the profiles here")
    args = ap.parse_args()
    if args.tokens < 1:
        ap.error("--tokens must be at least 1")
    docs = {}
    cases = {"all": [("every token's logits", 0)], "last": [("the last token's logits", args.tokens - 1)]}
    for label, start in cases["all"] + cases["last"] if args.logits == "both" else cases[args.logits]:
        doc = profile_prefill(args.model, args.tokens, args.threads, args.runs, logits_from=start,
                              denormals=args.denormals)
        docs[label] = doc
        print(f"{args.model}, {args.tokens}-token prefill, {args.threads} threads, denormals {args.denormals}, {label}: "
              f"{doc['total_ms']:.1f} ms of nodes per run\n{table(doc)}\n")
    if args.json:
        args.json.write_text(json.dumps(docs, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
