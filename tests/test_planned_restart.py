"""A planned restart upstream is a note, not an alarm that never clears (issue 18, defect 1).

Restarting the Stitcher for a few seconds used to leave every Integrator in ALARM until somebody
ran ClearErrors, its Status flooded with multi-line ``DevFailed[ DevError[ ...`` dumps: each failed
claim was reported as a problem. State says what holds now: a link out is shown while it is out,
an ALARM only once it has been out longer than ``UpstreamAlarmAfter``, and a link back leaves one
line (when, which link, how long, the first line of the reason).

The rule is tested on :class:`UpstreamLinks` with a fake clock, the claims' side with a fake proxy
that raises the DevFailed Tango raises, and the whole with real servers: the Stitcher stopped for
3 s and started again.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import pytest
import tango
from tango import DevState

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.messages import ClaimRequest
from pipeline_core.simulate import write_calibration
from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for
from tango_servers.embedded_db import EmbeddedDatabase, free_port
from tango_servers.launcher import ServerProcess, start_servers, stop_servers
from tango_servers.registration import register
from tango_servers.status_log import StatusLog, UpstreamLinks
from tango_servers.subscriptions import EventSubscriptions
from tango_servers.work_source import TangoWorkSource

from .helpers import wait_for

LINK = "xrd/stitcher/1/workAvailable"
NOT_EXPORTED = "Device xrd/stitcher/1 is not exported (hint: try starting the device server)\nmore\nlines"


class FakeClock:
    """Both clocks of :class:`UpstreamLinks` (durations and the times shown), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_765_000_000.0

    def __call__(self) -> float:
        return self.now

    def shown(self, at: float | None = None) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.now if at is None else at))


def _state(log: StatusLog, links: UpstreamLinks) -> DevState:
    return log.state(links.alarm(), busy=False)


def test_an_upstream_out_longer_than_the_bound_is_an_alarm_until_it_is_back():
    clock, log = FakeClock(), StatusLog()
    links = UpstreamLinks(alarm_after_s=60, clock=clock, wall=clock)
    links.regained(LINK)  # it delivered once
    links.lost(LINK, f"API_DeviceNotExported: {NOT_EXPORTED}")
    lost_at = clock.shown()
    clock.now += 59
    assert _state(log, links) == DevState.ON and not links.connected
    assert links.waiting() == [
        f"{LINK}: API_DeviceNotExported: Device xrd/stitcher/1 is not exported (hint: try starting the device "
        f"server) (since {lost_at}; ALARM if still out after 60 s)"
    ]
    clock.now += 2
    assert _state(log, links) == DevState.ALARM
    assert links.alarm() == (
        f"upstream {LINK} out for 61 s (UpstreamAlarmAfter 60 s): API_DeviceNotExported: Device xrd/stitcher/1 "
        "is not exported (hint: try starting the device server)"
    )
    links.regained(LINK)
    assert _state(log, links) == DevState.ON and links.connected and links.waiting() == []
    assert links.notes() == [
        f"{clock.shown()} {LINK} back after 61 s (lost at {lost_at}: API_DeviceNotExported: Device "
        "xrd/stitcher/1 is not exported (hint: try starting the device server))"
    ]


def test_a_link_lost_and_back_within_the_bound_is_one_note_and_never_an_alarm():
    clock, log = FakeClock(), StatusLog()
    links = UpstreamLinks(alarm_after_s=60, clock=clock, wall=clock)
    links.regained(LINK)
    links.lost(LINK, f"API_DeviceNotExported: {NOT_EXPORTED}")
    clock.now += 3
    links.lost(LINK, "API_CantConnectToDevice: Failed to connect to device xrd/stitcher/1\nDevFailed[ ...")
    assert _state(log, links) == DevState.ON
    links.regained(LINK)
    status = log.status("Started", links.alarm(), links.waiting(), links.notes())
    assert _state(log, links) == DevState.ON
    notes = [line for line in status.splitlines() if line.startswith("Note: ")]
    assert "DevFailed" not in status, status
    assert notes == [  # the latest reason, first line only
        f"Note: {clock.shown()} {LINK} back after 3 s (lost at {clock.shown(clock.now - 3)}: "
        "API_CantConnectToDevice: Failed to connect to device xrd/stitcher/1)"
    ]
    links.clear_notes()  # ClearErrors
    assert links.notes() == []


