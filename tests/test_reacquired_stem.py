"""The same file name acquired again (an aborted scan restarted under its name, its module files
overwritten in place): the new acquisition is merged into a second file, never into the first one's.

The stages are driven without Tango (tests/test_stages.py's Chain); the references are what
``xrd-pipeline integrate`` makes of each acquisition's files.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline_core.cli import main as cli_main
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.live.triggers.lambda_follow import LambdaFollower, LambdaSnapshot
from pipeline_core.messages import ClaimRequest
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import wait_for, write_small_acquisition
from .test_stages import Chain

STEM = "scan_00001"
SECOND = f"{STEM}#2"


def _aborted(raw: Path) -> list[Path]:
    """Acquisition A of 3 parts of 2 frames (its files say 6 frames), stopped after parts 0-1."""
    files = write_small_acquisition(raw, n_parts=3, frames_per_part=2, seed=0, record_total=True)["files"]
    for f in files[6:]:
        f.unlink()
    return files[:6]


def _retaken(raw: Path) -> list[Path]:
    """Acquisition B: the same name again, every module file written over in place (same inode)."""
    inodes = {f.name: f.stat().st_ino for f in raw.iterdir()}
    files = write_small_acquisition(raw, n_parts=3, frames_per_part=2, seed=1, record_total=True)["files"]
    assert all(f.stat().st_ino == inodes[f.name] for f in files if f.name in inodes)  # the auditor's case
    return files


def _offline(first_file: Path, poni: Path, out: Path, rc: int = 0) -> dict:
    """What ``xrd-pipeline integrate`` makes of the acquisition's files as they are now (``rc`` 1:
    A's files announce 6 frames and hold 4, an incomplete file)."""
    assert cli_main(["integrate", str(first_file), "--poni", str(poni), "--bins", "30", "-o", str(out)]) == rc
    return read_merged(out)


def _rows(merged: dict, numbers: list[int]) -> np.ndarray:
    index = merged["frame_number"].tolist()
    return merged["data"][[index.index(n) for n in numbers]]


def _check_two_files(chain: Chain, ref_a: dict, ref_b: dict) -> dict:
    closed = {c.scan: c for c in chain.closed}
    assert sorted(closed) == [STEM, SECOND]
    first, second = read_merged(closed[STEM].path), read_merged(closed[SECOND].path)
    assert (closed[STEM].path.name, closed[SECOND].path.name) == (f"{STEM}.nxs", f"{STEM}_v001.nxs")
    # B, whole, in its own file: equal row for row to the offline integration of B's files
    assert second["status"] == "complete" and second["frame_number"].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(second["data"], _rows(ref_b, [1, 2, 3, 4, 5, 6]), rtol=1e-6)
    # A keeps what it had (its own frames, not B's), and says the rest never came
    assert first["status"] == "incomplete" and first["frame_number"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(first["data"], _rows(ref_a, [1, 2, 3, 4]), rtol=1e-6)
    assert not np.allclose(first["data"], _rows(ref_b, [1, 2, 3, 4]), rtol=1e-3)  # A and B differ
    assert first["failed_frames"] == ["5-6"]
    assert f"acquired again (its files now hold scan {SECOND})" in first["failed_reasons"][0]
    return closed


def test_a_name_acquired_again_goes_to_a_second_file_and_the_first_ends_incomplete(tmp_path, small_poni):
    """The auditor's case (Trigger=file-attribute/watch): B's parts 0-1 were ignored as repeats and
    B's part 2 merged into A's file, which closed ``complete`` with rows 1-4 from A and 5-6 from B."""
    raw = tmp_path / "raw"
    a = _aborted(raw)
    ref_a = _offline(a[0], small_poni, tmp_path / "offline_a.nxs", rc=1)
    chain = Chain(tmp_path, IntegrationSettings(small_poni, bins=30), n_integrators=1)
    try:
        for f in a:
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.merge.counters.frames_processed == 4, 60, "A's 4 frames merged")
        assert chain.closed == []  # A is open, waiting for frames 5-6
        for f in _retaken(raw):
            chain.stitch.announce(str(f))
        wait_for(lambda: len(chain.closed) == 2, 60, "A and B closed")
    finally:
        chain.stop()
    _check_two_files(chain, ref_a, _offline(raw / f"{STEM}_m1_part00000.nxs", small_poni, tmp_path / "off_b.nxs"))
    said = [e for e in chain.errors if "a new acquisition under the same name" in e]
    assert len(said) == 1 and f"part 0 of {STEM} announced again with other files" in said[0], chain.errors
    assert f"merged as scan {SECOND}" in said[0]


