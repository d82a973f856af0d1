"""Trigger=watch's file detection with real inotify and real files: what is complete, and when."""

import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.live.triggers.watch import CompletionTracker, DirectoryWatch, WatchConfig, watch_config
from pipeline_core.messages import ClaimRequest
from pipeline_core.simulate import simulate_acquisition

from .helpers import wait_for, write_small_acquisition


class Seen:
    """What a DirectoryWatch reported: files taken, errors."""

    def __init__(self):
        self.files: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def file(self, path: str) -> None:
        with self._lock:
            self.files.append(path)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(Path(p).name for p in self.files)


@pytest.fixture
def watching(tmp_path):
    made = []

    def start(directory: Path, **config) -> Seen:
        seen = Seen()
        cfg = WatchConfig((str(directory),), **{"stable_s": 0.4, "sweep_s": 0.2, **config})
        watch = DirectoryWatch(cfg, seen.file, seen.error)
        watch.start()
        made.append(watch)
        seen.watch = watch
        return seen

    yield start
    for w in made:
        w.stop()


def _write_in_place(path: Path, frames: int, hold: threading.Event | None = None) -> None:
    """A module-file-shaped HDF5 file written straight under its name (as a detector's writer does)."""
    with h5py.File(path, "w") as h5:
        data = h5.create_dataset("entry/instrument/detector/data", (frames, 4, 4), np.uint16)
        data[0] = 1
        h5.flush()
        if hold is not None:
            hold.wait(30)
        data[1:] = 2


def test_files_moved_into_place_are_taken_once_each_also_in_a_folder_made_after_the_start(tmp_path, watching):
    raw = tmp_path / "raw"
    seen = watching(raw)
    assert seen.watch.describe().endswith(f"0 module files taken; waiting for {raw} to exist")
    raw.mkdir()
    time.sleep(0.5)  # the next sweep watches it
    simulate_acquisition(raw, frames=4, frames_per_file=2, stem="scan_00001", dtype="uint16")
    expected = sorted(f"scan_00001_m{k}_part{p:05d}.nxs" for k in (1, 2, 3) for p in (0, 1))
    wait_for(lambda: seen.names() == expected, 10, "the six module files")
    time.sleep(1.0)  # several sweeps later: still once each
    assert seen.names() == expected and seen.errors == []
    assert "(inotify + a sweep every 0.2 s); 6 module files taken" in seen.watch.describe()


def test_a_file_being_written_is_not_taken_early_however_quiet_then_at_once_when_closed(tmp_path, watching):
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)  # subfolders are watched too
    seen = watching(raw)
    hold = threading.Event()
    writer = threading.Thread(target=_write_in_place, args=(raw / "sub" / "s_00001_m1.nxs", 3, hold))
    writer.start()
    try:
        time.sleep(1.5)  # quiet for well over stable_s, swept several times: inotify saw it being written
        assert seen.files == []
    finally:
        hold.set()
        writer.join()
    wait_for(lambda: seen.names() == ["s_00001_m1.nxs"], 5, "the file closed")
    assert seen.files == [str(raw / "sub" / "s_00001_m1.nxs")]


def test_without_inotify_the_sweep_takes_files_once_stable(tmp_path, watching):
    """A network filesystem: inotify sees nothing written by another host; the sweep does."""
    raw = tmp_path / "raw"
    raw.mkdir()
    seen = watching(raw, use_inotify=False)
    assert "inotify unavailable (switched off); sweeping every 0.2 s only" in seen.watch.describe()
    _write_in_place(raw / "s_00002_m2_part00000.nxs", 2)
    (raw / "notes_m1.txt").write_text("not a module file")
    t0 = time.monotonic()
    wait_for(lambda: seen.names() == ["s_00002_m2_part00000.nxs"], 10, "the stable file")
    assert time.monotonic() - t0 >= 0.3  # only once quiet for stable_s
    # a file that keeps growing is not stable
    path = raw / "s_00002_m3_part00000.nxs"
    stop = threading.Event()

    def grow():
        with open(path, "wb") as fh:
            while not stop.is_set():
                fh.write(b"x" * 100)
                fh.flush()
                time.sleep(0.05)

    grower = threading.Thread(target=grow)
    grower.start()
    try:
        time.sleep(1.2)
        assert seen.names() == ["s_00002_m2_part00000.nxs"]
    finally:
        stop.set()
        grower.join()
    wait_for(lambda: len(seen.files) == 2, 10, "the file once it stopped growing")


