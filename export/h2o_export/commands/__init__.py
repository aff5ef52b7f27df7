"""The project's Python programs besides the exporter, one module per program, each with `main`:
`python export/NAME.py` (the thin script beside the package) and the console command `h2o-NAME`
(export/pyproject.toml's [project.scripts], NAME with dashes) both call `NAME.main`. The
exporter's own command line is h2o_export.cli (`python export/export.py`, `h2o-export`,
`python -m h2o_export`).

`checkout()` is the repository the package is installed from (editable, as `make venv` does),
where the programs' default paths live (data/, tests/fixtures/, target/release/h2o, ../shared).
"""

from __future__ import annotations

from pathlib import Path


def checkout() -> Path:
    """The checkout holding this package (export/h2o_export/commands/ inside it); the current
    directory when the package was installed elsewhere (a non-editable install)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "export" / "pyproject.toml").is_file() else Path.cwd()
