"""The bitshuffle-LZ4 chunk check: valid streams read bit-identical to HDF5, broken ones are named.

Broken chunks here are written with h5py's ``write_direct_chunk`` and are all caught by the check
before HDF5 sees them (random bytes through the real command are tests/reliability/test_corrupt_data.py).
"""

import struct
from concurrent.futures import ThreadPoolExecutor

import h5py
import hdf5plugin
import numpy as np
import pytest

from pipeline_core.errors import SourceError
from pipeline_core.formats.chunk_check import (
    CorruptChunk,
    check_bitshuffle_lz4,
    decode_bitshuffle_lz4,
    fletcher32,
    native_decoder_available,
    strip_fletcher32,
)
from pipeline_core.formats.lambda_files import ModuleFile
from pipeline_core.formats.lambda_part import open_part
from pipeline_core.processing.sources import read_part_range

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


BROKEN = [
    (lambda r: r[:10], r"shorter than the 12-byte bitshuffle header"),
    (lambda r: struct.pack(">Q", 10**15) + r[8:], r"header says 10{15} uncompressed bytes, .* needs 4880"),
    (lambda r: _set_u32(r, 8, 0), r"header block size 0 bytes"),
    (lambda r: _set_u32(r, 8, 100), r"header block size 100 bytes; expected a positive multiple of 16"),
    (lambda r: _set_u32(r, 12, 2**31 + 5), r"block 1 of \d+ says 2147483653 compressed bytes, only \d+ remain"),
    (_garble_first_block, r"block 1 of \d+ is not a valid LZ4 block"),
    (lambda r: r + b"\0", r"ends at byte \d+, the chunk holds \d+ bytes"),
    (lambda r: r[:-1], r"block 39 of 39 says \d+ compressed bytes, only \d+ remain"),
]


@pytest.mark.parametrize(("corrupt", "message"), BROKEN)
def test_a_broken_stream_is_refused_saying_what_is_wrong(tmp_path, corrupt, message):
    raw = _raw_chunk(tmp_path, nelems=64)  # 40 x 61 = 2440 elements: 38 blocks of 64, one of 8, tail 0
    check_bitshuffle_lz4(raw, 40 * 61 * 2, 2)  # the intact chunk passes
    with pytest.raises(CorruptChunk, match=message):
        check_bitshuffle_lz4(corrupt(raw), 40 * 61 * 2, 2)


needs_native = pytest.mark.skipif(
    not native_decoder_available(), reason="hdf5plugin's bitshuffle library cannot be loaded with ctypes"
)


@needs_native
@pytest.mark.parametrize("corrupt", [c for c, _ in BROKEN], ids=[m for _, m in BROKEN])
def test_the_one_pass_decoder_refuses_what_the_check_refuses_and_writes_nothing_past_its_buffers(tmp_path, corrupt):
    raw = _raw_chunk(tmp_path, nelems=64)
    out = np.zeros((40, 61), np.uint16)
    scratch = np.zeros(out.nbytes + 64, np.uint8)  # the bytes past the chunk's size must stay untouched
    with pytest.raises(CorruptChunk) as checked:
        check_bitshuffle_lz4(corrupt(raw), out.nbytes, 2)
    with pytest.raises(CorruptChunk) as decoded:
        decode_bitshuffle_lz4(corrupt(raw), out, scratch)
    assert str(decoded.value).split(" (")[0] == str(checked.value).split(" (")[0]  # lz4's own detail aside
    assert not scratch[out.nbytes :].any()


