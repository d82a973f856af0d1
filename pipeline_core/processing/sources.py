"""Frame sources: where stitched frames, their frame numbers and their bad-pixel mask come from.

Every source turns its files into a stream of :class:`FrameBatch` (a few frames at a time, so a
2000-frame part never sits in memory whole) and reports what it could not read as
:class:`~.messages.FailedFrames` instead of skipping it. Three kinds:

* :class:`LambdaSource` — a Lambda acquisition (modules stitched with Dioptas' rule);
* :class:`Hdf5Source` — one 3-D dataset per file (Eiger-style ``/entry/data/data``);
* :class:`ImageSource` — single image files read by fabio (TIFF, CBF, EDF, …).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..formats import lambda_layout as L
from ..formats.hdf5_io import open_h5
from ..formats.lambda_files import (
    LambdaAcquisition,
    LambdaPart,
    frame_numbers_from_any,
    open_modules,
    parse_lambda_name,
)
from ..formats.lambda_part import OpenPart, PartMismatch, open_part
from ..formats.nexus_modules import off_note
from ..messages import FailedFrames
from .file_stamps import check_unchanged
from .frame_batch import FrameBatch
from .module_frames import BufferPool, ModuleFrames
from .open_parts import OpenParts
from .stitch import StitchLayout

IMAGE_SUFFIXES = {".tif", ".tiff", ".cbf", ".edf", ".img", ".mar3450", ".sfrm", ".mccd", ".npy"}
HDF5_SUFFIXES = {".nxs", ".h5", ".hdf5", ".hdf", ".nx5"}
DEFAULT_DATASETS = ("/entry/data/data", "/entry/instrument/detector/data")


ErrorSink = Callable[[FailedFrames], None]


class FrameSource:
    """Common interface. ``prepare()`` must run before ``frame_shape``/``detector_mask`` are known."""

    name: str
    frame_shape: tuple[int, int]
    detector_mask: np.ndarray | None
    raw_files: list[str]
    input_files: list[str]

    def prepare(self) -> None:
        raise NotImplementedError

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameBatch]:
        raise NotImplementedError

    def expected_frames(self) -> int | None:
        """Number of frames announced by the files, if cheap to know (for progress bars)."""
        return None

    def set_decode_threads(self, threads: int) -> None:
        """How many threads may decode compressed frames at once (a source that cannot spread its
        decoding over threads ignores it)."""

    def module_record(self) -> tuple[tuple[int, ...], tuple[int, ...], str] | None:
        """Detector modules on, off, and why (for the result's ``process/modules``); None: no modules."""
        return None

    def frame_bytes(self) -> int:
        """Bytes one frame takes in a chunk, for the memory bound of the frames in flight; this default
        assumes 4-byte pixels of the stitched frame (the widest Lambda counts, int32/uint32)."""
        rows, cols = self.frame_shape
        return int(rows) * int(cols) * 4


def first_frame_shape(files: Sequence[Path], shape_of: Callable[[Path], tuple[int, ...]]) -> tuple[int, int]:
    """Frame shape of the first file whose shape can be read (SourceError naming every file's problem)."""
    errors = []
    for path in files:
        try:
            shape = shape_of(path)
        except SourceError as exc:
            errors.append(str(exc))
            continue
        if len(shape) < 2:
            errors.append(f"{path}: data of shape {shape}; expected 2-D frames")
            continue
        return int(shape[-2]), int(shape[-1])
    raise SourceError("; ".join(errors))


def _announced_total(h5) -> int:
    """The acquisition's frame count a Lambda module file records (0 when it records none)."""
    value = h5.get(f"{L.DETECTOR_GROUP}/collection/frame_numbers")
    try:
        return max(0, int(np.asarray(value[()]).ravel()[0])) if value is not None else 0
    except (ValueError, IndexError, TypeError, OSError):
        return 0


class LambdaSource(FrameSource):
    """A Lambda acquisition: every part's module files read side by side and stitched."""

    def __init__(self, acquisition: LambdaAcquisition, retries: int = 3, retry_delay_s: float = 0.5):
        self.acquisition = acquisition
        self.name = acquisition.stem
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.layout: StitchLayout | None = None
        self._itemsize = 4  # bytes of a decoded pixel, known once a part is opened (prepare)
        self.raw_files = [str(p.first_file) for p in acquisition.parts]
        self.input_files = [str(f) for f in acquisition.files]
        #: threads that inflate DEFLATE frames while the next chunk is read (see OpenPart.read_modules)
        self.decode_threads = 1
        #: module buffers handed back by FrameBatch.release(), read into again
        self.buffers = BufferPool()

    @classmethod
    def from_file(cls, path: str | Path, modules: Sequence[int] | None = None, **kwargs) -> LambdaSource:
        """``modules``: the modules that are on (None: all of a Lambda 2M; see LambdaAcquisition)."""
        return cls(LambdaAcquisition.from_file(path, modules), **kwargs)

    def prepare(self) -> None:
        """Take the layout from the first part whose module files all open and agree."""
        errors = []
        for part in self.acquisition.parts:
            try:
                opened = self._open_part(part)
            except SourceError as exc:
                errors.append(str(exc))
                continue
            with opened:
                self._take_layout(opened)
                return
        # every part lacks a module or has a damaged one: the frame's shape can still be known from
        # the module files that are sound, the others in their places, so that every part fails in
        # :meth:`chunks` with its reason and frames, listed in a result, instead of no file at all
        for part in self.acquisition.parts:
            sound, off = _sound_modules(part)
            if not sound or not off:
                continue
            try:
                opened = open_part(sound, 0, modules_off=sorted({*off, *self.acquisition.modules_off}))
            except SourceError:
                continue
            with opened:
                self._take_layout(opened)
                return
        raise SourceError(f"no part of {self.name} could be opened: " + "; ".join(errors))

    def frame_bytes(self) -> int:
        """A frame's module pixels as decoded (what a chunk holds: never stitched), in the first
        readable part's type (the parts of one acquisition share it)."""
        if self.layout is None:
            self.prepare()
        assert self.layout is not None
        return self.layout.module_pixels * self._itemsize

    def _take_layout(self, opened: OpenPart) -> None:
        self.layout = opened.layout
        self._itemsize = np.dtype(opened.module_dtype).itemsize
        self.frame_shape = opened.layout.frame_shape
        self.detector_mask = opened.detector_mask()

    def expected_frames(self) -> int | None:
        """Frames of the whole acquisition: what its files announce (``collection/frame_numbers``,
        which Lambda writes into every part) when any readable part says it, else the frames of the
        parts on disk (None when one cannot be read). Not only the parts found: a part missing from
        the folder (the last ones of a copy cut short, one deleted) must not leave a result
        ``complete`` with its frames silently absent."""
        found: int | None = 0
        announced = 0
        for part in self.acquisition.parts:
            try:
                with open_h5(part.first_file, retries=0) as h5:
                    if found is not None:
                        found += int(h5[L.DATA].shape[0])
                    announced = max(announced, _announced_total(h5))
            except (SourceError, KeyError, OSError):
                found = None
        if announced:
            return max(announced, found or 0)
        return found

    def set_decode_threads(self, threads: int) -> None:
        self.decode_threads = max(1, int(threads))

    def module_record(self) -> tuple[tuple[int, ...], tuple[int, ...], str]:
        acq = self.acquisition
        return acq.modules, acq.modules_off, off_note(acq.modules_off, "the user's --modules")

    def _open_part(self, part: LambdaPart) -> OpenPart:
        return open_part(part.files, self.retries, self.retry_delay_s, modules_off=self.acquisition.modules_off)

    def _check_part(self, part: LambdaPart, opened: OpenPart) -> None:
        """Refuse a part whose layout is not the first part's (its frames would not stack)."""
        assert self.layout is not None
        if opened.layout != self.layout:
            raise SourceError(
                f"part {part.index} ({part.first_file.name}) has module shapes/offsets "
                f"{[(m.module_shape, m.offset) for m in opened.modules]} unlike the first part's; frame shape "
                f"would be {opened.layout.frame_shape}, expected {self.layout.frame_shape}"
            )

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameBatch]:
        """Batches of module frames as decoded (``FrameBatch.modules``; ``frames`` stitches on demand)."""
        if self.layout is None:
            self.prepare()
        with contextlib.ExitStack() as stack:
            decoders = None
            if self.decode_threads > 1:
                decoders = stack.enter_context(
                    ThreadPoolExecutor(self.decode_threads, thread_name_prefix=f"xrd-decode-{self.name}")
                )
            for file_index, part in enumerate(self.acquisition.parts):
                try:
                    opened = self._open_part(part)
                except PartMismatch as exc:  # the files opened: their frame numbers are known
                    on_error(FailedFrames(str(part.first_file), str(exc), exc.frame_numbers))
                    continue
                except SourceError as exc:
                    on_error(FailedFrames(str(part.first_file), str(exc), frame_numbers_from_any(part.files)))
                    continue
                with opened:
                    yield from self._part_chunks(file_index, part, opened, chunk_size, on_error, decoders)

    def _part_chunks(
        self,
        file_index: int,
        part: LambdaPart,
        opened: OpenPart,
        chunk_size: int,
        on_error: ErrorSink,
        decoders: Executor | None = None,
    ) -> Iterator[FrameBatch]:
        try:
            self._check_part(part, opened)
        except SourceError as exc:
            on_error(FailedFrames(str(part.first_file), str(exc), [int(v) for v in opened.frame_numbers]))
            return
        n = opened.n_frames
        ranges = collections.deque((start, min(start + chunk_size, n)) for start in range(0, n, chunk_size))
        while ranges:
            start, stop = ranges.popleft()
            numbers = opened.frame_numbers[start:stop]
            buf = self.buffers.take((stop - start, opened.layout.module_pixels), opened.module_dtype)
            try:
                opened.read_modules(start, stop, buf, decoders)
            except SourceError as exc:
                self.buffers.give_back(buf)
                if stop - start > 1:  # one corrupt frame must not cost the readable frames read with it
                    ranges.extendleft((i, i + 1) for i in reversed(range(start, stop)))
                    continue
                on_error(FailedFrames(str(part.first_file), str(exc), [int(v) for v in numbers]))
                continue
            modules = ModuleFrames(buf, opened.layout, self.buffers)
            yield FrameBatch(numbers.copy(), None, file_index, np.arange(start, stop), modules=modules)


