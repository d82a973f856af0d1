"""Shared fixtures (small Lambda-layout files, the real P02.2 acquisition) and the session check that
no process a test started is left behind. Helpers tests import are in ``tests/helpers.py``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

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


# -- no process left behind (issue 7): checked once for the whole session ---------------------------
_SESSION_T0 = time.time()
#: Inherited by every process this session starts: an orphan (re-parented to init) is ours only when it
#: carries it. Without it a session ending SIGKILLed another session's or a user's detached job runner
#: ("the local runner stopped before the job ended (killed?)", issue 17, item 9).
_SESSION_MARK = ("XRD_TEST_SESSION", f"{os.getpid()}-{_SESSION_T0}")
os.environ[_SESSION_MARK[0]] = _SESSION_MARK[1]
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


#: Processes found left behind at the end of the session (read by the reliability suite's summary).
LEFT_BEHIND: list[str] = []


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any server, database or command started by a test is still running."""
    leftovers = _leftover_processes()
    LEFT_BEHIND.extend(f"{p.pid}" for p in leftovers)
    if not leftovers:
        return
    lines = [f"  pid {p.pid}: {' '.join(p.cmdline())[:200]}" for p in leftovers]
    print("\nprocesses left behind by the test suite:\n" + "\n".join(lines))
    for p in leftovers:
        try:
            p.kill()
        except Exception:
            pass
    session.exitstatus = 1
