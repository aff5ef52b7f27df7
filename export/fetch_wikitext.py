#!/usr/bin/env python3
"""Fetch WikiText-2 raw (test, valid) into data/wikitext-2-raw-v1/.

`python export/fetch_wikitext.py ...` is `h2o-fetch-wikitext ...` (the console command of the installed package):
both run h2o_export.commands.fetch_wikitext (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import fetch_wikitext_command

if __name__ == "__main__":
    sys.exit(fetch_wikitext_command())