@needs_native
@pytest.mark.parametrize(
    ("dtype", "shape", "nelems"),
    [(np.int16, (516, 1554), 0), (np.uint16, (3, 7), 0), (np.uint32, (37, 45), 64), (np.uint16, (200, 210), 0)],
    ids=["lambda module int16", "raw tail only", "uint32 small blocks", "full blocks + partial"],
)
def test_the_one_pass_decoder_gives_hdf5s_frame_bit_for_bit(tmp_path, dtype, shape, nelems):
    frames = _frames(2, shape, dtype, seed=3)
    path = _module(tmp_path / "m.nxs", frames, (1, *shape), hdf5plugin.Bitshuffle(nelems, "lz4"))
    with h5py.File(path, "r") as h5:
        raw = h5[DATA].id.read_direct_chunk((1, 0, 0))[1]
        by_hdf5 = h5[DATA][1]
    out = np.empty(shape, dtype)
    decode_bitshuffle_lz4(raw, out, np.empty(out.nbytes, np.uint8))
    np.testing.assert_array_equal(out, by_hdf5)
    np.testing.assert_array_equal(out, frames[1])


@needs_native
def test_a_lambda_module_file_is_decompressed_once_per_read_by_the_one_pass_decoder(tmp_path, monkeypatch):
    """One-frame chunks never go through the separate check (a second decompression) nor HDF5's filter."""
    import pipeline_core.formats.chunk_check as chunk_check

    frames = _frames(3, (40, 61), np.int16)
    module = ModuleFile.open(_module(tmp_path / "m.nxs", frames, (1, 40, 61)))
    try:
        monkeypatch.setattr(chunk_check, "check_bitshuffle_lz4", _fails("the separate check ran"))
        monkeypatch.setattr(chunk_check.ChunkChecker, "check", _fails("the check-then-HDF5 path ran"))
        out = np.empty((2, 40, 61), np.int16)
        module.read(1, 3, out)
        np.testing.assert_array_equal(out, frames[1:3])
    finally:
        module.close()


