"""A full disk is an error like any other: named, no crash, one file name, and the Merger comes back.

HDF5 does not survive ENOSPC (after a failed flush the process segfaults when the file is closed),
so a full disk made ``integrate`` and job tasks die with SIGSEGV, leaving a ``.part`` marked
``running``, and the Merger lose a scan with a new ``_vNNN`` name per batch. Here the disk is real
(a small tmpfs, mounted as root — CI runs as root; skipped where mounting is not permitted) for the
commands and the Merger, and simulated (an injected ``free_bytes``) for the writer's own rules.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline_core.errors import NoSpaceError
from pipeline_core.formats.hdf5_io import END_RESERVE, free_bytes
from pipeline_core.formats.nexus import END_BYTES, MergedFileWriter, read_merged
from pipeline_core.live import merge_log
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.output import reserve_output
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import open_sources

from ..helpers import REPO, SMALL_PONI, pattern_batch, wait_for, write_small_acquisition

TMPFS_SIZE = "8m"
BINS = 2048  # a result chunk of 64 rows is 512 kB: the disk fills within the run


@pytest.fixture
def tmpfs(tmp_path):
    """A small file system of its own, unmounted afterwards (skipped where mount is not permitted)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({done.stderr.strip() or done.returncode}); needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int) -> Path:
    """Fill the file system of ``mnt`` until ``leave`` bytes are free (0: completely full)."""
    filler = mnt / "filler"
    with open(filler, "ab") as fh:
        block = b"\0" * (64 << 10)
        while free_bytes(mnt) > leave:
            try:
                fh.write(block[: max(4096, min(len(block), free_bytes(mnt) - leave))])
                fh.flush()
            except OSError:
                break
    return filler


@pytest.fixture
def acquisition(tmp_path):
    raw = tmp_path / "raw"
    write_small_acquisition(raw, n_parts=3, frames_per_part=100)  # 300 frames: 5 chunks of rows, 2.5 MB
    poni = tmp_path / "small.poni"
    poni.write_text(SMALL_PONI)
    return raw, poni


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline_core.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=env)  # fmt: skip


# -- the real disk: integrate, a job, the Merger ---------------------------------------------------------
def test_integrate_on_a_full_disk_fails_named_and_leaves_a_failed_part(tmpfs, acquisition, ledger):
    raw, poni = acquisition
    out = tmpfs / "out"
    out.mkdir()
    # room for the new file and its first chunk of rows (64 frames) with the reserve, not for the
    # whole result (before: HDF5 met ENOSPC at the third chunk and the process died of SIGSEGV)
    fill(tmpfs, leave=END_RESERVE + (700 << 10))
    done = _cli("integrate", str(raw), "--poni", str(poni), "--bins", str(BINS), "-o", str(out))
    ledger.fault("a full disk under integrate")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # was -11 (SIGSEGV)
    assert f"no space left in {out}" in done.stderr and "needed" in done.stderr and "free" in done.stderr
    assert "status failed" in done.stderr, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["scan_00001.nxs.part"]
    result = read_merged(out / "scan_00001.nxs.part")
    assert result["status"] == "failed"  # was running, with all-zero rows
    assert result["frame_number"].tolist() == list(range(1, 65))
    assert (result["data"].max(axis=1) > 0).all()
    ledger.checked(len(result["frame_number"]))


def test_a_job_on_a_full_disk_fails_with_the_disk_as_its_reason(tmpfs, acquisition, tmp_path, ledger):
    raw, poni = acquisition
    out = tmpfs / "out"
    out.mkdir()
    config = tmp_path / "jobs.yaml"
    config.write_text(f"state_directory: {tmp_path / 'state'}\nretries: 0\n")
    env = {**os.environ, "XRD_PIPELINE_JOBS_CONFIG": str(config)}
    fill(tmpfs, leave=END_RESERVE + (700 << 10))
    ledger.fault("a full disk under a job")
    done = _cli("reintegrate", str(raw), "--poni", str(poni), "--bins", str(BINS), "-o", str(out), "--wait",
                env=env)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "failed" in done.stderr and f"no space left in {out / '.xrd-jobs'}" in done.stderr, done.stderr
    assert "range 0 (frames 1-300) failed after 1 attempt: no space left" in done.stderr  # the task's own reason
    assert "out of memory" not in done.stderr  # was: "its task ended without finishing (killed, out of memory ...?)"
    assert not [p for p in out.iterdir() if p.name.endswith(".nxs") or p.name.endswith(".part")]


