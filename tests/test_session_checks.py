"""The suite's session checks under pytest-xdist, as scripts/test.sh runs it (``-n``): a process a test
leaves behind in any worker still fails the run and is named, the fault ledger's summary line appears
once with every worker's totals, and a fixture shared by a file's tests is set up once (its tests
share a worker). An inner pytest runs three tiny test files on two workers with the suite's hooks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .helpers import REPO

CONFTEST = """
from tests.conftest import (  # noqa: F401
    pytest_collection_modifyitems, pytest_configure_node, pytest_sessionfinish, pytest_terminal_summary,
    pytest_testnodedown, pytest_unconfigure, pytest_xdist_make_scheduler,
)
"""
#: the reliability suite's fixtures, in a folder of their own as in tests/
RELIABILITY_CONFTEST = """
from tests.reliability.conftest import _note_tests_that_report_no_fault, ledger  # noqa: F401
"""
#: each file reports faults named after the worker it ran on, so the summary shows which workers added up
LEAVES_ONE = """
import os, subprocess, sys

def test_leaves_a_runner_behind(ledger):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    ledger.fault(f"left on {worker}", 2)
    ledger.checked(5)
    # a command line the session check looks for (a local job's runner), never stopped by the test
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "pipeline_core.jobs.runner"])
"""
REPORTS_ONE = """
import os

def test_reports_one_fault(ledger):
    ledger.fault(f"one on {os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    ledger.checked(3)

def test_reports_none():
    pass
"""

#: a live chain's shape: a module fixture (it records each set-up) that two tests share
SHARES_ONE = """
import os
import pytest

@pytest.fixture(scope="module")
def chain():
    with open(os.environ["XRD_TEST_SETUPS"], "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")

def test_reads_the_chain(chain):
    pass

def test_reads_it_again(chain):
    pass
"""


@pytest.fixture
def inner_suite(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "reliability").mkdir()
    (tmp_path / "reliability" / "conftest.py").write_text(RELIABILITY_CONFTEST)
    (tmp_path / "reliability" / "test_leaves.py").write_text(LEAVES_ONE)
    (tmp_path / "reliability" / "test_reports.py").write_text(REPORTS_ONE)
    (tmp_path / "test_shares.py").write_text(SHARES_ONE)
    return tmp_path


def _run(directory, *args) -> subprocess.CompletedProcess:
    # the inner run is a session of its own: not a worker of this one (whose PYTEST_XDIST_* it would inherit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env.update(PYTHONPATH=str(REPO), XRD_TEST_SETUPS=str(directory / "setups.txt"))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(directory), *args]
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=120)


def test_under_xdist_a_leftover_in_a_worker_fails_the_run_and_the_ledger_sums_every_worker(inner_suite):
    done = _run(inner_suite, "-n", "2")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # every test passed: the leftover alone fails the run
    assert "5 passed" in out, out
    # the shared fixture's tests are one unit, dealt first: one set-up (split, each worker would set it up)
    assert len((inner_suite / "setups.txt").read_text().split()) == 1
    assert out.count("processes left behind by the test suite:") == 1, out
    assert "pipeline_core.jobs.runner" in out.split("processes left behind by the test suite:")[1], out
    summaries = [line for line in out.splitlines() if line.startswith("fault injection:")]
    assert len(summaries) == 1, out
    # the shared unit went to one worker, the two free files' tests to the other or both: the faults
    # come from both workers (gw0, gw1, in either order) and the totals are both workers'
    assert summaries[0].startswith("fault injection: 3 faults injected (left on gw"), summaries[0]
    workers = {w for w in ("gw0", "gw1") if f"left on {w}: 2" in summaries[0] or f"one on {w}: 1" in summaries[0]}
    assert workers == {"gw0", "gw1"}, summaries[0]
    assert summaries[0].endswith(
        "8 frames checked; processes left: 1; "
        "1 test(s) reported no fault and count none: reliability/test_reports.py::test_reports_none"
    ), summaries[0]


def test_without_xdist_the_same_run_says_the_same(inner_suite):
    done = _run(inner_suite, "-p", "no:xdist")
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "5 passed" in out, out
    assert out.count("processes left behind by the test suite:") == 1, out
    summaries = [line for line in out.splitlines() if line.startswith("fault injection:")]
    assert summaries == [
        "fault injection: 3 faults injected (left on main: 2, one on main: 1); 8 frames checked; processes left: 1; "
        "1 test(s) reported no fault and count none: reliability/test_reports.py::test_reports_none"
    ], out
