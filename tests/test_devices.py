"""Device tier: simulator → Stitcher → Integrator → Merger in one MultiDeviceTestContext (real Tango, own process).

One chain serves the whole module; the tests run in file order and each says what state it starts from.
Every device has ``AutoStart`` false here, so the first tests see a chain that must not process
anything until it is started.
"""

import errno
import json
import os
import re

import numpy as np
import pytest
import tango
from tango.server import Device, attribute, command
from tango.test_context import MultiDeviceTestContext

from pipeline_core.formats.nexus import read_merged
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import LambdaSource
from pipeline_core.simulate import write_calibration
from tango_servers.integrator import Integrator
from tango_servers.merger import Merger
from tango_servers.simulator import LambdaSimulator
from tango_servers.stitcher import Stitcher

from .helpers import SMALL_PONI, wait_for, write_small_acquisition

SIM, STITCHER, INTEGRATOR, MERGER = "test/xrd/sim", "test/xrd/stitcher", "test/xrd/integrator1", "test/xrd/merger"
ANNOUNCER, BURST = "test/xrd/announcer", "test/xrd/stitcher-burst"
LONE_INTEGRATOR, LONE_MERGER = "test/xrd/integrator-alone", "test/xrd/merger-alone"
QUIET, POLLER = "test/xrd/stitcher-quiet", "test/xrd/integrator-poller"
POLL_S = 0.3  # the Integrator's PollInterval here
BINS = 100


class Announcer(Device):
    """A stand-in detector that announces whatever paths it is given, as fast as Tango pushes events."""

    def init_device(self) -> None:
        super().init_device()
        self._path = ""
        self.set_change_event("lastWrittenFile", True, False)

    @attribute(dtype=str)
    def lastWrittenFile(self) -> str:
        return self._path

    @command(dtype_in=(str,))
    def Announce(self, paths) -> None:
        for path in paths:
            self._path = path
            self.push_change_event("lastWrittenFile", path)


class QuietStitcher(Stitcher):
    """A real Stitcher whose ``workAvailable`` hints are all lost (never pushed): only polling finds its work."""

    def _work_queued(self, n_items: int) -> None:
        self.push_progress()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    poni, mask = write_calibration(tmp / "cal")
    (tmp / "cal" / "small.poni").write_text(SMALL_PONI)
    devices = [  # upstream devices first: a subscription to a device not yet exported waits ~10 s for a retry
        {"class": Announcer, "devices": [{"name": ANNOUNCER}]},
        {"class": LambdaSimulator, "devices": [{"name": SIM, "properties": {"OutputDirectory": str(tmp / "raw")}}]},
        {
            "class": Stitcher,
            "devices": [
                {"name": STITCHER, "properties": {"DetectorDevice": SIM, "FramesPerItem": 4, "AutoStart": False}},
                {
                    "name": BURST,
                    "properties": {
                        "Trigger": "file-attribute", "DetectorDevice": ANNOUNCER, "MaxPending": 10, "ModuleTimeout": 10,
                    },  # fmt: skip
                },
            ],
        },
        {"class": QuietStitcher, "devices": [{"name": QUIET}]},
        {
            "class": Integrator,
            "devices": [
                {
                    "name": POLLER,
                    "properties": {
                        "StitcherDevice": QUIET,
                        "PoniPath": str(tmp / "cal" / "small.poni"),
                        "Bins": 20,
                        "PollInterval": POLL_S,
                    },
                },
                {
                    "name": INTEGRATOR,
                    "properties": {
                        "StitcherDevice": STITCHER,
                        "PoniPath": str(poni),
                        "MaskPath": str(mask),
                        "Bins": BINS,
                        "PollInterval": POLL_S,
                        "AutoStart": False,
                        "CalibrationRoots": [str(tmp / "cal")],
                    },
                },
                {"name": LONE_INTEGRATOR, "properties": {"Bins": 10}},
            ],
        },
        {
            "class": Merger,
            "devices": [
                {
                    "name": MERGER,
                    "properties": {
                        "StitcherDevice": STITCHER,
                        "IntegratorDevices": [INTEGRATOR],
                        "OutputDirectory": str(tmp / "out"),
                        "AutoStart": False,
                    },
                },
                {"name": LONE_MERGER, "properties": {"OutputDirectory": str(tmp / "out-alone")}},
            ],
        },
    ]
    with MultiDeviceTestContext(devices, process=True, timeout=30) as ctx:
        for name in (STITCHER, BURST, INTEGRATOR, MERGER, POLLER):  # events pushed before subscribing are lost
            dev = ctx.get_device(name)
            wait_for(lambda dev=dev: dev.upstreamConnected, what=f"{dev.name()} connected upstream:\n{dev.status()}")
        stitcher = ctx.get_device(STITCHER)  # integrator1 offers its properties as the chain's initial values
        wait_for(lambda: stitcher.bins == BINS, what=f"integrator1's initial settings:\n{stitcher.status()}")
        yield tmp, ctx


