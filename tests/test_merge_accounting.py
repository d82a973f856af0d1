"""A merged file says ``complete`` only when it holds every frame of the acquisition exactly once, on
its one radial axis: the Merger's accounting of a scan's frames (issue s4, the auditor's scripts).

Unit level: :class:`OpenScan` / :class:`PendingScan` driven directly on real h5py files, read back
with :func:`read_merged` as a user would; one :class:`MergeStage` test for the operator's Stop. A
"kill -9" is simulated by closing the row log and the HDF5 handle without ending the file.
"""

import dataclasses

import numpy as np
import pytest

from pipeline_core.errors import OutputError
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.merge_closed import ClosedScans
from pipeline_core.live.merge_journal import journal_path
from pipeline_core.live.merge_scan import OpenScan, PendingScan
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.messages import FailedFrames, PatternBatch
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import wait_for


@pytest.fixture
def settings(small_poni):
    return IntegrationSettings(small_poni, bins=4)


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def batch(settings, numbers, part=0, total=8, radial=None, failed=(), raw_file=None) -> PatternBatch:
    """A batch of scan "scan": row k holds its frame number in every bin (a misplaced row shows)."""
    n = len(numbers)
    axis = np.arange(4.0) if radial is None else np.asarray(radial, np.float64)
    data = np.tile(np.array(numbers, np.float32)[:, None], (1, axis.size))
    return PatternBatch(
        f"scan:{part}:{numbers[0] if n else 'f'}", "scan", "lambda", "int0", part, "fp",
        np.array(numbers, np.int64), np.arange(n), data, axis, settings=settings.to_dict(),
        raw_file=raw_file or f"/raw/scan_m1_part{part:05d}.nxs", total_frames=total, failed=list(failed),
    )  # fmt: skip


def run(out, batches, reason=""):
    """Open the scan at its first batch, add them all, close it; returns the file as read back."""
    scan = OpenScan.create(out, batches[0], None)
    for b in batches:
        scan.add(b)
    summary, _ = scan.close(reason)
    return read_merged(summary.path), summary


def failures(result) -> dict[str, str]:
    """frame ranges -> reason, as the file lists them."""
    return dict(zip(result["failed_frames"], result["failed_reasons"], strict=True))


def kill_and_resume(scan: OpenScan) -> OpenScan:
    """What a kill -9 leaves (no status written, nothing closed by the process), then a restart."""
    scan.rowlog.close()
    scan.writer.h5.close()
    return OpenScan.resume(journal_path(scan.path))


