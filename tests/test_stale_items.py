"""A work item handed to an Integrator before its part's module files were written over (the same
name acquired again, files rewritten in place) is refused by the Integrator, never integrated as the
old scan's frames: the item carries each file's size and st_mtime_ns as the Stitcher took the part,
and the Integrator compares them right before and right after reading.

The stages are driven without Tango; the reference for the rows that do integrate is what
``xrd-pipeline integrate`` makes of the same files.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline_core.cli import main as cli_main
from pipeline_core.formats.lambda_part import OpenPart
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.live.part_checker import file_stamps
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.messages import ClaimRequest, MessageError, PatternBatch, ScanInfo, WorkItem
from pipeline_core.processing.file_stamps import WrittenOverError
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.sources import read_part_range

from .helpers import wait_for, write_small_acquisition

STEM = "scan_00001"
WRITTEN_OVER = "was written over since the part was queued ("
NOT_INTEGRATED = "): a new acquisition under the same name? not integrated"


def _acquire(raw: Path, seed: int) -> list[Path]:
    """Two parts of two frames each (the files say 4 frames); seed 1 over seed 0: the same name again."""
    return write_small_acquisition(raw, n_parts=2, frames_per_part=2, seed=seed, record_total=True)["files"]


def _stitcher(scans: list[ScanInfo], errors: list[str]) -> StitchStage:
    config = StitchConfig(frames_per_item=2, module_timeout_s=30.0, open_retry_delay_s=0.01)
    return StitchStage(config, scans.append, lambda n: None, errors.append)


def _queued(raw: Path, scans: list[ScanInfo], errors: list[str]) -> StitchStage:
    stage = _stitcher(scans, errors)
    for f in _acquire(raw, seed=0):
        stage.announce(str(f))
    wait_for(lambda: stage.counters.parts_done == 2, 60, "both parts queued")
    return stage


def _offline(first_file: Path, poni: Path, out: Path) -> dict:
    assert cli_main(["integrate", str(first_file), "--poni", str(poni), "--bins", "30", "-o", str(out)]) == 0
    return read_merged(out)


def test_an_item_claimed_before_its_files_are_written_over_is_refused_and_never_merged(tmp_path, small_poni):
    """Item 1 (part 0) integrates as offline does; item 2 (part 1), claimed, then its files written over
    by a new acquisition before it was read: a failed batch with the reason, and the old scan's merged
    file holds frames 1-2 of A and lists 3-4 as failed -- never B's frames 3-4."""
    raw = tmp_path / "raw"
    scans: list[ScanInfo] = []
    errors: list[str] = []
    closed: list = []
    stage = _queued(raw, scans, errors)
    ref_a = _offline(raw / f"{STEM}_m1_part00000.nxs", small_poni, tmp_path / "offline_a.nxs")
    merge = MergeStage(tmp_path / "processed", closed.append, errors.append, scan_timeout_s=30)

    def hand_on(batch: PatternBatch) -> None:
        fmt, payload = batch.encode()  # through the wire format, as over Tango
        merge.add_batch(PatternBatch.decode(fmt, payload))

    integrator = IntegrateStage("int0", IntegrationSettings(small_poni, bins=30), None, hand_on, errors.append)
    try:
        merge.scan_started(scans[0])
        first, second = stage.claim(ClaimRequest("int0")), stage.claim(ClaimRequest("int0"))
        assert (first.part, second.part, first.error, second.error) == (0, 1, None, None)
        part1 = [Path(f) for f in second.module_files]
        assert second.file_stamps == [list(s) for s in file_stamps(part1, content=True).values()]
        assert WorkItem.from_json(second.to_json()) == second  # as the device sends it
        ok = integrator.process(first)
        assert ok.frame_numbers.tolist() == [1, 2] and ok.failed == []
        before = file_stamps(part1)
        _acquire(raw, seed=1)  # B writes over A's files in place
        assert file_stamps(part1) != before  # the precondition: the files did change
        refused = integrator.process(second)
        merge.finish(STEM)
        wait_for(lambda: len(closed) == 1, 60, "scan A closed")
    finally:
        integrator.stop()
        stage.stop()
        merge.stop()
    assert refused.frame_numbers.tolist() == [] and len(refused.failed) == 1
    reason = refused.failed[0].reason
    assert refused.failed[0].frame_numbers == [3, 4]
    assert reason.startswith(f"module file {STEM}_m1_part00001.nxs {WRITTEN_OVER}size ") and reason.endswith(
        f"right before reading{NOT_INTEGRATED}"
    )
    assert any(e == f"{second.item_id}: {reason}" for e in errors), errors  # said in Status
    merged = read_merged(closed[0].path)
    assert merged["frame_number"].tolist() == [1, 2]
    np.testing.assert_allclose(merged["data"], ref_a["data"][:2], rtol=1e-6)  # A's rows, as offline
    assert merged["failed_frames"] == ["3-4"] and WRITTEN_OVER in merged["failed_reasons"][0]


