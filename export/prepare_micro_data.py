#!/usr/bin/env python3
"""Prepare the training data and tokenizer of models/pythia-micro.

`python export/prepare_micro_data.py ...` is `h2o-prepare-micro-data ...` (the console command of the installed package):
both run h2o_export.commands.prepare_micro_data (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import prepare_micro_data_command

if __name__ == "__main__":
    sys.exit(prepare_micro_data_command())