_batch = functools.partial(pattern_batch, total=12, bins=512)

@pytest.mark.parametrize("full_from", ["the first batch", "mid-scan"])
def test_the_merger_waits_for_room_and_resumes_its_scan_from_the_row_log(full_from, tmpfs, small_poni, ledger):
    """Full when the scan starts (before: a new zero-byte ``_vNNN`` per batch, the scan lost) or in
    the middle of it: one file name, the frames asked again and merged once room is back."""
    settings = IntegrationSettings(small_poni, bins=512)
    errors: list[str] = []
    closed = []
    asked: list[list[int]] = []

    def ask(scan: str, numbers: list[int], raw_file: str) -> None:  # the Stitcher's RequeueFrames
        asked.append(numbers)
        stage.add_batch(_batch(settings, numbers))

    stage = MergeStage(tmpfs, closed.append, errors.append, request_missing=ask, gap_check_s=0.3,
                       scan_timeout_s=60)  # fmt: skip
    merged_before = 0 if full_from == "the first batch" else 4
    try:
        if merged_before:
            stage.add_batch(_batch(settings, [1, 2, 3, 4]))
            wait_for(lambda: stage.counters.frames_processed == 4, 10, "the first batch merged")
        filler = fill(tmpfs, leave=0)
        for first in range(merged_before + 1, 13, 4):  # while the scan waits for room: dropped
            stage.add_batch(_batch(settings, list(range(first, first + 4))))
        wait_for(lambda: errors, 10, "the full disk reported")
        wait_for(lambda: stage.queue_depth == 0, 10, "the batches handled")
        ledger.fault("a full disk under the Merger")
        assert f"no space left in {tmpfs}" in errors[0] and "waits for room" in errors[0], errors
        assert stage.counters.frames_processed == merged_before and not closed
        names = sorted(p.name for p in tmpfs.iterdir() if p.name != "filler")
        expected = ["scan.nxs.journal", "scan.nxs.part", "scan.nxs.rowlog"] if merged_before else []
        assert names == expected  # one name, never a _v001 per batch
        filler.unlink()  # room is back: the scan is rebuilt from its row log and asks for what it missed
        wait_for(lambda: closed, 20, "the scan closed after room came back")
    finally:
        stage.stop()
    # the batch that was to open the file is kept and merged when it opens; the others are asked again
    assert asked and asked[0] == list(range(5, 13)), asked
    assert len(errors) == 1, errors
    result = read_merged(tmpfs / "scan.nxs")
    assert result["status"] == "complete"
    assert result["frame_number"].tolist() == list(range(1, 13))
    assert result["data"][:, 0].tolist() == [float(n) for n in range(1, 13)]
    assert sorted(p.name for p in tmpfs.iterdir() if not p.name.startswith(".")) == ["scan.nxs"]
    ledger.checked(12)


# -- the writer's rules, with the free space injected --------------------------------------------------
class Disk:
    """A free-space function the test sets: what ``os.statvfs`` would say."""

    def __init__(self, free: int):
        self.free = free
        self.asked: list[Path] = []

    def __call__(self, folder: Path) -> int:
        self.asked.append(folder)
        return self.free


def _writer(tmp_path: Path, small_poni: Path, disk: Disk) -> MergedFileWriter:
    settings = IntegrationSettings(small_poni, bins=8)
    return MergedFileWriter(reserve_output(tmp_path / "r.nxs"), np.arange(8.0), settings, [], [], "r",
                            free_bytes=disk)  # fmt: skip


