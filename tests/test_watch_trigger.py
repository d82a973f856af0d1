"""Trigger=watch's file detection with real inotify and real files: what is complete, and when."""

import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.live.triggers.watch import CompletionTracker, DirectoryWatch, WatchConfig, watch_config
from pipeline_core.simulate import simulate_acquisition

from .helpers import wait_for


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
