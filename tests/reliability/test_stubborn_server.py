"""A device server that ignores SIGTERM: ``xrd-pipeline demo`` still ends, and nothing is left running.

The demo stops its servers with SIGTERM, then SIGKILLs any still running after 10 s
(``launcher.stop_servers``). A server hung in a driver call or a C extension never reacts to SIGTERM;
here the Merger really ignores it: a ``sitecustomize`` on its PYTHONPATH wraps the server's
start-up (``stop_on_hangup``, called in the main thread once cppTango has blocked its signals) to
unblock SIGTERM in the main thread with the disposition "ignore", so the kernel discards it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from pipeline_core.formats.nexus import read_merged

from ..helpers import REPO, wait_for

STUBBORN = "tango_servers.merger"

SITECUSTOMIZE = """
import os, signal, threading
from pathlib import Path

def _stubborn():
    marker = os.environ.get("XRD_TEST_STUBBORN_MARKER")
    cmdline = Path("/proc/self/cmdline").read_bytes().split(b"\\0")
    if not marker or os.environ.get("XRD_TEST_STUBBORN", "").encode() not in cmdline:
        return
    import tango_servers.hangup as hangup
    original = hangup.stop_on_hangup

    def stop_on_hangup():
        original()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            Path(marker).write_text(str(os.getpid()))

    hangup.stop_on_hangup = stop_on_hangup

_stubborn()
"""


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _record_children(proc, children: dict, done: threading.Event) -> None:
    while not done.is_set() and proc.poll() is None:
        children.update({p.pid: p for p in _descendants(proc.pid)})
        done.wait(0.1)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_demo_ends_and_leaves_nothing_when_a_server_ignores_sigterm(tmp_path, ledger):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "stubborn.pid"
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), XRD_TEST_STUBBORN=STUBBORN,
               XRD_TEST_STUBBORN_MARKER=str(marker))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "tango_servers.cli", "demo", "--workdir", str(tmp_path / "demo"), "--frames", "40",
         "--rate", "10"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    children: dict[int, psutil.Process] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_record_children, args=(proc, children, done), daemon=True)
    watcher.start()
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, 180, "the stubborn Merger to start")
        assert marker.exists(), "the demo ended before its Merger started"
        stubborn = int(marker.read_text())
        os.kill(stubborn, signal.SIGTERM)  # ignored: the Merger goes on and merges the scan
        ledger.fault("a server that ignores SIGTERM")
        out, err = proc.communicate(timeout=300)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    watcher.join()
    assert proc.returncode == 0, err[-3000:]
    merged = Path(out.split("merged file:")[1].split()[0])
    m = read_merged(merged)
    assert m["status"] == "complete" and m["frame_number"].tolist() == list(range(1, 41))
    ledger.checked(40)
    assert "stopping the device servers" in err
    assert stubborn in children, "the stubborn server was not one of the demo's processes"
    left = [pid for pid, p in children.items() if _running(p)]
    assert left == [], f"processes left running: {left} (the stubborn one: {stubborn})"
