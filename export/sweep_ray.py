#!/usr/bin/env python3
"""Runs the jobs of a sweep (`h2o sweep plan --out JOBS`) on Ray, one task per job.

`python export/sweep_ray.py ...` is `h2o-sweep-ray ...` (the console command of the installed package):
both run h2o_export.commands.sweep_ray (through h2o_export.commands.run); `--help` says the rest.
"""

import sys

from h2o_export.commands import sweep_ray_command

if __name__ == "__main__":
    sys.exit(sweep_ray_command())