def devs(ctx):
    return (ctx.get_device(n) for n in (SIM, STITCHER, INTEGRATOR, MERGER))


def declines_work(integrator, at_least: int = 2) -> None:
    """Wait until the stopped ``integrator`` has been offered work (hints or polls) ``at_least`` more
    times and declined each: a positive signal that it was asked, where waiting a while and seeing
    nothing claimed could pass by luck (a slow poll, a lost hint)."""
    before = integrator.hintsWhileStopped
    wait_for(
        lambda: integrator.hintsWhileStopped >= before + at_least,
        60,
        f"{integrator.name()} to decline work {at_least} more times (from {before}):\n{integrator.status()}",
    )


def acquire_followed(stitcher, sim, frames: int = 8, per_file: int = 4) -> str:
    """Acquire for 4 s, slowly enough that the Stitcher's Lambda trigger is seen following it; return
    once the trigger has seen it end. From then on every part has been offered to the Stitcher: a
    positive signal to check what it did with them (waiting a while and seeing nothing proves nothing)."""
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = frames, per_file, frames / 4.0
    stem = sim.Start()
    wait_for(lambda: f"acquiring {stem}" in stitcher.detectorAnnouncement, 60, f"{STITCHER} following {stem}")
    wait_for(lambda: sim.framesWritten == frames and sim.state() == tango.DevState.ON, 60, f"{stem} written")
    wait_for(lambda: "detector idle" in stitcher.detectorAnnouncement, 60, f"{STITCHER} seeing {stem} end")
    return stem


def parts_announced(stitcher) -> int:
    """Parts the Stitcher's Lambda trigger has taken (it counts only what it hands to the stage)."""
    return int(re.search(r"; (\d+) parts announced\)$", stitcher.detectorAnnouncement).group(1))


def acquire(sim, frames: int = 8, per_file: int = 4) -> str:
    """Let the simulator write a small acquisition; return its stem once every part is written."""
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = frames, per_file, 100.0
    stem = sim.Start()
    wait_for(lambda: sim.framesWritten == frames and sim.state() == tango.DevState.ON, what=f"{stem} written")
    return stem


def _empty(value) -> bool:
    return value is None or len(value) == 0


