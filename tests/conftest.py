"""Shared fixtures (small Lambda-layout files, the real P02.2 acquisition) and the session check that
no process a test started is left behind. Helpers tests import are in ``tests/helpers.py``."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from . import xdist_groups
from .fault_ledger import RUN_LEDGER, FaultLedger
from .helpers import REAL_DIR, REAL_STEM, SMALL_PONI


@pytest.fixture
def real_dir() -> Path:
    if not (REAL_DIR / f"{REAL_STEM}_m1_part00000.nxs").exists():
        pytest.skip(f"real P02.2 data not found at {REAL_DIR} (../shared beside the checkout)")
    return REAL_DIR


@pytest.fixture
def small_poni(tmp_path) -> Path:
    path = tmp_path / "small.poni"
    path.write_text(SMALL_PONI)
    return path


# -- parallel runs (pytest-xdist, ``-n N`` in scripts/test.sh): tests/xdist_groups.py -----------------
@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture
def pytest_collection_modifyitems(config, items):
    xdist_groups.order_and_record(config, items)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """On the controller: tell each worker where to write its tests' groups."""
    node.workerinput[xdist_groups.GROUPS_KEY] = str(xdist_groups.groups_folder(node.config))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (xdist's default ``--dist load``, or ``loadgroup``): the suite's groups decide; other
    ``--dist`` modes are xdist's own."""
    if config.getvalue("dist") in ("load", "loadgroup"):
        return xdist_groups.GroupScheduling(config, log)
    return None


_WORKER_TIMES = xdist_groups.WorkerTimes()


def pytest_runtest_logreport(report):
    _WORKER_TIMES.add(report)


def pytest_unconfigure(config):
    folder = getattr(config, "_xrd_groups_dir", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


# -- no process left behind (issue 7): checked once for the whole session ---------------------------
_SESSION_T0 = time.time()
#: Inherited by every process this session starts: an orphan (re-parented to init) is ours only when it
#: carries it. Without it a session ending SIGKILLed another session's or a user's detached job runner
#: ("the local runner stopped before the job ended (killed?)", issue 17, item 9). Under pytest-xdist
#: every worker imports this module: each has its own mark and checks its own processes.
_SESSION_MARK = ("XRD_TEST_SESSION", f"{os.getpid()}-{_SESSION_T0}")
os.environ[_SESSION_MARK[0]] = _SESSION_MARK[1]
#: Engines built by one test are loaded by the next (issue 21), from a folder of this session's, never the
#: user's cache; servers and CLI processes the tests start inherit it.
if "XRD_PIPELINE_ENGINE_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["XRD_PIPELINE_ENGINE_CACHE"] = _ENGINES = tempfile.mkdtemp(prefix="xrd-test-engines-")
    atexit.register(shutil.rmtree, _ENGINES, True)
#: Command-line fragments of every long-running process the suite starts.
_OUR_PROCESSES = (
    "tango_servers.",
    "tango.databaseds",
    "pipeline_core.processing.engine_build",
    "pipeline_core.jobs.",  # a local job's detached runner and its tasks (tests/test_jobs_*.py)
    "xrd-pipeline",
    "xrd-stitcher",
    "xrd-integrator",
    "xrd-merger",
    "bin/Xrd",  # servers by the names Tango's Starter runs (XrdIntegrator host2: tests/test_multihost.py)
    "bin/Pool",  # Sardana's servers (tests/sardana_helpers.py)
    "bin/MacroServer",
)


def _leftover_processes():
    import os

    import psutil

    me = os.getpid()
    # ours: still our descendants, or orphans (re-parented to init) started since this session began;
    # processes of another test session running at the same time are neither
    descendants = {p.pid for p in psutil.Process(me).children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or ())
            ours = proc.pid in descendants or (
                proc.info["ppid"] == 1
                and proc.info["create_time"] >= _SESSION_T0
                and proc.environ().get(_SESSION_MARK[0]) == _SESSION_MARK[1]
            )
            if proc.pid != me and ours and any(s in cmd for s in _OUR_PROCESSES):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


#: Processes found left behind at the end of the session ("pid N: command"): this process' own, and on
#: an xdist controller every worker's too (read by the fault ledger's summary)
LEFT_BEHIND: list[str] = []


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any server, database or command started by a test is still running.

    Each xdist worker checks its own (its descendants, orphans with its mark), stops them and hands
    them to the controller with its fault ledger: a worker's exit status is nobody's, so the
    controller reports them and fails the run (:func:`pytest_testnodedown` collects them)."""
    leftovers = _leftover_processes()
    found = [f"pid {p.pid}: {' '.join(p.cmdline())[:200]}" for p in leftovers]
    for p in leftovers:
        try:
            p.kill()
        except Exception:
            pass
    LEFT_BEHIND.extend(found)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        workeroutput["left_behind"] = found
        workeroutput["fault_ledger"] = RUN_LEDGER.as_dict()
    if LEFT_BEHIND:
        print("\nprocesses left behind by the test suite:\n" + "\n".join(f"  {line}" for line in LEFT_BEHIND))
        session.exitstatus = 1


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """On the xdist controller, as each worker ends: add its leftovers and its fault ledger to the run's."""
    output = getattr(node, "workeroutput", None) or {}
    LEFT_BEHIND.extend(output.get("left_behind", ()))
    if "fault_ledger" in output:
        RUN_LEDGER.merge(FaultLedger.from_dict(output["fault_ledger"]))


def pytest_terminal_summary(terminalreporter, config):
    """The fault ledger's one summary line for the run, and under xdist each worker's test time (on the controller)."""
    if hasattr(config, "workerinput"):
        return
    if _WORKER_TIMES.summary():
        terminalreporter.write_line(_WORKER_TIMES.summary())
    if not RUN_LEDGER.empty:
        terminalreporter.write_line(RUN_LEDGER.summary(len(LEFT_BEHIND)))
