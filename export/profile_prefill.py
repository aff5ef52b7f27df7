#!/usr/bin/env python3
"""Where a prefill spends its time: ONNX Runtime's per-node profile.

`python export/profile_prefill.py ...` is `h2o-profile-prefill ...` (the console command of the installed package):
both run h2o_export.commands.profile_prefill (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import profile_prefill_command

if __name__ == "__main__":
    sys.exit(profile_prefill_command())
