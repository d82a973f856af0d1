"""One part of a Lambda acquisition: its module files opened together, checked, read as stitched frames.

Every reader of module files goes through :func:`open_part` — the offline source, the Stitcher's
part check, the Stitcher re-learning parts for a requeue, and the Integrator reading a work item —
so the rules (all modules or none, confined to the data roots, counts within ±1, equal sequence
numbers, one layout) are written once.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import SourceError
from ..processing.stitch import StitchLayout
from . import lambda_layout as L
from .chunk_check import FLETCHER32_FILTER, CorruptChunk, filter_pipeline, strip_fletcher32
from .lambda_files import ModuleFile, open_modules, parse_lambda_name


def _optional_libdeflate() -> Any:
    """libdeflate's bindings (PyPI ``deflate``, wheels) when installed: they inflate ~3x faster than
    zlib, to the same bytes. Without them zlib inflates: slower, the same result."""
    try:
        return importlib.import_module("deflate")
    except ImportError:
        return None


_libdeflate = _optional_libdeflate()


class PartMismatch(SourceError):
    """The module files opened but do not belong together; ``frame_numbers`` are module 1's (so the
    failure can be listed with the frames it cost)."""

    def __init__(self, message: str, frame_numbers: list[int]):
        super().__init__(message)
        self.frame_numbers = frame_numbers


def check_part_modules(modules: Sequence[ModuleFile], modules_off: Sequence[int] = ()) -> tuple[StitchLayout, int]:
    """Layout and usable frame count of one part's module files, or SourceError saying what disagrees.

    One module may log one extra frame (lambda-format.md): the shortest count is used; more than one
    frame of difference, or sequence numbers that differ, mean the files do not belong together.
    The modules of one detector are alike: a module whose frames have another shape than the others',
    or than its own ``layout`` field says, is a damaged or foreign file (stitched, its pixels would
    land on the wrong places and the pattern would be wrong without any sign).
    """
    check_module_shapes(modules)
    layout = StitchLayout.from_offsets(
        [m.offset for m in modules], [m.module_shape for m in modules], off_module_places(modules, modules_off)
    )
    counts = [m.n_frames for m in modules]
    n = min(counts)
    if max(counts) - n > 1:
        raise SourceError(f"{modules[0].path.name}: module files hold {counts} frames; they must agree (±1)")
    ref = modules[0].frame_numbers[:n]
    for m in modules[1:]:
        if not np.array_equal(m.frame_numbers[:n], ref):
            raise SourceError(f"{m.path}: sequence numbers differ from {modules[0].path.name}'s")
    return layout, n


def check_module_shapes(modules: Sequence[ModuleFile]) -> None:
    """SourceError naming the module whose frame shape disagrees with its ``layout`` or the others'."""
    for m in modules:
        if m.declared_shape is not None and m.declared_shape != m.module_shape:
            rows, cols = m.declared_shape
            raise SourceError(
                f"{m.path.name}: frames of {m.module_shape[0]} x {m.module_shape[1]} pixels, but its layout says "
                f"{cols}X{rows} ({rows} x {cols}); a damaged module file"
            )
    shapes = [m.module_shape for m in modules]
    if len(set(shapes)) > 1:
        listed = ", ".join(f"{m.path.name} {s[0]} x {s[1]}" for m, s in zip(modules, shapes, strict=True))
        raise SourceError(f"module frames differ in shape ({listed}); every module of a detector has the same shape")


def off_module_places(
    modules: Sequence[ModuleFile], modules_off: Sequence[int]
) -> list[tuple[tuple[float, float], tuple[int, int]]]:
    """Where the modules that are off would be, so the frame keeps its shape (see StitchLayout.from_offsets).

    A module that is off wrote no file, so its translation is the Lambda 2M's (the P02.2 offsets,
    which every real file carries) taken relative to the first module that is on, and its shape that
    of the modules that are on. A module number the Lambda 2M does not have is refused: its place
    in the frame is unknown, and guessing it would move every pixel.
    """
    if not modules_off:
        return []
    standard = dict(enumerate(L.P02_2_OFFSETS, start=1))
    anchor = modules[0]
    name = parse_lambda_name(anchor.path)
    if name is None or name.module not in standard:
        raise SourceError(f"{anchor.path.name}: module number unknown; cannot place the modules that are off")
    ax, ay = anchor.offset
    sx, sy = standard[name.module]
    places = []
    for k in modules_off:
        if k not in standard:
            raise SourceError(
                f"module {k} is off, but a Lambda 2M has modules {', '.join(map(str, standard))}: "
                "its place in the frame is unknown"
            )
        x, y = standard[k]
        places.append(((ax + x - sx, ay + y - sy), anchor.module_shape))
    return places


