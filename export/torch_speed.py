#!/usr/bin/env python3
"""PyTorch side of the speed comparison: decode speed on the CPU, batch 1.

`python export/torch_speed.py ...` is `h2o-torch-speed ...` (the console command of the installed package):
both run h2o_export.commands.torch_speed; `--help` says the rest.
"""

import sys

from h2o_export.commands.torch_speed import main

if __name__ == "__main__":
    sys.exit(main())
