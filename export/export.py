#!/usr/bin/env python3
"""Export a Hugging Face GPT-NeoX (Pythia) checkpoint to the h2o-engine ONNX graph.

Usage: python export/export.py --checkpoint DIR --out models/NAME [--dtype fp16] [--force]
       python export/export.py --random-init 2.8b --init-seed 0 --tokenizer TOKENIZER.json --out DIR
See export/README.md and `--help`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    try:
        from h2o_export.cli import main
    except KeyboardInterrupt:  # Ctrl-C while numpy / onnx load: one line, as everywhere else
        print("error: interrupted (Ctrl-C) before the export started; nothing was written", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
