"""`python -m h2o_export` and the console command `h2o-export`: the exporter's command line
(h2o_export.cli), with Ctrl-C during the imports of numpy and onnx ending in one line too."""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from .cli import main
    except KeyboardInterrupt:  # Ctrl-C while numpy / onnx load: one line, as everywhere else
        print("error: interrupted (Ctrl-C) before the export started; nothing was written", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
