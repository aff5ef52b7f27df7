"""Regenerate tests/fixtures/tiny/: a tiny random GPT-NeoX, its tokenizer, its ONNX export and
golden outputs computed by transformers (see tests/fixtures/tiny/README.md for the format).

    python export/make_fixture.py [--corpus ../shared/data/train-corpus/corpus-000.txt]
    python export/make_fixture.py --fp16-only     # only tests/fixtures/tiny-fp16 (no corpus needed)
    python export/make_fixture.py --greedy-only   # only golden.json's "greedy" key (the rest unchanged)
    python export/make_fixture.py --layer-masks-only   # only tests/fixtures/tiny-layer-masks
    python export/make_fixture.py --llama-only   # only tests/fixtures/tiny-llama, tiny-qwen2 (+ -fp16; tiny's tokenizer)

The command line over h2o_export.fixture. Steps: train a byte-level BPE tokenizer (500 ids) on the first 2 MB of the training corpus;
make a random GPT-NeoX checkpoint (hidden 64, 4 heads, 2 layers, rotary_pct 0.25, parallel
residual, vocab padded to 512) under hf/; export it (fp32) with the project's exporter; run the
standard cases through transformers' GPTNeoXForCausalLM (eager attention, output_attentions)
and write golden.json, with greedy continuations from transformers' generate; check the export against
the golden values through onnxruntime; export the same checkpoint in fp16 next to it
(tests/fixtures/tiny-fp16, for the engine's fp16 tests) and with one attention mask per layer, with
the PyTorch reference's run of a `@pyramid` policy (tests/fixtures/tiny-layer-masks).
Needs torch + transformers (export/requirements-torch.txt).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import checkout
from ..fixture import add_greedy, make_fixture, make_fp16_fixture, make_layer_masks_fixture

ROOT = checkout()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path,
                    default=Path(os.environ.get("H2O_TRAIN_CORPUS",
                                                ROOT.parent / "shared/data/train-corpus/corpus-000.txt")),
                    help="text to train the tokenizer on (default ../shared/data/train-corpus/corpus-000.txt "
                         "or $H2O_TRAIN_CORPUS)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/tiny")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--fp16-only", action="store_true",
                      help="only export OUT/hf in fp16 to OUT-fp16 (the checkpoint must exist)")
    only.add_argument("--greedy-only", action="store_true",
                      help="only (re)write the greedy continuations in OUT/golden.json (the rest of the file is kept)")
    only.add_argument("--layer-masks-only", action="store_true",
                      help="only export OUT/hf with per-layer masks to OUT-layer-masks, with the reference's run")
    only.add_argument("--llama-only", action="store_true",
                      help="only the Llama-family fixtures tiny-llama and tiny-qwen2 (and their -fp16 exports) next to "
                           "OUT, with OUT/tokenizer.json")
    args = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.llama_only:
        from ..fixture_llama import make_llama_fixtures

        make_llama_fixtures(args.out.parent, args.out / "tokenizer.json", log=log)
        return 0
    for flag, part in ((args.fp16_only, make_fp16_fixture), (args.greedy_only, add_greedy),
                       (args.layer_masks_only, make_layer_masks_fixture)):
        if flag:
            part(args.out, log=log)
            return 0
    if not args.corpus.is_file():
        print(f"error: training corpus {args.corpus} not found; pass --corpus FILE (any English text)",
              file=sys.stderr)
        return 2
    make_fixture(args.corpus, args.out, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