# what every attribute of every device holds before any scan: a value, or a check of it
COUNTERS = {"framesReceived": 0, "framesProcessed": 0, "framesFailed": 0, "throughput": 0.0, "latency": 0.0}
COMMON = {**COUNTERS, "currentScan": "", "lastOutputFile": "", "upstreamConnected": True}
BEFORE_A_SCAN = {
    SIM: {
        "currentScan": "",
        "lastWrittenFile": "",
        "framesWritten": 0,
        "LatestImageNumber": 0,
        "FrameNumbers": 200,
        "FramesPerFile": 50,
        "rate": 100.0,
        "writeLag": 0.0,
        "SaveFilePath": lambda v: v.endswith("/raw"),
        "SaveFileName": "",
        "FilePrefix": "ramp",
        "FileStartNum": 1,
        "poniPath": "",
        "maskPath": "",
    },
    STITCHER: {
        **COMMON,
        "outputDirectory": "processed",
        "queueDepth": 0,
        "workAvailable": 0,
        "scanInfo": "",
        "mask": lambda v: v is None or v.size == 0,
        # the chain's settings: integrator1's properties (its initial values), offered as the chain had none
        "poniPath": lambda v: v.endswith("cal/lambda2m.poni"),
        "maskPath": lambda v: v.endswith("cal/lambda2m_mask.edf"),
        "bins": BINS,
        "unit": "2th_deg",
        "settings": lambda v: '"bins": 100' in v and len(json.loads(v)["fingerprint"]) == 16,
        "frameShape": _empty,
        "itemsLeased": 0,
        "itemsRequeued": 0,
        "requeuesPending": 0,
        "reintegrationsPending": 0,
        # change events are subscribed once the simulator first answers: before that, polling alone
        "detectorAnnouncement": lambda v: v.startswith(f"following Lambda {SIM} (") and "polling every 0.5 s;" in v,
        "jobs": "[]",  # ReintegrationBackend chain: no job (tests/test_jobs_device.py runs jobs)
        "lastJobState": "",
    },
    INTEGRATOR: {
        **COMMON,
        "outputDirectory": "processed",
        "poniPath": lambda v: v.endswith("cal/lambda2m.poni"),
        "maskPath": lambda v: v.endswith("cal/lambda2m_mask.edf"),
        "bins": BINS,
        "unit": "2th_deg",
        "patterns": lambda v: tuple(v) == ("", b""),
        "lastPattern": _empty,
        "radialAxis": _empty,
        "busyFraction": 0.0,
        "hintsWhileStopped": lambda v: v >= 0,  # polls declined since init (AutoStart false): timing-dependent
        "engineSource": "no engine yet",
    },
    MERGER: {
        **COMMON,
        "outputDirectory": lambda v: v.endswith("/out"),
        "poniPath": lambda v: v.endswith("cal/lambda2m.poni"),
        "maskPath": lambda v: v.endswith("cal/lambda2m_mask.edf"),
        "bins": BINS,
        "unit": "2th_deg",
        "currentOutputFile": "",
        "queueDepth": 0,
        # no Marker here: no pressure (issue 19)
        "pressure": np.isnan,
        "pressureSigma": np.isnan,
        "compressionRate": np.isnan,
        "pressureTrace": lambda v: v is None or np.size(v) == 0,
    },
}
#: numeric attributes with a physical unit (pint's names, which Taurus parses); the others are counts or
#: fractions, whose noun is in the label
UNITS = {"throughput": "1/s", "latency": "s", "rate": "Hz", "writeLag": "s", "radialAxis": "deg", "pressure": "GPa",
         "pressureSigma": "GPa", "compressionRate": "GPa/s"}  # fmt: skip
PYTHON_TYPES = {
    tango.CmdArgType.DevLong64: (int, np.integer),
    tango.CmdArgType.DevLong: (int, np.integer),
    tango.CmdArgType.DevDouble: (float,),
    tango.CmdArgType.DevString: (str,),
    tango.CmdArgType.DevBoolean: (bool,),
    tango.CmdArgType.DevEncoded: (tuple,),
}
NUMERIC = {tango.CmdArgType.DevLong64, tango.CmdArgType.DevLong, tango.CmdArgType.DevDouble, tango.CmdArgType.DevUChar}


def test_every_attribute_of_every_device_reads_and_is_described_before_a_scan(chain):
    _, ctx = chain
    for name, expected in BEFORE_A_SCAN.items():
        dev = ctx.get_device(name)
        attrs = set(dev.get_attribute_list()) - {"State", "Status"}
        assert attrs == set(expected), f"{name}: attributes without a check here: {attrs ^ set(expected)}"
        for attr in sorted(attrs):
            value = dev.read_attribute(attr).value  # raises DevFailed if the attribute cannot be read
            cfg = dev.get_attribute_config(attr)
            if cfg.data_format == tango.AttrDataFormat.SCALAR:
                assert isinstance(value, PYTHON_TYPES[cfg.data_type]), (name, attr, value)
            want = expected[attr]
            assert want(value) if callable(want) else value == want, (name, attr, value)
            assert cfg.label and cfg.label != attr, f"{name}/{attr} has no label"
            assert cfg.description and cfg.description != "No description", f"{name}/{attr} has no description"
            if cfg.data_type in NUMERIC:
                assert cfg.unit.replace("No unit", "") == UNITS.get(attr, ""), f"{name}/{attr}: unit {cfg.unit!r}"
    for name in (STITCHER, INTEGRATOR, MERGER):  # stopped (AutoStart false), nothing wrong yet
        assert ctx.get_device(name).state() == tango.DevState.ON, ctx.get_device(name).status()
    assert ctx.get_device(STITCHER).status().startswith("Stopped")
    assert ctx.get_device(MERGER).status().startswith("Stopped")
    assert ctx.get_device(INTEGRATOR).status().startswith("Stopped")