def test_at_start_recent_acquisitions_are_taken_whole_and_old_ones_left_alone(tmp_path, watching):
    """A Stitcher restarted mid-acquisition finds the parts it missed; last month's scans stay put."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("old_00001_m1.nxs", "new_00002_m1_part00000.nxs", "new_00002_m1_part00001.nxs"):
        _write_in_place(raw / name, 2)
    hour_ago = time.time() - 3600
    os.utime(raw / "old_00001_m1.nxs", (hour_ago, hour_ago))
    os.utime(raw / "new_00002_m1_part00000.nxs", (hour_ago, hour_ago))  # same acquisition as a recent file
    seen = watching(raw, backlog_s=300)
    wait_for(lambda: len(seen.files) == 2, 10, "the recent acquisition's files")
    time.sleep(0.8)
    assert seen.names() == ["new_00002_m1_part00000.nxs", "new_00002_m1_part00001.nxs"]


def test_a_symlink_out_of_the_roots_is_refused_and_named(tmp_path, watching):
    raw, outside = tmp_path / "raw", tmp_path / "elsewhere"
    raw.mkdir()
    outside.mkdir()
    _write_in_place(outside / "secret_m1.nxs", 2)
    seen = watching(raw, roots=(str(raw),))
    os.symlink(outside / "secret_m1.nxs", raw / "s_00003_m1.nxs")
    wait_for(lambda: seen.errors, 10, "the refusal")
    assert seen.files == []
    assert "s_00003_m1.nxs resolves to" in seen.errors[0] and "outside the allowed root(s)" in seen.errors[0]


def test_bad_watch_settings_are_refused_naming_the_value(tmp_path):
    with pytest.raises(ConfigError, match="Trigger watch needs WatchDirectories"):
        DirectoryWatch(WatchConfig(()), print, print)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"WatchDirectories entry .*/file is not a directory"):
        DirectoryWatch(WatchConfig((str(tmp_path / "file"),)), print, print)
    (tmp_path / "a").mkdir()
    with pytest.raises(ConfigError, match="outside the allowed root"):
        DirectoryWatch(WatchConfig((str(tmp_path),), roots=(str(tmp_path / "a"),)), print, print)
    with pytest.raises(ConfigError, match=r"WatchStableTime = 0.0 s is out of range; expected 0.05 to 3600 s"):
        watch_config([str(tmp_path)], [], 0.0, 1.0, 10.0)
    with pytest.raises(ConfigError, match=r"WatchBacklog = -1.0 s is negative"):
        watch_config([str(tmp_path)], [], 1.0, 1.0, -1.0)


def test_the_completion_rule_without_threads():
    t = CompletionTracker(stable_s=1.0)
    s = int(1e9)
    assert not t.swept("/r/a_m1.nxs", 10, 5 * s, 7 * s)  # first sight: not yet
    assert t.swept("/r/a_m1.nxs", 10, 5 * s, 8 * s)  # same size and mtime, quiet for 3 s
    assert not t.swept("/r/a_m1.nxs", 10, 5 * s, 9 * s)  # taken once
    t.written_to("/r/b_m1.nxs")
    t.swept("/r/b_m1.nxs", 10, 1 * s, 9 * s)
    assert not t.swept("/r/b_m1.nxs", 10, 1 * s, 99 * s)  # being written (inotify said so): never by the sweep
    assert t.closed("/r/b_m1.nxs") and not t.closed("/r/b_m1.nxs")
    assert not t.closed("/r/b_m1.nxs.tmp")  # not a module file name
    assert not t.swept("/r/c_m1.nxs", 10, 5 * s, 5 * s) and not t.swept("/r/c_m1.nxs", 10, 5 * s, 5 * s + 1)


def test_a_file_moved_in_from_an_unwatched_folder_is_taken_on_its_event_not_left_to_the_sweep(tmp_path, watching):
    """IN_MOVED_TO without its IN_MOVED_FROM (the file came from elsewhere) is a complete file too."""
    raw, elsewhere = tmp_path / "raw", tmp_path / "staging"
    raw.mkdir()
    elsewhere.mkdir()
    _write_in_place(elsewhere / "s_00004_m1.nxs", 2)
    seen = watching(raw, stable_s=600, sweep_s=600)  # the sweep could not take it within the test
    time.sleep(0.3)  # the observer is running
    os.rename(elsewhere / "s_00004_m1.nxs", raw / "s_00004_m1.nxs")
    wait_for(lambda: seen.names() == ["s_00004_m1.nxs"], 5, "the file moved in, from its inotify event")
    assert seen.errors == []


def _burst_of_acquisitions(staging: Path) -> None:
    """Three acquisitions of 4 parts x 3 modules: one good, one with module 3 truncated in every part,
    one with module 1 of part 0 not HDF5 and module 2 of part 1 never written (its other parts good)."""
    acqs = {
        stem: write_small_acquisition(staging, stem=stem, n_parts=4, frames_per_part=4, seed=i)["files"]
        for i, stem in enumerate(("good_00001", "trunc_00002", "mixed_00003"))
    }
    for f in acqs["trunc_00002"][2::3]:
        f.write_bytes(f.read_bytes()[:2000])
    acqs["mixed_00003"][0].write_bytes(b"not an HDF5 file" * 100)
    acqs["mixed_00003"][4].unlink()


def test_good_parts_moved_in_with_broken_ones_at_once_are_all_queued_and_only_broken_parts_fail(tmp_path):
    """Issue 17 item 5: complete parts failed as "not written (or not closed) within ModuleTimeout"
    when broken acquisitions arrived with them: a broken part's opening retries held the Stitcher's
    thread, and the timeout ran out while the good parts' own announcements waited in its queue."""
    staging, raw = tmp_path / "staging", tmp_path / "raw"
    raw.mkdir()
    _burst_of_acquisitions(staging)
    errors: list[str] = []
    config = StitchConfig(
        frames_per_item=4, module_timeout_s=1.0, open_retries=3, open_retry_delay_s=0.25,
        require_announced=True, data_roots=(str(tmp_path),),
    )  # fmt: skip
    stage = StitchStage(config, on_scan=lambda info: None, on_work=lambda n: None, on_error=errors.append)
    watch = DirectoryWatch(
        WatchConfig((str(raw),), (str(tmp_path),), stable_s=0.4, sweep_s=0.2), stage.announce, errors.append
    )
    watch.start()
    try:
        time.sleep(0.3)  # the observer is running
        for f in sorted(staging.iterdir(), key=lambda p: p.name.split("_")[2]):  # every module 1, then 2, then 3
            os.rename(f, raw / f.name)
        wait_for(lambda: stage.counters.parts_done == 12, 20, "all 12 parts queued, as work or as failures")
    finally:
        watch.stop()
        stage.stop()
    items = []
    while (item := stage.claim(ClaimRequest("test"))) is not None:
        items.append(item)
    failed = {(i.scan, i.part): i.error for i in items if i.error}
    assert sorted(failed) == [("mixed_00003", 0), ("mixed_00003", 1)] + [("trunc_00002", p) for p in range(4)]
    assert "mixed_00003_m1_part00000.nxs cannot be opened as HDF5" in failed["mixed_00003", 0]
    never_written = "module file(s) mixed_00003_m2_part00001.nxs not written (or not closed) within 1 s"
    assert failed["mixed_00003", 1] == never_written
    assert all("is truncated: 2000 bytes on disk" in failed["trunc_00002", p] for p in range(4))
    good = sorted((i.scan, n) for i in items if not i.error for n in i.frame_numbers)
    assert good == [("good_00001", n) for n in range(1, 17)] + [("mixed_00003", n) for n in range(9, 17)]
    assert stage.counters.frames_failed == 6 * 4 and stage.counters.frames_processed == 24


