"""`python -m h2o_export` (run from export/, or with export/ on PYTHONPATH)."""

import sys

from .cli import main

sys.exit(main())