def test_every_bound_is_enforced_with_the_limit_named_and_the_old_value_stays(chain):
    _, ctx = chain
    checked = []
    for dev in devs(ctx):
        for attr in dev.get_attribute_list():
            cfg = dev.get_attribute_config(attr)
            if cfg.writable != tango.AttrWriteType.READ_WRITE:
                continue
            before = dev.read_attribute(attr).value
            cast = float if cfg.data_type == tango.CmdArgType.DevDouble else int
            bounds = ((cfg.min_value, "below the minimum", -1), (cfg.max_value, "above the maximum", 1))
            for limit, side, beyond in bounds:
                if limit == "Not specified":
                    continue
                bad = cast(limit) + beyond * (0.05 if cast is float else 1)
                # Tango refuses before our code runs; its message names the attribute and the side, and
                # the limit itself is in the attribute's configuration (what Jive and Taurus show)
                with pytest.raises(tango.DevFailed, match=f"attribute {attr} is {side} authorized"):
                    dev.write_attribute(attr, bad)
                assert dev.read_attribute(attr).value == before, (dev.name(), attr)
                checked.append((dev.name(), attr, limit))
    assert {(d.split("/")[-1], a) for d, a, _ in checked} == {
        ("integrator1", "bins"),
        ("stitcher", "bins"),
        ("merger", "bins"),
        ("sim", "FrameNumbers"),
        ("sim", "FramesPerFile"),
        ("sim", "FileStartNum"),
        ("sim", "writeLag"),
        ("sim", "rate"),
    }, checked
    assert ("test/xrd/integrator1", "bins", "100000") in checked and ("test/xrd/sim", "rate", "0.1") in checked


def test_a_stopped_chain_processes_nothing_and_start_lets_each_stage_work(chain):
    tmp, ctx = chain
    sim, stitcher, integrator, merger = devs(ctx)
    # Stitcher stopped: the simulator's announcements are heard (the trigger followed the acquisition
    # to its end) and not taken
    ignored = acquire_followed(stitcher, sim)
    assert parts_announced(stitcher) == 0 and stitcher.currentScan == ""
    assert stitcher.framesReceived == 0 and stitcher.workAvailable == 0
    # Stitcher started, Integrator stopped: work waits, nobody claims it
    stitcher.Start()
    stem = acquire(sim)
    assert stem != ignored
    wait_for(lambda: stitcher.workAvailable == 2, what="two work items of 4 frames")
    # announcements are stitched in order: had the stopped Stitcher taken the first acquisition, its
    # parts would be counted before these
    assert parts_announced(stitcher) == 2 and stitcher.currentScan == stem and stitcher.framesReceived == 8
    declines_work(integrator)
    assert integrator.framesReceived == 0 and stitcher.itemsLeased == 0 and stitcher.workAvailable == 2
    # Integrator started, Merger stopped: patterns are made and not merged
    integrator.Start()
    wait_for(lambda: integrator.framesProcessed == 8, what="8 frames integrated")
    # the Merger counts the batches it refuses: both arrived, and were not merged
    wait_for(lambda: "Stopped (2 batch(es) not merged)" in merger.status(), 60, "2 batches refused")
    assert merger.framesReceived == 0 and merger.currentOutputFile == ""
    assert merger.state() == tango.DevState.ALARM and "pattern batches" in merger.status()
    merger.ClearErrors()
    assert merger.state() == tango.DevState.ON, merger.status()
    # everything started: the acquisition is reintegrated into a complete file
    merger.Start()
    stitcher.Reintegrate(str(tmp / "raw" / f"{stem}_m1_part00000.nxs"))
    wait_for(lambda: merger.lastOutputFile != "", what=f"the merged file of {stem}")
    m = read_merged(merger.lastOutputFile)
    assert merger.lastOutputFile.endswith(f"out/{stem}.nxs")
    assert m["frame_number"].tolist() == list(range(1, 9)) and m["status"] == "complete"
    # exact counts after these scans: 8 stitched live, 8 reintegrated; the Merger merged the second 8 only
    assert (stitcher.framesReceived, stitcher.framesProcessed, stitcher.framesFailed) == (16, 16, 0)
    assert (integrator.framesReceived, integrator.framesProcessed, integrator.framesFailed) == (16, 16, 0)
    assert (merger.framesReceived, merger.framesProcessed, merger.framesFailed) == (8, 8, 0)
    assert stitcher.itemsRequeued == 0 and merger.queueDepth == 0
    assert stitcher.currentScan == f"{stem}#r1" and merger.currentScan == f"{stem}#r1"
    assert integrator.currentScan == f"{stem}#r1"
    assert merger.bins == BINS and merger.unit == "2th_deg" and merger.poniPath == integrator.poniPath
    assert stitcher.bins == BINS and stitcher.poniPath == integrator.poniPath
    assert len(integrator.lastPattern) == BINS and len(integrator.radialAxis) == BINS
    assert stitcher.frameShape.tolist() == list(stitcher.mask.shape) and stitcher.mask.sum() > 0
    assert 0 < integrator.busyFraction <= 1 and integrator.latency > 0 and merger.latency > 0
    assert sim.lastWrittenFile.endswith(f"{stem}_m3_part00001.nxs")


