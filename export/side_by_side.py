#!/usr/bin/env python3
"""Engine vs PyTorch, same machine, same threads, same random-init weights.

`python export/side_by_side.py ...` is `h2o-side-by-side ...` (the console command of the installed package):
both run h2o_export.commands.side_by_side (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import side_by_side_command

if __name__ == "__main__":
    sys.exit(side_by_side_command())
