#!/usr/bin/env python3
"""Regenerate tests/fixtures/tiny/: a tiny random GPT-NeoX, its tokenizer, its ONNX export and
golden outputs computed by transformers (see tests/fixtures/tiny/README.md for the format).

    python export/make_fixture.py [--corpus ../shared/data/train-corpus/corpus-000.txt]
    python export/make_fixture.py --fp16-only     # only tests/fixtures/tiny-fp16 (no corpus needed)

The command line over h2o_export.fixture. Steps: train a byte-level BPE tokenizer (500 ids) on the first 2 MB of the training corpus;
make a random GPT-NeoX checkpoint (hidden 64, 4 heads, 2 layers, rotary_pct 0.25, parallel
residual, vocab padded to 512) under hf/; export it (fp32) with the project's exporter; run the
standard cases through transformers' GPTNeoXForCausalLM (eager attention, output_attentions)
and write golden.json; check the export against the golden values through onnxruntime; export the same
checkpoint in fp16 next to it (tests/fixtures/tiny-fp16, for the engine's fp16 tests).
Needs torch + transformers (export/requirements-torch.txt).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from h2o_export.fixture import make_fixture, make_fp16_fixture  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path,
                    default=Path(os.environ.get("H2O_TRAIN_CORPUS",
                                                ROOT.parent / "shared/data/train-corpus/corpus-000.txt")),
                    help="text to train the tokenizer on (default ../shared/data/train-corpus/corpus-000.txt "
                         "or $H2O_TRAIN_CORPUS)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/tiny")
    ap.add_argument("--fp16-only", action="store_true",
                    help="only export OUT/hf in fp16 to OUT-fp16 (the checkpoint must exist)")
    args = ap.parse_args()
    if args.fp16_only:
        make_fp16_fixture(args.out, log=lambda m: print(m, file=sys.stderr))
        return 0
    if not args.corpus.is_file():
        print(f"error: training corpus {args.corpus} not found; pass --corpus FILE (any English text)",
              file=sys.stderr)
        return 2
    make_fixture(args.corpus, args.out, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