def test_the_lambda_trigger_says_when_the_same_name_starts_again(tmp_path, small_poni):
    """Trigger=lambda: the detector goes back to acquiring with the same directory and stem; the
    follower numbers the acquisition, and the Stitcher starts a new scan on it (no file times needed)."""
    raw = tmp_path / "raw"
    a = _aborted(raw)
    ref_a = _offline(a[0], small_poni, tmp_path / "offline_a.nxs", rc=1)
    follower = LambdaFollower()

    def snap(state: str, latest: int) -> LambdaSnapshot:
        return LambdaSnapshot(state, str(raw), STEM, frames_per_file=2, frame_numbers=6, latest_image_number=latest)

    chain = Chain(tmp_path, IntegrationSettings(small_poni, bins=30), n_integrators=1)
    try:
        due_a = follower.update(snap("ON", 0)) + follower.update(snap("MOVING", 4)) + follower.update(snap("ON", 4))
        assert [(d.part, d.acquisition) for d in due_a] == [(0, 0), (1, 0)]
        for due in due_a:
            chain.stitch.announce_part(due)
        wait_for(lambda: chain.merge.counters.frames_processed == 4, 60, "A's 4 frames merged")
        _retaken(raw)
        due_b = follower.update(snap("MOVING", 0)) + follower.update(snap("ON", 6))
        assert [(d.part, d.acquisition) for d in due_b] == [(0, 1), (1, 1), (2, 1)]
        for due in due_b:
            chain.stitch.announce_part(due)
        wait_for(lambda: len(chain.closed) == 2, 60, "A and B closed")
    finally:
        chain.stop()
    _check_two_files(chain, ref_a, _offline(raw / f"{STEM}_m1_part00000.nxs", small_poni, tmp_path / "off_b.nxs"))
    said = [e for e in chain.errors if "a new acquisition under the same name" in e]
    assert len(said) == 1 and f"the detector started acquisition {STEM} again (part 0" in said[0], chain.errors


def test_the_follower_numbers_an_acquisition_restarted_between_two_looks():
    """LatestImageNumber went back while acquiring the same stem: the old acquisition ends without any
    part it had not announced (the new one may be writing over it by the time it is read: its frames end
    as failed in the old file), and the new one's parts carry the next number."""
    f = LambdaFollower()

    def snap(latest: int) -> LambdaSnapshot:
        return LambdaSnapshot("MOVING", "/raw", STEM, frames_per_file=2, frame_numbers=10, latest_image_number=latest)

    assert [(d.part, d.acquisition) for d in f.update(snap(5))] == [(0, 0), (1, 0)]
    # started again unseen; 4 frames of the new one written: it is at part 2, which held old frame 5
    assert [(d.part, d.acquisition) for d in f.update(snap(4))] == [(0, 1), (1, 1)]
    f = LambdaFollower()
    assert [(d.part, d.acquisition) for d in f.update(snap(5))] == [(0, 0), (1, 0)]
    # 1 frame of the new one written: old part 2 (frame 5) is not written over yet, but may be by the time
    # it is read: not announced (an audit's race); the new acquisition's part 0 is not written yet either
    assert f.update(snap(1)) == []
    assert [(d.part, d.acquisition) for d in f.update(snap(2))] == [(0, 1)]


def _stage(errors: list[str], scans: list[str]) -> StitchStage:
    config = StitchConfig(frames_per_item=2, module_timeout_s=30.0, open_retry_delay_s=0.01)
    return StitchStage(config, lambda info: scans.append(info.scan), lambda n: None, errors.append)


def _frames(stage: StitchStage, failed: tuple = ()) -> list[tuple[str, int]]:
    """(scan, frame) of every item handed out; only the items of parts ``failed`` carry an error."""
    items = []
    while (item := stage.claim(ClaimRequest("test"))) is not None:
        items.append(item)
    assert sorted((i.scan, i.part) for i in items if i.error) == sorted(failed)
    return sorted((i.scan, n) for i in items if not i.error for n in i.frame_numbers)


