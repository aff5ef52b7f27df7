"""Paths and settings shared by the test modules of export/tests (imported as `common`; pytest
puts this folder on sys.path). The tests import `h2o_export` installed (`make venv-torch` installs
export/ editable), never from a path of their own."""

from __future__ import annotations

import os
from pathlib import Path

EXPORT_DIR = Path(__file__).resolve().parents[1]
REPO = EXPORT_DIR.parent

FIXTURE = REPO / "tests/fixtures/tiny"
TEST_DATA = REPO / "tests/data"
# The first article of WikiText-2 raw test, committed (tests/data/README.md: source, licence).
WIKI_EXCERPT = TEST_DATA / "wiki.test.excerpt.raw"


def data_path() -> Path:
    """The text the tests read: $H2O_DATA, else the committed WikiText-2 excerpt."""
    env = os.environ.get("H2O_DATA")
    return Path(env) if env else WIKI_EXCERPT


def engine_bin() -> Path:
    """The engine binary: $H2O_BIN, else target/release/h2o."""
    env = os.environ.get("H2O_BIN")
    return Path(env) if env else REPO / "target/release/h2o"


def engine_env() -> dict:
    """The environment for running the engine: ORT_DYLIB_PATH defaults to .venv's onnxruntime."""
    env = dict(os.environ)
    if "ORT_DYLIB_PATH" not in env:
        libs = sorted(REPO.glob(".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*"))
        if libs:
            env["ORT_DYLIB_PATH"] = str(libs[0])
    return env
