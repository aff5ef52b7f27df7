#!/usr/bin/env python3
"""Export a Hugging Face GPT-NeoX (Pythia) checkpoint to the h2o-engine ONNX graph.

Usage: python export/export.py --checkpoint DIR --out models/NAME [--dtype fp16] [--force]
       python export/export.py --random-init 2.8b --init-seed 0 --tokenizer TOKENIZER.json --out DIR
The same as `h2o-export ...` and `python -m h2o_export ...` (h2o_export.cli). See export/README.md and `--help`.
"""

import sys

if __name__ == "__main__":
    from h2o_export.__main__ import run

    sys.exit(run())
