"""The live stages wired with plain callbacks (no Tango): announcements in, merged file out."""

import time

import numpy as np
import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.live.work_source import InProcessWorkSource
from pipeline_core.messages import ClaimRequest, MessageError, PatternBatch, ScanInfo, WorkItem
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import LambdaSource

from .helpers import wait_for, write_small_acquisition


class Chain:
    """Stitch → N integrators → merge, the way the devices wire them, but with direct calls."""

    def __init__(self, tmp_path, settings, n_integrators=2, module_timeout_s=30.0):
        self.errors: list[str] = []
        self.closed = []
        self.scans: list[ScanInfo] = []
        self.merge = MergeStage(tmp_path / "processed", self.closed.append, self.errors.append, scan_timeout_s=30)
        self.stitch = StitchStage(
            StitchConfig(frames_per_item=2, module_timeout_s=module_timeout_s, open_retry_delay_s=0.01),
            on_scan=self._scan,
            on_work=self._work,
            on_error=self.errors.append,
        )
        self.integrators = [
            IntegrateStage(
                f"int{i}",
                settings,
                InProcessWorkSource(self.stitch),
                self._batch,
                self.errors.append,
                poll_interval_s=0.2,
            )
            for i in range(n_integrators)
        ]
        for stage in self.integrators:
            stage.start()

    def _scan(self, info):
        self.scans.append(info)
        self.merge.scan_started(info)

    def _work(self, n):
        for stage in self.integrators:
            stage.wake()

    def _batch(self, batch: PatternBatch):
        fmt, payload = batch.encode()  # through the wire format, as over Tango
        self.merge.add_batch(PatternBatch.decode(fmt, payload))

    def stop(self):
        for s in self.integrators:
            s.stop()
        self.stitch.stop()
        self.merge.stop()


def test_chain_merges_every_frame_once_and_equals_offline(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=3, frames_per_part=5)
    settings = IntegrationSettings(small_poni, bins=30)
    chain = Chain(tmp_path, settings, n_integrators=2)
    try:
        for f in reversed(acq["files"]):  # announced out of order, and every file twice
            chain.stitch.announce(str(f))
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.stitch.counters.parts_done == 3)
        wait_for(lambda: chain.merge.counters.frames_processed == 15)
        assert chain.closed == []  # these small files do not say how many frames there are: close by hand
        chain.merge.finish("scan_00001")
        wait_for(lambda: len(chain.closed) == 1)
    finally:
        chain.stop()
    assert chain.errors == []
    (summary,) = chain.closed
    live = read_merged(summary.path)
    assert live["frame_number"].tolist() == list(range(1, 16))
    offline = integrate_source(LambdaSource.from_file(acq["files"][0]), settings, tmp_path / "offline.nxs")
    ref = read_merged(offline.output)
    np.testing.assert_array_equal(live["data"], ref["data"])
    np.testing.assert_array_equal(live["pos_map"], ref["pos_map"])
    assert live["files"] == ref["files"]
    assert sum(s.counters.frames_processed for s in chain.integrators) == 15
    assert all(s.counters.frames_processed > 0 for s in chain.integrators)
    # each Integrator let go of the part it kept open for its next items once the work stopped coming
    assert not any(s._open_parts.held for s in chain.integrators)


def test_part_with_a_missing_module_fails_after_timeout_and_is_listed(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=3)
    (tmp_path / "raw" / "scan_00001_m3_part00001.nxs").unlink()
    chain = Chain(tmp_path, IntegrationSettings(small_poni, bins=10), n_integrators=1, module_timeout_s=0.5)
    try:
        for f in acq["files"]:
            if f.exists():
                chain.stitch.announce(str(f))
        wait_for(lambda: chain.stitch.counters.parts_done == 2)
        wait_for(lambda: chain.merge.counters.frames_failed == 3)
        chain.merge.finish("scan_00001")
        wait_for(lambda: len(chain.closed) == 1)
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == [1, 2, 3]
    assert m["failed_frames"] == ["4-6", ""]  # these small files do not say how many frames there are
    assert "scan_00001_m3_part00001.nxs not written within" in m["failed_reasons"][0]
    assert "never announced; closed by stopped by the operator: frames after 6" in m["failed_reasons"][1]
    assert m["status"] == "incomplete"
    assert any("not written within" in e for e in chain.errors)


