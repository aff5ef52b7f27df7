"""Prepare the training data and tokenizer of models/pythia-micro.

Reads the English Wikipedia corpus (../shared/data/train-corpus, WikiExtractor output) and
WikiText-2 raw validation, renders the corpus articles in the WikiText layout (headings
` = Title = `, Moses-style spacing of punctuation, `@-@` / `@,@` / `@.@` separators, one
paragraph per line, ` \\n` blank lines), trains a byte-level BPE tokenizer on that text with
`tokenizers`, and writes the token streams as uint16 arrays:

  <out>/train.npy   corpus articles + wiki.valid.raw (all but its last articles)
  <out>/valid.npy   the last articles of wiki.valid.raw (held out; never trained on)
  <out>/test.npy    the whole of wiki.test.raw (evaluation only; never trained on)
  <out>/data.json   counts, source hashes, the tokenizer's hash

wiki.test.raw is only tokenized here, never used to train the tokenizer or the model.

The command line over h2o_export.micro.data.

Usage: .venv/bin/python export/prepare_micro_data.py --data ../shared/data \\
           --tokenizer-out models/pythia-micro/tokenizer.json --out .carry
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..micro.data import MicroError, prepare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="shared data folder holding train-corpus/ and wikitext-2-raw-v1/")
    ap.add_argument("--tokenizer-out", type=Path, default=Path("models/pythia-micro/tokenizer.json"))
    ap.add_argument("--tokenizer-from", type=Path, default=None,
                    help="encode with this existing tokenizer.json (no tokenizer trained or written), "
                         "e.g. models/pythia-micro/tokenizer.json to keep the default model's vocabulary")
    ap.add_argument("--out", type=Path, default=Path(".carry"))
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--valid-holdout-articles", type=int, default=6,
                    help="last N articles of wiki.valid.raw kept out of training (validation loss)")
    ap.add_argument("--sample-out", type=Path, default=None,
                    help="optionally write the first 20 kB of the rendered corpus here")
    args = ap.parse_args()

    try:
        prepare(args.data, args.tokenizer_out, args.out, args.vocab_size, args.valid_holdout_articles, args.sample_out,
                args.tokenizer_from)
    except MicroError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
