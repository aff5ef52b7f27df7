"""The installed package h2o_export against its declaration (export/pyproject.toml): every package
directory listed, the console commands and the scripts beside the package in step, the tests
running this checkout's code, and the exporter running on the base dependencies alone (no torch,
no extra): the whole export path, run in a fresh interpreter where every package of an extra is
blocked from importing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from common import EXPORT_DIR, FIXTURE

PYPROJECT = tomllib.loads((EXPORT_DIR / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DIR = EXPORT_DIR / "h2o_export"


def _requirement_name(req: str) -> str:
    """`torch>=2.11` -> torch; `h2o-export[engine]` -> h2o-export (PEP 508's name, normalized)."""
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_lists_every_package_directory():
    """A folder of modules missing from [tool.setuptools] packages works editable and vanishes from
    a wheel; a listed one that is gone breaks the build. Both are refused here."""
    on_disk = sorted(".".join(p.parent.relative_to(EXPORT_DIR).parts)
                     for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    on_disk = sorted(set(on_disk))
    listed = sorted(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == on_disk, f"pyproject.toml lists {listed}; the folders with modules are {on_disk}"
    for name in on_disk:
        assert (EXPORT_DIR / name.replace(".", "/") / "__init__.py").is_file(), f"{name} has no __init__.py"


def test_tests_run_this_checkouts_package():
    """The tests import h2o_export as installed (no sys.path edits): it must be this checkout's
    (`make venv` installs export/ editable), or they would test another copy."""
    import h2o_export

    here = Path(h2o_export.__file__).resolve().parent
    assert here == PACKAGE_DIR.resolve(), (f"h2o_export is imported from {here}, not {PACKAGE_DIR}; "
                                           f"install this checkout: pip install -e 'export[test]'")
    assert metadata.version("h2o-export") == h2o_export.__version__


def test_no_sys_path_edits():
    """Scripts, tests and package import h2o_export installed; none puts a folder on sys.path."""
    edit = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*(\+=|=[^=])")
    offenders = [str(p.relative_to(EXPORT_DIR)) for p in sorted(EXPORT_DIR.rglob("*.py"))
                 if "__pycache__" not in p.parts and edit.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_console_commands_match_the_scripts():
    """Each thin script export/NAME.py runs the main of one console command, `h2o-NAME`, and the
    installed package declares the same commands as pyproject.toml."""
    scripts = PYPROJECT["project"]["scripts"]
    beside = sorted(p.stem for p in EXPORT_DIR.glob("*.py"))
    assert sorted(s.removeprefix("h2o-").replace("-", "_") for s in scripts) == beside
    for stem in beside:
        target = scripts["h2o-" + stem.replace("_", "-")]
        module, func = target.split(":")
        text = (EXPORT_DIR / f"{stem}.py").read_text(encoding="utf-8")
        assert f"from {module} import {func}" in text, f"export/{stem}.py does not run {target}"
    installed = {e.name: e.value for e in metadata.entry_points(group="console_scripts")
                 if e.dist is not None and e.dist.name == "h2o-export"}
    assert installed == scripts, "the installed package is stale: pip install -e 'export[test]'"
    r = subprocess.run([str(Path(sys.executable).parent / "h2o-export"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--random-init" in r.stdout, r.stderr


def test_extras_hold_every_non_exporter_dependency():
    """The base dependencies are the exporter's three; torch and the rest only in extras."""
    base = sorted(_requirement_name(r) for r in PYPROJECT["project"]["dependencies"])
    assert base == ["numpy", "onnx", "tokenizers"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"engine", "torch", "test"} <= set(extras)
    assert "torch" in {_requirement_name(r) for r in extras["torch"]}


# The exporter's run in a child interpreter: every import of a module of an extra fails (and is
# recorded); argv[1] the blocked top-level names, argv[2] the command lines, argv[3] the report.
CHILD = r"""
import importlib.abc, json, sys

blocked = set(json.loads(sys.argv[1]))
tried = []

class BlockExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not a base dependency)", name=name)
        return None

sys.meta_path.insert(0, BlockExtras())
from h2o_export.cli import main

codes = [main(argv) for argv in json.loads(sys.argv[2])]
loaded = sorted(m for m in sys.modules if m == "h2o_export" or m.startswith("h2o_export."))
with open(sys.argv[3], "w") as f:
    json.dump({"codes": codes, "tried": tried, "loaded": loaded}, f)
"""


def test_exporter_runs_without_torch_or_any_extra(tmp_path):
    """Every export path (checkpoint in fp32 / fp16 / int8 / per-layer masks, seeded random init)
    runs with the base dependencies only: the packages of the extras cannot be imported."""
    base = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extra = {_requirement_name(r) for reqs in PYPROJECT["project"]["optional-dependencies"].values() for r in reqs}
    blocked = sorted(n.replace("-", "_") for n in extra - base - {"h2o-export"})
    assert "torch" in blocked and "onnxruntime" in blocked
    ckpt, tok = FIXTURE / "hf", FIXTURE / "tokenizer.json"
    runs = [
        ["--checkpoint", ckpt, "--out", tmp_path / "fp32", "--name", "tiny"],
        ["--checkpoint", ckpt, "--out", tmp_path / "fp16", "--dtype", "fp16"],
        ["--checkpoint", ckpt, "--out", tmp_path / "int8", "--weights", "int8"],
        ["--checkpoint", ckpt, "--out", tmp_path / "masks", "--layer-masks"],
        ["--random-init", ckpt / "config.json", "--init-seed", "3", "--tokenizer", tok, "--out", tmp_path / "rand"],
    ]
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(blocked), json.dumps([[str(a) for a in run]
                        for run in runs]), str(report)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(report.read_text())
    assert got["tried"] == [], f"the export path imports {got['tried']} (an extra's package); stderr: {r.stderr[-2000:]}"
    assert got["codes"] == [0] * len(runs), r.stderr[-3000:]
    for run in runs:
        out = Path(run[run.index("--out") + 1])
        assert (out / "model.onnx").is_file() and (out / "manifest.json").is_file()
    # the run went the whole way: config, weights, graph, quantizer, manifest
    for module in ("cli", "config", "exporter", "graph", "onnx_builder", "quantize", "weights"):
        assert f"h2o_export.{module}" in got["loaded"]


def test_ctrl_c_while_the_exporter_loads_is_one_line():
    """`h2o-export`, export.py and `python -m h2o_export` share h2o_export.__main__.run: a Ctrl-C
    during the imports of numpy and onnx (here: of h2o_export.cli) ends in one line and 130."""
    child = r"""
import importlib.abc, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "h2o_export.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
from h2o_export.__main__ import run
sys.exit(run())
"""
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert r.returncode == 130 and r.stdout == ""
    assert r.stderr == "error: interrupted (Ctrl-C) before the export started; nothing was written\n"


# A program run in a child interpreter where the packages argv[1] names cannot be imported.
BLOCKED_PROGRAM = r"""
import importlib.abc, json, sys

blocked = set(json.loads(sys.argv[1]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
import h2o_export.commands as commands
program = sys.argv[2]
sys.argv = ["h2o-" + program.replace("_", "-")] + json.loads(sys.argv[3])
sys.exit(getattr(commands, program + "_command")())
"""


def test_a_program_without_its_extra_says_which_in_one_line(tmp_path):
    """h2o-reference without torch, h2o-profile-prefill without onnxruntime: exit 2 and one line
    naming the package and the extra that brings it (read from the installed metadata), no
    traceback."""
    micro = str(EXPORT_DIR.parent / "models" / "pythia-micro" / "onnx")
    runs = [("reference", ["--help"], "torch", "torch"), ("torch_speed", ["--help"], "torch", "torch"),
            # onnxruntime is imported once the arguments are read
            ("profile_prefill", ["--model", micro, "--tokens", "8", "--runs", "1", "--threads", "1"],
             "onnxruntime", "engine")]
    for program, args, package, extra in runs:
        r = subprocess.run([sys.executable, "-c", BLOCKED_PROGRAM, json.dumps([package]), program, json.dumps(args)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 2, (program, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        command = "h2o-" + program.replace("_", "-")
        assert lines[0].startswith(f"error: {command} needs {package}, from the package's `{extra}` extra"), lines[0]
        assert f"pip install -e 'export[{extra}]'" in lines[0], lines[0]