def test_reintegration_writes_a_new_file_with_new_settings(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=2)
    chain = Chain(tmp_path, IntegrationSettings(small_poni, bins=10), n_integrators=1)
    try:
        chain.stitch.reintegrate(str(tmp_path / "raw"))
        wait_for(lambda: chain.merge.counters.frames_processed == 4)
        chain.merge.finish(chain.scans[0].scan)
        wait_for(lambda: len(chain.closed) == 1)
        chain.integrators[0].set_settings(IntegrationSettings(small_poni, bins=20))
        chain.stitch.reintegrate(str(acq["files"][0]))
        wait_for(lambda: chain.merge.counters.frames_processed == 8)
        chain.merge.finish(chain.scans[1].scan)
        wait_for(lambda: len(chain.closed) == 2)
    finally:
        chain.stop()
    first, second = chain.closed
    assert (first.path.name, second.path.name) == ("scan_00001.nxs", "scan_00001_v001.nxs")
    assert read_merged(first.path)["data"].shape == (4, 10)
    assert read_merged(second.path)["data"].shape == (4, 20)


def test_batches_with_other_settings_are_refused(tmp_path, small_poni):
    closed, errors = [], []
    merge = MergeStage(tmp_path, closed.append, errors.append)
    settings = IntegrationSettings(small_poni, bins=4)

    def batch(numbers, fingerprint):
        n = len(numbers)
        return PatternBatch(
            "i",
            "scan",
            "det",
            "int0",
            0,
            fingerprint,
            np.array(numbers),
            np.arange(n),
            np.ones((n, 4), np.float32),
            np.arange(4.0),
            settings=settings.to_dict(),
            raw_file="/raw/scan_m1.nxs",
            total_frames=4,
        )

    merge.add_batch(batch([1, 2], "aaaa"))
    merge.add_batch(batch([3, 4], "bbbb"))
    wait_for(lambda: len(closed) == 1)
    merge.stop()
    m = read_merged(closed[0].path)
    assert m["frame_number"].tolist() == [1, 2]
    assert "other settings" in m["failed_reasons"][0] and m["failed_frames"] == ["3-4"]


def test_work_item_round_trip():
    item = WorkItem("s:0:0", "s", "lambda", 0, ["/a_m1.nxs"], 0, 2, [1, 2], 10)
    assert WorkItem.from_json(item.to_json()) == item
    with pytest.raises(MessageError, match="version 99 is not supported"):
        WorkItem.from_json(item.to_json().replace('"version":1', '"version":99'))


