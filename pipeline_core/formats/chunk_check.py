"""Checking compressed HDF5 chunks with bounds-checked decoders before HDF5's own filter decodes them.

Why: the bitshuffle filter bundled in hdf5plugin (HDF5 filter 32008) trusts the sizes written in the
chunk: a corrupt chunk makes it read and write past its buffers, and the process dies with SIGSEGV —
an offline run, or a live Integrator server (and the next one the lease hands the item to). So every
raw chunk of the frames about to be read is parsed here first, and each LZ4 block is decompressed with
the ``lz4`` package's bounds-checked decoder (``LZ4_decompress_safe``). Only a stream that is
consistent to the last byte goes on to HDF5's normal decoding, whose results therefore stay
bit-identical to an unchecked read.

The bitshuffle chunk format (kiyo-masui/bitshuffle, ``src/bshuf_h5filter.c`` and ``src/bitshuffle.c``):
a 12-byte header (uint64 BE uncompressed bytes, uint32 BE block size in *bytes*), then for each block
of ``block_size`` elements a uint32 BE compressed size and an LZ4 block, then one shorter block of the
remaining elements rounded down to a multiple of 8 (if any), then the last ``n_elements % 8`` elements
copied raw.

DEFLATE (gzip), shuffle and Fletcher-32 need no such check: zlib's inflate is bounds-checked and HDF5
reports a corrupt stream as an error (tests/reliability/test_corrupt_data.py corrupts gzip files for
real). Any other filter has no validating decoder here and is refused when the file is opened.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

import h5py
import lz4.block
import numpy as np

BITSHUFFLE_FILTER = 32008
BITSHUFFLE_NO_COMPRESSION = 0
BITSHUFFLE_LZ4 = 2
# HDF5's built-in filters whose decoders are bounds-checked (deflate, shuffle, fletcher32).
SAFE_FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32}
_BLOCKED_MULT = 8  # bitshuffle works on groups of 8 elements
_HEADER = struct.Struct(">QI")
_BLOCK_SIZE = struct.Struct(">I")


class CorruptChunk(ValueError):
    """A raw chunk whose stream is inconsistent; the message says what is wrong, the caller adds where."""


class UncheckableFilters(ValueError):
    """A filter pipeline we cannot validate; reading it could crash the process on a corrupt chunk."""


def check_bitshuffle_lz4(chunk: bytes | memoryview, expected_bytes: int, elem_size: int) -> None:
    """Raise CorruptChunk unless ``chunk`` is a complete, consistent bitshuffle-LZ4 stream.

    ``expected_bytes`` is the decoded size HDF5 needs (chunk shape × item size). Every LZ4 block is
    decompressed (bounds-checked) and must give exactly its block's bytes, and the blocks plus the
    raw tail must end exactly at the end of the chunk: the unchecked decoder then follows the same
    path within its buffers.
    """
    view = memoryview(chunk).cast("B")
    total = len(view)
    if total < _HEADER.size:
        raise CorruptChunk(f"chunk is {total} bytes, shorter than the 12-byte bitshuffle header")
    n_bytes, block_bytes = _HEADER.unpack_from(view, 0)
    if n_bytes != expected_bytes:
        raise CorruptChunk(f"header says {n_bytes} uncompressed bytes, the chunk shape needs {expected_bytes}")
    if n_bytes % elem_size:
        raise CorruptChunk(f"header says {n_bytes} uncompressed bytes, not a multiple of the {elem_size}-byte element")
    if block_bytes == 0 or block_bytes % (elem_size * _BLOCKED_MULT):
        raise CorruptChunk(
            f"header block size {block_bytes} bytes; expected a positive multiple of {elem_size * _BLOCKED_MULT}"
        )
    n_elements = n_bytes // elem_size
    block_size = block_bytes // elem_size
    last = n_elements % block_size
    last -= last % _BLOCKED_MULT
    blocks = [block_size] * (n_elements // block_size) + ([last] if last else [])
    pos = _HEADER.size
    for index, elements in enumerate(blocks):
        if pos + 4 > total:
            raise CorruptChunk(f"chunk ends at byte {total} before block {index + 1} of {len(blocks)}")
        (size,) = _BLOCK_SIZE.unpack_from(view, pos)
        pos += 4
        if size > total - pos:
            raise CorruptChunk(
                f"block {index + 1} of {len(blocks)} says {size} compressed bytes, only {total - pos} remain"
            )
        want = elements * elem_size
        try:
            got = len(lz4.block.decompress(view[pos : pos + size], uncompressed_size=want))
        except lz4.block.LZ4BlockError as exc:
            raise CorruptChunk(f"block {index + 1} of {len(blocks)} is not a valid LZ4 block ({exc})") from exc
        if got != want:
            raise CorruptChunk(f"block {index + 1} of {len(blocks)} decompresses to {got} bytes, expected {want}")
        pos += size
    tail = (n_elements % _BLOCKED_MULT) * elem_size
    if pos + tail != total:
        raise CorruptChunk(
            f"the stream ({len(blocks)} blocks and a {tail}-byte raw tail) ends at byte {pos + tail}, "
            f"the chunk holds {total} bytes"
        )


def filter_pipeline(dataset: h5py.Dataset) -> list[tuple[int, tuple[int, ...], str]]:
    """(filter id, client values, name) of each filter of the dataset, in pipeline order."""
    plist = dataset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        fid, _flags, values, name = plist.get_filter(i)
        out.append((int(fid), tuple(int(v) for v in values), name.decode(errors="replace")))
    return out


@dataclass
class ChunkChecker:
    """Validates the raw chunks of a 3-D frame dataset before HDF5 decodes them.

    Works for any chunk shape: one frame per chunk, several frames per chunk (a bad chunk then costs
    every frame it holds) or tiles (every tile of the frames is checked). A chunk checked once is not
    checked again (Lambda module files never change once published).
    """

    dataset: h5py.Dataset
    needs_check: bool
    elem_size: int = 0
    _checked: set[tuple[int, ...]] = field(default_factory=set)
    _buffer: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))  # raw chunks, reused

    @classmethod
    def for_dataset(cls, dataset: h5py.Dataset) -> ChunkChecker:
        """Decide how the dataset must be checked; UncheckableFilters when it cannot be made safe."""
        filters = filter_pipeline(dataset)
        ids = [fid for fid, _, _ in filters]
        if all(fid in SAFE_FILTERS for fid in ids):
            return cls(dataset, needs_check=False)
        described = ", ".join(f"{fid} ({name or 'unnamed'}) {values}" for fid, values, name in filters)
        if ids != [BITSHUFFLE_FILTER]:
            raise UncheckableFilters(
                f"filter pipeline [{described}] cannot be validated: expected DEFLATE (gzip) or bitshuffle "
                "(32008) alone, whose corrupt chunks can be caught without crashing the process"
            )
        values = filters[0][1]
        itemsize = dataset.dtype.itemsize
        if len(values) < 3 or values[2] != itemsize:
            raise UncheckableFilters(
                f"bitshuffle parameters {values} give element size {values[2] if len(values) > 2 else '?'}; "
                f"the dataset's {dataset.dtype} has {itemsize}-byte elements"
            )
        compression = values[4] if len(values) > 4 else BITSHUFFLE_NO_COMPRESSION
        if compression == BITSHUFFLE_NO_COMPRESSION:
            return cls(dataset, needs_check=False)  # a fixed-size transposition: nothing to trust
        if compression != BITSHUFFLE_LZ4:
            raise UncheckableFilters(
                f"bitshuffle with compression {compression} (parameters {values}) cannot be validated; "
                f"expected LZ4 ({BITSHUFFLE_LZ4}) or none ({BITSHUFFLE_NO_COMPRESSION})"
            )
        if dataset.chunks is None:
            raise UncheckableFilters("a filtered dataset without chunks: the file is inconsistent")
        return cls(dataset, needs_check=True, elem_size=itemsize)

    def chunk_offsets(self, start: int, stop: int) -> list[tuple[int, ...]]:
        """Offsets of every chunk that holds part of frames ``start:stop``."""
        chunks = self.dataset.chunks
        shape = self.dataset.shape
        first = (start // chunks[0]) * chunks[0]
        ranges = [range(first, stop, chunks[0])] + [range(0, n, c) for n, c in zip(shape[1:], chunks[1:], strict=True)]
        return list(itertools.product(*ranges))

    def check(self, start: int, stop: int) -> None:
        """Raise CorruptChunk naming the chunk and what is wrong, unless frames ``start:stop`` are safe to decode."""
        if not self.needs_check:
            return
        expected = int(np.prod(self.dataset.chunks)) * self.elem_size
        # No valid stream is larger (LZ4's worst case is n + n/255 + 16 per block); a bigger size in the
        # chunk index is corruption, and must not make us allocate it.
        limit = 2 * expected + 4096
        for offset in self.chunk_offsets(start, stop):
            if offset in self._checked:
                continue
            try:
                info = self.dataset.id.get_chunk_info_by_coord(offset)
            except Exception as exc:  # h5py raises RuntimeError/OSError/KeyError depending on what broke
                raise CorruptChunk(f"chunk at {offset}: the chunk index cannot be read ({_first_line(exc)})") from exc
            if info.byte_offset is None:
                raise CorruptChunk(f"chunk at {offset} was never written")
            if info.filter_mask:
                raise CorruptChunk(
                    f"chunk at {offset} has filter mask {info.filter_mask:#x}: stored without the bitshuffle-LZ4 filter"
                )
            if not 0 < info.size <= limit:
                raise CorruptChunk(
                    f"chunk at {offset} is {info.size} bytes in the chunk index; a bitshuffle-LZ4 stream of "
                    f"{expected} bytes takes 12..{limit}"
                )
            if self._buffer.size < info.size:
                self._buffer = np.empty(limit, np.uint8)
            try:
                _mask, raw = self.dataset.id.read_direct_chunk(offset, out=self._buffer)
            except Exception as exc:
                raise CorruptChunk(f"chunk at {offset} cannot be read ({_first_line(exc)})") from exc
            try:
                check_bitshuffle_lz4(raw, expected, self.elem_size)
            except CorruptChunk as exc:
                raise CorruptChunk(f"chunk at {offset}: {exc}") from None
            self._checked.add(offset)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
