"""PyTorch reference: streaming NLL of a GPT-NeoX checkpoint under a KV eviction policy.

    python export/reference.py --hf-dir models/pythia-micro --tokenizer models/pythia-micro/tokenizer.json \
        --data wiki.test.raw --tokens 300 --policy h2o:48+16 --out ref.json
    python export/reference.py --hf-dir models/pythia-micro --replay engine-trace.json --out replay.json

The command line over the package h2o_export: the loop is h2o_export/reference.py (semantics in
its docstring), the policies h2o_export/policies/, traces and lockstep replay h2o_export/trace.py.
Output JSON: {"policy", "model", "n_tokens", "nll", "ppl", "trace", ...}; with --replay TRACE.json
the reference evicts exactly what the trace says and checks every victim against its own scores.
A checkpoint whose config.json declares prepend_bos_token_id gets that BOS fed before the text
(not scored: --tokens N still gives N-1 predictions); `n_tokens` counts the text tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import ReferenceError
from ..policies import ACCEPTED_FORMS, parse_policy
from ..reference import load_model, load_tokens, run_reference
from ..trace import DEFAULT_REL_TOL, read_trace, text_tokens


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="PyTorch reference: streaming NLL of a GPT-NeoX checkpoint under a KV eviction policy.",
        epilog=f"Policy specs: {ACCEPTED_FORMS}. Exit status: 0 ok, 1 replay violations, 2 bad input.",
    )
    ap.add_argument("--hf-dir", required=True, help="checkpoint directory (config.json + model.safetensors)")
    ap.add_argument("--tokenizer", help="tokenizer.json (optional with --replay: the trace holds the tokens)")
    ap.add_argument("--data", help="text file, read whole as UTF-8 (e.g. wiki.test.raw)")
    ap.add_argument("--tokens", type=int, help="number of tokens from the start of the text")
    ap.add_argument("--policy", help="policy spec (optional with --replay: taken from the trace)")
    ap.add_argument("--replay", help="eviction trace to follow in lockstep (h2o-evict-trace/1)")
    ap.add_argument("--rel-tol", type=float, default=DEFAULT_REL_TOL, help="replay: relative slack on 'lowest score'")
    ap.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16 or auto")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: a one-token step is mostly small ops, which extra threads slow "
             "down, badly so on a loaded machine; raise it for large models on an idle one)",
    )
    ap.add_argument("--out", required=True, help="output JSON")
    args = ap.parse_args(argv)

    try:
        if args.threads < 1:
            raise ReferenceError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
        if args.tokens is not None and args.tokens < 2:
            raise ReferenceError("--tokens must be >= 2 (N tokens give N-1 predictions)")
        trace = read_trace(args.replay) if args.replay else None
        spec = args.policy if args.policy is not None else (trace["policy"] if trace else None)
        if spec is None:
            raise ReferenceError(f"--policy is required without --replay; accepted forms are {ACCEPTED_FORMS}")
        parse_policy(spec)  # refuse a malformed spec before the slow steps
        model = load_model(args.hf_dir, args.dtype)
        if (args.tokenizer is None) != (args.data is None):
            raise ReferenceError("--tokenizer and --data go together")
        if args.data is not None:
            n = args.tokens if args.tokens is not None else (len(text_tokens(trace)) if trace else None)
            if n is None:
                raise ReferenceError("--tokens is required without --replay")
            ids = load_tokens(args.tokenizer, args.data, n)
        elif trace is not None:
            ids = text_tokens(trace)
            if args.tokens is not None and args.tokens != len(ids):
                raise ReferenceError(f"--tokens {args.tokens} but the trace holds {len(ids)} tokens")
        else:
            raise ReferenceError("pass --tokenizer and --data (or --replay with a trace)")

        policy = parse_policy(spec, max_positions=int(model.config.max_position_embeddings))
        result = run_reference(model, ids, policy, replay=trace, rel_tol=args.rel_tol, model_name=str(args.hf_dir))
    except ReferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result) + "\n", encoding="utf-8")
    msg = f"{result['policy']}: {result['n_tokens']} tokens, ppl {result['ppl']:.6f} -> {out}"
    if trace is not None:
        rep = result["replay"]
        msg += f"; replay checked {rep['victims_checked']} victims, {rep['n_violations']} violations"
    print(msg)
    if trace is not None and result["replay"]["n_violations"]:
        for v in result["replay"]["violations"][:20]:
            print(f"violation: step {v['step']} layer {v['layer']} head {v['head']}: {v['kind']}: {v['detail']}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