# -- the control: a scan with its total known and every frame in is complete -------------------------
def test_every_frame_of_a_known_total_in_two_parts_is_complete(out, settings):
    result, summary = run(out, [batch(settings, [1, 2], total=4), batch(settings, [3, 4], part=1, total=4)])
    assert (result["status"], summary.complete, result["failed_reasons"]) == ("complete", True, [])
    assert result["frame_number"].tolist() == [1, 2, 3, 4]
    assert result["data"][:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


# -- 1. total never announced -------------------------------------------------------------------------
def test_an_unknown_total_closed_by_the_timeout_is_incomplete_and_says_why(out, settings):
    result, summary = run(out, [batch(settings, [1, 2], total=None)], reason="no news for 120 s")
    assert result["status"] == "incomplete" and not summary.complete
    assert result["frame_number"].tolist() == [1, 2]
    (reason,) = result["failed_reasons"]
    assert "frame count was never announced" in reason
    assert "closed by no news for 120 s: frames after 2 cannot be vouched for" in reason


def test_an_unknown_total_stopped_by_the_operator_is_incomplete(out, settings):
    closed, errors = [], []
    stage = MergeStage(out, closed.append, errors.append, scan_timeout_s=600)
    try:
        stage.add_batch(batch(settings, [1, 2, 3], total=None))
        wait_for(lambda: stage.counters.frames_processed == 3, 60, "the batch merged")
        stage.finish("scan")
        wait_for(lambda: closed, 60, "the scan closed")
    finally:
        stage.stop()
    result = read_merged(closed[0].path)
    assert result["status"] == "incomplete" and not closed[0].complete
    assert result["frame_number"].tolist() == [1, 2, 3]
    assert ["closed by stopped by the operator: frames after 3" in r for r in result["failed_reasons"]] == [True]
    assert errors == []


# -- 2. a total learned after the file was opened survives a kill -------------------------------------
def test_a_total_learned_after_opening_survives_a_kill(out, settings):
    scan = OpenScan.create(out, batch(settings, [1, 2], total=None), None)
    scan.add(batch(settings, [1, 2], total=None))
    scan.add(batch(settings, [3, 4], part=1, total=8))
    resumed = kill_and_resume(scan)
    assert resumed.total_frames == 8 and resumed.missing() == [5, 6, 7, 8]
    summary, _ = resumed.close("no news for 120 s")
    result = read_merged(summary.path)
    assert result["status"] == "incomplete"
    assert failures(result) == {"5-8": "never arrived (no news for 120 s)"}


def test_the_total_of_a_file_of_failures_only_survives_a_kill(out, settings):
    pending = PendingScan("scan")
    pending.add(batch(settings, [], total=None, failed=[FailedFrames("/raw/a.nxs", "bad module", [1, 2])]))
    pending.add(batch(settings, [], part=1, total=5, failed=[FailedFrames("/raw/b.nxs", "bad module", [3])]))
    scan = pending.open_failed_only(out, None)
    resumed = kill_and_resume(scan)
    assert resumed.total_frames == 5
    pending.replay(resumed)
    assert resumed.missing() == [4, 5]


# -- 3. frame numbers outside 1..N -------------------------------------------------------------------
def test_frames_outside_the_acquisition_are_listed_not_merged_nor_counted(out, settings):
    scan = OpenScan.create(out, batch(settings, [0, 1, 2, 3, 5], total=4), None)
    assert scan.add(batch(settings, [0, 1, 2, 3, 5], total=4)) == (3, 2)
    assert (scan.accounted(), scan.done, scan.missing()) == (3, False, [4])
    summary, _ = scan.close("no news for 120 s")
    result = read_merged(summary.path)
    assert result["frame_number"].tolist() == [1, 2, 3]
    assert failures(result) == {
        "0,5": "frame number outside the acquisition's 1..4: not merged",
        "4": "never arrived (no news for 120 s)",
    }


def test_frames_merged_before_a_total_that_excludes_them_are_listed(out, settings):
    result, _ = run(out, [batch(settings, [1, 2, 3], total=None), batch(settings, [], part=1, total=2)])
    assert result["status"] == "incomplete"
    note = "frame number outside the acquisition's 1..2: merged before that count was announced"
    assert failures(result) == {"3": note}


# -- 4. another radial axis under the same settings ----------------------------------------------------
def _pyfai_axes() -> tuple[np.ndarray, np.ndarray]:
    """pyFAI's 2θ axis of one geometry without a mask and with a third of the detector masked (the
    mask is not in the settings fingerprint): the reference the file's axis is checked against."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    ai = AzimuthalIntegrator(dist=0.1, poni1=0.01, poni2=0.01, pixel1=55e-6, pixel2=55e-6, wavelength=4.8e-11)
    image = np.ones((120, 120), np.float32)
    masked = np.zeros(image.shape, np.int8)
    masked[80:, :] = 1
    plain = ai.integrate1d(image, 4, unit="2th_deg", method=("bbox", "csr", "cython")).radial
    other = ai.integrate1d(image, 4, mask=masked, unit="2th_deg", method=("bbox", "csr", "cython")).radial
    return np.asarray(plain, np.float64), np.asarray(other, np.float64)


def test_a_batch_on_another_radial_axis_is_listed_not_merged(out, settings):
    plain, other = _pyfai_axes()
    assert not np.allclose(plain, other)  # pyFAI itself: the mask moves the axis
    rounded = plain.astype(np.float32).astype(np.float64)  # float32 round-off: the same binning
    batches = [batch(settings, [k], total=3, radial=axis) for k, axis in ((1, plain), (2, rounded), (3, other))]
    result, _ = run(out, batches)
    assert result["frame_number"].tolist() == [1, 2]
    assert result["binning"].tolist() == pytest.approx(plain.tolist(), rel=1e-12)
    assert failures(result) == {
        "3": f"integrated on another radial axis ({other[0]:.6g}..{other[-1]:.6g}, 4 bins) than this file's "
        f"({plain[0]:.6g}..{plain[-1]:.6g}, 4 bins): not merged"
    }


def test_a_batch_with_other_bins_is_refused_before_its_row_is_logged(out, settings):
    scan = OpenScan.create(out, batch(settings, [1], total=2), None)
    scan.add(batch(settings, [1], total=2))
    assert scan.add(batch(settings, [2], total=2, radial=np.arange(5.0))) == (0, 1)
    resumed = kill_and_resume(scan)  # the row log replays: no row of 5 bins in it
    assert resumed.writer.frame_numbers.tolist() == [1] and resumed.done
    summary, _ = resumed.close()
    result = read_merged(summary.path)
    assert list(failures(result)) == ["2"] and "(0..4, 5 bins)" in result["failed_reasons"][0]


# -- 5. two totals for one acquisition ---------------------------------------------------------------
def test_a_disputed_total_is_never_complete_and_the_larger_is_waited_for(out, settings):
    scan = OpenScan.create(out, batch(settings, [1, 2], total=4), None)
    scan.add(batch(settings, [1, 2], total=4))
    scan.add(batch(settings, [3], part=1, total=6))
    assert (scan.total_frames, scan.missing()) == (6, [4, 5, 6])
    resumed = kill_and_resume(scan)
    assert (resumed.total_frames, resumed.missing()) == (6, [4, 5, 6])
    resumed.add(batch(settings, [4, 5, 6], part=2, total=6))
    assert resumed.done
    summary, _ = resumed.close()
    result = read_merged(summary.path)
    assert result["status"] == "incomplete" and result["frame_number"].tolist() == [1, 2, 3, 4, 5, 6]
    assert failures(result) == {"": "the acquisition's frame count was announced as 4 and as 6: the file cannot "
                                "vouch for its frames (frames up to 6 are expected)"}  # fmt: skip


def test_a_batch_announcing_another_total_after_the_file_was_published_is_said(out, settings):
    result, summary = run(out, [batch(settings, [1, 2], total=2)])
    assert result["status"] == "complete"  # all it knew of: 2 frames, both in
    closed = ClosedScans(out)
    closed.remember(summary, {1, 2})
    refused = closed.late(batch(settings, [3, 4], part=1, total=4))
    assert refused == (
        f"batch scan:1:3 came after scan scan was closed: not merged; it announces 4 frames where {summary.path} "
        "was closed with 2: that file may lack frames (reintegrate the acquisition)"
    )
    assert ClosedScans(out).late(batch(settings, [1, 2], total=2)) is None  # a late twin, after a restart too


# -- 6. a part recorded from one file, then announced from another ----------------------------------
def test_a_part_from_another_file_is_listed_not_merged(out, settings):
    other = "/other_folder/scan_m1_part00000.nxs"
    second = dataclasses.replace(batch(settings, [2, 3], total=3), raw_file=other)
    second.intensities[:] = 7.0
    result, _ = run(out, [batch(settings, [1, 2], total=3), second], reason="no news for 120 s")
    assert result["files"] == ["/raw/scan_m1_part00000.nxs"]
    assert result["frame_number"].tolist() == [1, 2] and result["data"][:, 0].tolist() == [1.0, 2.0]
    assert result["pos_map"].tolist() == [[0, 0], [0, 1]]
    assert failures(result) == {
        "2-3": f"part 0 came from {other}, this file's part 0 is /raw/scan_m1_part00000.nxs: not merged"
    }


def test_a_part_file_is_never_renamed_in_the_file(out, settings):
    scan = OpenScan.create(out, batch(settings, [1], total=2), None)
    scan.add(batch(settings, [1], total=2))
    with pytest.raises(OutputError, match="part 0 is /raw/scan_m1_part00000.nxs, not /elsewhere.nxs"):
        scan.writer.set_raw_file(0, "/elsewhere.nxs")
