"""`python -m h2o_export` (run from export/, or with export/ on PYTHONPATH)."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while numpy / onnx load: one line, as everywhere else
    print("error: interrupted (Ctrl-C) before the export started; nothing was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
