"""H2O_REQUIRE_ALL=1 (conftest.py) turns skips into failures; without it a skip stays a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SKIPPING = '''
import pytest

def test_runs():
    pass

def test_needs_input():
    pytest.skip("input X is absent")

def test_needs_package():
    pytest.importorskip("a_package_that_is_not_installed")
'''

SKIPPED_MODULE = '''
import pytest

pytest.importorskip("a_package_that_is_not_installed")

def test_never_collected():
    pass
'''


def _run(tmp_path: Path, source: str, require_all: bool) -> subprocess.CompletedProcess:
    shutil.copyfile(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_case.py").write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "H2O_REQUIRE_ALL"}
    if require_all:
        env["H2O_REQUIRE_ALL"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_skips_fail_under_require_all(tmp_path):
    p = _run(tmp_path, SKIPPING, require_all=True)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1].startswith("2 failed, 1 passed"), p.stdout
    assert "input X is absent" in p.stdout and "a_package_that_is_not_installed" in p.stdout, p.stdout
    assert "H2O_REQUIRE_ALL=1 requires every test to run" in p.stdout


def test_a_skipped_module_fails_under_require_all(tmp_path):
    p = _run(tmp_path, SKIPPED_MODULE, require_all=True)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "H2O_REQUIRE_ALL=1 requires every test to run" in p.stdout and "a_package_that_is_not" in p.stdout


def test_skips_stay_skips_without_it(tmp_path):
    p = _run(tmp_path, SKIPPING, require_all=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1].startswith("1 passed, 2 skipped"), p.stdout
