"""A published scan is never reopened, a restart included (issue 17, item 6).

A restarted Merger is sent, on subscribing, the last ``patterns`` value of every Integrator: the last
batches of the scan it published before. It used to open ``<stem>_v001.nxs`` for them, ask for the
"missing" frames ("568 frame(s) missing (1..600); requested again") and publish the scan twice."""

import numpy as np

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.messages import PatternBatch
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import wait_for

ANNOUNCED = 1_700_000_000.0  # the Stitcher's clock when the parts were announced


def _batch(settings, numbers, announced_at, part=0, total=8):
    n = len(numbers)
    return PatternBatch(
        f"scan:{part}:{numbers[0]}", "scan", "lambda", "int0", part, "fp", np.array(numbers), np.arange(n),
        np.tile(np.array(numbers, np.float32)[:, None], (1, 4)), np.arange(4.0), settings=settings.to_dict(),
        raw_file=f"/raw/scan_m1_part{part:05d}.nxs", total_frames=total, announced_at=announced_at,
    )  # fmt: skip


def _publish_scan(tmp_path, settings) -> list:
    closed: list = []
    first = MergeStage(tmp_path, closed.append, print)
    first.add_batch(_batch(settings, [1, 2, 3, 4], ANNOUNCED))
    first.add_batch(_batch(settings, [5, 6, 7, 8], ANNOUNCED + 1, part=1))
    wait_for(lambda: len(closed) == 1)
    first.stop()
    return closed


def _restarted(tmp_path, batches):
    """A new stage on the same output folder, fed ``batches``; returns (closed, errors, requests, stage)."""
    closed, errors, requests = [], [], []
    stage = MergeStage(tmp_path, closed.append, errors.append, gap_check_s=0.0, scan_timeout_s=1.0,
                       request_missing=lambda *args: requests.append(args))  # fmt: skip
    for batch in batches:
        stage.add_batch(batch)
    n = sum(len(b.frame_numbers) for b in batches)
    wait_for(lambda: stage.counters.frames_received == n and stage.queue_depth == 0)
    return closed, errors, requests, stage


def test_a_restarted_merger_ignores_the_redelivered_batches_of_the_scan_it_published(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    published = _publish_scan(tmp_path, settings)[0]
    assert published.path == tmp_path / "scan.nxs" and published.complete
    redelivered = [_batch(settings, [5, 6, 7, 8], ANNOUNCED + 1, part=1), _batch(settings, [7, 8], ANNOUNCED + 1, 1)]
    closed, errors, requests, stage = _restarted(tmp_path, redelivered)
    stage.stop()  # handled in order: the batches are merged or refused before it returns
    assert (closed, errors, requests) == ([], [], [])
    assert sorted(p.name for p in tmp_path.glob("scan*")) == ["scan.nxs"]  # no scan_v001.nxs(.part)
    assert stage.counters.frames_processed == 0 and "scan" in stage.closed
    assert read_merged(tmp_path / "scan.nxs")["frame_number"].tolist() == list(range(1, 9))


def test_frames_of_a_published_scan_that_come_after_a_restart_are_refused_not_merged(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    _publish_scan(tmp_path, settings)
    closed, errors, requests, stage = _restarted(tmp_path, [_batch(settings, [9, 10], ANNOUNCED, part=2, total=10)])
    stage.stop()
    assert closed == [] and requests == []
    assert errors == [  # its 10 frames against the file's 8: the operator is told the file may lack some
        f"batch scan:2:9 came after scan scan was closed: not merged; it announces 10 frames where "
        f"{tmp_path / 'scan.nxs'} was closed with 8: that file may lack frames (reintegrate the acquisition)"
    ]
    assert sorted(p.name for p in tmp_path.glob("scan*")) == ["scan.nxs"]


def test_a_new_processing_of_a_published_scan_id_gets_a_new_file(tmp_path, small_poni):
    """A reintegration numbered again after a Stitcher restart, or the same stem acquired again: its
    parts are announced after everything in the published file, so it is merged, never refused."""
    settings = IntegrationSettings(small_poni, bins=4)
    _publish_scan(tmp_path, settings)
    later = ANNOUNCED + 3600
    batches = [_batch(settings, [1, 2, 3, 4], later), _batch(settings, [5, 6, 7, 8], later, part=1)]
    closed, errors, requests, stage = _restarted(tmp_path, batches)
    wait_for(lambda: len(closed) == 1)
    stage.stop()
    assert errors == [] and closed[0].path == tmp_path / "scan_v001.nxs" and closed[0].complete
    assert read_merged(closed[0].path)["frame_number"].tolist() == list(range(1, 9))