@dataclass
class OpenPart:
    """The open module files of one part; close it (or use ``with``) when done."""

    modules: list[ModuleFile]
    layout: StitchLayout
    n_frames: int
    _buffers: dict = field(default_factory=dict, repr=False)
    #: module index -> its frames are one-frame DEFLATE chunks (inflated by :meth:`read_modules` itself)
    _deflate: dict[int, bool] = field(default_factory=dict, repr=False)

    @property
    def frame_numbers(self) -> np.ndarray:
        """Acquisition frame numbers of the part's usable frames."""
        return self.modules[0].frame_numbers[: self.n_frames]

    @property
    def first_file(self) -> Path:
        return self.modules[0].path

    def detector_mask(self) -> np.ndarray:
        """The stitched bad-pixel mask: gaps plus every module's pixel_mask."""
        return self.layout.stitch_mask([m.pixel_mask for m in self.modules])

    def total_frames(self) -> int | None:
        """Frames the whole acquisition will have (``collection/frame_numbers``), when the file says."""
        value = self.modules[0].h5.get(f"{L.DETECTOR_GROUP}/collection/frame_numbers")
        try:
            return int(np.asarray(value[()]).ravel()[0]) if value is not None else None
        except (ValueError, IndexError, TypeError):
            return None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` stitched (SourceError for frames that cannot be read or are corrupt).

        Module buffers are reused between reads of the same size: fresh arrays per read are slower.
        """
        if not 0 <= start < stop <= self.n_frames:
            raise SourceError(f"{self.first_file}: frames {start}..{stop - 1} requested, the part has {self.n_frames}")
        module_frames = []
        for k, m in enumerate(self.modules):
            key = (k, stop - start, m.data.dtype.str)
            if key not in self._buffers:
                self._buffers[key] = np.empty((stop - start, *m.module_shape), dtype=m.data.dtype)
            m.read(start, stop, self._buffers[key])
            module_frames.append(self._buffers[key])
        return self.layout.stitch(module_frames)

    @property
    def module_dtype(self) -> np.dtype:
        """The dtype frames are decoded to (the files' integer type, native byte order)."""
        found = np.result_type(*(m.data.dtype for m in self.modules))
        return found.newbyteorder("=")

    def read_modules(
        self, start: int, stop: int, out: np.ndarray | None = None, decoders: Executor | None = None
    ) -> np.ndarray:
        """Frames ``start:stop`` as decoded, never stitched: ``(n, layout.module_pixels)``, modules side by side.

        ``out``: a buffer of that shape and :attr:`module_dtype` to read into (reusing one is faster).
        ``decoders``: threads that inflate DEFLATE chunks. h5py runs every HDF5 call, filters included,
        under one lock, so gzip frames decode on one core whatever the threads; here each one-frame
        DEFLATE chunk is read raw through HDF5 and inflated by zlib, which releases the GIL, so
        decoding spreads over the cores. Other filters (bitshuffle-LZ4: checked and decoded in one pass by
        :mod:`.chunk_check`, or checked, then decoded by HDF5) go through :meth:`ModuleFile.read`. SourceError for
        frames that cannot be read or are corrupt, naming the file.
        """
        if not 0 <= start < stop <= self.n_frames:
            raise SourceError(f"{self.first_file}: frames {start}..{stop - 1} requested, the part has {self.n_frames}")
        n = stop - start
        shape = (n, self.layout.module_pixels)
        if out is None:
            out = np.empty(shape, self.module_dtype)
        elif out.shape != shape or out.dtype != self.module_dtype:
            raise ValueError(
                f"buffer {out.shape} {out.dtype}; frames {start}..{stop - 1} need {shape} {self.module_dtype}"
            )
        jobs: list[_Inflate] = []
        for k, (m, view) in enumerate(zip(self.modules, self.layout.module_views(out), strict=True)):
            if not np.may_share_memory(view, out):  # reshape copied: reading into it would be lost
                raise RuntimeError(f"module {k + 1} view of the read buffer is a copy")
            if self._inflate_here(k):
                jobs += self._raw_chunks(m, start, stop, view)
            else:
                for i in range(n):
                    m.read(start + i, start + i + 1, view[i : i + 1])
        if decoders is not None and len(jobs) > 1:
            # wait for every job before raising the first failure: a job still inflating after this
            # returns would write into ``out`` while the caller reads other frames into it (a corrupt
            # frame's neighbours got pixels of it under load: Executor.map raises at the first failure)
            futures = [decoders.submit(job.run) for job in jobs]
            wait(futures)
            for future in futures:
                future.result()
        else:
            for job in jobs:
                job.run()
        return out

    def _inflate_here(self, k: int) -> bool:
        """Module ``k``'s frames are one-frame chunks with DEFLATE as the only filter, or followed by
        Fletcher-32 (we can inflate them, verifying the checksum: :class:`_Inflate`)."""
        if k not in self._deflate:
            m = self.modules[k]
            ids = [fid for fid, _, _ in filter_pipeline(m.data)]
            inflatable = ids in ([h5py.h5z.FILTER_DEFLATE], [h5py.h5z.FILTER_DEFLATE, FLETCHER32_FILTER])
            self._deflate[k] = inflatable and m.data.chunks == (1, *m.module_shape)
        return self._deflate[k]

    def _raw_chunks(self, m: ModuleFile, start: int, stop: int, view: np.ndarray) -> list[_Inflate]:
        """The compressed chunk of each frame, read through HDF5 (a frame whose chunk cannot be had raw,
        e.g. one never written, is read by HDF5 itself, which fills it as it always did)."""
        jobs = []
        for i in range(stop - start):
            try:
                filter_mask, raw = m.data.id.read_direct_chunk((start + i, 0, 0))
            except Exception:
                m.read(start + i, start + i + 1, view[i : i + 1])
                continue
            if filter_mask & ~1:  # the checksum skipped: ModuleFile.read's checker refuses it, naming it
                m.read(start + i, start + i + 1, view[i : i + 1])
                continue
            fletcher = m.checker.fletcher32
            jobs.append(_Inflate(m.path, start + i, bytes(raw), bool(filter_mask & 1), m.data.dtype, view[i], fletcher))
        return jobs

    def close(self) -> None:
        for m in self.modules:
            m.close()

    def __enter__(self) -> OpenPart:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Inflate:
    """One module frame's DEFLATE chunk, to inflate into its place in the read buffer (any thread)."""

    path: Path
    frame: int
    raw: bytes
    stored: bool  # the filter was skipped for this chunk (HDF5 does when compressing did not help)
    dtype: np.dtype
    dest: np.ndarray  # (rows, cols) view of the buffer
    fletcher32: bool = False  # the chunk ends with HDF5's Fletcher-32 checksum, verified before inflating

    def run(self) -> None:
        """Inflate (zlib or libdeflate: both release the GIL, both check the stream's Adler-32)."""
        nbytes = self.dest.size * self.dtype.itemsize
        raw: bytes | memoryview = self.raw
        if self.fletcher32:  # HDF5's filter would verify it; reading the chunk raw, we must
            try:
                raw = strip_fletcher32(raw)
            except CorruptChunk as exc:
                where = f"frames {self.frame}..{self.frame} are corrupt: chunk at ({self.frame}, 0, 0)"
                raise SourceError(f"{self.path}: {where}: {exc}") from exc
        try:
            if self.stored:
                data: bytes | bytearray | memoryview = raw
            elif _libdeflate is not None:
                data = _libdeflate.zlib_decompress(raw, nbytes)
            else:
                data = zlib.decompress(raw, bufsize=nbytes)
        except Exception as exc:  # zlib.error, deflate.DeflateError: a corrupt or truncated stream
            raise SourceError(f"{self.path}: frames {self.frame}..{self.frame} cannot be read ({exc})") from exc
        if len(data) != nbytes:
            raise SourceError(
                f"{self.path}: frames {self.frame}..{self.frame} cannot be read (the chunk inflates to {len(data)} "
                f"bytes, a frame is {nbytes})"
            )
        self.dest[...] = np.frombuffer(data, self.dtype).reshape(self.dest.shape)


def open_part(
    files: Sequence[str | Path],
    retries: int = 3,
    retry_delay_s: float = 0.5,
    roots: Sequence[str | Path] = (),
    modules_off: Sequence[int] = (),
    locking: bool = True,
) -> OpenPart:
    """Open and check one part's module files (all or none stay open).

    ``roots``: every file must resolve inside them (OutsideRootsError, a SourceError, if not).
    ``modules_off``: module numbers switched off (no file): their pixels are gaps of the full frame.
    Raises SourceError when a file is missing or unreadable, PartMismatch when they disagree.
    """
    modules = open_modules(files, retries, retry_delay_s, roots, locking)
    try:
        layout, n = check_part_modules(modules, modules_off)
    except SourceError as exc:
        numbers = [int(v) for v in modules[0].frame_numbers]
        for m in modules:
            m.close()
        raise PartMismatch(str(exc), numbers) from exc
    except BaseException:
        for m in modules:
            m.close()
        raise
    return OpenPart(modules, layout, n)