def test_stop_halts_each_stage(chain):
    tmp, ctx = chain
    sim, stitcher, integrator, merger = devs(ctx)
    before, announced = stitcher.framesReceived, parts_announced(stitcher)
    stitcher.Stop()
    acquire_followed(stitcher, sim)  # the trigger saw the whole acquisition: its parts were offered
    assert parts_announced(stitcher) == announced and stitcher.framesReceived == before
    stitcher.Start()

    integrator.Stop()
    done = integrator.framesReceived
    stitcher.Reintegrate(str(tmp / "raw"))
    wait_for(lambda: stitcher.workAvailable == 2, what="the reintegration queued")
    declines_work(integrator)
    assert integrator.framesReceived == done and stitcher.workAvailable == 2
    integrator.Start()
    wait_for(lambda: integrator.framesProcessed == done + 8, what="the reintegration integrated after Start")
    wait_for(lambda: merger.framesProcessed == 16, what="and merged")


def test_change_events_arrive_for_latency_current_scan_and_last_output_file(chain):
    _, ctx = chain
    sim, stitcher, integrator, merger = devs(ctx)
    for dev in (integrator, merger, stitcher):
        dev.Start()
    seen: list[tuple[str, str, object]] = []

    def record(event) -> None:
        if not event.err:
            seen.append((event.device.name(), event.attr_value.name.lower(), event.attr_value.value))

    ids = [
        (dev, dev.subscribe_event(attr, tango.EventType.CHANGE_EVENT, record))
        for dev in (stitcher, integrator, merger)  # real DeviceProxies of the test process
        for attr in ("latency", "currentScan", "lastOutputFile")
    ]
    try:
        assert len(seen) == 9  # the first event of each subscription carries the value now
        seen.clear()
        stem = acquire(sim)
        wait_for(
            lambda: any(a == "lastoutputfile" and str(v).endswith(f"{stem}.nxs") for _, a, v in seen),
            what=f"the event of {stem}.nxs; events seen: {seen}; {merger.status()}; {integrator.status()}",
        )
        for name in (STITCHER, INTEGRATOR, MERGER):
            got = {(a, v) for d, a, v in seen if d == name}
            assert ("currentscan", stem) in got, (name, got)
            assert any(a == "latency" and v > 0 for a, v in got), (name, got)
    finally:
        for dev, event_id in ids:
            dev.unsubscribe_event(event_id)