def test_a_repeated_announcement_of_unchanged_files_is_still_ignored(tmp_path):
    """Triggers announce a file more than once (close event and sweep): the same files, the same scan."""
    files = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=2, record_total=True)["files"]
    other = write_small_acquisition(tmp_path / "raw", stem="other_00002", n_parts=1, frames_per_part=2)["files"]
    errors: list[str] = []
    scans: list[str] = []
    stage = _stage(errors, scans)
    try:
        for f in files:
            stage.announce(str(f))
        wait_for(lambda: stage.counters.parts_done == 2, 30, "both parts queued")
        os.utime(files[0], ns=(files[0].stat().st_atime_ns + 10**9, files[0].stat().st_mtime_ns))  # read, not written
        for f in files + other:  # every file again, then a sentinel: handled in order on the stage's thread
            stage.announce(str(f))
        wait_for(lambda: stage.counters.parts_done == 3, 30, "the sentinel part queued")
    finally:
        stage.stop()
    assert scans == [STEM, "other_00002"] and errors == []
    assert _frames(stage) == [("other_00002", n) for n in (1, 2)] + [(STEM, n) for n in (1, 2, 3, 4)]


def test_a_part_written_again_is_not_taken_until_each_of_its_module_files_is(tmp_path):
    """Trigger=file-attribute opens a part once its files exist: in a name acquired again, a module
    file still as the earlier acquisition left it is not the new one's (no part of two acquisitions)."""
    raw, staging = tmp_path / "raw", tmp_path / "staging"
    write_small_acquisition(raw, n_parts=1, frames_per_part=2, seed=0, record_total=True)
    b = write_small_acquisition(staging, n_parts=1, frames_per_part=2, seed=1, record_total=True)["files"]
    other = write_small_acquisition(raw, stem="other_00002", n_parts=1, frames_per_part=2)["files"]
    errors: list[str] = []
    scans: list[str] = []
    stage = _stage(errors, scans)
    try:
        for k in (1, 2, 3):
            stage.announce(str(raw / f"{STEM}_m{k}_part00000.nxs"))
        wait_for(lambda: stage.counters.parts_done == 1, 30, "A's part queued")
        shutil.copyfile(b[0], raw / b[0].name)  # B has written module 1 only
        stage.announce(str(raw / b[0].name))
        stage.announce(str(other[0]))
        wait_for(lambda: stage.counters.parts_done == 2, 30, "the sentinel's part queued")
        assert scans == [STEM, SECOND, "other_00002"]  # B's part waits: A's part and the sentinel's done
        for f in b[1:]:
            shutil.copyfile(f, raw / f.name)
            stage.announce(str(raw / f.name))
        wait_for(lambda: stage.counters.parts_done == 3, 30, "B's part queued once written whole")
    finally:
        stage.stop()
    # A's part, never claimed, is not handed out to read B's frames: failed (see the last test)
    assert _frames(stage, failed=[(STEM, 0)]) == [("other_00002", 1), ("other_00002", 2), (SECOND, 1), (SECOND, 2)]
    assert len([e for e in errors if "a new acquisition under the same name" in e]) == 1


@pytest.mark.parametrize("changed", [False, True])
def test_a_taken_part_is_new_only_when_its_files_changed(tmp_path, changed):
    """The rule alone: size and st_mtime_ns of each file as taken; a rewrite in place keeps the inode."""
    from pipeline_core.live import retake
    from pipeline_core.live.part_checker import file_stamps
    from pipeline_core.live.scan_tracker import ScanRecord
    from pipeline_core.messages import ScanInfo

    files = write_small_acquisition(tmp_path, n_parts=1, frames_per_part=2)["files"]
    scan = ScanRecord(ScanInfo(STEM, "lambda", STEM), tmp_path)
    scan.done_parts.add(0)
    scan.stamps[0] = file_stamps(files)
    if changed:
        write_small_acquisition(tmp_path, n_parts=1, frames_per_part=2, seed=5)
    why = retake.why_new(scan, 0)
    assert bool(why) is changed
    if changed:
        assert why.startswith(f"part 0 of {STEM} announced again with other files ({STEM}_m1_part00000.nxs")
    assert retake.why_new(scan, 1) == ""  # a part never taken is no repeat