class _Clock:
    """The stage's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watch_stage(clock: _Clock, errors: list[str], on_scan=lambda info: None, **config) -> StitchStage:
    """A Stitcher's stage as Trigger=watch makes it: a part is opened once each file was announced."""
    cfg = StitchConfig(**{"frames_per_item": 4, "module_timeout_s": 10.0, "require_announced": True, **config})
    return StitchStage(cfg, on_scan, lambda n: None, errors.append, clock=clock)


def _claim_all(stage: StitchStage) -> list:
    items = []
    while (item := stage.claim(ClaimRequest("test"))) is not None:
        items.append(item)
    return items


def test_no_part_times_out_while_its_files_announcements_wait_in_the_stitchers_queue(tmp_path):
    """The module timeout runs out while the thread is held elsewhere; the announcements of the part's
    other files came in time and wait in the queue: they are handled before any part is timed out."""
    good = write_small_acquisition(tmp_path / "raw", stem="good_00001", n_parts=1, frames_per_part=4)["files"]
    other = write_small_acquisition(tmp_path / "raw", stem="other_00002", n_parts=1, frames_per_part=4)["files"]
    clock, errors, held, holding = _Clock(), [], threading.Event(), threading.Event()

    def on_scan(info) -> None:  # runs on the stage's thread: holds it while the second scan starts
        if info.scan == "other_00002":
            holding.set()
            held.wait(10)

    stage = _watch_stage(clock, errors, on_scan)
    try:
        stage.announce(str(good[0]))
        wait_for(lambda: stage.current_scan == "good_00001", 5, "module 1 of good_00001 handled")
        stage.announce(str(other[0]))
        wait_for(holding.is_set, 5, "the stage's thread held")
        stage.announce(str(good[1]))
        stage.announce(str(good[2]))  # in time, but queued behind the held job
        clock.now += 60  # far past ModuleTimeout meanwhile
        held.set()
        wait_for(lambda: stage.counters.parts_done == 1 and stage.pending_announcements == 0, 5, "good_00001 queued")
        items = _claim_all(stage)
    finally:
        held.set()
        stage.stop()
    assert [(i.scan, i.frame_numbers, i.error) for i in items] == [("good_00001", [1, 2, 3, 4], None)]
    assert errors == []


