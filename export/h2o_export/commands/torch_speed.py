"""PyTorch side of the speed comparison (issue 8): decode speed on the CPU, batch 1.

    python export/torch_speed.py --hf-dir models/pythia-micro --impl hf --threads 4 --prompt 512 --gen 256 --out hf.json
    python export/torch_speed.py --random-init 160m --init-seed 0 --impl hf --threads 4 --out hf-160m.json
    python export/torch_speed.py --random-init 160m --impl reference --policy h2o:192+64 --out ref-160m.json

Implementations (`--impl`):
- `hf`: transformers' GPTNeoXForCausalLM (LlamaForCausalLM / Qwen2ForCausalLM for those models),
  eager attention, with its own KV cache (DynamicCache), full cache: prefill the P prompt tokens in
  one call (TTFT), then greedy decode (each step feeds the previous argmax) until G tokens are
  generated: G-1 timed decode steps, as the engine's `speed` does (src/eval/speed.rs).
- `reference`: the project's PyTorch reference loop (h2o_export.reference) with a policy. It has
  no batched prefill and scores a given text, so it streams P + G tokens one at a time: its
  "TTFT" is the time of the first P steps and its decode steps are the G-1 steps after them.
  Step times come from the reference's observer hook (the time between the last layer's
  callbacks of two consecutive steps, i.e. one whole step: all layers, eviction, logits and NLL).
  It is not optimised; it shows what eviction costs when written plainly in PyTorch.

Figures, as the engine's (src/report/figures.rs): ttft_ms; tpot_median_ms / tpot_p90_ms /
tpot_mean_ms over decode steps (p90 by linear interpolation); throughput_tps = decode steps /
decode time; prefill_tps; seed_tpot_ms = (prefill + decode) / generated tokens and
seed_throughput_tps, its inverse.

Weights: `--hf-dir` (a checkpoint folder) or `--random-init SIZE|CONFIG.json --init-seed N`, which
uses the exporter's own seeded generator (h2o_export.weights.RandomWeights: the same values the
exporter writes into model.onnx for `export.py --random-init SIZE --init-seed N --dtype fp32`), so
engine and PyTorch figures are on identical weights; `weights_sha256` is the digest the exporter
records in the manifest's source.sha256, for checking that.

Prompt tokens: the first P (+ G for the reference) tokens of `--data` with the model's tokenizer
(`--tokenizer`, default DIR/tokenizer.json), or seeded random ids (`--token-seed`) when no data
is given. Output: one JSON object (--out, and a one-line summary on stdout).

The command line over h2o_export.speed, which holds the measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import ReferenceError
from ..policies import parse_policy
from ..speed import SpeedError, document, load, prompt_ids, run_hf, run_ref


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="PyTorch decode speed on the CPU (transformers eager or the reference loop).",
                                 epilog="Exit status: 0 ok, 2 bad input.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf-dir", help="Hugging Face checkpoint folder (config.json, model.safetensors)")
    src.add_argument("--random-init", metavar="SIZE|CONFIG.json",
                     help="the exporter's seeded random weights at a Pythia size (e.g. 160m), a Llama-family "
                          "shape (smollm2-135m, qwen2.5-0.5b, tinyllama-1.1b, llama-3.2-1b) or a config.json's shape")
    ap.add_argument("--init-seed", type=int, default=0,
                    help="RNG seed of --random-init's weights (as export.py --init-seed; default 0)")
    ap.add_argument("--seed", type=int, dest="init_seed", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["hf", "reference"], default="hf",
                    help="hf: transformers eager + DynamicCache, full cache (default); reference: the PyTorch reference loop")
    ap.add_argument("--policy", default="h2o:192+64", help="policy for --impl reference (default h2o:192+64)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads (default: all CPUs)")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens P (default 512)")
    ap.add_argument("--gen", type=int, default=128, help="generated tokens G: G-1 timed decode steps (default 128)")
    ap.add_argument("--warmup", type=int, default=1, help="discarded warm-up runs of min(G, 8) steps (default 1)")
    ap.add_argument("--data", help="text file for the prompt (default: seeded random ids)")
    ap.add_argument("--tokenizer", help="tokenizer.json for --data (default: HF_DIR/tokenizer.json)")
    ap.add_argument("--token-seed", type=int, default=0, help="seed of the random prompt ids (default 0)")
    ap.add_argument("--out", help="write the result JSON here")
    args = ap.parse_args(argv)

    try:
        if args.threads < 1:
            raise SpeedError("--threads must be >= 1")
        if args.prompt < 1 or args.gen < 2:
            raise SpeedError("--prompt must be at least 1 and --gen at least 2")
        if args.warmup < 0:
            raise SpeedError("--warmup must be >= 0")
        if args.impl == "hf" and args.policy != ap.get_default("policy"):
            raise SpeedError("--policy applies to --impl reference; transformers' cache is the full cache")
        if args.impl == "reference":
            parse_policy(args.policy)
        torch.set_num_threads(args.threads)
        model, name, sha, tok = load(args.hf_dir, args.random_init, args.init_seed, args.tokenizer)
        max_pos = int(model.config.max_position_embeddings)
        if args.prompt + args.gen > max_pos:
            raise SpeedError(f"--prompt {args.prompt} + --gen {args.gen} is beyond the model's {max_pos} positions")
        if args.impl == "hf":
            ids = prompt_ids(model, args.prompt, args.data, tok, args.token_seed)
            res = run_hf(model, ids, args.gen, args.warmup)
        else:
            ids = prompt_ids(model, args.prompt + args.gen, args.data, tok, args.token_seed)
            res = run_ref(model, ids, args.prompt, args.policy, args.warmup)
    except (SpeedError, ReferenceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    weights = {"hf_dir": str(args.hf_dir)} if args.hf_dir else {"random_init": args.random_init,
                                                                 "init_seed": args.init_seed}
    doc = document(args.impl, name, weights, sha, model, res, gen=args.gen, warmup=args.warmup,
                   prompt_source=args.data or f"random ids (seed {args.token_seed})")
    text = json.dumps(doc, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(f"{doc['impl']} {name} {doc['policy']} threads {doc['threads']}: prompt {args.prompt}, gen {args.gen}: "
          f"TTFT {doc['ttft_ms']:.2f} ms, TPOT median {doc['tpot_median_ms']:.3f} ms, p90 {doc['tpot_p90_ms']:.3f} ms, "
          f"{doc['throughput_tps']:.1f} tok/s" + (f" -> {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
