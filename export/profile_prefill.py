#!/usr/bin/env python3
"""Where a prefill spends its time: ONNX Runtime's per-node profile.

`python export/profile_prefill.py ...` is `h2o-profile-prefill ...` (the console command of the installed package):
both run h2o_export.commands.profile_prefill; `--help` says the rest.
"""

import sys

from h2o_export.commands.profile_prefill import main

if __name__ == "__main__":
    sys.exit(main())
