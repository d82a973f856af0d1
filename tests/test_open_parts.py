"""The live Integrator keeps a part open across its work items (pipeline_core/processing/open_parts.py):
reused only while every file is the one opened, unchanged, and holds the frames asked for."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline_core.errors import SourceError
from pipeline_core.processing.open_parts import OpenParts
from pipeline_core.processing.sources import read_part_range

from .helpers import write_small_acquisition


@pytest.fixture
def part(tmp_path):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1, frames_per_part=6)
    return [p for p in acq["files"] if "_part00000" in p.name]


def _rows(batch):
    return batch.frame_numbers.tolist(), batch.modules.data.copy()


def test_items_of_one_part_share_one_open_and_read_what_a_fresh_open_reads(part):
    fresh = [_rows(read_part_range(part, a, b)) for a, b in ((0, 2), (2, 4), (4, 6))]
    parts = OpenParts()
    kept = [_rows(read_part_range(part, a, b, parts=parts)) for a, b in ((0, 2), (2, 4), (4, 6))]
    assert (parts.opened, parts.reused) == (1, 2)
    for (n1, d1), (n2, d2) in zip(kept, fresh, strict=True):
        assert n1 == n2 and np.array_equal(d1, d2)
    assert [n for n, _ in kept] == [[1, 2], [3, 4], [5, 6]]
    mask = read_part_range(part, 0, 1, parts=parts).detector_mask
    assert mask is not None and not mask.flags.writeable  # shared by the items: nobody may change it
    assert parts.held
    parts.close()
    assert not parts.held


def test_a_digest_asked_while_the_part_is_held_is_read(part):
    """A file's frames digest (the stamps' check when a file time moved) reads the file while the part
    is held open without the lock: HDF5 refuses a second open with other locking flags in one process."""
    from pipeline_core.processing.file_stamps import content_digest

    parts = OpenParts()
    read_part_range(part, 0, 2, parts=parts)
    assert content_digest(part[0]) > 0
    parts.close()
    assert content_digest(part[0]) > 0


def test_a_file_written_again_or_replaced_is_opened_afresh(part, tmp_path):
    parts = OpenParts()
    read_part_range(part, 0, 2, parts=parts)
    st = part[1].stat()
    os.utime(part[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # written again (same size)
    read_part_range(part, 2, 4, parts=parts)
    assert (parts.opened, parts.reused) == (2, 0)
    copy = tmp_path / "copy.nxs"
    copy.write_bytes(part[2].read_bytes())
    os.replace(copy, part[2])  # another file under the same name (another inode)
    read_part_range(part, 4, 6, parts=parts)
    assert (parts.opened, parts.reused) == (3, 0)
    read_part_range(part, 4, 6, parts=parts)
    assert (parts.opened, parts.reused) == (3, 1)


def test_more_frames_than_the_open_part_holds_or_a_failed_read_opens_afresh(part):
    parts = OpenParts()
    read_part_range(part, 0, 2, parts=parts)
    with pytest.raises(SourceError, match="requested"):
        read_part_range(part, 4, 9, parts=parts)  # not in the part even when opened again: refused
    assert not parts.held  # the failed read closed it
    read_part_range(part, 0, 2, parts=parts)
    assert parts.opened == 3 and parts.reused == 0


def test_a_part_held_between_items_never_locks_the_detector_out(part):
    """HDF5's file lock on a kept handle would refuse the detector's writer (errno 11) opening the files
    again under their names (a re-take): the kept handles take none; the writer gets its file."""
    import subprocess
    import sys

    parts = OpenParts()
    read_part_range(part, 0, 2, parts=parts)
    assert parts.held
    script = "import sys, h5py; h5py.File(sys.argv[1], 'a').close()"
    done = subprocess.run([sys.executable, "-c", script, str(part[0])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]
    parts.close()


def test_a_part_still_locked_by_its_writer_is_not_read(part):
    """The first open of a part takes the lock once per file, as every open did: a writer still at a
    file (its lock held) is waited for, then named, never read half-written."""
    import subprocess
    import sys

    script = "import sys, time, h5py; f = h5py.File(sys.argv[1], 'a'); print('open', flush=True); time.sleep(30)"
    writer = subprocess.Popen([sys.executable, "-c", script, str(part[1])], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(SourceError, match="cannot be opened as HDF5"):
            read_part_range(part, 0, 2, retries=1, retry_delay_s=0.05, parts=OpenParts())
    finally:
        writer.kill()
        writer.wait()