def test_the_writer_refuses_a_new_file_without_room(tmp_path, small_poni, ledger):
    disk = Disk(END_RESERVE)
    ledger.fault("no room for a new file")
    with pytest.raises(NoSpaceError) as caught:
        _writer(tmp_path, small_poni, disk)
    message = str(caught.value)
    assert message.startswith(f"no space left in {tmp_path} for the new result file {tmp_path / 'r.nxs.part'}")
    assert f"({END_RESERVE} bytes) free" in message and caught.value.needed > END_RESERVE
    assert (tmp_path / "r.nxs.part").stat().st_size == 0  # HDF5 never opened it
    assert disk.asked == [tmp_path]


def test_a_refused_write_keeps_the_file_as_it_was_and_it_ends_failed(tmp_path, small_poni, ledger):
    disk = Disk(1 << 30)
    writer = _writer(tmp_path, small_poni, disk)
    writer.add(np.array([1, 2]), np.ones((2, 8)))
    disk.free = END_RESERVE + 1000  # room for the status, not for another chunk of rows
    ledger.fault("no room for rows")
    with pytest.raises(NoSpaceError, match=r"for 64 row\(s\) \(frames 3-66\) of .*r\.nxs\.part: "):
        writer.add(np.arange(3, 67), np.ones((64, 8)))
    assert writer.n_frames == 2
    writer.suspend("failed")
    result = read_merged(tmp_path / "r.nxs.part")
    assert result["status"] == "failed" and result["frame_number"].tolist() == [1, 2]


def test_a_status_that_cannot_be_written_is_said_and_the_file_closed(tmp_path, small_poni, ledger):
    disk = Disk(1 << 30)
    writer = _writer(tmp_path, small_poni, disk)
    writer.add(np.array([1]), np.ones((1, 8)))
    disk.free = END_BYTES - 1
    ledger.fault("no room for the status")
    with pytest.raises(NoSpaceError, match="for the status 'failed'"):
        writer.suspend("failed")
    assert not writer.is_open
    assert read_merged(tmp_path / "r.nxs.part")["frame_number"].tolist() == [1]  # what its last flush wrote


def test_integrate_source_removes_a_part_whose_status_cannot_be_written(tmp_path, small_poni, ledger):
    raw = tmp_path / "raw"
    write_small_acquisition(raw, n_parts=1, frames_per_part=4)
    (source,) = open_sources([str(raw)], calibration_files=[small_poni])
    calls = {"n": 0}

    def free(folder: Path) -> int:  # room to create the file, then none at all
        calls["n"] += 1
        return 1 << 30 if calls["n"] <= 2 else 0

    ledger.fault("no room after the file was created")
    with pytest.raises(NoSpaceError) as caught:
        integrate_source(source, IntegrationSettings(small_poni, bins=16), tmp_path / "out.nxs", free_bytes=free)
    assert f"no space left in {tmp_path}" in str(caught.value)
    assert f"the partial result {tmp_path / 'out.nxs.part'} was removed" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "small.poni"]


def test_a_refused_row_log_append_leaves_the_log_as_it_was(tmp_path, ledger):
    disk = Disk(1 << 30)
    rowlog = merge_log.RowLog.create(tmp_path / "s.nxs", np.arange(4.0), "s", free_bytes=disk)
    rows = merge_log.Record("rows", arrays={"numbers": np.arange(3), "data": np.zeros((3, 4), np.float32)})
    rowlog.append(rows)
    size = rowlog.path.stat().st_size
    disk.free = 10
    ledger.fault("no room for a row-log record")
    with pytest.raises(NoSpaceError, match=rf"no space left in {tmp_path} for a 'rows' change to s\.nxs"):
        rowlog.append(rows, then=1000)
    rowlog.close()
    records, good = merge_log.read(rowlog.path)
    assert [r.kind for r in records] == ["open", "rows"] and good == size == rowlog.path.stat().st_size
