"""The Tango database killed (SIGKILL) in the middle of a scan, down for 15 s, then back.

Device servers talk to each other directly once connected (events, commands on proxies they hold);
the database is only asked to find a device. The chain must finish the scan through the outage:
every frame in the file once, integrated once, the file published complete.
"""

import time
from dataclasses import replace

import pytest
import tango

from pipeline_core.formats.nexus import read_merged
from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for
from tango_servers.embedded_db import EmbeddedDatabase, database_answers, free_port
from tango_servers.launcher import start_servers, stop_servers
from tango_servers.registration import register

from ..helpers import wait_for
from .test_process_faults import TUNED, _proxy, _start_integrator

OUTAGE_S = 15.0  # the fault itself: how long the database is away
FRAMES = 80


@pytest.fixture
def chain(tmp_path):
    """The demo layout with two Integrators on an embedded database the test can kill and restart."""
    port = free_port()
    dbs = [EmbeddedDatabase(tmp_path / "db", port).start()]
    servers = []
    try:
        specs, names = layout_for(tmp_path, integrators=2)
        # the gap check would ask again for frames only delayed by the outage
        tuned = {**TUNED, "Merger": {"GapCheck": ["60"]}}
        specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
        register(specs, tango.Database("127.0.0.1", port))
        servers = start_servers(specs, dbs[0].tango_host, tmp_path / "logs")
        yield tmp_path, dbs, names, servers
    finally:
        stop_servers(servers)
        for db in dbs:
            db.stop()


def test_the_database_killed_mid_scan_and_back_loses_and_repeats_nothing(chain, ledger):
    tmp, dbs, names, servers = chain
    host = dbs[0].tango_host
    merger, stitcher, sim = _proxy(host, MERGER), _proxy(host, STITCHER), _proxy(host, SIMULATOR)
    integrators = [_start_integrator(host, tmp, name) for name in names]
    stitcher.Start()
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = FRAMES, 10, 4.0  # 20 s of acquisition
    stem = sim.Start()
    wait_for(lambda: merger.framesProcessed >= 8, 180, "the first frames merged")
    written_at_kill = sim.framesWritten
    dbs[0].process.kill()  # SIGKILL: no goodbye
    dbs[0].process.wait()
    assert not database_answers(host, 1.0)
    time.sleep(OUTAGE_S)  # the outage itself (the fault's duration, not a wait for a result)
    dbs.append(EmbeddedDatabase(tmp / "db", dbs[0].port).start())  # the same sqlite file, the same port
    ledger.fault(f"the Tango database killed mid-scan for {OUTAGE_S:.0f} s")
    assert written_at_kill < FRAMES, "the acquisition ended before the outage: nothing went through it"
    wait_for(lambda: merger.lastOutputFile != "", 180, f"the merged file of {stem}")
    path = merger.lastOutputFile
    m = read_merged(path)
    assert path.endswith(f"/{stem}.nxs")
    assert m["status"] == "complete" and m["failed_frames"] == []
    assert m["frame_number"].tolist() == list(range(1, FRAMES + 1))
    ledger.checked(FRAMES)
    integrated = sum(i.framesProcessed for i in integrators)
    assert integrated == FRAMES, f"{integrated} frames integrated for {FRAMES} (a frame integrated twice)"
    assert all(s.alive() for s in servers), "a server died of the outage"
