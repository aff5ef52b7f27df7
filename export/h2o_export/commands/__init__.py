"""The project's Python programs besides the exporter, one module per program, each with `main`:
`python export/NAME.py` (the thin script beside the package) and the console command `h2o-NAME`
(export/pyproject.toml's [project.scripts], NAME with dashes) both call the function
NAME_command below (not NAME: that is the program's module), which imports the program and runs
`NAME.main`: a program whose extra is not installed (torch for the reference, onnxruntime for the
profile) says so in one line, naming the extra, instead of a traceback. The
exporter's own command line is h2o_export.cli (`python export/export.py`, `h2o-export`,
`python -m h2o_export`).

`checkout()` is the repository the package is installed from (editable, as `make venv` does),
where the programs' default paths live (data/, tests/fixtures/, target/release/h2o, ../shared).
"""

from __future__ import annotations

import importlib
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

# The distribution export/pyproject.toml declares.
DISTRIBUTION = "h2o-export"


def checkout() -> Path:
    """The checkout holding this package (export/h2o_export/commands/ inside it); the current
    directory when the package was installed elsewhere (a non-editable install)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "export" / "pyproject.toml").is_file() else Path.cwd()


def extra_of(package: str) -> Optional[str]:
    """The extra of the installed distribution whose requirements name `package` (an import name,
    e.g. `torch`), read from its metadata; None when none does or the package is not installed."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    for r in requirements:
        spec, _, marker = r.partition(";")
        name = re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0].lower().replace("-", "_")
        found = re.search(r"extra\s*==\s*[\"']([^\"']+)[\"']", marker)
        if name == package.lower() and found:
            return found.group(1)
    return None


def missing_package_line(program: str, package: str) -> str:
    """One line for a program that needs `package`, which is not installed."""
    command = "h2o-" + program.replace("_", "-")
    extra = extra_of(package)
    if extra is None:
        return (f"error: {command} needs the Python package {package}, which is not installed; install the "
                "project with its extras: pip install -e 'export[test]' (or make venv-torch)")
    return (f"error: {command} needs {package}, from the package's `{extra}` extra, which is not installed: "
            f"pip install -e 'export[{extra}]' (make venv-torch installs every extra)")


def run(program: str) -> int:
    """Imports and runs program `program` (a module of this package); a package it needs that is not
    installed ends it with one line (exit 2) rather than a traceback."""
    try:
        module = importlib.import_module(f"{__name__}.{program}")
        code = module.main()
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if not top or top == "h2o_export":
            raise
        print(missing_package_line(program, top), file=sys.stderr)
        return 2
    return 0 if code is None else code


def fetch_wikitext_command() -> int:
    return run("fetch_wikitext")


def make_fixture_command() -> int:
    return run("make_fixture")


def micro_sweep_command() -> int:
    return run("micro_sweep")


def prepare_micro_data_command() -> int:
    return run("prepare_micro_data")


def profile_prefill_command() -> int:
    return run("profile_prefill")


def reference_command() -> int:
    return run("reference")


def side_by_side_command() -> int:
    return run("side_by_side")


def sweep_ray_command() -> int:
    return run("sweep_ray")


def torch_speed_command() -> int:
    return run("torch_speed")


def train_micro_command() -> int:
    return run("train_micro")
