#!/usr/bin/env python3
"""Regenerate tests/fixtures/tiny/ (and tiny-fp16/, tiny-layer-masks/).

`python export/make_fixture.py ...` is `h2o-make-fixture ...` (the console command of the installed package):
both run h2o_export.commands.make_fixture (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import make_fixture_command

if __name__ == "__main__":
    sys.exit(make_fixture_command())
