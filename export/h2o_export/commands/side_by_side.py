"""Engine vs PyTorch, same machine, same threads, same random-init weights (issue 8).

For each size: the engine (`h2o speed --json`) for full, local and h2o at one budget, transformers
eager with its own DynamicCache (full cache, export/torch_speed.py --impl hf) and the project's
PyTorch reference with H2O (torch_speed.py --impl reference). Prompt P + G generated tokens, batch 1.
With `--weights fp32,int8,int4` the engine runs each weight format (the same random weights
exported with MatMulNBits int8/int4 into models/random-SIZE/onnx-int8|-int4 where absent);
with `--loaded` one core is kept busy by `yes > /dev/null` while measuring (issue 16).
Writes results/side-by-side-<time>/side-by-side.json and .md: a markdown table headed by the
CPU model of TPOT medians, TTFT and the engine / PyTorch ratios of both. The engine's fp32 model
dirs are made by `make models/random-SIZE/onnx/model.onnx`.

The command line over h2o_export.side_by_side.

    .venv/bin/python export/side_by_side.py --sizes 160m,410m --threads 2 --prompt 512 --gen 64
    .venv/bin/python export/side_by_side.py --sizes 160m,410m --threads 2 --prompt 512 --gen 64 \
        --weights fp32,int8,int4 --skip-reference [--loaded]
    .venv/bin/python export/side_by_side.py --sizes smollm2-135m,qwen2.5-0.5b --threads 2 --prompt 512 --gen 64

Sizes are Pythia sizes or the Llama-family shapes of ../shared/data/llama-configs.json (smollm2-135m,
qwen2.5-0.5b, tinyllama-1.1b, llama-3.2-1b; transformers' LlamaForCausalLM / Qwen2ForCausalLM on the
same random weights). Those borrow the Pythia tokenizer: a text whose Pythia ids reach past the model's
vocab is refused (WikiText-2 test has id 50177 at token 166, beyond smollm2's 49152 and TinyLlama's 32000).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import checkout
from ..side_by_side import measure, table

ROOT = checkout()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="160m,410m")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--budget", default="local:256,h2o:192+64", help="engine policies besides full")
    ap.add_argument("--ref-policy", default="h2o:192+64")
    ap.add_argument("--init-seed", type=int, default=0, help="RNG seed of the random-init weights (default 0)")
    ap.add_argument("--seed", type=int, dest="init_seed", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=os.environ.get("H2O_DATA", str(ROOT.parent / "shared/data/wikitext-2-raw-v1/wiki.test.raw")))
    ap.add_argument("--bin", default=str(ROOT / "target/release/h2o"))
    ap.add_argument("--skip-reference", action="store_true", help="skip the (slow) PyTorch reference loop")
    ap.add_argument("--weights", default="fp32",
                    help="comma-separated engine weight formats, e.g. fp32,int8,int4 (exports made where absent)")
    ap.add_argument("--loaded", action="store_true",
                    help="keep one core busy with `yes > /dev/null` while measuring (a shared machine)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()


    doc, out_dir = measure(ROOT, args.sizes.split(","), threads=args.threads, prompt=args.prompt, gen=args.gen,
                           budget=args.budget, ref_policy=args.ref_policy, init_seed=args.init_seed, data=args.data,
                           engine=args.bin, skip_reference=args.skip_reference,
                           weights=tuple(args.weights.split(",")), loaded=args.loaded)
    text = table(doc, args.ref_policy)
    (out_dir / "side-by-side.md").write_text(text + "\n")
    print(text)
    print(f"\n{out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
