"""Guarantees of the live stages under faults, without Tango: lost events, dead Integrators, floods,
paths outside the data root. Each test breaks something for real, then checks the file frame by frame."""

import os
import threading
import time

import pytest

from pipeline_core.errors import ConfigError, SourceError, UpstreamError
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.live.work_queue import QueueFull
from pipeline_core.live.work_source import InProcessWorkSource
from pipeline_core.messages import ClaimRequest, PatternBatch
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import wait_for, write_small_acquisition


class LossyChain:
    """Stitch → integrators → merge; ``drop`` decides which pattern batches get "lost on the wire"."""

    def __init__(self, tmp_path, poni, drop=lambda batch: False, lease_s=60.0, roots=(), max_pending=10_000,
                 scan_timeout_s=120.0, gap_check_s=10.0, clock=time.monotonic, stitcher_up=lambda: True):
        """Defaults are the stages' (README's); a test passes another value only when it is about
        that value. One exception: ``frames_per_item=2`` (the default 16 would put a whole small
        part in one item, so nothing could be lost item by item)."""
        self.errors: list[str] = []
        self.closed = []
        self.dropped: list[str] = []
        self.requests: list[list[int]] = []  # the frames the Merger asked for again, ask by ask
        self.refused = 0  # requests made while ``stitcher_up()`` was false (a Stitcher restarting)
        self._stitcher_up = stitcher_up
        self._drop = drop
        self._lock = threading.Lock()
        self.stitch = StitchStage(
            StitchConfig(frames_per_item=2, lease_s=lease_s, data_roots=roots, max_pending=max_pending),
            on_scan=lambda info: self.merge.scan_started(info),
            on_work=self._work,
            on_error=self.errors.append,
            clock=clock,
        )
        self.merge = MergeStage(
            tmp_path / "out",
            self.closed.append,
            self.errors.append,
            scan_timeout_s=scan_timeout_s,
            request_missing=self._request_missing,
            gap_check_s=gap_check_s,
        )
        self.integrators = []

    def add_integrator(self, name, settings):
        stage = IntegrateStage(
            name,
            settings,
            InProcessWorkSource(self.stitch),
            self._batch,
            self.errors.append,
        )
        stage.start()
        self.integrators.append(stage)
        return stage

    def _request_missing(self, scan, numbers, raw_file):
        """What the Merger device does: a Stitcher that cannot take the request now (down, or at its
        bound) is an UpstreamError; another refusal is for good."""
        if not self._stitcher_up():
            self.refused += 1
            raise UpstreamError("test/stitcher did not take the request (API_CantConnectToDevice: down)")
        try:
            self.stitch.requeue_frames(scan, numbers, raw_file)
        except QueueFull as exc:
            raise UpstreamError(str(exc)) from exc
        self.requests.append(list(numbers))

    def _work(self, n):
        for s in self.integrators:
            s.wake()

    def _batch(self, batch: PatternBatch):
        with self._lock:
            if self._drop(batch):
                self.dropped.append(batch.item_id)
                return
        self.merge.add_batch(batch)

    def stop(self):
        for s in self.integrators:
            s.stop()
        self.stitch.stop()
        self.merge.stop()

    def merge_one_scan(self, files) -> None:
        """Announce ``files``, wait until the Merger has closed the scan, stop everything."""
        try:
            for f in files:
                self.stitch.announce(str(f))
            wait_for(lambda: len(self.closed) == 1)
        finally:
            self.stop()


@pytest.fixture
def settings(small_poni):
    return IntegrationSettings(small_poni, bins=10)