def test_a_broken_part_does_not_hold_the_stitcher_in_opening_retries_before_its_timeout(tmp_path):
    """Retries of a part that does not open yet are the idle checks until ModuleTimeout, not sleeps on
    the stage's thread: the good part announced after it is queued meanwhile."""
    broken = write_small_acquisition(tmp_path / "raw", stem="broken_00001", n_parts=1, frames_per_part=4)["files"]
    good = write_small_acquisition(tmp_path / "raw", stem="good_00002", n_parts=1, frames_per_part=4)["files"]
    broken[2].write_bytes(broken[2].read_bytes()[:2000])
    clock, errors = _Clock(), []
    stage = _watch_stage(clock, errors, open_retries=3, open_retry_delay_s=60.0)  # a retry would hold it 3 min
    try:
        for f in broken + good:
            stage.announce(str(f))
        wait_for(lambda: stage.counters.parts_done == 1, 10, "good_00002 queued while broken_00001 waits")
        items = _claim_all(stage)
    finally:
        stage.stop()
    assert [(i.scan, i.frame_numbers, i.error) for i in items] == [("good_00002", [1, 2, 3, 4], None)]
    assert errors == []


def test_a_part_that_never_opens_fails_at_its_timeout_after_the_bounded_retries_naming_them(tmp_path):
    files = write_small_acquisition(tmp_path / "raw", stem="broken_00001", n_parts=1, frames_per_part=4)["files"]
    files[2].write_bytes(files[2].read_bytes()[:2000])
    clock, errors = _Clock(), []
    stage = _watch_stage(clock, errors, open_retries=2, open_retry_delay_s=0.01)
    try:
        for f in files:
            stage.announce(str(f))
        wait_for(lambda: stage.pending_announcements == 0, 5, "the announcements handled")
        assert stage.counters.parts_done == 0  # waiting: it may still be being written
        clock.now += 11
        wait_for(lambda: stage.counters.parts_done == 1, 5, "the part failed at its timeout")
        (item,) = _claim_all(stage)
    finally:
        stage.stop()
    assert item.frame_numbers == [1, 2, 3, 4]
    assert "broken_00001_m3_part00000.nxs is truncated: 2000 bytes on disk" in item.error
    assert item.error.endswith("[after 3 attempts over 0.0 s]")
    assert errors == [f"part 0 of broken_00001: {item.error}"]