def test_calibration_outside_calibration_roots_is_refused(chain, tmp_path):
    tmp, ctx = chain
    integrator = ctx.get_device(INTEGRATOR)
    before = integrator.poniPath
    outside = tmp_path / "elsewhere.poni"
    outside.write_text(SMALL_PONI)  # a good calibration, in the wrong place
    with pytest.raises(tango.DevFailed, match=r"PONI file .*elsewhere.poni .*outside the allowed root"):
        integrator.poniPath = str(outside)
    with pytest.raises(tango.DevFailed, match=r"mask file .*outside the allowed root"):
        integrator.maskPath = str(tmp_path / "mask.npy")
    assert integrator.poniPath == before


def test_bad_values_are_refused_and_the_old_value_stays(chain, tmp_path):
    tmp, ctx = chain
    integrator = ctx.get_device(INTEGRATOR)
    before = integrator.poniPath
    bad = tmp / "cal" / "bad.poni"
    bad.write_text("garbage\n")
    with pytest.raises(tango.DevFailed, match="bad.poni is not a pyFAI calibration"):
        integrator.poniPath = str(bad)
    with pytest.raises(tango.DevFailed, match="unit 'furlong' is unknown"):
        integrator.unit = "furlong"
    assert integrator.poniPath == before
    assert integrator.unit == "2th_deg" and integrator.bins == BINS


