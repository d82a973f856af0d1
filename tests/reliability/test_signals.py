"""The signal matrix: INT, TERM, HUP and KILL sent for real to every long-running process of ours.

INT/TERM/HUP must stop a process the way Ctrl-C does (children stopped, open files suspended as
``interrupted``, exit status 128+signal for our commands, 0 for a Tango server); KILL runs no code
at all, so the children must die with their parent (``die_with_parent``). After each signal: the
process exited promptly, no process it had started is left, no file says ``complete`` that is not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import psutil
import pytest
import tango

from pipeline_core.formats.nexus import read_merged
from pipeline_core.simulate import write_calibration
from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for
from tango_servers.embedded_db import EmbeddedDatabase, database_answers, free_port
from tango_servers.launcher import ServerProcess, start_servers, stop_servers
from tango_servers.registration import register

from ..helpers import REPO, wait_for

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
IDS = [s.name for s in SIGNALS]
#: How long a process may take to exit after a stop signal (a clean Tango shutdown takes ~0.1 s idle).
PROMPT_S = 20.0


def _tree(pid: int) -> list[psutil.Process]:
    """The process and everything it started, as psutil handles (pid reuse is detected by them)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _left(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{p.pid} {' '.join(p.cmdline()[:4])}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _status(path: Path) -> str:
    """The ``status`` a merged file records (``unreadable`` when HDF5 cannot open it)."""
    try:
        with h5py.File(path, "r", locking=False) as h5:
            value = h5["processed/process/status"][()]
    except (OSError, KeyError):
        return "unreadable"
    return value.decode() if isinstance(value, bytes) else str(value)


def _cli(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}  # the embedded default
    return subprocess.Popen(
        [sys.executable, "-m", "tango_servers.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expected_cli_code(sig: int) -> int:
    return -signal.SIGKILL if sig == signal.SIGKILL else 128 + sig


# -- (a) xrd-pipeline database --------------------------------------------------------------------
@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_database_command_stops_its_databaseds(tmp_path, sig, ledger):
    port = free_port()
    proc = _cli("database", "--state", str(tmp_path / "state"), "--port", str(port))
    try:
        wait_for(lambda: database_answers(f"127.0.0.1:{port}", 1.0), 60, "the embedded database to answer")
        tree = _tree(proc.pid)
        assert any("tango.databaseds.database" in " ".join(p.cmdline()) for p in tree[1:]), tree
        t0 = time.monotonic()
        proc.send_signal(sig)
        ledger.fault(f"{sig.name} to the database command")
        _, err = proc.communicate(timeout=PROMPT_S)
        assert time.monotonic() - t0 < PROMPT_S
        assert proc.returncode == _expected_cli_code(sig), err[-2000:]
        if sig != signal.SIGKILL:
            assert f"interrupted ({sig.name})" in err
        wait_for(lambda: not _left(tree), PROMPT_S, f"the DataBaseds to exit after {sig.name} ({_left(tree)})")
        assert not database_answers(f"127.0.0.1:{port}", 1.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- (b) xrd-pipeline demo while it acquires ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_demo_stopped_mid_acquisition_leaves_nothing(tmp_path, sig, ledger):
    proc = _cli("demo", "--workdir", str(tmp_path), "--frames", "150", "--rate", "20", "--integrators", "2")
    try:
        # parts of 50 frames are written at 2.5, 5 and 7.5 s: once the Merger has a file we are mid-scan
        wait_for(
            lambda: any((tmp_path / "processed").glob("*.nxs.part")) or proc.poll() is not None,
            180,
            "the Merger to open the demo's file",
        )
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        tree = _tree(proc.pid)
        assert len(tree) >= 1 + 6, [p.cmdline() for p in tree]  # demo + database + 5 device servers
        t0 = time.monotonic()
        proc.send_signal(sig)
        ledger.fault(f"{sig.name} to the demo")
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
        assert proc.returncode == _expected_cli_code(sig), err[-3000:]
        if sig != signal.SIGKILL:
            assert "stopping the device servers" in err and f"interrupted ({sig.name})" in err
            assert elapsed < 30, f"the demo took {elapsed:.1f} s to stop"
        # after SIGKILL the kernel sends SIGTERM to the database and every server (die_with_parent)
        wait_for(lambda: not _left(tree), 60, f"every process of the demo to exit after {sig.name}: {_left(tree)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    (part,) = (tmp_path / "processed").glob("*.nxs.part")
    assert _status(part) == "interrupted"  # stopped mid-scan (also by KILL: the kernel TERMs the Merger)
    assert part.with_suffix(".journal").exists(), "the journal that lets a Merger resume it"
    assert not list((tmp_path / "processed").glob("*.nxs")), "no file under a final name: none is complete"


# -- (c) each device server while it works --------------------------------------------------------
FRAMES = 60


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """One database and one chain for every server test; a test that stops a server restarts it."""
    tmp = tmp_path_factory.mktemp("signals")
    db = EmbeddedDatabase(tmp / "db", free_port()).start()
    servers: list[ServerProcess] = []
    try:
        specs, names = layout_for(tmp, integrators=2)
        tuned = {
            "Stitcher": {"FramesPerItem": ["4"], "LeaseTimeout": ["8"]},  # > a first item + engine build
            "Merger": {"GapCheck": ["2"]},
            "Integrator": {"PollInterval": ["0.3"], "Bins": ["300"]},
        }
        specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
        host, port = db.tango_host.split(":")
        register(specs, tango.Database(host, int(port)))
        servers = start_servers(specs, db.tango_host, tmp / "logs")
        poni, mask = write_calibration(tmp / "cal")
        chain = {"tmp": tmp, "host": db.tango_host, "servers": servers, "integrators": names, "cal": (poni, mask)}
        for name in names:
            _start_integrator(chain, name)
        _proxy(chain, STITCHER).Start()
        yield chain
    finally:
        stop_servers(servers)
        db.stop()


def _proxy(chain, name: str) -> tango.DeviceProxy:
    return tango.DeviceProxy(f"tango://{chain['host']}/{name}")


def _start_integrator(chain, name: str) -> None:
    dev = _proxy(chain, name)
    dev.poniPath, dev.maskPath = map(str, chain["cal"])
    dev.Start()


def _server(chain, server: str) -> ServerProcess:
    return next(s for s in chain["servers"] if s.server == server)


def _restart(chain, server: str) -> ServerProcess:
    old = _server(chain, server)
    new = ServerProcess(old.server, old.devices, old.tango_host, old.log_dir).start()
    chain["servers"][chain["servers"].index(old)] = new
    new.wait_ready()
    new.wait_connected()
    return new


def _scan(chain, frames: int = FRAMES, rate: float = 20.0) -> str:
    sim = _proxy(chain, SIMULATOR)
    wait_for(lambda: sim.state() == tango.DevState.ON, 60, "the simulator to be idle")
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = frames, 10, rate
    return sim.Start()


def _stop(server: ServerProcess, sig: int) -> None:
    """Send ``sig``; the server must exit promptly (0 on a stop signal) and leave no process behind."""
    tree = _tree(server.process.pid)
    t0 = time.monotonic()
    server.process.send_signal(sig)
    try:
        code = server.process.wait(PROMPT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"{server.server} still running {PROMPT_S:.0f} s after {sig.name}") from None
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), f"{server.server} exited {code} on {sig.name}"
    assert time.monotonic() - t0 < PROMPT_S
    wait_for(lambda: not _left(tree), 10, f"what {server.server} started to exit: {_left(tree)}")
    if sig != signal.SIGKILL:
        assert "Traceback" not in server.log_file.read_text(errors="replace").split("Ready to accept request")[-1]


def _merged(chain, stem: str, timeout_s: float = 120.0) -> dict:
    merger = _proxy(chain, MERGER)
    wait_for(lambda: Path(merger.lastOutputFile).name.startswith(stem), timeout_s, f"the merged file of {stem}")
    return read_merged(merger.lastOutputFile)


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_integrator_stopped_mid_scan_exits_and_nothing_is_lost(chain, sig, ledger):
    name = chain["integrators"][1]
    victim = next(s for s in chain["servers"] if name in s.devices)
    dev = _proxy(chain, name)
    before = dev.framesProcessed
    stem = _scan(chain)
    wait_for(lambda: dev.framesProcessed > before, 60, f"{name} to integrate frames of {stem}")
    _stop(victim, sig)
    ledger.fault(f"{sig.name} to an Integrator")
    m = _merged(chain, stem)  # the other Integrator and the gap check make up for it
    assert m["frame_number"].tolist() == list(range(1, FRAMES + 1)), (m["failed_frames"], m["failed_reasons"])
    ledger.checked(len(m["frame_number"]))
    assert m["status"] == "complete"
    _restart(chain, victim.server)
    _start_integrator(chain, name)


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_merger_stopped_mid_scan_suspends_its_file_and_resumes_it(chain, sig, ledger):
    merger = _proxy(chain, MERGER)
    frames = 100  # 5 s at 20 Hz: the signal comes mid-scan
    stem = _scan(chain, frames=frames)
    path = chain["tmp"] / "processed" / f"{stem}.nxs"  # the final name; `.part` while it is written
    part = path.with_name(path.name + ".part")
    before = merger.framesProcessed
    wait_for(lambda: merger.framesProcessed > before and part.exists(), 60, f"the Merger to write {part.name}")
    assert merger.framesProcessed - before < frames, "the scan was merged before the signal: no test"
    _stop(_server(chain, "XrdMerger/demo"), sig)
    ledger.fault(f"{sig.name} to the Merger")
    # stopped: `interrupted` (KILL: still `running`), never `complete`; the journal is kept for the next start
    assert _status(part) == ("running" if sig == signal.SIGKILL else "interrupted")
    assert path.with_name(path.name + ".journal").exists() and not path.exists()
    _restart(chain, "XrdMerger/demo")
    m = _merged(chain, stem)  # resumed: the same file, every frame once (the gap check refills the rest)
    assert Path(_proxy(chain, MERGER).lastOutputFile) == path
    assert m["frame_number"].tolist() == list(range(1, frames + 1)), (m["failed_frames"], m["failed_reasons"])
    ledger.checked(len(m["frame_number"]))
    assert m["status"] == "complete" and not path.with_name(path.name + ".journal").exists()


@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_stitcher_stopped_mid_scan_exits(chain, sig, ledger):
    stitcher = _proxy(chain, STITCHER)
    before = stitcher.framesReceived
    _scan(chain, frames=200, rate=40.0)
    wait_for(lambda: stitcher.framesReceived > before, 60, "the Stitcher to receive frames")
    _stop(_server(chain, "XrdStitcher/demo"), sig)
    ledger.fault(f"{sig.name} to the Stitcher")
    _proxy(chain, SIMULATOR).Stop()  # the rest of this acquisition would only be waited for
    _restart(chain, "XrdStitcher/demo")
    _proxy(chain, STITCHER).Start()


def test_stitcher_watching_a_directory_stopped_mid_scan_exits_on_every_signal(chain, ledger):
    """Trigger=watch runs inotify and sweep threads in the Stitcher: they must not keep it alive.
    One test for the four signals: the Stitcher is switched to watching once, restarted after each."""
    db = tango.Database(*chain["host"].split(":"))
    raw = chain["tmp"] / "raw"
    db.put_device_property(STITCHER, {"Trigger": ["watch"], "WatchDirectories": [str(raw)]})
    try:
        _server(chain, "XrdStitcher/demo").stop()
        for sig in SIGNALS:
            _restart(chain, "XrdStitcher/demo")
            stitcher = _proxy(chain, STITCHER)
            stitcher.Start()
            assert stitcher.detectorAnnouncement.startswith(f"watching {raw} (inotify"), stitcher.detectorAnnouncement
            before = stitcher.framesReceived
            _scan(chain, frames=40, rate=40.0)
            wait_for(lambda s=stitcher, b=before: s.framesReceived > b, 60, "the Stitcher to take files")
            _stop(_server(chain, "XrdStitcher/demo"), sig)
            ledger.fault(f"{sig.name} to a watching Stitcher")
            _proxy(chain, SIMULATOR).Stop()
    finally:
        db.delete_device_property(STITCHER, ["Trigger", "WatchDirectories"])
        if _server(chain, "XrdStitcher/demo").alive():
            _server(chain, "XrdStitcher/demo").stop()
        _restart(chain, "XrdStitcher/demo")
        _proxy(chain, STITCHER).Start()


@pytest.mark.parametrize("sig", SIGNALS, ids=IDS)
def test_simulator_stopped_while_writing_exits(chain, sig, ledger):
    sim = _proxy(chain, SIMULATOR)
    _scan(chain, frames=400, rate=40.0)
    wait_for(lambda: sim.framesWritten > 0, 60, "the simulator to write a part")
    _stop(_server(chain, "XrdSimulator/demo"), sig)
    ledger.fault(f"{sig.name} to the simulator")
    _restart(chain, "XrdSimulator/demo")
