"""Frame sources: where stitched frames, their frame numbers and their bad-pixel mask come from.

Every source turns its files into a stream of :class:`FrameChunk` (a few frames at a time, so a
2000-frame part never sits in memory whole) and reports what it could not read as
:class:`FailedInput` instead of skipping it. Three kinds:

* :class:`LambdaSource` — a Lambda acquisition (modules stitched with Dioptas' rule);
* :class:`Hdf5Source` — one 3-D dataset per file (Eiger-style ``/entry/data/data``);
* :class:`ImageSource` — single image files read by fabio (TIFF, CBF, EDF, …).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import lambda_layout as L
from .errors import SourceError
from .hdf5_io import open_h5
from .lambda_files import (
    LambdaAcquisition,
    LambdaPart,
    ModuleFile,
    frame_numbers_from_any,
    open_modules,
    parse_lambda_name,
)
from .stitch import StitchLayout

IMAGE_SUFFIXES = {".tif", ".tiff", ".cbf", ".edf", ".img", ".mar3450", ".sfrm", ".mccd", ".npy"}
HDF5_SUFFIXES = {".nxs", ".h5", ".hdf5", ".hdf", ".nx5"}
DEFAULT_DATASETS = ("/entry/data/data", "/entry/instrument/detector/data")


@dataclass
class FrameChunk:
    """A few consecutive stitched frames of one input file."""

    frame_numbers: np.ndarray  # (n,) acquisition frame numbers
    frames: np.ndarray  # (n, rows, cols)
    file_index: int  # index into ``source.raw_files``
    index_in_file: np.ndarray  # (n,) frame index inside that file


@dataclass
class FailedInput:
    """Frames (or a whole file) that could not be read, and why."""

    file: str
    reason: str
    frame_numbers: list[int] = field(default_factory=list)


ErrorSink = Callable[[FailedInput], None]


class FrameSource:
    """Common interface. ``prepare()`` must run before ``frame_shape``/``detector_mask`` are known."""

    name: str
    frame_shape: tuple[int, int]
    detector_mask: np.ndarray | None
    raw_files: list[str]
    input_files: list[str]

    def prepare(self) -> None:
        raise NotImplementedError

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameChunk]:
        raise NotImplementedError

    def expected_frames(self) -> int | None:
        """Number of frames announced by the files, if cheap to know (for progress bars)."""
        return None


class LambdaSource(FrameSource):
    """A Lambda acquisition: every part's module files read side by side and stitched."""

    def __init__(self, acquisition: LambdaAcquisition, retries: int = 3, retry_delay_s: float = 0.5):
        self.acquisition = acquisition
        self.name = acquisition.stem
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.layout: StitchLayout | None = None
        self.raw_files = [str(p.first_file) for p in acquisition.parts]
        self.input_files = [str(f) for f in acquisition.files]

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> LambdaSource:
        return cls(LambdaAcquisition.from_file(path), **kwargs)

    def prepare(self) -> None:
        """Take the layout from the first part whose module files all open."""
        errors = []
        for part in self.acquisition.parts:
            try:
                modules = self._open_part(part)
            except SourceError as exc:
                errors.append(str(exc))
                continue
            try:
                self.layout = StitchLayout.from_offsets([m.offset for m in modules], [m.module_shape for m in modules])
                self.frame_shape = self.layout.frame_shape
                self.detector_mask = self.layout.stitch_mask([m.pixel_mask for m in modules])
                return
            finally:
                for m in modules:
                    m.close()
        raise SourceError(f"no part of {self.name} could be opened: " + "; ".join(errors))

    def expected_frames(self) -> int | None:
        total = 0
        for part in self.acquisition.parts:
            try:
                with open_h5(part.first_file, retries=0) as h5:
                    total += int(h5[L.DATA].shape[0])
            except (SourceError, KeyError):
                return None
        return total

    def _open_part(self, part: LambdaPart) -> list[ModuleFile]:
        return open_modules(part.files, self.retries, self.retry_delay_s)

    def _check_part(self, part: LambdaPart, modules: list[ModuleFile]) -> int:
        """Validate a part against the layout; return the usable frame count."""
        assert self.layout is not None
        layout, n = check_part_modules(modules)
        if layout != self.layout:
            raise SourceError(
                f"part {part.index} ({part.first_file.name}) has module shapes/offsets "
                f"{[(m.module_shape, m.offset) for m in modules]} unlike the first part's; frame shape would be "
                f"{layout.frame_shape}, expected {self.layout.frame_shape}"
            )
        return n

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameChunk]:
        if self.layout is None:
            self.prepare()
        assert self.layout is not None
        buffers: dict = {}
        for file_index, part in enumerate(self.acquisition.parts):
            try:
                modules = self._open_part(part)
            except SourceError as exc:
                on_error(FailedInput(str(part.first_file), str(exc), frame_numbers_from_any(part.files)))
                continue
            try:
                yield from self._part_chunks(file_index, part, modules, chunk_size, buffers, on_error)
            finally:
                for m in modules:
                    m.close()

    def _part_chunks(self, file_index, part, modules, chunk_size, buffers, on_error) -> Iterator[FrameChunk]:
        assert self.layout is not None
        try:
            n = self._check_part(part, modules)
        except SourceError as exc:
            on_error(FailedInput(str(part.first_file), str(exc), [int(v) for v in modules[0].frame_numbers]))
            return
        ranges = collections.deque((start, min(start + chunk_size, n)) for start in range(0, n, chunk_size))
        while ranges:
            start, stop = ranges.popleft()
            numbers = modules[0].frame_numbers[start:stop]
            try:
                module_frames = []
                for k, m in enumerate(modules):
                    key = (k, stop - start, m.data.dtype.str)
                    if key not in buffers:
                        buffers[key] = np.empty((stop - start, *m.module_shape), dtype=m.data.dtype)
                    m.read(start, stop, buffers[key])
                    module_frames.append(buffers[key])
                frames = self.layout.stitch(module_frames)
            except SourceError as exc:
                if stop - start > 1:  # one corrupt frame must not cost the readable frames read with it
                    ranges.extendleft((i, i + 1) for i in reversed(range(start, stop)))
                    continue
                on_error(FailedInput(str(part.first_file), str(exc), [int(v) for v in numbers]))
                continue
            yield FrameChunk(numbers.copy(), frames, file_index, np.arange(start, stop))


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

    def _dataset(self, h5, path: Path):
        candidates = (self.dataset,) if self.dataset else DEFAULT_DATASETS
        for name in candidates:
            if name in h5 and getattr(h5[name], "ndim", 0) in (2, 3):
                return h5[name]
        raise SourceError(f"{path} has no frame dataset at {' or '.join(candidates)}; give the path with --dataset")

    def prepare(self) -> None:
        errors = []
        for path in self.files:
            try:
                with open_h5(path, retries=self.retries) as h5:
                    self.frame_shape = tuple(int(n) for n in self._dataset(h5, path).shape[-2:])
                return
            except SourceError as exc:
                errors.append(str(exc))
        raise SourceError("; ".join(errors))

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameChunk]:
        next_number = 1
        for file_index, path in enumerate(self.files):
            try:
                h5 = open_h5(path, retries=self.retries)
            except SourceError as exc:
                on_error(FailedInput(str(path), str(exc)))
                continue
            with h5:
                try:
                    ds = self._dataset(h5, path)
                except SourceError as exc:
                    on_error(FailedInput(str(path), str(exc)))
                    continue
                n = 1 if ds.ndim == 2 else ds.shape[0]
                if tuple(ds.shape[-2:]) != self.frame_shape:
                    on_error(
                        FailedInput(
                            str(path), f"{path}: frames are {tuple(ds.shape[-2:])}, expected {self.frame_shape}"
                        )
                    )
                    next_number += n
                    continue
                for start in range(0, n, chunk_size):
                    stop = min(start + chunk_size, n)
                    numbers = np.arange(next_number + start, next_number + stop)
                    try:
                        frames = ds[()][None] if ds.ndim == 2 else ds[start:stop]
                    except Exception as exc:
                        on_error(FailedInput(str(path), f"{path}: frames {start}..{stop - 1}: {exc}", numbers.tolist()))
                        continue
                    yield FrameChunk(numbers, frames, file_index, np.arange(start, stop))
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
        errors = []
        for path in self.files:
            try:
                self.frame_shape = tuple(int(n) for n in self._read(path).shape[-2:])
                return
            except SourceError as exc:
                errors.append(str(exc))
        raise SourceError("; ".join(errors))

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameChunk]:
        next_number = 1
        for file_index, path in enumerate(self.files):
            try:
                frames = self._read(path)
            except SourceError as exc:
                on_error(FailedInput(str(path), str(exc), [next_number]))
                next_number += 1
                continue
            n = frames.shape[0]
            numbers = np.arange(next_number, next_number + n)
            next_number += n
            if tuple(frames.shape[-2:]) != self.frame_shape:
                on_error(
                    FailedInput(
                        str(path),
                        f"{path}: frame shape {frames.shape[-2:]}, expected {self.frame_shape}",
                        numbers.tolist(),
                    )
                )
                continue
            yield FrameChunk(numbers, frames, file_index, np.arange(n))


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
    paths: Sequence[str | Path], dataset: str | None = None, calibration_files: Sequence[str | Path] = ()
) -> list[FrameSource]:
    """Turn command-line paths (files or directories) into sources, one per acquisition/stream.

    Lambda files are grouped by acquisition stem (so two detectors, or two scans, give two sources);
    other HDF5 files form one stack source; image files one image source. ``calibration_files``
    (the --poni and --mask in use) are never data, even when named explicitly; in a directory no
    calibration file is (:func:`is_calibration_file`), nor are images beside Lambda module files.
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
    sources: list[FrameSource] = [LambdaSource.from_file(f) for f in lambda_stems.values()]
    if h5_files:
        sources.append(Hdf5Source(h5_files, dataset))
    if images:
        sources.append(ImageSource(images))
    return sources


def check_part_modules(modules: Sequence[ModuleFile]) -> tuple[StitchLayout, int]:
    """Layout and usable frame count of one part's module files, or SourceError saying what disagrees.

    One module may log one extra frame (lambda-format.md): the shortest count is used; more than one
    frame of difference, or sequence numbers that differ, mean the files do not belong together.
    """
    layout = StitchLayout.from_offsets([m.offset for m in modules], [m.module_shape for m in modules])
    counts = [m.n_frames for m in modules]
    n = min(counts)
    if max(counts) - n > 1:
        raise SourceError(f"{modules[0].path.name}: module files hold {counts} frames; they must agree (±1)")
    ref = modules[0].frame_numbers[:n]
    for m in modules[1:]:
        if not np.array_equal(m.frame_numbers[:n], ref):
            raise SourceError(f"{m.path}: sequence numbers differ from {modules[0].path.name}'s")
    return layout, n


@dataclass
class PartFrames:
    """Stitched frames of a range of one part, with what is needed to integrate them."""

    frames: np.ndarray
    frame_numbers: np.ndarray
    layout: StitchLayout
    detector_mask: np.ndarray


def read_part_range(
    module_files: Sequence[str | Path],
    start: int,
    stop: int,
    retries: int = 3,
    retry_delay_s: float = 0.5,
    roots: Sequence[str | Path] = (),
) -> PartFrames:
    """Open one part's module files, read frames ``start:stop`` and stitch them (the live path).

    ``roots``: every module file must resolve inside them (OutsideRootsError, a SourceError, if not)."""
    modules = open_modules(module_files, retries, retry_delay_s, roots)
    try:
        layout, n = check_part_modules(modules)
        if not 0 <= start < stop <= n:
            raise SourceError(f"{modules[0].path}: frames {start}..{stop - 1} requested, the part has {n}")
        buffers = [np.empty((stop - start, *m.module_shape), m.data.dtype) for m in modules]
        for m, buf in zip(modules, buffers, strict=True):
            m.read(start, stop, buf)
        return PartFrames(
            layout.stitch(buffers),
            modules[0].frame_numbers[start:stop].copy(),
            layout,
            layout.stitch_mask([m.pixel_mask for m in modules]),
        )
    finally:
        for m in modules:
            m.close()
