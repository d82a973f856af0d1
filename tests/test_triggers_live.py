"""Each Stitcher Trigger end to end: real servers on the embedded database, files written live.

For each: the merged file equals the offline integration of the same files row for row, every frame
exactly once. ``lambda`` against a server clients must poll (no change events), with a slow writer
and a module switched off; ``watch`` with files moved into place and written in place, and a module
that never arrives; ``file-attribute`` as before; and a Stitcher restarted mid-acquisition finds the
parts it missed (``lambda``, ``watch``).
"""

import contextlib
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from pipeline_core.formats.nexus import read_merged
from pipeline_core.formats.nexus_modules import read_modules
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import LambdaSource
from pipeline_core.simulate import simulate_acquisition, write_calibration
from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for
from tango_servers.embedded_db import EmbeddedDatabase, free_port
from tango_servers.launcher import start_servers, stop_servers
from tango_servers.registration import DeviceSpec, load_layout, register

from .helpers import readme_block, real_servers, wait_for

BINS = 400


@contextlib.contextmanager
def chain(tmp: Path, **properties):
    """The demo's layout with one Integrator; ``properties[klass]`` overrides that class's properties."""
    db = EmbeddedDatabase(tmp / "db", free_port()).start()
    servers = []
    try:
        specs, names = layout_for(tmp, integrators=1)
        base = {"Stitcher": {"FramesPerItem": ["5"]}, "Merger": {"GapCheck": ["3"]}}
        specs = [
            replace(s, properties={**s.properties, **base.get(s.klass, {}), **properties.get(s.klass, {})})
            for s in specs
        ]
        host, port = db.tango_host.split(":")
        register(specs, tango.Database(host, int(port)))
        servers = start_servers(specs, db.tango_host, tmp / "logs")
        for server in servers:
            server.wait_connected(60)
        poni, mask = write_calibration(tmp / "cal")
        stitcher = tango.DeviceProxy(f"tango://{db.tango_host}/{STITCHER}")
        stitcher.poniPath, stitcher.maskPath, stitcher.bins = str(poni), str(mask), BINS
        yield Chain(tmp, db.tango_host, servers, poni, mask)
    finally:
        stop_servers(servers)
        db.stop()


class Chain:
    def __init__(self, tmp, host, servers, poni, mask):
        self.tmp, self.host, self.servers, self.poni, self.mask = tmp, host, servers, poni, mask
        self.raw = tmp / "raw"

    def proxy(self, name: str) -> tango.DeviceProxy:
        return tango.DeviceProxy(f"tango://{self.host}/{name}")

    def server(self, name: str):
        return next(s for s in self.servers if s.server == name)

    def merged(self, stem: str, timeout_s: float = 120) -> dict:
        merger = self.proxy(MERGER)
        wait_for(lambda: Path(merger.lastOutputFile).name.startswith(stem), timeout_s, f"the merged file of {stem}")
        return read_merged(merger.lastOutputFile)

    def assert_equals_offline(self, merged: dict, stem: str, frames: int, modules=None) -> None:
        """Every frame once, and row for row what `xrd-pipeline integrate` gives on the same files
        (``modules``: its --modules, the modules that are on)."""
        assert merged["frame_number"].tolist() == list(range(1, frames + 1))
        first = sorted(self.raw.glob(f"{stem}_m*.nxs"))[0]
        out = self.tmp / "offline" / f"{stem}.nxs"
        report = integrate_source(
            LambdaSource.from_file(first, modules),
            IntegrationSettings(self.poni, bins=BINS, mask_path=self.mask),
            out,
        )
        ref = read_merged(report.output)
        np.testing.assert_allclose(merged["data"], ref["data"], rtol=1e-6)
        np.testing.assert_array_equal(merged["pos_map"], ref["pos_map"])
        assert merged["files"] == ref["files"] and merged["status"] == "complete" == ref["status"]


def _acquire(sim, frames: int, per_file: int, rate: float) -> str:
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = frames, per_file, rate
    return sim.Start()


