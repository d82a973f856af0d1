"""Guarantees of the live stages under faults, without Tango: lost events, dead Integrators, floods,
paths outside the data root. Each test breaks something for real, then checks the file frame by frame."""

import threading

import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.integrate import IntegrationSettings
from pipeline_core.integrate_stage import IntegrateStage
from pipeline_core.merge_stage import MergeStage
from pipeline_core.messages import PatternBatch
from pipeline_core.nexus import read_merged
from pipeline_core.stitch_stage import StitchConfig, StitchStage

from ..conftest import wait_for, write_small_acquisition


class LossyChain:
    """Stitch → integrators → merge; ``drop`` decides which pattern batches get "lost on the wire"."""

    def __init__(self, tmp_path, poni, drop=lambda batch: False, lease_s=60.0, roots=(), max_pending=10_000):
        self.errors: list[str] = []
        self.closed = []
        self.dropped: list[str] = []
        self._drop = drop
        self._lock = threading.Lock()
        self.stitch = StitchStage(
            StitchConfig(
                frames_per_item=2, open_retry_delay_s=0.01, lease_s=lease_s, data_roots=roots, max_pending=max_pending
            ),
            on_scan=lambda info: self.merge.scan_started(info),
            on_work=self._work,
            on_error=self.errors.append,
        )
        self.merge = MergeStage(
            tmp_path / "out",
            self.closed.append,
            self.errors.append,
            scan_timeout_s=20,
            request_missing=self.stitch.requeue_frames,
            gap_check_s=0.5,
        )
        self.integrators = []

    def add_integrator(self, name, settings):
        stage = IntegrateStage(
            name,
            settings,
            lambda: self.stitch.claim(name, stage.take_done()),
            self._batch,
            self.errors.append,
            poll_interval_s=0.1,
        )
        stage.start()
        self.integrators.append(stage)
        return stage

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


@pytest.fixture
def settings(small_poni):
    return IntegrationSettings(small_poni, bins=10)


def test_lost_pattern_events_are_found_by_the_gap_check_and_redone(tmp_path, settings):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=3, frames_per_part=4, record_total=True)
    first_seen: set[str] = set()

    def drop_first_time(batch):  # every second item is lost the first time it is sent
        part_start = batch.item_id.split(":")[1:3]
        key = ":".join(part_start)
        if key not in first_seen and int(part_start[1]) % 4 == 2:
            first_seen.add(key)
            return True
        return False

    chain = LossyChain(tmp_path, settings.poni_path, drop=drop_first_time)
    chain.add_integrator("int0", settings)
    try:
        for f in acq["files"]:
            chain.stitch.announce(str(f))
        wait_for(lambda: len(chain.closed) == 1)
    finally:
        chain.stop()
    assert len(chain.dropped) == 3
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == list(range(1, 13))  # every frame once, none failed
    assert m["failed_frames"] == [] and m["status"] == "complete"
    assert chain.stitch.counters.items_requeued == 3


def test_an_integrator_that_dies_holding_work_is_replaced_after_its_lease(tmp_path, settings):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=4, record_total=True)
    chain = LossyChain(tmp_path, settings.poni_path, lease_s=0.5)
    try:
        for f in acq["files"]:
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.stitch.queue_depth == 4)
        stolen = [chain.stitch.claim("doomed"), chain.stitch.claim("doomed")]  # claimed, then "kill -9"
        assert all(stolen) and chain.stitch.leased == 2
        chain.add_integrator("survivor", settings)
        wait_for(lambda: len(chain.closed) == 1)
        wait_for(lambda: chain.stitch.leased == 0)  # the survivor acknowledges with its next claim
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == list(range(1, 9))
    assert m["status"] == "complete"
    assert chain.stitch.counters.items_requeued == 2


def test_frames_that_never_come_are_listed_after_asking_again(tmp_path, settings):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=3, record_total=True)
    chain = LossyChain(tmp_path, settings.poni_path, drop=lambda b: b.part == 1)  # part 1 never arrives
    chain.merge.max_requests = 2
    chain.merge.scan_timeout_s = 2.5
    chain.add_integrator("int0", settings)
    try:
        for f in acq["files"]:
            chain.stitch.announce(str(f))
        wait_for(lambda: len(chain.closed) == 1)
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == [1, 2, 3]
    assert m["failed_frames"] == ["4-6"] and "asked again 2 time(s)" in m["failed_reasons"][0]
    assert m["status"] == "incomplete"
    assert chain.dropped and all(item_id.split(":")[1] == "1" for item_id in chain.dropped)  # part 1, resent


def test_a_flood_of_announcements_is_bounded_reported_and_recoverable(tmp_path, settings):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=2, record_total=True)
    chain = LossyChain(tmp_path, settings.poni_path, max_pending=3)
    try:
        for _ in range(40):
            for f in acq["files"]:
                chain.stitch.announce(str(f))
        refused = chain.stitch.counters.announcements_refused
        assert refused > 0
        assert any("announcement queue full (3)" in e for e in chain.errors)
        chain.add_integrator("int0", settings)
        wait_for(lambda: len(chain.closed) == 1)
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == [1, 2, 3, 4]  # the duplicates of the flood were ignored


def test_paths_outside_the_data_root_are_refused(tmp_path, settings):
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
    finally:
        chain.stop()


def test_a_file_still_being_written_is_retried_then_read(tmp_path):
    from pipeline_core.hdf5_io import open_h5

    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    path = acq["files"][0]
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # the detector is still writing it
    threading.Timer(0.3, path.write_bytes, args=(whole,)).start()
    with open_h5(path, retries=10, delay_s=0.1) as h5:
        assert h5["entry/instrument/detector/data"].shape == (3, 20, 30)


def test_a_file_that_stays_unreadable_fails_with_the_attempts_named(tmp_path):
    from pipeline_core.errors import SourceError
    from pipeline_core.hdf5_io import open_h5

    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    path = acq["files"][0]
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(SourceError, match=r"is truncated: 3000 bytes on disk.*after 3 attempts over 0.2 s"):
        open_h5(path, retries=2, delay_s=0.1)
