"""The bitshuffle-LZ4 chunk check: valid streams read bit-identical to HDF5, broken ones are named.

Broken chunks here are written with h5py's ``write_direct_chunk`` and are all caught by the check
before HDF5 sees them (random bytes through the real command are tests/reliability/test_corrupt_data.py).
"""

import struct

import h5py
import hdf5plugin
import numpy as np
import pytest

from pipeline_core.errors import SourceError
from pipeline_core.formats.chunk_check import CorruptChunk, check_bitshuffle_lz4
from pipeline_core.formats.lambda_files import ModuleFile

DATA = "entry/instrument/detector/data"


def _module(path, frames, chunks, filters=None):
    """A minimal Lambda module file (data, translation, sequence numbers) with the given chunks/filters."""
    filters = hdf5plugin.Bitshuffle(cname="lz4") if filters is None else filters
    with h5py.File(path, "w") as h5:
        h5.create_dataset(DATA, data=frames, chunks=chunks, **filters)
        h5["entry/instrument/detector/translation/distance"] = np.array([0.0, 0.0, 0.0], np.float32)
        h5["entry/instrument/detector/sequence_number"] = np.arange(1, len(frames) + 1, dtype=np.int32)
    return path


def _frames(n, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    # Poisson-like counts compress like detector data; a few saturated pixels use the high bits
    frames = rng.poisson(30, size=(n, *shape)).astype(dtype)
    frames[:, 0, :3] = np.iinfo(dtype).max
    return frames


def _raw_chunk(tmp_path, shape=(1, 40, 61), dtype=np.uint16, nelems=0):
    path = _module(tmp_path / "one.nxs", _frames(1, shape[1:], dtype), shape, hdf5plugin.Bitshuffle(nelems, "lz4"))
    with h5py.File(path, "r") as h5:
        return h5[DATA].id.read_direct_chunk((0, 0, 0))[1]


@pytest.mark.parametrize(
    ("dtype", "shape", "chunks", "nelems"),
    [
        (np.int16, (4, 30, 50), (1, 30, 50), 0),  # one frame per chunk, one partial block + raw tail
        (np.uint32, (7, 24, 33), (3, 24, 33), 64),  # 3 frames per chunk, the last chunk half empty; many blocks
        (np.uint16, (2, 37, 45), (1, 16, 20), 40),  # tiles, edge tiles partly outside the frame
        (np.uint16, (3, 200, 210), (1, 200, 210), 0),  # several full 8 kB blocks and a partial one
    ],
)
def test_valid_streams_pass_and_read_bit_identical_to_hdf5(tmp_path, dtype, shape, chunks, nelems):
    frames = _frames(shape[0], shape[1:], dtype)
    path = _module(tmp_path / "m.nxs", frames, chunks, hdf5plugin.Bitshuffle(nelems, "lz4"))
    module = ModuleFile.open(path)
    try:
        assert module.checker.needs_check
        for start, stop in [(0, shape[0]), (1, 2), (shape[0] - 1, shape[0])]:
            out = np.empty((stop - start, *shape[1:]), dtype)
            module.read(start, stop, out)
            np.testing.assert_array_equal(out, frames[start:stop])
        n_chunks = len(module.checker.chunk_offsets(0, shape[0]))
        assert len(module.checker._checked) == n_chunks == h5py.File(path)[DATA].id.get_num_chunks()
    finally:
        module.close()


def _set_u32(raw, pos, value):
    b = bytearray(raw)
    struct.pack_into(">I", b, pos, value)
    return bytes(b)


def _garble_first_block(raw):
    b = bytearray(raw)
    b[16:48] = bytes(range(200, 232))  # inside block 1's LZ4 stream: tokens with absurd lengths
    return bytes(b)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda r: r[:10], r"shorter than the 12-byte bitshuffle header"),
        (lambda r: struct.pack(">Q", 10**15) + r[8:], r"header says 10{15} uncompressed bytes, .* needs 4880"),
        (lambda r: _set_u32(r, 8, 0), r"header block size 0 bytes"),
        (lambda r: _set_u32(r, 8, 100), r"header block size 100 bytes; expected a positive multiple of 16"),
        (lambda r: _set_u32(r, 12, 2**31 + 5), r"block 1 of \d+ says 2147483653 compressed bytes, only \d+ remain"),
        (_garble_first_block, r"block 1 of \d+ is not a valid LZ4 block"),
        (lambda r: r + b"\0", r"ends at byte \d+, the chunk holds \d+ bytes"),
        (lambda r: r[:-1], r"block 39 of 39 says \d+ compressed bytes, only \d+ remain"),
    ],
)
def test_a_broken_stream_is_refused_saying_what_is_wrong(tmp_path, corrupt, message):
    raw = _raw_chunk(tmp_path, nelems=64)  # 40 x 61 = 2440 elements: 38 blocks of 64, one of 8, tail 0
    check_bitshuffle_lz4(raw, 40 * 61 * 2, 2)  # the intact chunk passes
    with pytest.raises(CorruptChunk, match=message):
        check_bitshuffle_lz4(corrupt(raw), 40 * 61 * 2, 2)


