#!/usr/bin/env python3
"""PyTorch reference: streaming NLL of a GPT-NeoX checkpoint under a KV eviction policy.

`python export/reference.py ...` is `h2o-reference ...` (the console command of the installed package):
both run h2o_export.commands.reference (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import reference_command

if __name__ == "__main__":
    sys.exit(reference_command())
