"""A scan where nothing integrates still ends in a published merged file (issue 17, item 4).

Truncated, zero-length, missing module, count mismatch, all chunks corrupt: every work item fails,
the Integrators send batches of failures only, and the Merger used to hold them waiting for a first
pattern (its file's radial axis) that never came: no file at all. Now the file is written anyway,
as offline ``integrate`` does when every frame fails: status ``incomplete``, no rows, every frame
listed with its file and reason."""

import numpy as np

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.integrate_stage import failed_batch
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.messages import PatternBatch, WorkItem
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import wait_for

REASON = "module file /raw/scan_m2_part{p:05d}.nxs is truncated (eof 1000, stored_eof 5000)"


def _item(settings, part, numbers, total):
    """A work item of ``numbers`` as the Stitcher stamps it (the scan's settings), for part ``part``."""
    return WorkItem(
        f"scan:{part}:0", "scan", "lambda", part, [f"/raw/scan_m{k}_part{part:05d}.nxs" for k in (1, 2, 3)],
        0, len(numbers), list(numbers), total, settings=settings.to_dict(), settings_hash=settings.fingerprint(),
    )  # fmt: skip


def _failed(settings, part, numbers, total=8):
    """The batch an Integrator sends for an item it could not read (its own function)."""
    return failed_batch(_item(settings, part, numbers, total), "int0", REASON.format(p=part), settings.bins)


def _stage(tmp_path, **options):
    closed, errors = [], []
    return MergeStage(tmp_path, closed.append, errors.append, **options), closed, errors


def _check_failed_only(path, parts):
    m = read_merged(path)
    assert m["status"] == "incomplete" and m["finished"]
    assert m["frame_number"].tolist() == [] and m["data"].shape == (0, 4)
    assert m["failed_frames"] == [f"{1 + 4 * p}-{4 + 4 * p}" for p in parts]
    assert m["failed_reasons"] == [REASON.format(p=p) for p in parts]
    assert m["failed_files"] == [f"/raw/scan_m1_part{p:05d}.nxs" for p in parts]
    return m


def test_a_scan_where_every_frame_failed_is_published_listing_each_frame(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    stage, closed, errors = _stage(tmp_path)
    stage.add_batch(_failed(settings, 1, [5, 6, 7, 8]))
    stage.add_batch(_failed(settings, 0, [1, 2, 3, 4]))
    wait_for(lambda: len(closed) == 1)
    stage.stop()
    assert closed[0].path == tmp_path / "scan.nxs" and not closed[0].complete and errors == []
    assert (closed[0].frames_merged, closed[0].frames_failed) == (0, 8)
    m = _check_failed_only(closed[0].path, [1, 0])
    assert np.isnan(m["binning"]).all() and len(m["binning"]) == 4  # nothing integrated: no axis to show
    assert stage.counters.frames_failed == 8 and stage.counters.frames_processed == 0
    assert not list(tmp_path.glob("scan.nxs.*"))  # no part, journal or row log left


def test_failures_of_a_scan_of_unknown_length_are_published_at_the_scan_timeout(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    stage, closed, errors = _stage(tmp_path, scan_timeout_s=0.5)
    stage.add_batch(_failed(settings, 0, [1, 2, 3, 4], total=None))
    wait_for(lambda: len(closed) == 1, timeout_s=15)
    stage.stop()
    m = read_merged(closed[0].path)
    assert m["status"] == "incomplete" and m["frame_number"].tolist() == []
    assert m["failed_frames"] == ["1-4", ""]  # and after 4? the length was never announced: the file says so
    assert m["failed_reasons"] == [
        REASON.format(p=0),
        "the acquisition's frame count was never announced; closed by no news for 0.5 s: frames after 4 cannot "
        "be vouched for",
    ]


def test_missing_frames_of_a_failed_scan_are_asked_for_then_listed(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    requests: list = []
    stage, closed, errors = _stage(tmp_path, scan_timeout_s=1.5, gap_check_s=0.2, max_requests=1,
                                   request_missing=lambda *a: requests.append(a))  # fmt: skip
    stage.add_batch(_failed(settings, 0, [1, 2, 3, 4]))
    wait_for(lambda: len(closed) == 1, timeout_s=15)
    stage.stop()
    assert requests == [("scan", [5, 6, 7, 8], "/raw/scan_m1_part00000.nxs")]
    m = read_merged(closed[0].path)
    assert m["failed_frames"] == ["1-4", "5-8"] and m["status"] == "incomplete"
    assert m["failed_reasons"][1] == "never arrived (no news for 1.5 s, asked again 1 time(s))"


def test_the_operator_stop_publishes_a_scan_that_has_only_failures(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    stage, closed, errors = _stage(tmp_path)
    stage.add_batch(_failed(settings, 0, [1, 2, 3, 4]))
    wait_for(lambda: stage.counters.frames_received == 4)
    stage.finish("scan")
    wait_for(lambda: len(closed) == 1)
    stage.stop()
    m = read_merged(closed[0].path)
    assert m["failed_frames"] == ["1-4", "5-8"]
    assert m["failed_reasons"][1] == "never arrived (stopped by the operator)"


def test_failures_before_the_first_pattern_go_into_the_file_it_opens(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    stage, closed, errors = _stage(tmp_path)
    stage.add_batch(_failed(settings, 0, [1, 2, 3, 4]))
    good = PatternBatch(
        "scan:1:0", "scan", "lambda", "int0", 1, settings.fingerprint(), np.arange(5, 9), np.arange(4),
        np.ones((4, 4), np.float32), np.linspace(5.0, 20.0, 4), settings=settings.to_dict(), total_frames=8,
        raw_file="/raw/scan_m1_part00001.nxs",
    )  # fmt: skip
    stage.add_batch(good)
    wait_for(lambda: len(closed) == 1)
    stage.stop()
    m = read_merged(closed[0].path)
    assert m["frame_number"].tolist() == [5, 6, 7, 8] and m["binning"].tolist() == [5.0, 10.0, 15.0, 20.0]
    assert m["failed_frames"] == ["1-4"] and m["status"] == "incomplete"
    assert m["files"] == ["/raw/scan_m1_part00000.nxs", "/raw/scan_m1_part00001.nxs"]