def test_a_link_coming_up_for_the_first_time_leaves_no_note():
    """An Integrator started a moment before its Stitcher: nothing was lost, nothing to note."""
    clock = FakeClock()
    links = UpstreamLinks(alarm_after_s=60, clock=clock, wall=clock)
    links.lost(LINK, "subscribing ...")
    clock.now += 5
    links.lost(LINK, "API_DeviceNotExported: not exported")
    links.regained(LINK)
    assert links.connected and links.notes() == [] and links.alarm() is None


def _dev_failed(*reasons_and_descs: tuple[str, str]) -> tango.DevFailed:
    errors = []
    for reason, desc in reasons_and_descs:
        error = tango.DevError()
        error.reason, error.desc, error.origin, error.severity = reason, desc, "test", tango.ErrSeverity.ERR
        errors.append(error)
    return tango.DevFailed(*errors)


class FakeStitcher:
    """A Stitcher proxy: out of reach (Tango's DevFailed) while ``out``, else no work; claims recorded."""

    def __init__(self) -> None:
        self.out = True
        self.refuse = False
        self.claims: list[ClaimRequest] = []
        self.attempts = 0

    def dev_name(self) -> str:
        return "xrd/stitcher/1"

    def command_inout(self, command: str, text: str) -> str:
        assert command == "ClaimWork"
        self.attempts += 1
        if self.refuse:
            raise _dev_failed(("XRD_InvalidValue", "ClaimRequest field 'done': expected a list"))
        if self.out:
            raise _dev_failed(
                ("API_DeviceNotExported", NOT_EXPORTED), ("API_CantConnectToDevice", "Failed to connect to device")
            )
        self.claims.append(ClaimRequest.from_json(text))
        return ""


def test_claims_to_a_stitcher_out_of_reach_are_a_link_out_not_a_problem_and_keep_their_acknowledgements():
    stitcher, problems = FakeStitcher(), []
    subscriptions = EventSubscriptions(problems.append, problems.append)
    source = TangoWorkSource(stitcher, subscriptions)
    assert source.claim(ClaimRequest("xrd/integrator/1", {}, ["a"])) is None
    assert source.claim(ClaimRequest("xrd/integrator/1", {}, ["b"])) is None
    assert problems == [] and not subscriptions.connected
    assert subscriptions.waiting()[0].startswith(
        "xrd/stitcher/1 ClaimWork: API_DeviceNotExported: Device xrd/stitcher/1 is not exported (hint: try"
    )
    stitcher.out = False
    assert source.claim(ClaimRequest("xrd/integrator/1", {}, ["c"])) is None
    assert stitcher.claims[0].done == ["a", "b", "c"]  # acknowledged late rather than leases run out
    assert subscriptions.connected and problems == []
    stitcher.refuse = True  # the Stitcher answered and refused: a failure, raised for the stage to report
    with pytest.raises(tango.DevFailed, match="XRD_InvalidValue"):
        source.claim(ClaimRequest("xrd/integrator/1"))


def test_an_integrate_stage_polling_a_stitcher_out_of_reach_reports_no_problem():
    """The path that flooded Status: the stage's claim thread polls while the Stitcher is away."""
    stitcher, problems = FakeStitcher(), []
    subscriptions = EventSubscriptions(problems.append, problems.append)
    stage = IntegrateStage("xrd/integrator/1", None, TangoWorkSource(stitcher, subscriptions), print, problems.append,
                           poll_interval_s=0.05)  # fmt: skip
    try:
        stage.start()
        wait_for(lambda: stitcher.attempts >= 5, 30, "five claims to fail")
        assert problems == [] and not subscriptions.connected
        stitcher.out = False
        wait_for(lambda: subscriptions.connected and stitcher.claims, 30, "a claim to reach the Stitcher")
        assert problems == []
    finally:
        stage.stop()


