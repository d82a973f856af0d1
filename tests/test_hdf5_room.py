"""Room taken past a result file's end before HDF5 writes (:mod:`pipeline_core.formats.hdf5_room`):
the file's own, and given back. The full disk itself: tests/reliability/test_full_disk_inside_hdf5.py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pipeline_core.errors import NoSpaceError
from pipeline_core.formats import hdf5_room
from pipeline_core.formats.nexus import MergedFileWriter, read_merged
from pipeline_core.output import reserve_output
from pipeline_core.processing.integrate import IntegrationSettings


def test_room_reserved_past_a_files_end_is_the_files_and_is_given_back(tmp_path):
    path = tmp_path / "f.nxs.part"
    path.write_bytes(b"\1" * 100_000)
    if not hdf5_room.reserve(path, 600_000):
        pytest.skip(f"the file system of {tmp_path} cannot reserve room (fallocate KEEP_SIZE)")
    st = path.stat()
    assert st.st_size == 100_000 and st.st_blocks * 512 >= 700_000  # taken, the size unchanged
    hdf5_room.trim(path)
    st = path.stat()
    assert st.st_size == 100_000 and st.st_blocks * 512 < 200_000
    assert path.read_bytes() == b"\1" * 100_000


def test_a_published_file_keeps_no_reserved_room(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=2048)
    writer = MergedFileWriter(reserve_output(tmp_path / "r.nxs"), np.arange(2048.0), settings, [], [], "r")
    writer.add(np.array([1, 2]), np.ones((2, 2048)))
    writer.set_raw_file(0, "/raw/r_m1_part00000.nxs")  # reserves room and flushes nothing
    final = writer.close()
    st = final.stat()
    assert st.st_blocks * 512 - st.st_size < 8192  # at most the last block's slack
    assert read_merged(final)["frame_number"].tolist() == [1, 2]


def test_an_enospc_met_inside_hdf5_is_a_no_space_error_and_the_handle_is_held_until_let_go(
    tmp_path, small_poni, monkeypatch
):
    """Where no room could be reserved HDF5 can still meet ENOSPC: the writer says NoSpaceError, and
    never flushes or closes the handle on the full disk (HDF5 crashes the process then); it is held
    and let go once there is room. (HDF5's own error is simulated here: a real one would leave the
    handle as HDF5 leaves it, see hdf5_room.)"""
    settings = IntegrationSettings(small_poni, bins=8)
    writer = MergedFileWriter(reserve_output(tmp_path / "r.nxs"), np.arange(8.0), settings, [], [], "r")
    writer.add(np.array([1, 2]), np.ones((2, 8)))
    real_flush = h5py.File.flush

    def full_disk(self):
        raise RuntimeError("Unable to flush file (file write failed: errno = 28, 'No space left on device')")

    monkeypatch.setattr(h5py.File, "flush", full_disk)
    with pytest.raises(NoSpaceError, match="HDF5 met the full disk"):
        writer.add(np.array([3]), np.ones((1, 8)))
    monkeypatch.setattr(h5py.File, "flush", real_flush)
    with pytest.raises(NoSpaceError, match="HDF5 met the full disk in an earlier write"):
        writer.suspend()
    assert hdf5_room.holds(writer.file_path) and writer.h5  # not closed on the full disk
    hdf5_room.let_go(writer.file_path)  # room is back
    assert not hdf5_room.holds(writer.file_path) and not writer.h5
    result = read_merged(writer.file_path)
    assert result["status"] == "running"  # never a status it could not write
    assert result["frame_number"].tolist()[:2] == [1, 2]