def _sound_modules(part: LambdaPart) -> tuple[list[Path], list[int]]:
    """The part's module files that open and look as their ``layout`` says, and the other modules."""
    sound: list[Path] = []
    others: list[int] = []
    for k, f in zip(part.modules, part.files, strict=True):
        try:
            (m,) = open_modules([f], retries=0)
        except SourceError:
            others.append(k)
            continue
        if m.declared_shape in (None, m.module_shape):
            sound.append(f)
        else:
            others.append(k)
        m.close()
    return sound, others


class Hdf5Source(FrameSource):
    """Files that each hold a 3-D frame stack in one dataset; frames numbered from 1 across files."""

    def __init__(self, files: Sequence[str | Path], dataset: str | None = None, retries: int = 3):
        self.files = [Path(f).absolute() for f in files]
        if not self.files:
            raise SourceError("no HDF5 files given")
        self.dataset = dataset
        self.retries = retries
        self.name = self.files[0].stem
        self.raw_files = [str(f) for f in self.files]
        self.input_files = list(self.raw_files)
        self.detector_mask = None
        self._itemsize = 4  # until prepared: the widest Lambda counts

    def _dataset(self, h5, path: Path):
        candidates = (self.dataset,) if self.dataset else DEFAULT_DATASETS
        for name in candidates:
            if name in h5 and getattr(h5[name], "ndim", 0) in (2, 3):
                return h5[name]
        raise SourceError(f"{path} has no frame dataset at {' or '.join(candidates)}; give the path with --dataset")

    def _shape(self, path: Path) -> tuple[int, ...]:
        with open_h5(path, retries=self.retries) as h5:
            ds = self._dataset(h5, path)
            self._itemsize = ds.dtype.itemsize  # the first readable file's: its shape is the one taken
            return tuple(ds.shape)

    def prepare(self) -> None:
        self.frame_shape = first_frame_shape(self.files, self._shape)

    def frame_bytes(self) -> int:
        """A frame as the stack stores it (a float64 stack takes twice the 4 bytes a pixel assumed for
        others), so the frames in flight stay within their memory bound whatever the type."""
        rows, cols = self.frame_shape
        return int(rows) * int(cols) * int(self._itemsize)

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameBatch]:
        next_number = 1
        for file_index, path in enumerate(self.files):
            try:
                h5 = open_h5(path, retries=self.retries)
            except SourceError as exc:
                on_error(FailedFrames(str(path), str(exc)))
                continue
            with h5:
                try:
                    ds = self._dataset(h5, path)
                except SourceError as exc:
                    on_error(FailedFrames(str(path), str(exc)))
                    continue
                n = 1 if ds.ndim == 2 else ds.shape[0]
                if tuple(ds.shape[-2:]) != self.frame_shape:
                    on_error(
                        FailedFrames(
                            str(path), f"{path}: frames are {tuple(ds.shape[-2:])}, expected {self.frame_shape}"
                        )
                    )
                    next_number += n
                    continue
                # a file of a wider type than the first one's (frame_bytes) reads fewer frames at a time
                per_chunk = max(1, min(chunk_size, chunk_size * self._itemsize // ds.dtype.itemsize))
                for start in range(0, n, per_chunk):
                    stop = min(start + per_chunk, n)
                    numbers = np.arange(next_number + start, next_number + stop)
                    try:
                        frames = ds[()][None] if ds.ndim == 2 else ds[start:stop]
                    except Exception as exc:
                        reason = f"{path}: frames {start}..{stop - 1}: {exc}"
                        on_error(FailedFrames(str(path), reason, numbers.tolist()))
                        continue
                    yield FrameBatch(numbers, frames, file_index, np.arange(start, stop))
                next_number += n


class ImageSource(FrameSource):
    """Single image files (one or more frames each) read with fabio; frames numbered from 1."""

    def __init__(self, files: Sequence[str | Path]):
        self.files = [Path(f).absolute() for f in files]
        if not self.files:
            raise SourceError("no image files given")
        self.name = self.files[0].stem
        self.raw_files = [str(f) for f in self.files]
        self.input_files = list(self.raw_files)
        self.detector_mask = None

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        try:
            if path.suffix.lower() == ".npy":
                data = np.load(path, allow_pickle=False)
            else:
                import fabio

                with fabio.open(str(path)) as img:
                    data = np.stack([img.getframe(i).data for i in range(img.nframes)]) if img.nframes > 1 else img.data
        except Exception as exc:
            raise SourceError(f"{path} cannot be read as an image ({exc})") from exc
        data = np.asarray(data)
        return data[None] if data.ndim == 2 else data

    def prepare(self) -> None:
        self.frame_shape = first_frame_shape(self.files, lambda path: self._read(path).shape)

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameBatch]:
        next_number = 1
        for file_index, path in enumerate(self.files):
            try:
                frames = self._read(path)
            except SourceError as exc:
                on_error(FailedFrames(str(path), str(exc), [next_number]))
                next_number += 1
                continue
            n = frames.shape[0]
            numbers = np.arange(next_number, next_number + n)
            next_number += n
            if tuple(frames.shape[-2:]) != self.frame_shape:
                on_error(
                    FailedFrames(
                        str(path),
                        f"{path}: frame shape {frames.shape[-2:]}, expected {self.frame_shape}",
                        numbers.tolist(),
                    )
                )
                continue
            yield FrameBatch(numbers, frames, file_index, np.arange(n))


def is_merged_result(path: Path) -> bool:
    """True for a file this pipeline wrote (a directory of raw data may hold earlier results too)."""
    if path.suffix.lower() not in HDF5_SUFFIXES or parse_lambda_name(path) is not None:
        return False
    try:
        with open_h5(path, retries=0) as h5:
            return "processed/process" in h5
    except SourceError:
        return False


#: Calibration files: a directory may hold them beside the data, they are never frames.
CALIBRATION_SUFFIXES = {".poni", ".mask"}


def is_calibration_file(path: Path) -> bool:
    """PONI files, Dioptas ``.mask`` files and images named as masks (``*mask.edf``, ``*_mask.tif``…)."""
    suffix = path.suffix.lower()
    if suffix in CALIBRATION_SUFFIXES:
        return True
    return suffix in IMAGE_SUFFIXES and path.stem.lower().endswith("mask")


def _directory_data_files(directory: Path, calibration: set[Path]) -> list[Path]:
    """The data files of a directory: never calibration files, and only module files beside Lambda ones.

    A Lambda acquisition folder also holds images (the mask EDF, a dark, a Dioptas export): when
    module files are there, the images are not frames of any acquisition and are left out.
    """
    found = sorted(
        f
        for f in directory.iterdir()
        if f.is_file()
        and f.suffix.lower() in HDF5_SUFFIXES | IMAGE_SUFFIXES
        and not is_calibration_file(f)
        and f.resolve() not in calibration
        and not is_merged_result(f)
    )
    if any(parse_lambda_name(f) is not None for f in found):
        found = [f for f in found if f.suffix.lower() in HDF5_SUFFIXES]
    return found


def open_sources(
    paths: Sequence[str | Path],
    dataset: str | None = None,
    calibration_files: Sequence[str | Path] = (),
    modules: Sequence[int] | None = None,
) -> list[FrameSource]:
    """Turn command-line paths (files or directories) into sources, one per acquisition/stream.

    Lambda files are grouped by acquisition stem (so two detectors, or two scans, give two sources);
    other HDF5 files form one stack source; image files one image source. ``calibration_files``
    (the --poni and --mask in use) are never data, even when named explicitly; in a directory no
    calibration file is (:func:`is_calibration_file`), nor are images beside Lambda module files.
    ``modules``: the Lambda modules that are on (``--modules``; None: every module of a Lambda 2M).
    """
    calibration = {Path(c).resolve() for c in calibration_files}
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(_directory_data_files(p, calibration))
        elif p.exists():
            if p.resolve() not in calibration:
                files.append(p)
        else:
            raise SourceError(f"{p} does not exist")
    if not files:
        raise SourceError(f"no data files in {', '.join(map(str, paths))}")
    lambda_stems: dict[tuple[Path, str], Path] = {}
    h5_files: list[Path] = []
    images: list[Path] = []
    for f in files:
        name = parse_lambda_name(f)
        if name is not None and dataset is None:
            lambda_stems.setdefault((f.parent.absolute(), name.stem), f)
        elif f.suffix.lower() in HDF5_SUFFIXES:
            h5_files.append(f)
        elif f.suffix.lower() in IMAGE_SUFFIXES:
            images.append(f)
        else:
            raise SourceError(
                f"{f}: unknown file type {f.suffix!r}; expected Lambda .nxs, HDF5 or an image fabio reads"
            )
    sources: list[FrameSource] = [LambdaSource.from_file(f, modules) for f in lambda_stems.values()]
    if h5_files:
        sources.append(Hdf5Source(h5_files, dataset))
    if images:
        sources.append(ImageSource(images))
    return sources


def read_part_range(
    module_files: Sequence[str | Path],
    start: int,
    stop: int,
    retries: int = 3,
    retry_delay_s: float = 0.5,
    roots: Sequence[str | Path] = (),
    modules_off: Sequence[int] = (),
    stamps: Sequence[Sequence[int] | None] = (),
    parts: OpenParts | None = None,
) -> FrameBatch:
    """Open one part's module files and read frames ``start:stop`` (the live path) as module frames
    (``frames`` stitches them on demand), with the part's detector mask (the live Integrator has no
    source to hold it).

    ``roots``: every module file must resolve inside them (OutsideRootsError, a SourceError, if not).
    ``stamps``: each file's ``[size, st_mtime_ns(, frames' digest)]`` when its part was queued; a file
    that no longer holds those frames (:func:`.file_stamps.unchanged`) right before or right after the
    read raises WrittenOverError (its frames may be a new acquisition's). ``parts``: the reading
    thread's :class:`~.open_parts.OpenParts`, which keeps the part open for its next items (None:
    opened and closed here); a failed read closes it."""
    if parts is None:
        with open_part(module_files, retries, retry_delay_s, roots, modules_off) as opened:
            return _read_range(opened, opened.detector_mask(), module_files, start, stop, stamps)
    opened, mask = parts.open(module_files, stop, retries, retry_delay_s, roots, modules_off)
    try:
        return _read_range(opened, mask, module_files, start, stop, stamps)
    except BaseException:
        parts.close()  # whatever went wrong, the next item opens the files afresh
        raise


def _read_range(
    opened: OpenPart,
    mask: np.ndarray,
    module_files: Sequence[str | Path],
    start: int,
    stop: int,
    stamps: Sequence[Sequence[int] | None],
) -> FrameBatch:
    check_unchanged(module_files, stamps, "right before reading")  # files confined by open_part
    if not 0 <= start < stop <= opened.n_frames:  # an item past the part: refused whole, not salvaged frame by frame
        raise SourceError(f"{opened.first_file}: frames {start}..{stop - 1} requested, the part has {opened.n_frames}")
    numbers = opened.frame_numbers[start:stop].copy()
    index = np.arange(start, stop)
    failures: list[FailedFrames] = []
    try:
        data = opened.read_modules(start, stop)
    except SourceError:
        if stop - start == 1:
            raise
        # one corrupt frame must not cost the readable frames read with it (as offline: sources'
        # _part_chunks): read them one by one, list the others with their own reason
        data, good, failures = _salvage(opened, start, stop, str(module_files[0]))
        numbers, index = numbers[good], index[good]
    check_unchanged(module_files, stamps, "right after reading")
    return FrameBatch(
        numbers,
        None,
        0,
        index,
        detector_mask=mask,
        file=str(module_files[0]),
        modules=ModuleFrames(data, opened.layout),
        read_failures=failures,
    )


def _salvage(opened: OpenPart, start: int, stop: int, file: str) -> tuple[np.ndarray, np.ndarray, list[FailedFrames]]:
    """Frames ``start:stop`` read one at a time: the module data of those that read, which did, and
    a failure for each frame that did not (its number and its own reason)."""
    data = np.empty((stop - start, opened.layout.module_pixels), opened.module_dtype)
    good = np.zeros(stop - start, bool)
    failures: list[FailedFrames] = []
    for i in range(start, stop):
        try:
            opened.read_modules(i, i + 1, data[i - start : i - start + 1])
        except SourceError as exc:
            failures.append(FailedFrames(file, str(exc), [int(opened.frame_numbers[i])]))
            continue
        good[i - start] = True
    return data[good], good, failures