def test_items_of_the_first_scan_not_yet_integrated_fail_rather_than_read_the_new_files(tmp_path):
    """A's parts were queued and no Integrator had claimed them when B wrote over their files: handed
    out after that, they would read B's frames as A's -- they go down the chain as failed instead."""
    raw = tmp_path / "raw"
    a = write_small_acquisition(raw, n_parts=2, frames_per_part=2, seed=0, record_total=True)["files"]
    errors: list[str] = []
    scans: list[str] = []
    stage = _stage(errors, scans)
    items = []
    try:
        for f in a:
            stage.announce(str(f))
        wait_for(lambda: stage.counters.parts_done == 2, 30, "A's parts queued")
        for f in _retaken(raw)[:6]:  # B has written parts 0 and 1 over
            stage.announce(str(f))
        wait_for(lambda: stage.counters.parts_done == 4, 30, "B's parts 0 and 1 queued")
        while (item := stage.claim(ClaimRequest("test"))) is not None:
            items.append(item)
    finally:
        stage.stop()
    assert scans == [STEM, SECOND]
    failed = {(i.scan, i.part): i.error for i in items if i.error}
    assert sorted(failed) == [(STEM, 0), (STEM, 1)]
    assert failed[STEM, 0].startswith(f"{STEM}_m1_part00000.nxs, {STEM}_m2_part00000.nxs, {STEM}_m3_part00000.nxs ")
    assert f"written over by a new acquisition under the name {STEM} (scan {SECOND})" in failed[STEM, 0]
    good = sorted((i.scan, n) for i in items if not i.error for n in i.frame_numbers)
    assert good == [(SECOND, n) for n in range(1, 5)]


def test_the_watch_trigger_announces_a_module_file_written_again_after_it_was_taken():
    """Trigger=watch took each path once: B's files, written over A's in place, were never announced."""
    from pipeline_core.live.triggers.watch import CompletionTracker

    t = CompletionTracker(stable_s=1.0)
    path = f"/raw/{STEM}_m1_part00000.nxs"
    t.written_to(path)
    assert t.closed(path) and not t.closed(path)  # A's file: taken once, a repeated close is no news
    t.written_to(path)  # B writes over it
    assert t.closed(path)  # announced again: the Stitcher tells the new acquisition by the file's stamp


def test_with_trigger_watch_a_name_written_again_in_place_becomes_a_second_scan(tmp_path):
    """Real inotify: B written over A's files in place is announced, and the Stitcher makes it a new scan."""
    from pipeline_core.live.triggers.watch import DirectoryWatch, WatchConfig

    raw = tmp_path / "raw"
    raw.mkdir()
    errors: list[str] = []
    scans: list[str] = []
    config = StitchConfig(frames_per_item=2, module_timeout_s=30.0, open_retry_delay_s=0.01, require_announced=True)
    stage = StitchStage(config, lambda info: scans.append(info.scan), lambda n: None, errors.append)
    watch = DirectoryWatch(WatchConfig((str(raw),), stable_s=0.4, sweep_s=0.2), stage.announce, errors.append)
    watch.start()
    try:
        write_small_acquisition(raw, n_parts=2, frames_per_part=2, seed=0, record_total=True)
        wait_for(lambda: stage.counters.parts_done == 2, 30, "A's two parts queued")
        _retaken(raw)
        wait_for(lambda: stage.counters.parts_done == 5, 30, "B's three parts queued")
    finally:
        watch.stop()
        stage.stop()
    assert scans == [STEM, SECOND]
    assert _frames(stage, failed=[(STEM, 0), (STEM, 1)]) == [(SECOND, n) for n in range(1, 7)]
    assert len([e for e in errors if "a new acquisition under the same name" in e]) == 1, errors


def test_a_new_file_time_with_the_same_frames_is_the_same_acquisition(tmp_path, small_poni):
    """The detector writing metadata at close, a backup tool or ``touch`` moves a file's time, not its
    frames: a repeated announcement then is still a repeat, and an item read after it integrates (an
    audit split one acquisition in two this way, its file ``incomplete`` with 2 frames "lost")."""
    raw = tmp_path / "raw"
    files = write_small_acquisition(raw, n_parts=3, frames_per_part=2, seed=0, record_total=True)["files"]
    chain = Chain(tmp_path, IntegrationSettings(small_poni, bins=30), n_integrators=1)
    try:
        for f in files[:4]:
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.merge.counters.frames_processed == 4, 60, "the first 4 frames merged")
        for f in files[:4]:  # parts 0 and 1: the same bytes, a time 1 s later
            st = f.stat()
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        chain.stitch.announce(str(files[0]))  # a trigger repeating part 0
        for f in files[4:]:
            chain.stitch.announce(str(f))
        wait_for(lambda: len(chain.closed) == 1, 60, "the scan closed")
    finally:
        chain.stop()
    assert [c.scan for c in chain.closed] == ["scan_00001"] and chain.errors == []
    m = read_merged(chain.closed[0].path)
    assert m["status"] == "complete" and m["frame_number"].tolist() == list(range(1, 7)) and m["failed_frames"] == []
    ref = _offline(files[0], small_poni, tmp_path / "offline.nxs")
    np.testing.assert_allclose(m["data"], ref["data"], rtol=1e-6)