def test_the_raw_tail_of_elements_not_a_multiple_of_8_is_accounted_for(tmp_path):
    raw = _raw_chunk(tmp_path, shape=(1, 3, 7))  # 21 elements: one block of 16, 5 raw elements
    check_bitshuffle_lz4(raw, 42, 2)
    n_bytes, block_bytes = struct.unpack(">QI", raw[:12])
    (size,) = struct.unpack(">I", raw[12:16])
    assert (n_bytes, len(raw)) == (42, 12 + 4 + size + 5 * 2)
    end = len(raw)
    with pytest.raises(CorruptChunk, match=rf"10-byte raw tail\) ends at byte {end}, the chunk holds {end - 2}"):
        check_bitshuffle_lz4(raw[:-2], 42, 2)


@pytest.mark.parametrize("chunks", [(1, 20, 30), (3, 20, 30), (1, 10, 16)], ids=["frame", "3 frames", "tiles"])
def test_a_corrupt_chunk_costs_exactly_the_frames_it_holds(tmp_path, chunks):
    frames = _frames(7, (20, 30), np.uint16)
    path = _module(tmp_path / "m_part00000.nxs", frames, chunks)
    victim = (3 // chunks[0] * chunks[0], 0, 0)
    with h5py.File(path, "r+") as h5:
        ds = h5[DATA]
        _, raw = ds.id.read_direct_chunk(victim)
        ds.id.write_direct_chunk(victim, _set_u32(raw, 12, 2**30))  # block 1 claims 1 GiB
    lost = set(range(victim[0], min(victim[0] + chunks[0], 7)))
    module = ModuleFile.open(path)
    try:
        out = np.empty((1, 20, 30), np.uint16)
        for i in range(7):
            if i in lost:
                with pytest.raises(SourceError) as err:
                    module.read(i, i + 1, out)
                assert str(err.value).startswith(f"{path}: frames {i}..{i} are corrupt: chunk at {victim}: block 1")
            else:
                module.read(i, i + 1, out)
                np.testing.assert_array_equal(out[0], frames[i])
        with pytest.raises(SourceError, match=r"frames 0\.\.6 are corrupt"):  # a range read fails as a whole
            module.read(0, 7, np.empty((7, 20, 30), np.uint16))
    finally:
        module.close()


def test_a_chunk_never_written_and_a_chunk_stored_unfiltered_are_refused(tmp_path):
    path = tmp_path / "m.nxs"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset(DATA, shape=(3, 8, 8), dtype=np.uint16, chunks=(1, 8, 8), **hdf5plugin.Bitshuffle())
        ds[0] = 5
        ds.id.write_direct_chunk((2, 0, 0), np.full((8, 8), 7, np.uint16).tobytes(), filter_mask=1)
        h5["entry/instrument/detector/translation/distance"] = np.zeros(3, np.float32)
        h5["entry/instrument/detector/sequence_number"] = np.arange(1, 4, dtype=np.int32)
    module = ModuleFile.open(path)
    try:
        out = np.empty((1, 8, 8), np.uint16)
        module.read(0, 1, out)
        assert (out == 5).all()
        with pytest.raises(SourceError, match=r"frames 1\.\.1 are corrupt: chunk at \(1, 0, 0\) was never written"):
            module.read(1, 2, out)
        with pytest.raises(SourceError, match=r"chunk at \(2, 0, 0\) has filter mask 0x1"):
            module.read(2, 3, out)
        with pytest.raises(SourceError, match=r"frames 2\.\.3 requested, the file holds 3"):
            module.read(2, 4, np.empty((2, 8, 8), np.uint16))
    finally:
        module.close()


@pytest.mark.parametrize(
    ("filters", "checked"),
    [
        ({"compression": "gzip", "compression_opts": 2}, False),
        ({"compression": "gzip", "shuffle": True, "fletcher32": True}, False),
        ({}, False),
        (hdf5plugin.Bitshuffle(cname="none"), False),
        (hdf5plugin.Bitshuffle(cname="lz4"), True),
    ],
    ids=["gzip", "gzip+shuffle+fletcher32", "none", "bitshuffle-only", "bslz4"],
)
def test_which_datasets_are_checked(tmp_path, filters, checked):
    frames = _frames(2, (10, 12), np.int16)
    path = _module(tmp_path / "m.nxs", frames, (1, 10, 12), filters)
    module = ModuleFile.open(path)
    try:
        assert module.checker.needs_check is checked
        out = np.empty((2, 10, 12), np.int16)
        module.read(0, 2, out)
        np.testing.assert_array_equal(out, frames)
    finally:
        module.close()


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (hdf5plugin.LZ4(), r"filter pipeline \[32004 .*\] cannot be validated"),
        (hdf5plugin.Bitshuffle(cname="zstd"), r"bitshuffle with compression 3 .* cannot be validated"),
    ],
    ids=["lz4 filter", "bitshuffle-zstd"],
)
def test_filters_without_a_validating_decoder_are_refused_at_open(tmp_path, filters, message):
    path = _module(tmp_path / "m.nxs", _frames(2, (10, 12), np.int16), (1, 10, 12), filters)
    with pytest.raises(SourceError, match=message) as err:
        ModuleFile.open(path)
    assert str(path) in str(err.value)
