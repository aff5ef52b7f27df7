"""pytest setup of export/tests.

H2O_REQUIRE_ALL=1 (set by `make test`, hence by CI's .ci/run) turns every skipped test or
module into a failure naming the reason: a missing input (engine binary, exported model,
optional package) must be loud there, never a quietly shorter run. Without it a skip stays a
skip (for a developer running one file by hand).

Fixture `one_thread`: torch on one thread for a module (tiny per-token ops, where more threads
only contend), restored afterwards; modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("H2O_REQUIRE_ALL") == "1"


def _strict(rep) -> None:
    if REQUIRE_ALL and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but H2O_REQUIRE_ALL=1 requires every test to run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _strict(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _strict(outcome.get_result())


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
