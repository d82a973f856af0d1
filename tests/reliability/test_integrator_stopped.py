"""An Integrator stopped (SIGSTOP) while it holds leases, past their expiry, then resumed (SIGCONT).

A stopped process is not a dead one: when it resumes it goes on with the items it had claimed,
although the Stitcher has handed them to another Integrator meanwhile. The merged file cannot show
what went wrong (its writer drops a frame that comes twice), so integrations are counted: the
Integrators' ``framesProcessed`` (frames integrated and handed on) add up to the scan's frames,
each frame integrated once.
"""

import os
import signal
import time

import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live import integrate_stage
from pipeline_core.messages import ClaimRequest, WorkItem
from tango_servers.demo import MERGER, SIMULATOR, STITCHER

from ..helpers import wait_for
from .test_process_faults import _proxy, _start_integrator, pipeline  # noqa: F401 (the fixture)

FRAMES = 60
SECOND = 40


class HeldUpClock:
    """``time`` for the integrate stage whose monotonic clock jumps when the test says (a SIGSTOP)."""

    def __init__(self):
        self.jump = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.jump

    def __getattr__(self, name):
        return getattr(time, name)


class Items:
    """A work source handing out ``items`` one per claim and recording what each claim acknowledged."""

    def __init__(self, items):
        self.items, self.acknowledged = list(items), []

    def claim(self, request: ClaimRequest):
        self.acknowledged += request.done
        return self.items.pop(0) if self.items else None


def _item(n: int, lease_s: float) -> WorkItem:
    return WorkItem(f"scan:0:{n}", "scan", "lambda", 0, ["/raw/scan_m1_part00000.nxs"], n, n + 2, [n + 1, n + 2],
                    total_frames=8, error="unreadable on purpose", lease_s=lease_s)  # fmt: skip


def test_an_item_held_past_its_lease_is_dropped_not_integrated_nor_acknowledged(monkeypatch, ledger):
    """The rule the live test below checks end to end, with the clock of a process held up 100 s."""
    clock = HeldUpClock()
    monkeypatch.setattr(integrate_stage, "time", clock)
    source = Items([_item(0, lease_s=0.0), _item(2, lease_s=8.0), _item(4, lease_s=8.0)])
    batches, errors = [], []
    stage = integrate_stage.IntegrateStage("int0", None, source, batches.append, errors.append, poll_interval_s=0.1)
    read = stage._read

    def held_up_while_reading(item, *parts):
        if item.item_id == "scan:0:2":
            clock.jump += 100.0  # SIGSTOP for 100 s, then SIGCONT, between its claim and its integration
        return read(item, *parts)

    stage._read = held_up_while_reading
    try:
        stage.start()
        wait_for(lambda: len(batches) == 2 and not source.items, 30, "the items to be dealt with")
        wait_for(lambda: "scan:0:4" in source.acknowledged, 30, "the last item acknowledged")
    finally:
        stage.stop()
    ledger.fault("an Integrator held up 100 s past its lease (a clock jump)")
    assert [b.item_id for b in batches] == ["scan:0:0", "scan:0:4"]  # no lease told: integrated as before
    assert "scan:0:2" not in source.acknowledged  # its lease is another Integrator's by now
    assert stage.counters.frames_processed + stage.counters.frames_failed == 4
    dropped = [e for e in errors if e.startswith("scan:0:2")]
    assert dropped and "past its lease of 8 s" in dropped[0] and "2 frame(s) dropped" in dropped[0], errors


@pytest.mark.parametrize("pipeline", [{"Merger": {"GapCheck": ["120"]}}], indirect=True)
def test_an_integrator_stopped_past_its_lease_and_resumed_integrates_no_frame_twice(pipeline, ledger):  # noqa: F811
    tmp, host, names, servers = pipeline
    merger, stitcher, sim = _proxy(host, MERGER), _proxy(host, STITCHER), _proxy(host, SIMULATOR)
    _proxy(host, names[0]).Stop()  # AutoStart: the other one waits until the victim holds leases
    victim = _start_integrator(host, tmp, names[1])
    stitcher.Start()
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = FRAMES, 10, 15.0
    stem = sim.Start()
    wait_for(lambda: victim.framesReceived > 0 and stitcher.itemsLeased > 0, 180, "the victim to hold a lease")
    process = next(s for s in servers if s.server == "XrdIntegrator/demo2").process
    processed_at_stop = victim.framesProcessed
    os.kill(process.pid, signal.SIGSTOP)
    try:
        leased = stitcher.itemsLeased
        assert leased > 0
        other = _start_integrator(host, tmp, names[0])
        # past the lease (8 s): what the victim holds is handed out again, and integrated by the other
        wait_for(lambda: stitcher.itemsRequeued >= leased, 120, "the stopped Integrator's leases to expire")
        wait_for(lambda: sim.framesWritten == FRAMES and stitcher.itemsLeased == 0, 180,
                 "every item integrated by the other Integrator")  # fmt: skip
    finally:
        os.kill(process.pid, signal.SIGCONT)
    ledger.fault("SIGSTOP of an Integrator past its lease, then SIGCONT")
    wait_for(lambda: merger.lastOutputFile != "", 180, f"the merged file of {stem}")
    m = read_merged(merger.lastOutputFile)
    assert m["status"] == "complete" and m["frame_number"].tolist() == list(range(1, FRAMES + 1))
    assert m["failed_frames"] == []
    ledger.checked(FRAMES)

    # resumed, the victim goes on with the items it had claimed (its queue is first in, first out):
    # once it has integrated an item of a second scan, it is done with everything of the first
    first_file = merger.lastOutputFile
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = SECOND, 10, 15.0
    second = sim.Start()
    wait_for(lambda: victim.currentScan == second, 180, f"the resumed Integrator to integrate {second}")
    wait_for(lambda: merger.lastOutputFile != first_file, 180, f"the merged file of {second}")
    assert read_merged(merger.lastOutputFile)["frame_number"].tolist() == list(range(1, SECOND + 1))
    ledger.checked(SECOND)
    integrated = victim.framesProcessed + other.framesProcessed
    assert integrated == FRAMES + SECOND, (
        f"{integrated} frames integrated for {FRAMES} + {SECOND}: the victim handed on {victim.framesProcessed} "
        f"({processed_at_stop} before SIGSTOP, resumed with {leased} item(s) it no longer held), "
        f"the other {other.framesProcessed}"
    )