def test_lost_pattern_events_are_found_by_the_gap_check_and_redone(tmp_path, settings, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=3, frames_per_part=4, record_total=True)
    first_seen: set[str] = set()

    def drop_first_time(batch):  # every second item is lost the first time it is sent
        part_start = batch.item_id.split(":")[1:3]
        key = ":".join(part_start)
        if key not in first_seen and int(part_start[1]) % 4 == 2:
            first_seen.add(key)
            return True
        return False

    # the gap check is what is tested: 0.5 s of quiet instead of the default 10 s keeps it to seconds
    chain = LossyChain(tmp_path, settings.poni_path, drop=drop_first_time, gap_check_s=0.5)
    chain.add_integrator("int0", settings)
    chain.merge_one_scan(acq["files"])
    assert len(chain.dropped) == 3
    ledger.fault("pattern batch lost", len(chain.dropped))
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == list(range(1, 13))  # every frame once, none failed
    ledger.checked(len(m["frame_number"]))
    assert m["failed_frames"] == [] and m["status"] == "complete"
    # every lost batch asked for again; a stall of over 0.5 s may make the gap check ask for late ones too
    assert chain.stitch.counters.items_requeued >= 3


class FakeClock:
    """Monotonic seconds that move only when the test says so: a lease runs out exactly when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_integrator_that_dies_holding_work_is_replaced_after_its_lease(tmp_path, settings, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=4, record_total=True)
    clock = FakeClock()
    chain = LossyChain(tmp_path, settings.poni_path, clock=clock)  # the default lease, 60 s
    try:
        for f in acq["files"]:
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.stitch.queue_depth == 4)
        doomed = ClaimRequest("doomed")
        stolen = [chain.stitch.claim(doomed), chain.stitch.claim(doomed)]  # claimed, then "kill -9"
        assert all(stolen) and chain.stitch.leased == 2
        ledger.fault("Integrator dead holding a lease", len(stolen))
        chain.add_integrator("survivor", settings)
        # the survivor does the rest and acknowledges it (with its next claim): only the dead one's leases remain
        wait_for(lambda: chain.merge.counters.frames_processed == 4 and chain.stitch.leased == 2)
        clock.now += 59.0
        assert chain.stitch.expire_leases() == 0 and chain.stitch.leased == 2  # not before the lease runs out
        clock.now += 2.0
        wait_for(lambda: len(chain.closed) == 1)
        wait_for(lambda: chain.stitch.leased == 0)
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == list(range(1, 9))
    ledger.checked(len(m["frame_number"]))
    assert m["status"] == "complete"
    stolen_frames = sorted(n for item in stolen for n in item.frame_numbers)
    assert len(stolen_frames) == 4 and chain.stitch.counters.items_requeued == 2
    assert chain.merge.counters.frames_processed == 8 and chain.errors == []


def test_frames_that_never_come_are_listed_after_asking_again(tmp_path, settings, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=3, record_total=True)
    # part 1 never arrives. Asking again and closing at the timeout are what is tested, so both wait
    # less than their defaults (10 s, 120 s: seconds instead of minutes); the number of asks is the
    # default, 3 (README)
    chain = LossyChain(tmp_path, settings.poni_path, drop=lambda b: b.part == 1, scan_timeout_s=2.5, gap_check_s=0.5)
    assert chain.merge.gap_policy.max_requests == 3
    chain.add_integrator("int0", settings)
    chain.merge_one_scan(acq["files"])
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == [1, 2, 3]
    ledger.checked(len(m["frame_number"]))
    assert m["failed_frames"] == ["4-6"] and "asked again 3 time(s)" in m["failed_reasons"][0]
    assert m["status"] == "incomplete"
    assert chain.requests == [[4, 5, 6]] * 3
    ledger.fault("pattern batch lost", len(chain.dropped))  # part 1, each time it is sent
    assert chain.dropped and all(item_id.split(":")[1] == "1" for item_id in chain.dropped)  # part 1, resent


def test_a_stitcher_that_never_takes_the_requests_leaves_the_scan_to_its_time_out_saying_so(tmp_path, settings, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=3, record_total=True)
    # the gap check runs each second the stage is idle: 5.5 s leave it 5 requests, more than the 3 it may make
    chain = LossyChain(tmp_path, settings.poni_path, drop=lambda b: b.part == 1, scan_timeout_s=5.5, gap_check_s=0.3,
                       stitcher_up=lambda: False)  # fmt: skip
    chain.add_integrator("int0", settings)
    chain.merge_one_scan(acq["files"])
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == [1, 2, 3] and m["status"] == "incomplete"
    assert m["failed_frames"] == ["4-6"] and chain.requests == []
    # more than the 3 requests a scan may make, none counted; said once in Status, counted in the file
    assert chain.refused > 3, chain.refused
    reason = m["failed_reasons"][0]
    assert reason == f"never arrived (no news for 5.5 s, {chain.refused} request(s) not taken by the Stitcher)", reason
    said = [e for e in chain.errors if "did not take the request" in e]
    assert len(said) == 1 and said[0].endswith("asked again every 0.3 s until it does (the scan closes after 5.5 s "
                                               "without news)"), chain.errors  # fmt: skip
    ledger.fault("Stitcher not taking requests", chain.refused)
    ledger.checked(len(m["frame_number"]))


def test_a_flood_of_announcements_is_bounded_reported_and_recoverable(tmp_path, settings, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=2, record_total=True)
    # what the refused announcements held comes back through the Merger's gap check (0.5 s instead of 10 s)
    chain = LossyChain(tmp_path, settings.poni_path, max_pending=3, gap_check_s=0.5)
    try:
        for _ in range(40):
            for f in acq["files"]:
                chain.stitch.announce(str(f))
        refused = chain.stitch.counters.announcements_refused
        assert refused > 0
        ledger.fault("announcement past the bound", refused)
        assert any("announcement queue full (3)" in e for e in chain.errors)
        chain.add_integrator("int0", settings)
        wait_for(lambda: len(chain.closed) == 1)
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == [1, 2, 3, 4]  # the duplicates of the flood were ignored
    ledger.checked(len(m["frame_number"]))
    assert all(set(asked) <= {3, 4} for asked in chain.requests)  # only the part whose files were refused


def test_paths_outside_the_data_root_are_refused(tmp_path, settings, ledger):
    write_small_acquisition(tmp_path / "raw", n_parts=1)
    outside = write_small_acquisition(tmp_path / "elsewhere", n_parts=1)
    (tmp_path / "raw" / "link").symlink_to(tmp_path / "elsewhere")
    chain = LossyChain(tmp_path, settings.poni_path, roots=(str(tmp_path / "raw"),))
    try:
        with pytest.raises(ConfigError, match="outside the allowed root"):
            chain.stitch.reintegrate(str(tmp_path / "raw" / ".." / "elsewhere"))
        chain.stitch.announce(str(tmp_path / "raw" / "link" / outside["files"][0].name))
        wait_for(lambda: any("announced file" in e and "outside the allowed root" in e for e in chain.errors))
        assert chain.stitch.counters.parts_done == 0
        ledger.fault("path escape", 2)  # a reintegration, an announcement
    finally:
        chain.stop()


def test_a_file_still_being_written_is_retried_then_read(tmp_path, monkeypatch, ledger):
    """The file heals right after the first attempt saw it cut short (observed, not timed), and the
    second attempt, after the default delay, reads it."""
    from pipeline_core.formats import hdf5_io

    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    path = acq["files"][0]
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # the detector is still writing it
    attempts: list[str] = []
    real_check = hdf5_io.check_not_truncated

    def check_then_heal(p):
        try:
            real_check(p)
            attempts.append("whole")
        except SourceError:
            attempts.append("truncated")
            healed = p.with_name(p.name + ".tmp")
            healed.write_bytes(whole)
            os.replace(healed, p)  # the detector finishes the file while we wait
            raise

    monkeypatch.setattr(hdf5_io, "check_not_truncated", check_then_heal)
    with hdf5_io.open_h5(path) as h5:
        assert h5["entry/instrument/detector/data"][()].tolist() == acq["modules"][1][0].tolist()
    assert attempts == ["truncated", "whole"]
    ledger.fault("file read while half written")


def test_a_file_that_stays_unreadable_fails_with_the_attempts_named(tmp_path, ledger):
    from pipeline_core.formats.hdf5_io import open_h5

    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    path = acq["files"][0]
    path.write_bytes(path.read_bytes()[:3000])
    ledger.fault("truncated file")
    # the defaults: 3 retries 0.5 s apart
    with pytest.raises(SourceError, match=r"is truncated: 3000 bytes on disk.*after 4 attempts over 1.5 s"):
        open_h5(path)