def test_reintegrate_runs_through_the_chain_and_never_overwrites(chain):
    tmp, ctx = chain
    acq = write_small_acquisition(tmp / "small", n_parts=2, frames_per_part=3)
    _, stitcher, integrator, merger = devs(ctx)
    for dev in (integrator, merger, stitcher):
        dev.Start()
    integrator.maskPath = ""  # the simulator's mask does not fit these small frames
    integrator.poniPath, integrator.bins = str(tmp / "cal" / "small.poni"), 20
    done = merger.framesProcessed
    assert "queued" in merger.Reintegrate(str(tmp / "small"))  # forwarded to the Stitcher, returns at once
    wait_for(lambda: merger.framesProcessed == done + 6, what="6 frames merged")
    last = merger.lastOutputFile
    merger.Stop()  # these small files do not say how many frames the acquisition has: close by hand
    wait_for(lambda: merger.lastOutputFile != last)
    merger.Start()
    first = merger.lastOutputFile
    assert first.endswith("out/scan_00001.nxs")
    live = read_merged(first)
    offline = integrate_source(
        LambdaSource.from_file(acq["files"][0]),
        IntegrationSettings(tmp / "cal" / "small.poni", bins=20),
        tmp / "offline.nxs",
    )
    assert live["frame_number"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (live["data"] == read_merged(offline.output)["data"]).all()
    assert merger.bins == 20 and merger.poniPath == str(tmp / "cal" / "small.poni")
    assert stitcher.frameShape.tolist() == [67, 32]
    assert stitcher.mask.shape == (67, 32) and stitcher.mask.sum() > 0

    integrator.bins = 10
    integrator.Reintegrate(str(acq["files"][0]))
    wait_for(lambda: merger.framesProcessed == done + 12)
    merger.Stop()
    wait_for(lambda: merger.lastOutputFile != first)
    merger.Start()
    assert merger.lastOutputFile.endswith("scan_00001_v001.nxs")
    assert read_merged(merger.lastOutputFile)["data"].shape == (6, 10)
    assert read_merged(first)["data"].shape == (6, 20)  # the first result is untouched
    assert len(integrator.lastPattern) == 10 and len(integrator.radialAxis) == 10

    # the frame shape is known now: a mask drawn for another detector is refused, the old one stays
    np.save(tmp / "cal" / "wrong.npy", np.zeros((5, 5), np.int8))
    with pytest.raises(tango.DevFailed, match=r"wrong.npy has shape \(5, 5\) but the frames are \(67, 32\)"):
        integrator.maskPath = str(tmp / "cal" / "wrong.npy")
    assert integrator.maskPath == ""


def test_reintegrate_of_a_missing_path_is_a_clear_error(chain):
    _, ctx = chain
    with pytest.raises(tango.DevFailed, match="cannot reintegrate /no/such/dir: it does not exist"):
        ctx.get_device(STITCHER).Reintegrate("/no/such/dir")
    assert ctx.get_device(STITCHER).state() in (tango.DevState.ON, tango.DevState.RUNNING)


def test_a_burst_past_80_percent_of_max_pending_is_an_alarm_and_past_the_bound_refused(chain):
    tmp, ctx = chain
    burst, announcer = ctx.get_device(BURST), ctx.get_device(ANNOUNCER)
    (tmp / "burst").mkdir()
    for k in (2, 3):  # unreadable module files
        (tmp / "burst" / f"burst_00001_m{k}.nxs").write_bytes(b"not HDF5" * 1000)
    # module 1 is a FIFO: the Stitcher's thread blocks opening it, so the burst waits in its queue for
    # sure (with ordinary files the thread may drain it before anyone looks: the test was flaky)
    first = tmp / "burst" / "burst_00001_m1.nxs"
    os.mkfifo(first)
    announcer.Announce([str(first)] * 15)
    wait_for(lambda: burst.queueDepth >= 8, what="8 of MaxPending=10 announcements waiting")
    assert burst.state() == tango.DevState.ALARM
    assert "announcements waiting (bound 10)" in burst.status()
    assert "announcement queue full (10)" in burst.status()  # the ones past the bound, refused and said so
    writer = _writer_of(first)  # the blocked reader's open returns...
    garbage = tmp / "burst" / "garbage"
    garbage.write_bytes(b"not HDF5" * 1000)
    os.replace(garbage, first)  # ...every later open finds an unreadable file...
    os.close(writer)  # ...and the first read ends at once
    wait_for(lambda: burst.queueDepth == 0, timeout_s=60, what="the burst drained")
    wait_for(lambda: "part 0 of burst_00001" in burst.status(), timeout_s=30, what="the unreadable part failed")
    assert burst.state() == tango.DevState.ALARM  # the problems stay listed until acknowledged
    burst.ClearErrors()  # RUNNING, not ALARM: the failed part's item waits for an Integrator that will report it
    assert burst.state() == tango.DevState.RUNNING and "Recent problems" not in burst.status(), burst.status()


def _writer_of(fifo) -> int:
    """Open ``fifo`` for writing once a reader has opened it (before that, a non-blocking open fails with
    ENXIO): the Stitcher's thread may still be on its way to the FIFO when the queue is seen full."""
    fds: list[int] = []

    def opened() -> bool:
        try:
            fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        return bool(fds)

    wait_for(opened, timeout_s=30, what=f"the Stitcher's thread to open {fifo.name} (a FIFO) for reading")
    return fds[0]


def test_a_device_without_its_upstream_is_in_fault_and_says_which_property(chain):
    _, ctx = chain
    lone_integrator, lone_merger = ctx.get_device(LONE_INTEGRATOR), ctx.get_device(LONE_MERGER)
    assert lone_integrator.state() == tango.DevState.FAULT
    assert "FAULT: no StitcherDevice property" in lone_integrator.status()
    assert lone_merger.state() == tango.DevState.FAULT
    assert "FAULT: no IntegratorDevices property" in lone_merger.status()
    lone_integrator.ClearErrors()  # acknowledging problems does not make a misconfigured device work
    assert lone_integrator.state() == tango.DevState.FAULT


def test_an_integrator_finds_work_by_polling_claim_work_when_the_hints_are_lost(chain):
    tmp, ctx = chain
    quiet, poller = ctx.get_device(QUIET), ctx.get_device(POLLER)
    hints = []
    event_id = quiet.subscribe_event("workAvailable", tango.EventType.CHANGE_EVENT, hints.append)
    try:
        write_small_acquisition(tmp / "unhinted", stem="quiet_00001", n_parts=2, frames_per_part=3)
        quiet.Reintegrate(str(tmp / "unhinted"))
        wait_for(lambda: poller.framesProcessed == 6, timeout_s=20, what="6 frames claimed by polling")
        assert quiet.workAvailable == 0 and quiet.framesProcessed == 6
        assert len(hints) == 1  # the subscription's first value only: no hint was ever sent
        assert poller.currentScan == "quiet_00001#r1" and poller.framesFailed == 0
    finally:
        quiet.unsubscribe_event(event_id)