def test_two_threads_reading_one_module_file_get_their_own_frames(tmp_path):
    """The one-pass decoder reuses a scratch buffer and its foreign calls release the GIL: two threads
    reading frames of one file at once must each get their own frames, never a mix."""
    import threading

    frames = _frames(40, (200, 301), np.int32)
    module = ModuleFile.open(_module(tmp_path / "m.nxs", frames, (1, 200, 301)))
    wrong: list[int] = []

    def read(first: int) -> None:
        out = np.empty((1, 200, 301), np.int32)
        for _ in range(5):
            for i in range(first, 40, 2):
                try:
                    module.read(i, i + 1, out)
                except Exception:  # a frame refused as corrupt is as wrong as a mixed one
                    wrong.append(i)
                    continue
                if not np.array_equal(out[0], frames[i]):
                    wrong.append(i)

    try:
        threads = [threading.Thread(target=read, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        module.close()
    assert wrong == []


def _fails(why):
    def fail(*_args, **_kwargs):
        raise AssertionError(why)

    return fail


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


# -- Fletcher-32 -----------------------------------------------------------------------------------
# A bit flipped inside an LZ4 literal keeps the stream valid: only a checksum catches it. HDF5's
# Fletcher-32 filter appends one to every chunk; we read chunks raw (the check above, the DEFLATE
# path of lambda_part), so we verify it ourselves, and must accept and refuse exactly as HDF5 does.


@pytest.mark.parametrize("n", [1, 2, 3, 359, 360, 361, 721, 4095, 4096, 8193, 100_001])
@pytest.mark.parametrize("fill", ["random", "ones", "zeros"])
def test_fletcher32_gives_the_checksum_hdf5_stores(tmp_path, n, fill):
    data = {
        "random": np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8),
        "ones": np.full(n, 255, np.uint8),  # every word 0xffff: sums ≡ 0 mod 65535, HDF5 keeps 0xffff
        "zeros": np.zeros(n, np.uint8),
    }[fill]
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        ds = h5.create_dataset("d", data=data, chunks=(n,), fletcher32=True)
        raw = ds.id.read_direct_chunk((0,))[1]
    assert fletcher32(raw[:-4]) == struct.unpack("<I", raw[-4:])[0]
    assert strip_fletcher32(raw).tobytes() == data.tobytes()


def test_fletcher32_refuses_exactly_the_checksums_hdf5_refuses(tmp_path):
    rng = np.random.default_rng(5)
    verdicts = []
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        for i in range(120):
            n = int(rng.integers(1, 40))
            payload = rng.bytes(n) if i % 2 else b"\xff\xff" * n  # the second: sums that are multiples of 65535
            good = fletcher32(payload)
            swapped = (good & 0x00FF00FF) << 8 | (good >> 8) & 0x00FF00FF  # HDF5 <= 1.6.2 wrote this one
            stored = [good, swapped, good ^ (1 << int(rng.integers(32))), 0, 0xFFFF, 0xFFFF0000][i % 6]
            ds = h5.create_dataset(f"d{i}", shape=(n,), dtype=np.uint8, chunks=(n,), fletcher32=True)
            ds.id.write_direct_chunk((0,), payload + struct.pack("<I", stored))
            try:
                ds[...]
                hdf5_accepts = True
            except OSError:  # "filter returned failure during read": fletcher32 is the only filter
                hdf5_accepts = False
            try:
                strip_fletcher32(payload + struct.pack("<I", stored))
                we_accept = True
            except CorruptChunk as exc:
                assert str(exc).startswith(f"Fletcher-32 checksum mismatch: stored {stored:#010x}")
                we_accept = False
            verdicts.append((hdf5_accepts, we_accept))
    assert all(hdf5 == ours for hdf5, ours in verdicts), verdicts
    assert {hdf5 for hdf5, _ in verdicts} == {True, False}


FLETCHER_FILTERS = {
    "bslz4+fletcher32": {**hdf5plugin.Bitshuffle(cname="lz4"), "fletcher32": True},
    "gzip+fletcher32": {"compression": "gzip", "fletcher32": True},
}


def _part(tmp_path, filters, n=5, shape=(20, 30)):
    """Two module files of one part (``x_m1``, ``x_m2``, side by side) and their frames."""
    frames = [_frames(n, shape, np.uint16, seed=k) for k in range(2)]
    paths = []
    for k in range(2):
        path = _module(tmp_path / f"x_m{k + 1}_part00000.nxs", frames[k], (1, *shape), filters)
        with h5py.File(path, "r+") as h5:
            h5["entry/instrument/detector/translation/distance"][...] = [k * (shape[1] + 5), 0, 0]
        paths.append(path)
    return paths, frames


def _flip_bit(path, frame, where=0.5, bit=3):
    """Flip one bit on disk inside the stored chunk of ``frame`` (``where``: fraction into the chunk)."""
    with h5py.File(path, "r") as h5:
        info = h5[DATA].id.get_chunk_info_by_coord((frame, 0, 0))
    pos = info.byte_offset + min(int(where * info.size), info.size - 1)
    with open(path, "r+b") as fh:
        fh.seek(pos)
        byte = fh.read(1)[0]
        fh.seek(pos)
        fh.write(bytes([byte ^ (1 << bit)]))


def _read_each_frame(paths, reader):
    """Read frames one by one as ``reader`` does: {frame: module-1 pixels} and {frame: error message}."""
    got, errors = {}, {}
    with ThreadPoolExecutor(2) as pool, open_part(paths) as part:
        for i in range(part.n_frames):
            try:
                if reader == "ModuleFile.read":
                    out = np.empty((1, *part.modules[0].module_shape), np.uint16)
                    part.modules[0].read(i, i + 1, out)
                    got[i] = out[0]
                    continue
                if reader == "read_part_range":  # the live Integrator's read
                    rows = read_part_range(paths, i, i + 1).modules.data
                else:  # the offline source's read (DEFLATE frames inflated on threads)
                    rows = part.read_modules(i, i + 1, decoders=pool if reader == "read_modules+threads" else None)
                got[i] = part.layout.module_views(rows)[0][0]
            except SourceError as exc:
                errors[i] = str(exc)
    return got, errors


@pytest.mark.parametrize("reader", ["ModuleFile.read", "read_modules", "read_modules+threads", "read_part_range"])
@pytest.mark.parametrize("compression", list(FLETCHER_FILTERS))
def test_a_flipped_bit_in_a_fletcher32_chunk_fails_exactly_that_frame(tmp_path, compression, reader):
    paths, frames = _part(tmp_path, FLETCHER_FILTERS[compression])
    _flip_bit(paths[0], 2)
    got, errors = _read_each_frame(paths, reader)
    assert list(errors) == [2], errors
    assert errors[2].startswith(
        f"{paths[0]}: frames 2..2 are corrupt: chunk at (2, 0, 0): Fletcher-32 checksum mismatch"
    )
    for i in (0, 1, 3, 4):
        np.testing.assert_array_equal(got[i], frames[0][i])


@pytest.mark.parametrize("compression", list(FLETCHER_FILTERS))
def test_a_chunk_stored_without_its_fletcher32_checksum_is_refused(tmp_path, compression):
    paths, frames = _part(tmp_path, FLETCHER_FILTERS[compression])
    with h5py.File(paths[0], "r+") as h5:
        _, raw = h5[DATA].id.read_direct_chunk((1, 0, 0))
        h5[DATA].id.write_direct_chunk((1, 0, 0), raw[:-4], filter_mask=0b10)  # the checksum filter "skipped"
    for reader in ("ModuleFile.read", "read_modules"):
        got, errors = _read_each_frame(paths, reader)
        assert list(errors) == [1], (reader, errors)
        assert "chunk at (1, 0, 0) has filter mask 0x2: stored without its Fletcher-32 checksum" in errors[1]
        np.testing.assert_array_equal(got[0], frames[0][0])


def _lz4_valid_flip(raw: bytes, expected: int) -> tuple[int, bytes]:
    """The first bit flip (from the middle of the chunk on) after which the bitshuffle-LZ4 stream still passes."""
    for pos in range(len(raw) // 2, len(raw)):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x08
        try:
            check_bitshuffle_lz4(bytes(flipped), expected, 2)
        except CorruptChunk:
            continue
        return pos, bytes(flipped)
    raise AssertionError("no bit flip keeps the stream valid")


def test_without_fletcher32_a_bit_flip_that_keeps_the_lz4_stream_valid_is_read_as_data(tmp_path):
    """README's limit: LZ4 block streams carry no checksum, so such a flip is integrated unnoticed."""
    frames = _frames(3, (40, 61), np.uint16)
    path = _module(tmp_path / "m.nxs", frames, (1, 40, 61))
    with h5py.File(path, "r+") as h5:
        _, raw = h5[DATA].id.read_direct_chunk((1, 0, 0))
        _pos, flipped = _lz4_valid_flip(raw, 40 * 61 * 2)
        h5[DATA].id.write_direct_chunk((1, 0, 0), flipped)
    module = ModuleFile.open(path)
    try:
        out = np.empty((1, 40, 61), np.uint16)
        module.read(1, 2, out)  # no error: the check passes, HDF5 decodes
        assert (out[0] != frames[1]).any()
    finally:
        module.close()


@pytest.mark.parametrize("compression", ["gzip", *FLETCHER_FILTERS])
def test_with_deflate_or_fletcher32_every_bit_flip_in_a_chunk_is_refused(tmp_path, compression):
    """What does catch such flips: DEFLATE's Adler-32 and HDF5's Fletcher-32 (25 flips spread over the chunk)."""
    filters = {"compression": "gzip"} if compression == "gzip" else FLETCHER_FILTERS[compression]
    readers = ["ModuleFile.read"] + (["read_modules"] if compression.startswith("gzip") else [])
    paths, _ = _part(tmp_path, filters, n=1)
    with h5py.File(paths[0], "r") as h5:
        _, raw = h5[DATA].id.read_direct_chunk((0, 0, 0))
    for j in range(25):
        flipped = bytearray(raw)
        flipped[2 + j * (len(raw) - 3) // 25] ^= 1 << (j % 8)  # past the 2-byte zlib header
        with h5py.File(paths[0], "r+") as h5:
            h5[DATA].id.write_direct_chunk((0, 0, 0), bytes(flipped))
        for reader in readers:
            _, errors = _read_each_frame(paths, reader)
            assert list(errors) == [0], (j, reader)
            if compression != "gzip":
                assert "Fletcher-32 checksum mismatch" in errors[0], (j, reader, errors)
