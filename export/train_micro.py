#!/usr/bin/env python3
"""Train, save and evaluate models/pythia-micro.

`python export/train_micro.py ...` is `h2o-train-micro ...` (the console command of the installed package):
both run h2o_export.commands.train_micro (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import train_micro_command

if __name__ == "__main__":
    sys.exit(train_micro_command())