class FakeClock:
    """Monotonic seconds that move only when the test says so (leases without sleeping)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _stage(clock, **config):
    errors: list[str] = []
    cfg = StitchConfig(frames_per_item=2, open_retry_delay_s=0.01, lease_s=10.0, **config)
    return StitchStage(cfg, lambda info: None, lambda n: None, errors.append, clock=clock), errors


def _drain(stage, claimant):
    items = []
    while (item := stage.claim(ClaimRequest(claimant))) is not None:
        items.append(item)
    return items


def test_a_requeue_settles_the_old_lease_so_the_frames_are_handed_out_once_more(tmp_path):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1, frames_per_part=4)
    clock = FakeClock()
    stage, errors = _stage(clock)
    try:
        for f in acq["files"]:
            stage.announce(str(f))
        wait_for(lambda: stage.queue_depth == 2)
        dead = stage.claim(ClaimRequest("doomed"))  # frames 1, 2: claimed, then the Integrator is killed
        assert dead.frame_numbers == [1, 2] and stage.leased == 1
        stage.requeue_frames("scan_00001", [1, 2])  # the Merger's gap check asks for them
        wait_for(lambda: stage.queue_depth == 2 and stage.leased == 0, what="the lease settled by the requeue")
        clock.now += 60  # far past the old lease: nothing may come back from it
        assert stage.expire_leases() == 0
        handed = _drain(stage, "survivor")
        clock.now += 60
        stage.claim(ClaimRequest("survivor", done=[i.item_id for i in handed]))
        assert stage.expire_leases() == 0 and stage.claim(ClaimRequest("survivor")) is None
    finally:
        stage.stop()
    assert sorted(n for i in handed for n in i.frame_numbers) == [1, 2, 3, 4]  # 1, 2 exactly once more
    assert stage.counters.items_requeued == 1 and errors == []


def test_frames_whose_integrators_die_twice_go_down_the_chain_as_failed(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1, frames_per_part=4, record_total=True)
    clock = FakeClock()
    stage, errors = _stage(clock)
    try:
        for f in acq["files"]:
            stage.announce(str(f))
        wait_for(lambda: stage.queue_depth == 2)
        first = stage.claim(ClaimRequest("int1"))  # the data kills int1 ...
        clock.now += 11
        assert stage.expire_leases() == 1
        again = stage.claim(ClaimRequest("int2"))  # ... handed out again, and kills int2
        assert again.item_id == first.item_id
        clock.now += 11
        assert stage.expire_leases() == 1
        items = _drain(stage, "int3")
    finally:
        stage.stop()
    failed = next(i for i in items if i.error)
    assert failed.frame_numbers == [1, 2] and [i.frame_numbers for i in items if not i.error] == [[3, 4]]
    assert "Integrators taking this item died twice (corrupt data?)" in failed.error
    assert all(str(f) in failed.error for f in acq["files"][:3])
    assert stage.counters.items_requeued == 1 and stage.counters.frames_failed == 2
    assert any("died twice" in e for e in errors)

    # the Integrator that takes the failed item reads nothing and hands the failure on; the Merger lists it
    closed, merge_errors = [], []
    merge = MergeStage(tmp_path / "out", closed.append, merge_errors.append)
    integrator = IntegrateStage("int3", IntegrationSettings(small_poni, bins=10), None, merge.add_batch, print)
    try:
        merge.scan_started(ScanInfo("scan_00001", "lambda", "scan_00001", 4))
        for item in items:
            integrator.process(item)
        wait_for(lambda: len(closed) == 1)
    finally:
        integrator.stop()
        merge.stop()
    m = read_merged(closed[0].path)
    assert m["frame_number"].tolist() == [3, 4] and m["failed_frames"] == ["1-2"]
    assert "died twice" in m["failed_reasons"][0] and m["status"] == "incomplete"


def test_every_queue_a_client_fills_is_bounded_and_refuses_beyond(tmp_path):
    from pipeline_core.live.stitch_stage import QueueFull

    write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=2)  # 2 items per acquisition
    stage, errors = _stage(FakeClock(), max_items=5, max_reintegrations=3, max_requeues=2)
    accepted, refused = 0, []
    try:
        for _ in range(100):
            try:
                stage.reintegrate(str(tmp_path / "raw"))
                accepted += 1
            except QueueFull as exc:
                refused.append(str(exc))
        assert refused and "bound MaxReintegrations = 3" in refused[0]
        assert stage.pending_reintegrations <= 3 and 3 <= accepted <= 3 + 3  # 3 fit in the 5 items
        wait_for(lambda: stage.queue_depth >= 5)
        assert stage.queue_depth <= 5 + 1  # a part adds at most its own items past the bound
        with pytest.raises(QueueFull, match=r"work items are waiting \(bound MaxItems = 5\)"):
            stage.requeue_frames("scan_00001#r1", [1])
        handed = []
        deadline = time.monotonic() + 120  # bounded: a stage that stops handing out work fails, never hangs
        while stage.pending_reintegrations or stage.queue_depth:  # Integrators catch up: the waiting parts follow
            assert time.monotonic() < deadline, (
                f"work still waiting after 120 s: {stage.pending_reintegrations} reintegration(s), "
                f"{stage.queue_depth} item(s); {len(handed)} handed out"
            )
            handed += _drain(stage, "int")
            time.sleep(0.05)
    finally:
        stage.stop()
    assert len(handed) == 2 * accepted  # every accepted reintegration, each of its 2 parts once, none lost
    assert errors == []
