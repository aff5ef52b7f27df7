#!/usr/bin/env python3
"""A sweep of pythia-micro trainings side by side on one GPU, and the chooser.

`python export/micro_sweep.py ...` is `h2o-micro-sweep ...` (the console command of the installed package):
both run h2o_export.commands.micro_sweep (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import micro_sweep_command

if __name__ == "__main__":
    sys.exit(micro_sweep_command())
