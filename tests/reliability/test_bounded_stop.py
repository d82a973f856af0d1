"""A real Stitcher with a backlog stops within one bounded time on SIGTERM.

Observed under load: a Stitcher not exiting 60 s after SIGTERM, a watching one taking over 20 s. The
stop was sequential and waited for the backlog: the watch trigger's joins (5 + 5 s), the event
publisher's (5 s), then the stage's worker, which ran every queued announcement before its stop
mark (joined 10 s). Now one deadline covers every join and queued jobs are dropped (the next start's
sweep finds their files again), so the server exits within its stop budget (:data:`EXIT_BOUND_S`), with exit
status 0 (README: a device server stopped by a signal exits 0) and no process of it left.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import replace

import numpy as np
import psutil
import pytest
import tango

from pipeline_core.live.deadline import STOP_BUDGET_S
from tango_servers.demo import layout_for
from tango_servers.embedded_db import EmbeddedDatabase, free_port
from tango_servers.launcher import ServerProcess
from tango_servers.registration import register

from ..helpers import SMALL_MODULE, SMALL_OFFSETS, wait_for, write_module

#: complete parts (3 module files each) on disk at start: ~7 s of announcements to handle (measured)
PARTS = 800
#: signal to exit: the server's whole stop budget (measured with this backlog: 0.3 s; 6.4-6.7 s before, the
#: backlog run first up to the old 10 s join, then 5 + 5 + 5 s more joins at worst)
EXIT_BOUND_S = STOP_BUDGET_S


@pytest.fixture
def watching_stitcher(tmp_path):
    """The demo's Stitcher, registered in an embedded database with Trigger=watch on a folder of
    ``PARTS`` parts written before it starts: its first sweep announces them all at once (a backlog)."""
    data = tmp_path / "data"
    data.mkdir()
    frames = np.ones((1, *SMALL_MODULE), np.int16)
    for p in range(PARTS):
        for k, offset in enumerate(SMALL_OFFSETS, start=1):
            write_module(data / f"scan_00001_m{k}_part{p:05d}.nxs", frames, offset, 1 + p, total_frames=PARTS)
    db = EmbeddedDatabase(tmp_path / "db", free_port()).start()
    try:
        spec = next(s for s in layout_for(tmp_path, integrators=1)[0] if s.klass == "Stitcher")
        watch = {
            "Trigger": ["watch"], "WatchDirectories": [str(data)], "DataRoots": [str(tmp_path)],
            "WatchStableTime": ["0.05"], "WatchSweepPeriod": ["0.5"],
        }  # fmt: skip
        spec = replace(spec, properties={**spec.properties, **watch})
        host, port = db.tango_host.split(":")
        register([spec], tango.Database(host, int(port)))
        yield ServerProcess(spec.server, [spec.name], db.tango_host, tmp_path / "logs"), spec.name, db.tango_host
    finally:
        db.stop()


def _taken(trl: str, host: str) -> int:
    """Module files the Stitcher's watch has announced to its stage (from detectorAnnouncement)."""
    dev = tango.DeviceProxy(f"tango://{host}/{trl}")
    words = dev.detectorAnnouncement.split("; ")[-1].split()
    return int(words[0]) if words and words[0].isdigit() else 0


def test_a_stitcher_with_a_backlog_exits_promptly_on_sigterm(watching_stitcher, ledger):
    server, trl, host = watching_stitcher
    server.start()
    try:
        server.wait_ready(120)
        wait_for(lambda: _taken(trl, host) == 3 * PARTS, 120, f"the watch to announce {3 * PARTS} module files")
        tree = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
        t0 = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        ledger.fault(f"SIGTERM to a Stitcher with {3 * PARTS} module files announced at once")
        try:
            code = server.process.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{server.server} still running 60 s after SIGTERM") from None
        took = time.monotonic() - t0
        log = server.log_file.read_text(errors="replace")
        assert code == 0, log[-2000:]
        assert took < EXIT_BOUND_S, f"{server.server} took {took:.1f} s to exit; log:\n{log[-2000:]}"
        dropped = re.search(r"xrd-stitch stopped with (\d+) queued job\(s\) not run", log)
        assert dropped and 0 < int(dropped[1]) <= 3 * PARTS, log[-2000:]  # the backlog was left, not run
        assert "Traceback" not in log.split("Ready to accept request")[-1]
        wait_for(lambda: not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 10,
                 "every process of the Stitcher to exit")  # fmt: skip
    finally:
        server.kill()
