#!/usr/bin/env python3
"""PyTorch side of the speed comparison: decode speed on the CPU, batch 1.

`python export/torch_speed.py ...` is `h2o-torch-speed ...` (the console command of the installed package):
both run h2o_export.commands.torch_speed (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import torch_speed_command

if __name__ == "__main__":
    sys.exit(torch_speed_command())