def test_files_written_over_while_they_are_read_are_refused(tmp_path, monkeypatch):
    """The look right after the read: the files changed during it, so what was read may be B's."""
    files = _acquire(tmp_path, seed=0)[3:]  # part 1's three module files
    stamps = [list(s) for s in file_stamps(files).values()]
    assert read_part_range(files, 0, 2, stamps=stamps).frame_numbers.tolist() == [3, 4]  # unchanged: read
    read = OpenPart.read_modules

    def read_then_written_over(self, *args, **kwargs):
        data = read(self, *args, **kwargs)
        with open(files[0], "ab") as writer:  # another process (the detector) writes to it meanwhile
            writer.write(b"\0" * 64)
        return data

    monkeypatch.setattr(OpenPart, "read_modules", read_then_written_over)
    after = rf"{STEM}_m1_part00001.nxs {re.escape(WRITTEN_OVER)}.*right after reading"
    with pytest.raises(WrittenOverError, match=after):
        read_part_range(files, 0, 2, stamps=stamps)
    monkeypatch.setattr(OpenPart, "read_modules", read)
    # an item without stamps (an older Stitcher, a reintegration) is read as it is, as before
    assert read_part_range(files, 0, 2).frame_numbers.tolist() == [3, 4]
    with pytest.raises(WrittenOverError, match=rf"{STEM}_m1_part00001.nxs .*right before reading"):
        read_part_range(files, 0, 2, stamps=stamps)  # and with its stamps, the look before the read refuses it


def test_items_failed_at_hand_out_are_counted_as_failed(tmp_path):
    """A's items still queued when B was announced fail at hand-out: framesFailed counts them, and
    framesProcessed no longer does (4 of A failed, 4 of B queued)."""
    raw = tmp_path / "raw"
    scans: list[ScanInfo] = []
    errors: list[str] = []
    stage = _queued(raw, scans, errors)
    try:
        for f in _acquire(raw, seed=1):
            stage.announce(str(f))
        wait_for(lambda: stage.counters.parts_done == 4, 60, "B's parts queued")
        items = []
        while (item := stage.claim(ClaimRequest("test"))) is not None:
            items.append(item)
    finally:
        stage.stop()
    assert [s.scan for s in scans] == [STEM, f"{STEM}#2"]
    assert sorted((i.scan, i.part) for i in items if i.error) == [(STEM, 0), (STEM, 1)]
    c = stage.counters
    assert (c.frames_received, c.frames_processed, c.frames_failed) == (8, 4, 4)


def _item(**changes) -> WorkItem:
    fields = dict(item_id="s:0:0", scan="s", detector="lambda", part=0, module_files=["/raw/s_m1.nxs", "/raw/s_m2.nxs"],
                  start=0, stop=2, frame_numbers=[1, 2])  # fmt: skip
    return WorkItem(**{**fields, **changes})


def test_work_item_round_trips_with_and_without_stamps():
    stamped = _item(file_stamps=[[1234, 1_765_000_000_123_456_789], None])
    assert WorkItem.from_json(stamped.to_json()) == stamped
    assert WorkItem.from_json(_item().to_json()).file_stamps == []
    older = json.loads(_item().to_json())
    del older["file_stamps"]  # what a Stitcher of before this field sends: still version 1, read as unstamped
    assert older["version"] == 1 and WorkItem.from_json(json.dumps(older)) == _item()


@pytest.mark.parametrize(
    "stamps, expected",
    [
        ([[1, 2]], r"work.file_stamps: expected one stamp per module file \(2\), got 1"),
        ([[1, 2], [3]], r"work.file_stamps\[1\]: expected \[size in bytes, st_mtime_ns\(, frames' digest\)\] or null"),
        ([[1, 2], [1, 2, 3, 4]], r"work.file_stamps\[1\]: expected \[size in bytes"),
        ([[1, 2], [-1, 5]], r"work.file_stamps\[1\]\[0\]: expected an integer in 0\.\.9223372036854775807"),
        ([[1, 2], [1.5, 5]], r"work.file_stamps\[1\]\[0\]: expected an integer"),
    ],
)
def test_work_item_with_bad_stamps_is_refused_naming_the_field(stamps, expected):
    text = json.loads(_item().to_json())
    text["file_stamps"] = stamps
    with pytest.raises(MessageError, match=expected):
        WorkItem.from_json(json.dumps(text))


def test_a_contiguous_module_file_written_over_with_the_same_shape_is_not_taken_for_unchanged(tmp_path):
    """No chunk to read raw: no digest, so the file times decide (a digest of shape and type alone said
    "the same frames" of other frames: a review found it)."""
    import os

    import h5py
    import numpy as np

    from pipeline_core.processing.file_stamps import content_digest, stamp_now, unchanged

    path = tmp_path / "scan_00001_m1.nxs"

    def write(value: int, mtime_ns: int) -> None:
        with h5py.File(path, "w") as h5:
            h5["entry/instrument/detector/data"] = np.full((5, 4, 4), value, np.uint16)  # contiguous
        os.utime(path, ns=(mtime_ns, mtime_ns))

    write(1, 10**18)
    taken = stamp_now(path, content=True)
    assert taken is not None and taken[2] == 0 and content_digest(path) == 0
    assert unchanged(path, taken)
    write(2, 10**18 + 10**9)  # other frames, the same size, a later time
    assert not unchanged(path, taken)
