"""Checking compressed HDF5 chunks with bounds-checked decoders before HDF5's own filter decodes them.

Why: the bitshuffle filter bundled in hdf5plugin (HDF5 filter 32008) trusts the sizes written in the
chunk: a corrupt chunk makes it read and write past its buffers, and the process dies with SIGSEGV —
an offline run, or a live Integrator server (and the next one the lease hands the item to). So every
raw chunk of the frames about to be read is parsed here first, and each LZ4 block is decompressed with
the ``lz4`` package's bounds-checked decoder (``LZ4_decompress_safe``). Only a stream that is
consistent to the last byte goes on to HDF5's normal decoding, whose results therefore stay
bit-identical to an unchecked read.

Checking and then letting HDF5 decode decompresses every chunk twice (the check ~1.2 ms of a Lambda
2M frame's ~3.7 ms read, issue 21). One-frame chunks, what Lambda files hold, are therefore checked and
decoded in one pass (:func:`decode_bitshuffle_lz4`, :meth:`ChunkChecker.decode`) with the same
bounds-checked LZ4 decoder and bitshuffle's own unshuffle, both from the library of hdf5plugin's
bitshuffle filter: the same rules, the same messages, HDF5's bytes; HDF5's filter never sees them.

The bitshuffle chunk format (kiyo-masui/bitshuffle, ``src/bshuf_h5filter.c`` and ``src/bitshuffle.c``):
a 12-byte header (uint64 BE uncompressed bytes, uint32 BE block size in *bytes*), then for each block
of ``block_size`` elements a uint32 BE compressed size and an LZ4 block, then one shorter block of the
remaining elements rounded down to a multiple of 8 (if any), then the last ``n_elements % 8`` elements
copied raw.

DEFLATE (gzip) and shuffle need no such check: zlib's inflate is bounds-checked and HDF5 reports a
corrupt stream as an error (tests/reliability/test_corrupt_data.py corrupts gzip files for real). Any
other filter has no validating decoder here and is refused when the file is opened.

A valid stream is not a correct one: a bit flipped inside an LZ4 literal keeps the stream valid and
decodes to other counts, and LZ4 block streams carry no checksum. Only a checksum catches that:
DEFLATE's Adler-32 (zlib checks it) or HDF5's Fletcher-32 filter. Where the pipeline ends with
Fletcher-32, every chunk's checksum is verified here too (:func:`strip_fletcher32`), before the
stream is parsed: HDF5 would verify it as well, but only after the bitshuffle decoder had run, and
with a message that names neither file nor frame; our own DEFLATE path (``lambda_part``) reads raw
chunks and never passes through HDF5's filter, so it verifies with the same function.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import lz4.block
import numpy as np

BITSHUFFLE_FILTER = 32008
FLETCHER32_FILTER = h5py.h5z.FILTER_FLETCHER32
BITSHUFFLE_NO_COMPRESSION = 0
BITSHUFFLE_LZ4 = 2
# HDF5's built-in filters whose decoders are bounds-checked (deflate, shuffle, fletcher32).
SAFE_FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32}
_BLOCKED_MULT = 8  # bitshuffle works on groups of 8 elements
_HEADER = struct.Struct(">QI")
_BLOCK_SIZE = struct.Struct(">I")
_FLETCHER = struct.Struct("<I")  # HDF5 appends the checksum little-endian (UINT32ENCODE)
_FLETCHER_LEN = _FLETCHER.size
#: Fletcher-32 sums are taken over blocks of this many 16-bit words with one BLAS product: every
#: partial sum stays an integer below 2**53 (≤ 65535 · 4096² / 2), so float64 adds it exactly.
_FLETCHER_BLOCK = 4096
_FLETCHER_WEIGHTS = np.stack([np.ones(_FLETCHER_BLOCK), np.arange(_FLETCHER_BLOCK, dtype=np.float64)], axis=1)
_MOD = 65535


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
    blocks, _ = _block_plan(view, expected_bytes, elem_size)
    pos = _HEADER.size
    for index, elements in enumerate(blocks):
        pos, size = _next_block(view, pos, index, len(blocks))
        want = elements * elem_size
        try:
            got = len(lz4.block.decompress(view[pos : pos + size], uncompressed_size=want))
        except lz4.block.LZ4BlockError as exc:
            raise CorruptChunk(f"block {index + 1} of {len(blocks)} is not a valid LZ4 block ({exc})") from exc
        if got != want:
            raise CorruptChunk(f"block {index + 1} of {len(blocks)} decompresses to {got} bytes, expected {want}")
        pos += size
    _check_end(view, pos, len(blocks), expected_bytes // elem_size, elem_size)


def decode_bitshuffle_lz4(chunk: bytes | memoryview, out: np.ndarray, scratch: np.ndarray) -> None:
    """Check and decode a bitshuffle-LZ4 stream into ``out`` in one pass (issue 21), or CorruptChunk.

    The same rules as :func:`check_bitshuffle_lz4`, with the same messages; each LZ4 block is
    decompressed once, by LZ4's bounds-checked ``LZ4_decompress_safe`` straight into ``scratch`` (the
    bitshuffled bytes, raw tail included), then bitshuffle's own ``bshuf_bitunshuffle`` (a fixed-size
    transposition: nothing in the stream steers it) writes the elements into ``out``. Both are the
    functions of the bitshuffle filter hdf5plugin ships, so the result is HDF5's, bit for bit; what
    is saved is the second decompression (HDF5's, after the check) and HDF5's chunk machinery.
    ``out``: C-contiguous, the chunk's decoded size; ``scratch``: uint8, at least that size.
    Only when :func:`native_decoder_available`.
    """
    lib = _native_bitshuffle()
    assert lib is not None, "decode_bitshuffle_lz4 needs hdf5plugin's bitshuffle library"
    expected_bytes, elem_size = int(out.nbytes), int(out.itemsize)
    if not out.flags.c_contiguous or scratch.nbytes < expected_bytes:
        raise ValueError(f"output {out.shape} must be C-contiguous and scratch ({scratch.nbytes} bytes) hold it")
    view = memoryview(chunk).cast("B")
    blocks, block_size = _block_plan(view, expected_bytes, elem_size)
    src = np.frombuffer(view, np.uint8)
    src_addr = src.ctypes.data
    dst_addr = scratch.ctypes.data
    decompress = lib.LZ4_decompress_safe
    pos, done = _HEADER.size, 0
    for index, elements in enumerate(blocks):
        pos, size = _next_block(view, pos, index, len(blocks))
        want = elements * elem_size
        got = decompress(src_addr + pos, dst_addr + done, size, want)
        if got != want:
            what = "is not a valid LZ4 block" if got < 0 else f"decompresses to {got} bytes, expected {want}"
            raise CorruptChunk(f"block {index + 1} of {len(blocks)} {what}")
        pos += size
        done += want
    n_elements = expected_bytes // elem_size
    _check_end(view, pos, len(blocks), n_elements, elem_size)
    scratch[done:expected_bytes] = src[pos : pos + expected_bytes - done]  # the raw tail (< 8 elements)
    if lib.bshuf_bitunshuffle(dst_addr, out.ctypes.data, n_elements, elem_size, block_size) < 0:
        raise CorruptChunk(f"bitshuffle refused {n_elements} elements of {elem_size} bytes in blocks of {block_size}")


def _block_plan(view: memoryview, expected_bytes: int, elem_size: int) -> tuple[list[int], int]:
    """Elements of each LZ4 block the header announces, and the block size in elements (CorruptChunk
    when the header disagrees with the chunk shape)."""
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
    return [block_size] * (n_elements // block_size) + ([last] if last else []), block_size


def _next_block(view: memoryview, pos: int, index: int, n_blocks: int) -> tuple[int, int]:
    """(where block ``index``'s LZ4 bytes start, how many) from its size prefix at ``pos``, checked
    against the end of the chunk."""
    total = len(view)
    if pos + 4 > total:
        raise CorruptChunk(f"chunk ends at byte {total} before block {index + 1} of {n_blocks}")
    (size,) = _BLOCK_SIZE.unpack_from(view, pos)
    pos += 4
    if size > total - pos:
        raise CorruptChunk(f"block {index + 1} of {n_blocks} says {size} compressed bytes, only {total - pos} remain")
    return pos, size


def _check_end(view: memoryview, pos: int, n_blocks: int, n_elements: int, elem_size: int) -> None:
    """The blocks and the raw tail of ``n_elements % 8`` elements must end exactly at the chunk's end."""
    tail = (n_elements % _BLOCKED_MULT) * elem_size
    if pos + tail != len(view):
        raise CorruptChunk(
            f"the stream ({n_blocks} blocks and a {tail}-byte raw tail) ends at byte {pos + tail}, "
            f"the chunk holds {len(view)} bytes"
        )


@functools.cache
def _native_bitshuffle() -> ctypes.CDLL | None:
    """hdf5plugin's bitshuffle filter library (it exports LZ4 and bitshuffle's functions), or None
    when it cannot be loaded or lacks them (then frames go the checked-then-HDF5 way)."""
    try:
        import hdf5plugin

        lib = ctypes.CDLL(str(Path(hdf5plugin.PLUGIN_PATH) / "libh5bshuf.so"))
        lib.LZ4_decompress_safe.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.LZ4_decompress_safe.restype = ctypes.c_int
        lib.bshuf_bitunshuffle.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_size_t] * 3
        lib.bshuf_bitunshuffle.restype = ctypes.c_int64
    except (ImportError, OSError, AttributeError):
        return None
    return lib


def native_decoder_available() -> bool:
    """Whether :func:`decode_bitshuffle_lz4` can run here (hdf5plugin's bitshuffle library loads)."""
    return _native_bitshuffle() is not None


def fletcher32(data: bytes | memoryview) -> int:
    """HDF5's Fletcher-32 of ``data`` (``H5_checksum_fletcher32``), bit for bit.

    The words are the big-endian 16-bit pairs of bytes (an odd last byte is the high byte of a last
    word); sum1 = Σ words, sum2 = Σ of the running sum1, both kept by end-around carry, i.e. modulo
    65535 but never reduced to 0 once positive (HDF5 then holds 0xffff): the result is
    ``sum2 << 16 | sum1``. Summed per block of 4096 words with one BLAS product (~0.6 ms per MB
    measured), not word by word, so verifying costs less than decoding the chunk.
    """
    view = memoryview(data).cast("B")
    n_bytes = len(view)
    n_words = (n_bytes + 1) // 2
    n_blocks = max(1, -(-n_words // _FLETCHER_BLOCK))
    words = np.zeros(n_blocks * _FLETCHER_BLOCK, np.float64)
    words[: n_bytes // 2] = np.frombuffer(view, ">u2", count=n_bytes // 2)
    if n_bytes % 2:
        words[n_bytes // 2] = view[-1] << 8
    sums = (words.reshape(n_blocks, _FLETCHER_BLOCK) @ _FLETCHER_WEIGHTS).astype(np.int64)
    block_sums, local_weighted = sums[:, 0], sums[:, 1]
    sum1 = int(block_sums.sum())
    if sum1 == 0:  # all words zero: both sums stay 0
        return 0
    # sum2 = Σ_i (n_words - i) · word_i; a block starting at word o adds (n_words - o) · its sum - Σ j · word_{o+j}
    remaining = (n_words - np.arange(n_blocks, dtype=np.int64) * _FLETCHER_BLOCK) % _MOD
    sum2 = int((remaining * (block_sums % _MOD) % _MOD).sum()) - int((local_weighted % _MOD).sum())
    return ((sum2 - 1) % _MOD + 1) << 16 | ((sum1 - 1) % _MOD + 1)


def strip_fletcher32(chunk: bytes | memoryview) -> memoryview:
    """The chunk without its last 4 bytes, once they are its Fletcher-32 checksum; CorruptChunk otherwise.

    HDF5's Fletcher-32 filter (always the last one in the pipeline h5py and the detector writers
    build) appends the checksum of the filtered bytes, little-endian. Like HDF5 (``H5Zfletcher32.c``)
    the checksum of files written by HDF5 ≤ 1.6.2, with the bytes of each 16-bit half swapped, is
    accepted too: we refuse exactly what HDF5 refuses.
    """
    view = memoryview(chunk).cast("B")
    if len(view) < _FLETCHER_LEN:
        raise CorruptChunk(f"chunk is {len(view)} bytes, shorter than its 4-byte Fletcher-32 checksum")
    payload = view[: len(view) - _FLETCHER_LEN]
    (stored,) = _FLETCHER.unpack_from(view, len(payload))
    computed = fletcher32(payload)
    swapped = (computed & 0x00FF00FF) << 8 | (computed >> 8) & 0x00FF00FF  # the bytes of each half swapped
    if stored not in (computed, swapped):
        raise CorruptChunk(
            f"Fletcher-32 checksum mismatch: stored {stored:#010x}, the chunk's {len(payload)} bytes give "
            f"{computed:#010x}; the stored bytes changed after they were written"
        )
    return payload


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
    """Validates the raw chunks of a 3-D frame dataset before HDF5 decodes them (or decodes them itself).

    Works for any chunk shape: one frame per chunk, several frames per chunk (a bad chunk then costs
    every frame it holds) or tiles (every tile of the frames is checked). A chunk checked once is not
    checked again (Lambda module files never change once published).

    ``needs_check``: the chunks are bitshuffle-LZ4 streams, parsed to the last byte.
    ``fletcher32``: the pipeline ends with Fletcher-32; every chunk's checksum is verified (any
    compression), so a flipped bit fails its frames instead of being integrated.
    """

    dataset: h5py.Dataset
    needs_check: bool
    elem_size: int = 0
    fletcher32: bool = False
    _checked: set[tuple[int, ...]] = field(default_factory=set)
    _buffer: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))  # raw chunks, reused
    _scratch: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))  # bitshuffled bytes, reused
    #: one decode at a time per checker: the foreign calls release the GIL and ``_scratch`` is shared
    _decoding: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def for_dataset(cls, dataset: h5py.Dataset) -> ChunkChecker:
        """Decide how the dataset must be checked; UncheckableFilters when it cannot be made safe."""
        filters = filter_pipeline(dataset)
        itemsize = dataset.dtype.itemsize
        # a trailing Fletcher-32 covers the stored bytes: we verify it ourselves, before any decoder runs
        fletcher = bool(filters) and filters[-1][0] == FLETCHER32_FILTER
        inner = filters[:-1] if fletcher else filters
        ids = [fid for fid, _, _ in inner]
        if all(fid in SAFE_FILTERS for fid in ids):
            return cls(dataset, needs_check=False, elem_size=itemsize, fletcher32=fletcher)
        described = ", ".join(f"{fid} ({name or 'unnamed'}) {values}" for fid, values, name in filters)
        if ids != [BITSHUFFLE_FILTER]:
            raise UncheckableFilters(
                f"filter pipeline [{described}] cannot be validated: expected DEFLATE (gzip) or bitshuffle "
                "(32008) alone, optionally followed by Fletcher-32 (3), whose corrupt chunks can be caught "
                "without crashing the process"
            )
        values = inner[0][1]
        if len(values) < 3 or values[2] != itemsize:
            raise UncheckableFilters(
                f"bitshuffle parameters {values} give element size {values[2] if len(values) > 2 else '?'}; "
                f"the dataset's {dataset.dtype} has {itemsize}-byte elements"
            )
        compression = values[4] if len(values) > 4 else BITSHUFFLE_NO_COMPRESSION
        if compression == BITSHUFFLE_NO_COMPRESSION:  # a fixed-size transposition: nothing to trust
            return cls(dataset, needs_check=False, elem_size=itemsize, fletcher32=fletcher)
        if compression != BITSHUFFLE_LZ4:
            raise UncheckableFilters(
                f"bitshuffle with compression {compression} (parameters {values}) cannot be validated; "
                f"expected LZ4 ({BITSHUFFLE_LZ4}) or none ({BITSHUFFLE_NO_COMPRESSION})"
            )
        if dataset.chunks is None:
            raise UncheckableFilters("a filtered dataset without chunks: the file is inconsistent")
        return cls(dataset, needs_check=True, elem_size=itemsize, fletcher32=fletcher)

    def chunk_offsets(self, start: int, stop: int) -> list[tuple[int, ...]]:
        """Offsets of every chunk that holds part of frames ``start:stop``."""
        chunks = self.dataset.chunks
        shape = self.dataset.shape
        first = (start // chunks[0]) * chunks[0]
        ranges = [range(first, stop, chunks[0])] + [range(0, n, c) for n, c in zip(shape[1:], chunks[1:], strict=True)]
        return list(itertools.product(*ranges))

    def check(self, start: int, stop: int) -> None:
        """Raise CorruptChunk naming the chunk and what is wrong, unless frames ``start:stop`` are safe to decode."""
        if not (self.needs_check or self.fletcher32):
            return
        expected = int(np.prod(self.dataset.chunks)) * self.elem_size
        for offset in self.chunk_offsets(start, stop):
            if offset in self._checked:
                continue
            raw = self._raw_chunk(offset, expected)
            if raw is not None:
                self._check_chunk(offset, raw, expected)
            self._checked.add(offset)

    def decode(self, start: int, stop: int, out: np.ndarray) -> bool:
        """Frames ``start:stop`` checked and decoded into ``out`` in one pass (:func:`decode_bitshuffle_lz4`):
        False, with nothing read, where that path does not apply (not bitshuffle-LZ4, chunks other than
        one whole frame, ``out`` not C-contiguous in the dataset's dtype, no native library); then
        :meth:`check` and HDF5 read them as before. CorruptChunk names the chunk, as :meth:`check` does."""
        shape = self.dataset.shape
        if not (self.needs_check and self.dataset.chunks == (1, *shape[1:]) and native_decoder_available()):
            return False
        if out.shape != (stop - start, *shape[1:]) or out.dtype != self.dataset.dtype or not out.flags.c_contiguous:
            return False
        with self._decoding:
            self._decode_frames(start, stop, out, int(np.prod(shape[1:])) * self.elem_size)
        return True

    def _decode_frames(self, start: int, stop: int, out: np.ndarray, expected: int) -> None:
        if self._scratch.size < expected:
            self._scratch = np.empty(expected, np.uint8)
        zeros = (0,) * (self.dataset.ndim - 1)
        for i in range(stop - start):
            offset = (start + i, *zeros)
            raw = self._raw_chunk(offset, expected)
            assert raw is not None  # needs_check: a chunk never written raises
            try:
                if self.fletcher32:
                    raw = strip_fletcher32(raw)
                decode_bitshuffle_lz4(raw, out[i], self._scratch)
            except CorruptChunk as exc:
                raise CorruptChunk(f"chunk at {offset}: {exc}") from None
            self._checked.add(offset)

    def _raw_chunk(self, offset: tuple[int, ...], expected: int) -> memoryview | None:
        """The stored bytes of one chunk (None: never written, and only a checksum to verify: HDF5 fills
        it with the fill value, as it always did for DEFLATE files)."""
        # No valid stream is larger (LZ4's worst case is n + n/255 + 16 per block, DEFLATE's less); a
        # bigger size in the chunk index is corruption, and must not make us allocate it.
        limit = 2 * expected + 4096 + (_FLETCHER_LEN if self.fletcher32 else 0)
        try:
            info = self.dataset.id.get_chunk_info_by_coord(offset)
        except Exception as exc:  # h5py raises RuntimeError/OSError/KeyError depending on what broke
            raise CorruptChunk(f"chunk at {offset}: the chunk index cannot be read ({_first_line(exc)})") from exc
        if info.byte_offset is None:
            if not self.needs_check:
                return None
            raise CorruptChunk(f"chunk at {offset} was never written")
        self._check_filter_mask(offset, info.filter_mask)
        if not 0 < info.size <= limit:
            what, least = ("bitshuffle-LZ4 stream", 12) if self.needs_check else ("compressed chunk", 1)
            raise CorruptChunk(
                f"chunk at {offset} is {info.size} bytes in the chunk index; a {what} of {expected} bytes "
                f"takes {least}..{limit}"
            )
        if self._buffer.size < info.size:
            self._buffer = np.empty(limit, np.uint8)
        try:
            _mask, raw = self.dataset.id.read_direct_chunk(offset, out=self._buffer)
        except Exception as exc:
            raise CorruptChunk(f"chunk at {offset} cannot be read ({_first_line(exc)})") from exc
        return memoryview(raw)

    def _check_filter_mask(self, offset: tuple[int, ...], filter_mask: int) -> None:
        """Refuse a chunk stored without a filter we rely on: the bitshuffle-LZ4 stream, or the checksum
        (a skipped Fletcher-32 would leave the chunk unprotected, HDF5 reading it unchecked)."""
        if not filter_mask:
            return
        last = 1 << (len(filter_pipeline(self.dataset)) - 1)  # Fletcher-32's bit, when it ends the pipeline
        if self.fletcher32 and filter_mask & last:
            raise CorruptChunk(
                f"chunk at {offset} has filter mask {filter_mask:#x}: stored without its Fletcher-32 checksum"
            )
        if self.needs_check and filter_mask:
            raise CorruptChunk(
                f"chunk at {offset} has filter mask {filter_mask:#x}: stored without the bitshuffle-LZ4 filter"
            )

    def _check_chunk(self, offset: tuple[int, ...], raw: memoryview, expected: int) -> None:
        """The checksum first (it covers the stream's bytes), then the bitshuffle-LZ4 stream."""
        try:
            if self.fletcher32:
                raw = strip_fletcher32(raw)
            if self.needs_check:
                check_bitshuffle_lz4(raw, expected, self.elem_size)
        except CorruptChunk as exc:
            raise CorruptChunk(f"chunk at {offset}: {exc}") from None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