# -- with real servers -------------------------------------------------------------------------------


@pytest.fixture
def chain(tmp_path):
    db = EmbeddedDatabase(tmp_path / "db", free_port()).start()
    servers: list[ServerProcess] = []
    try:
        specs, names = layout_for(tmp_path, integrators=2)
        specs = [replace(s, properties={**s.properties, "PollInterval": ["0.3"]}) if s.klass == "Integrator" else s
                 for s in specs]  # fmt: skip
        host, port = db.tango_host.split(":")
        register(specs, tango.Database(host, int(port)))
        servers = start_servers(specs, db.tango_host, tmp_path / "logs", timeout_s=120)
        yield tmp_path, db.tango_host, names, servers
    finally:
        stop_servers(servers)
        db.stop()


def _wait_showing(dev: tango.DeviceProxy, predicate, what: str, timeout_s: float = 180) -> None:
    """Wait for ``predicate(dev)``; on timeout, say what the device shows (State and Status)."""
    try:
        wait_for(lambda: predicate(dev), timeout_s, f"{dev.name()}: {what}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nState {dev.state()}, Status:\n{dev.status()}") from None


def _note_naming(status: str, who: str) -> list[str]:
    return [line for line in status.splitlines() if line.startswith("Note: ") and who in line]


@pytest.mark.slow
def test_a_stitcher_restarted_for_3_s_leaves_every_integrator_on_with_a_one_line_note(chain):
    tmp, host, names, servers = chain
    stitcher = tango.DeviceProxy(f"tango://{host}/{STITCHER}")
    poni, mask = write_calibration(tmp / "cal")
    stitcher.poniPath, stitcher.maskPath, stitcher.bins = str(poni), str(mask), 500  # memorized: kept
    integrators = [tango.DeviceProxy(f"tango://{host}/{name}") for name in names]
    for dev in integrators:  # each has claimed from the Stitcher (its link delivered) and is fine
        wait_for(lambda d=dev: d.state() == DevState.ON, 120, f"{dev.name()} ON before the restart")
    old = next(s for s in servers if s.server == "XrdStitcher/demo")
    old.stop()
    time.sleep(3)  # the planned restart: 3 s away
    new = ServerProcess(old.server, old.devices, old.tango_host, old.log_dir).start()
    servers[servers.index(old)] = new
    new.wait_ready(120)

    for dev in integrators:
        _wait_showing(
            dev, lambda d: d.state() == DevState.ON and d.upstreamConnected, "back to ON, without ClearErrors"
        )
        _wait_showing(dev, lambda d: bool(_note_naming(d.status(), STITCHER)), "a note naming the Stitcher")
        status = dev.status()
        print(dev.name(), dev.state(), status, sep="\n")  # shown with -rP
        assert dev.state() == DevState.ON, status
        assert "DevFailed[" not in status and "Recent problems" not in status and "ALARM" not in status, status
        for note in _note_naming(status, STITCHER):
            assert re.match(r"Note: \d\d:\d\d:\d\d \S+", note) and "back after" in note, status
    merger = tango.DeviceProxy(f"tango://{host}/{MERGER}")  # it listens to the Stitcher too
    wait_for(lambda: merger.state() == DevState.ON and merger.upstreamConnected, 180, "the Merger ON")
    # the chain still works: a scan through the restarted Stitcher ends complete
    sim = tango.DeviceProxy(f"tango://{host}/{SIMULATOR}")
    wait_for(lambda: stitcher.upstreamConnected, 120, "the Stitcher to follow the detector again")
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = 20, 10, 20.0
    stem = sim.Start()
    wait_for(lambda: stem in merger.lastOutputFile, 180, f"the merged file of {stem}")
    merged = read_merged(merger.lastOutputFile)
    assert merged["status"] == "complete" and merged["frame_number"].tolist() == list(range(1, 21))
    assert all(dev.state() in (DevState.ON, DevState.RUNNING) for dev in integrators)