# -- Trigger=lambda ---------------------------------------------------------------------------------
def readme_stitcher_properties(raw: Path) -> dict[str, list[str]]:
    """README's Stitcher registration for a beamline's Lambda server, as written, with the test's
    simulator in place of the Lambda server and its folder in place of the beamline's."""
    text = readme_block("For the beamline's", "yaml")
    assert "DetectorDevice: p02/lambda2m/1" in text and "DataRoots: [/gpfs/current/raw]" in text
    text = text.replace("p02/lambda2m/1", SIMULATOR).replace("/gpfs/current/raw", str(raw))
    (spec,) = [s for s in load_layout_text(text) if s.klass == "Stitcher"]
    return spec.properties


def load_layout_text(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
        fh.write(text)
        fh.flush()
        return load_layout(fh.name)


@pytest.fixture(scope="module")
def lambda_chain(tmp_path_factory):
    """README's Stitcher for a Lambda server, on a server that pushes no change events: it must poll."""
    tmp = tmp_path_factory.mktemp("lambda")
    stitcher = readme_stitcher_properties(tmp / "raw")
    assert stitcher["Trigger"] == ["lambda"] and stitcher["DetectorPollPeriod"] == ["0.3"]
    with chain(
        tmp,
        LambdaSimulator={"PushEvents": ["false"]},
        Stitcher=stitcher,
        Merger={"GapCheck": ["60"]},  # what a restarted Stitcher missed comes back through the trigger
    ) as c:
        yield c


def test_lambda_trigger_polls_a_server_without_events_and_equals_offline(lambda_chain):
    c = lambda_chain
    stitcher, sim = c.proxy(STITCHER), c.proxy(SIMULATOR)
    with pytest.raises(tango.DevFailed):  # what the Stitcher found: this server pushes no events
        sim.subscribe_event("LatestImageNumber", tango.EventType.CHANGE_EVENT, lambda e: None)
    assert stitcher.upstreamConnected
    stem = _acquire(sim, 30, 10, 10.0)  # 3 s: still MOVING when read, on a loaded host too
    assert sim.state() == tango.DevState.MOVING and sim.SaveFileName == ""
    assert stem == f"ramp_{sim.FileStartNum:05d}"
    m = c.merged(stem)
    c.assert_equals_offline(m, stem, 30)
    assert sim.LatestImageNumber == 30 and sim.state() == tango.DevState.ON
    assert sim.FileStartNum == int(stem.rsplit("_", 1)[1]) + 1  # counts up, as the Lambda server's
    announcement = stitcher.detectorAnnouncement
    # 30 frames, 10 per file: 3 parts, each announced once; the acquisition is over
    assert announcement == f"following Lambda {SIMULATOR} (polling every 0.3 s; detector idle; 3 parts announced)"


def test_lambda_trigger_waits_for_a_part_whose_files_come_after_the_detector_counted_it(lambda_chain):
    """A slow writer: LatestImageNumber passes a part seconds before its files exist; nothing fails."""
    c = lambda_chain
    sim, stitcher = c.proxy(SIMULATOR), c.proxy(STITCHER)
    failed_before = stitcher.framesFailed
    sim.writeLag = 2.0
    try:
        stem = _acquire(sim, 20, 10, 40.0)
        m = c.merged(stem, timeout_s=120)
    finally:
        sim.writeLag = 0.0
    c.assert_equals_offline(m, stem, 20)
    assert stitcher.framesFailed == failed_before


def test_lambda_trigger_stitches_without_a_module_switched_off(lambda_chain):
    c = lambda_chain
    sim, stitcher = c.proxy(SIMULATOR), c.proxy(STITCHER)
    db = tango.Database(*c.host.split(":"))
    db.put_device_property(SIMULATOR, {"ModulesOn": ["1", "3"]})
    sim.Init()
    try:
        sim.SaveFileName = "m2off_00001"  # the name the operator typed, as at the beamline
        stem = _acquire(sim, 20, 10, 40.0)
        assert stem == "m2off_00001"
        m = c.merged(stem)
        path = c.proxy(MERGER).lastOutputFile
    finally:
        db.put_device_property(SIMULATOR, {"ModulesOn": ["1", "2", "3"]})
        sim.Init()
    assert not list(c.raw.glob(f"{stem}_m2*")) and len(list(c.raw.glob(f"{stem}_m*.nxs"))) == 4
    c.assert_equals_offline(m, stem, 20, modules=(1, 3))  # integrate --modules 1,3 gives the same rows
    assert len(m["input_files"]) == 4
    with h5py.File(path, "r") as h5:  # the file says which modules made it, not only Status (issue 17)
        on, off, note = read_modules(h5)
    assert (on, off) == ([1, 3], [2]) and "m2 off (they wrote no file: the Stitcher's switched-off rule)" in note
    status = stitcher.status()
    assert "m2off_00001: module(s) m2 wrote no file 5 s after part 0 was written: taken as switched off" in status
    stitcher.ClearErrors()


def test_lambda_trigger_a_stitcher_restarted_mid_acquisition_finds_the_parts_it_missed(lambda_chain):
    c = lambda_chain
    sim = c.proxy(SIMULATOR)
    stitcher_server = c.server("XrdStitcher/demo")
    first = c.proxy(STITCHER)
    taken = first.framesReceived  # the chain is the module's: earlier tests' frames are counted too
    # 30 s of acquisition: the Stitcher is back before it ends, on a loaded CI host too (at 5 frames/s
    # a restart that took 6 s came back after the last frame; 30 s leaves a restart about 19 s)
    stem = _acquire(sim, 60, 10, 2.0)
    wait_for(lambda: first.framesReceived >= taken + 10, 60, "the first part taken")
    stitcher_server.kill()
    down_at = sim.LatestImageNumber
    wait_for(lambda: sim.LatestImageNumber >= down_at + 15, 30, "a part written while the Stitcher is down")
    stitcher_server.start()
    stitcher_server.wait_ready(60)
    # mid-acquisition, as the test says (a Stitcher back after the end is issue-17's gap check's case)
    assert sim.LatestImageNumber < 60, f"the acquisition ended before the Stitcher was back (down at {down_at})"
    m = c.merged(stem, timeout_s=180)
    c.assert_equals_offline(m, stem, 60)
    restarted = c.proxy(STITCHER)
    # every part written while it was down was found by its trigger: back mid-acquisition, it announces
    # all six parts from the first (the stage takes the ones the first life finished once, not again);
    # a part the first life had already taken may or may not be taken again, as the kill fell before or
    # after its work was recorded (both seen with the suite on 3 workers). itemsRequeued is not asked:
    # a lease run out on a loaded host, or a part lost with the first life's queue and recovered by the
    # Merger's gap check, are both the chain working as designed, not the trigger missing a part.
    assert restarted.detectorAnnouncement.endswith("; 6 parts announced)"), restarted.detectorAnnouncement
    written_before = 10 * (down_at // 10)  # whole parts written before the kill, at most
    received = restarted.framesReceived
    assert received % 10 == 0 and 60 - written_before <= received <= 60, (received, down_at)


# -- Trigger=watch ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def watch_chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("watch")
    with chain(
        tmp,
        Stitcher={
            "Trigger": ["watch"], "WatchDirectories": [str(tmp / "raw")], "WatchStableTime": ["0.5"],
            "WatchSweepPeriod": ["0.3"], "ModuleTimeout": ["4"],
        },  # fmt: skip
        Merger={"GapCheck": ["60"]},
    ) as c:
        c.raw.mkdir(exist_ok=True)
        yield c


def test_watch_trigger_takes_files_moved_into_place_and_equals_offline(watch_chain):
    c = watch_chain
    stitcher = c.proxy(STITCHER)
    assert "(inotify + a sweep every 0.3 s)" in stitcher.detectorAnnouncement
    stem = _acquire(c.proxy(SIMULATOR), 20, 10, 40.0)  # the simulator renames each file into place
    c.assert_equals_offline(c.merged(stem), stem, 20)
    stitcher.Reintegrate(str(c.raw / f"{stem}_m1_part00000.nxs"))  # files on disk: no trigger needed
    wait_for(lambda: Path(c.proxy(MERGER).lastOutputFile).name == f"{stem}_v001.nxs", 60, "the reintegration")
    c.assert_equals_offline(read_merged(c.proxy(MERGER).lastOutputFile), stem, 20)


def test_watch_trigger_takes_files_written_in_place_once_closed(watch_chain):
    c = watch_chain
    simulate_acquisition(
        c.raw, frames=15, frames_per_file=10, stem="inplace_00001", rate=40.0, publish="in-place",
        calibration=(c.poni, c.mask),
    )  # fmt: skip
    c.assert_equals_offline(c.merged("inplace_00001"), "inplace_00001", 15)


def test_watch_trigger_reports_a_module_that_never_arrives_after_the_module_timeout(watch_chain):
    c = watch_chain
    stitcher = c.proxy(STITCHER)
    staging = c.tmp / "staging"
    simulate_acquisition(staging, frames=20, frames_per_file=10, stem="lost_00001", calibration=(c.poni, c.mask))
    never = "lost_00001_m3_part00001.nxs"
    for f in sorted(staging.glob("lost_00001_m*.nxs")):
        if f.name != never:
            shutil.move(f, c.raw / f.name)
    t0 = time.monotonic()
    m = c.merged("lost_00001", timeout_s=120)
    assert time.monotonic() - t0 >= 3.5  # not before ModuleTimeout (4 s)
    assert m["frame_number"].tolist() == list(range(1, 11))
    assert m["failed_frames"] == ["11-20"] and m["status"] == "incomplete"
    assert f"module file(s) {never} not written (or not closed) within 4 s" in m["failed_reasons"][0]
    assert f"{never} not written (or not closed) within 4 s" in stitcher.status()
    stitcher.ClearErrors()


def test_watch_trigger_a_stitcher_restarted_mid_acquisition_finds_the_parts_it_missed(watch_chain):
    c = watch_chain
    sim, merger = c.proxy(SIMULATOR), c.proxy(MERGER)
    stitcher_server = c.server("XrdStitcher/demo")
    hour_ago = time.time() - 3600
    for f in c.raw.glob("*.nxs"):  # the earlier tests' acquisitions: older than WatchBacklog, left alone
        os.utime(f, (hour_ago, hour_ago))
    stem = _acquire(sim, 60, 10, 10.0)
    wait_for(lambda: merger.framesProcessed > 0 and merger.currentScan == stem, 60, "the first frames merged")
    stitcher_server.kill()
    down_at = sim.framesWritten
    wait_for(lambda: sim.framesWritten >= down_at + 10, 30, "a part written while the Stitcher is down")
    stitcher_server.start()
    stitcher_server.wait_ready(60)
    m = c.merged(stem, timeout_s=180)
    c.assert_equals_offline(m, stem, 60)
    restarted = c.proxy(STITCHER)
    assert restarted.framesReceived == 60 and restarted.itemsRequeued == 0  # found again by the sweep


# -- Trigger=file-attribute -------------------------------------------------------------------------
def test_file_attribute_trigger_hears_each_file_path_and_equals_offline(tmp_path):
    with chain(tmp_path, Stitcher={"Trigger": ["file-attribute"]}) as c:
        stitcher = c.proxy(STITCHER)
        assert stitcher.detectorAnnouncement == f"listening to {SIMULATOR}/lastWrittenFile"
        stem = _acquire(c.proxy(SIMULATOR), 20, 10, 40.0)
        c.assert_equals_offline(c.merged(stem), stem, 20)


@contextlib.contextmanager
def stitcher_alone(tmp: Path, **properties):
    """One Stitcher server on the embedded database (what a misconfiguration test needs)."""
    spec = DeviceSpec("XrdStitcher/alone", "Stitcher", STITCHER, {k: list(v) for k, v in properties.items()})
    with real_servers(tmp, [spec]) as host:
        yield tango.DeviceProxy(f"tango://{host}/{STITCHER}")


def test_a_bad_trigger_is_a_fault_that_names_it_and_the_device_still_answers(tmp_path):
    with stitcher_alone(tmp_path, Trigger=["inotify"], DataRoots=[str(tmp_path)]) as stitcher:
        assert stitcher.state() == tango.DevState.FAULT
        assert "Trigger 'inotify' is unknown; expected one of lambda, watch, file-attribute" in stitcher.status()
        stitcher.bins = BINS
        assert stitcher.bins == BINS


def test_a_detector_device_that_is_no_lambda_server_is_a_fault_that_names_what_it_lacks(tmp_path):
    with stitcher_alone(tmp_path, DetectorDevice=["dserver/XrdStitcher/alone"]) as stitcher:  # its admin device
        wait_for(lambda: stitcher.state() == tango.DevState.FAULT, 30, "the fault")
        status = stitcher.status()
        assert "DetectorDevice dserver/XrdStitcher/alone has no attribute SaveFilePath, FramesPerFile" in status
        assert "LatestImageNumber, SaveFileName or FilePrefix: is it a Lambda server?" in status
