"""Finding and reading the files of one Lambda acquisition.

Any one file name identifies the acquisition: ``<stem>_m<k>[_part<NNNNN>].nxs`` (older firmware,
``k`` = 1, 2, 3) or ``<stem>_m<kk>.nxs`` plus ``<stem>_master.nxs`` (2024+). Unlike Dioptas' regex we
accept module numbers of any width, so ``_m01`` does not silently become "module 1 only".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import SourceError
from ..paths import confine
from . import lambda_layout as L
from .chunk_check import ChunkChecker, CorruptChunk, UncheckableFilters
from .hdf5_io import open_h5

_MODULE_RE = re.compile(r"^(?P<stem>.+)_m(?P<module>\d{1,2})(?:_part(?P<part>\d+))?\.nxs$")
_MASTER_RE = re.compile(r"^(?P<stem>.+)_master\.nxs$")


@dataclass(frozen=True)
class LambdaName:
    stem: str
    module: int | None  # None for the master file
    part: int | None


def parse_lambda_name(path: str | Path) -> LambdaName | None:
    """Split a Lambda file name into stem, module and part; None when it is not one."""
    name = Path(path).name
    m = _MODULE_RE.match(name)
    if m:
        part = m.group("part")
        return LambdaName(m.group("stem"), int(m.group("module")), None if part is None else int(part))
    m = _MASTER_RE.match(name)
    if m:
        return LambdaName(m.group("stem"), None, None)
    return None


@dataclass(frozen=True)
class LambdaPart:
    """The module files of one part (one chunk of frames), ordered by module number."""

    index: int
    modules: tuple[int, ...]
    files: tuple[Path, ...]

    @property
    def first_file(self) -> Path:
        """The module-1 file, which Dioptas' Batch View lists as the part's raw file."""
        return self.files[0]


@dataclass(frozen=True)
class LambdaAcquisition:
    """All files of one acquisition of one detector."""

    directory: Path
    stem: str
    modules: tuple[int, ...]
    parts: tuple[LambdaPart, ...]
    #: modules the user said are off (``--modules``): left out of every frame, recorded in the result
    modules_off: tuple[int, ...] = ()

    @classmethod
    def from_file(cls, path: str | Path, expected_modules: Sequence[int] | None = None) -> LambdaAcquisition:
        """Find every module and part of the acquisition that ``path`` belongs to.

        ``expected_modules``: the modules that are on (the user's ``--modules``). Without it every
        module of a Lambda 2M (:data:`lambda_layout.DEFAULT_MODULES`) and every module that wrote a
        file is expected: a module file that is missing fails its part, naming the file, and never
        quietly makes a frame of fewer modules (the radial range and every intensity would move).
        A module left out by ``expected_modules`` is :attr:`modules_off`, recorded in the result.
        """
        path = Path(path).absolute()
        name = parse_lambda_name(path)
        if name is None:
            raise SourceError(
                f"{path.name} is not a Lambda file name; expected <stem>_m<k>.nxs, <stem>_m<k>_part<NNNNN>.nxs "
                "or <stem>_master.nxs"
            )
        return cls.from_stem(path.parent, name.stem, expected_modules)

    @classmethod
    def from_stem(
        cls, directory: Path, stem: str, expected_modules: Sequence[int] | None = None
    ) -> LambdaAcquisition:
        directory = Path(directory).absolute()
        found: dict[tuple[int, int], Path] = {}
        for candidate in directory.glob(f"{glob_escape(stem)}_m*.nxs"):
            name = parse_lambda_name(candidate)
            if name is None or name.stem != stem or name.module is None:
                continue
            key = (name.part or 0, name.module)
            if key in found:
                raise SourceError(
                    f"two files for module {name.module} part {key[0]}: {found[key].name} and {candidate.name}"
                )
            found[key] = candidate
        if not found:
            raise SourceError(f"no module files <stem>_m<k>*.nxs for stem {stem!r} in {directory}")
        known = {m for _, m in found} | set(L.DEFAULT_MODULES)
        modules = tuple(sorted(set(expected_modules))) if expected_modules else tuple(sorted(known))
        off = tuple(sorted(known - set(modules)))
        part_numbers = sorted(_parts_of(found, modules))
        naming = LambdaNaming.from_name(next(iter(found.values()))) or LambdaNaming()
        parts = tuple(
            LambdaPart(
                p, modules, tuple(found.get((p, m)) or naming.module_file(directory, stem, m, p) for m in modules)
            )
            for p in part_numbers
        )
        if not parts:
            raise SourceError(
                f"no module files of module(s) {', '.join(map(str, modules))} for stem {stem!r} in {directory}"
            )
        return cls(directory, stem, modules, parts, off)

    @property
    def files(self) -> list[Path]:
        return [f for part in self.parts for f in part.files]


def _parts_of(found: dict[tuple[int, int], Path], modules: tuple[int, ...]) -> set[int]:
    """Part numbers that have a file of any of ``modules`` (a part only an off module wrote is none)."""
    return {p for p, m in found if m in modules}


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


@dataclass(frozen=True)
class LambdaNaming:
    """How one acquisition names its module files: module-number width (``_m1`` or ``_m01``) and
    whether names carry a part suffix (``_part00001``).

    Learned from any one of its file names, so the names of a part's other module files -- the ones
    not announced yet, or never written -- can be derived: the one place these names are built.
    """

    module_width: int = 1
    parts_suffix: bool = True

    @classmethod
    def from_name(cls, path: str | Path) -> LambdaNaming | None:
        """The naming of a module file's acquisition; None for a name that is not a module file's."""
        m = _MODULE_RE.match(Path(path).name)
        if m is None:
            return None
        return cls(len(m.group("module")), m.group("part") is not None)

    def module_file(self, directory: str | Path, stem: str, module: int, part: int) -> Path:
        """The path of module ``module`` of part ``part`` (part ignored when names carry no suffix)."""
        suffix = f"_part{part:05d}" if self.parts_suffix else ""
        return Path(directory) / f"{stem}_m{module:0{self.module_width}d}{suffix}.nxs"


@dataclass
class ModuleFile:
    """An open module file: metadata read, frames read on demand into reusable buffers.

    Every read first validates the raw compressed chunks (:mod:`chunk_check`), so a corrupt chunk
    becomes a SourceError for those frames instead of a crash inside HDF5's bitshuffle filter.
    """

    path: Path
    h5: h5py.File
    data: h5py.Dataset
    offset: tuple[float, float]
    frame_numbers: np.ndarray
    pixel_mask: np.ndarray | None
    checker: ChunkChecker
    #: the module shape the file's ``layout`` says (rows, columns; written ``<cols>X<rows>``), None when
    #: the file has none or it cannot be parsed: a data shape that disagrees with it is a damaged file
    declared_shape: tuple[int, int] | None = None

    @classmethod
    def open(cls, path: Path, retries: int = 3, delay_s: float = 0.5, locking: bool = True) -> ModuleFile:
        h5 = open_h5(path, retries=retries, delay_s=delay_s, locking=locking)
        try:
            return cls._read_metadata(path, h5)
        except SourceError:
            h5.close()
            raise
        except Exception as exc:  # corrupt metadata: h5py raises OSError, KeyError, ValueError, ...
            h5.close()
            raise SourceError(f"{path}: the metadata cannot be read ({_first_line(exc)}); a corrupt file?") from exc

    @classmethod
    def _read_metadata(cls, path: Path, h5: h5py.File) -> ModuleFile:
        if L.DATA not in h5:
            raise SourceError(f"{path} has no {L.DATA}; expected a Lambda module file (see lambda-format.md)")
        data = h5[L.DATA]
        if data.ndim != 3:
            raise SourceError(f"{path}: {L.DATA} has shape {data.shape}; expected (frames, rows, columns)")
        if data.dtype.kind not in "iu":
            raise SourceError(
                f"{path}: {L.DATA} has dtype {data.dtype}; expected integer counts (int16, uint16 or uint32)"
            )
        if L.TRANSLATION in h5:
            distance = np.asarray(h5[L.TRANSLATION][()], dtype=np.float64).ravel()
            if distance.size < 2 or not np.all(np.isfinite(distance[:2])):
                raise SourceError(f"{path}: {L.TRANSLATION} = {distance}; expected [x, y, z] in pixels")
            offset = (float(distance[0]), float(distance[1]))
        else:
            raise SourceError(f"{path} has no {L.TRANSLATION}: the module offset is needed to stitch")
        n = data.shape[0]
        if L.SEQUENCE_NUMBER in h5:
            numbers = np.asarray(h5[L.SEQUENCE_NUMBER][()], dtype=np.int64).ravel()
            if numbers.size < n:
                raise SourceError(f"{path}: {numbers.size} sequence numbers for {n} frames")
            numbers = numbers[:n]
        else:
            raise SourceError(f"{path} has no {L.SEQUENCE_NUMBER}: frame numbers are needed to merge")
        try:
            checker = ChunkChecker.for_dataset(data)
        except UncheckableFilters as exc:
            raise SourceError(f"{path}: {L.DATA}: {exc}") from exc
        mask = None
        if L.PIXEL_MASK in h5:
            raw = np.asarray(h5[L.PIXEL_MASK][()])
            mask = raw.reshape(raw.shape[-2:]) != 0 if raw.size == np.prod(data.shape[1:]) else None
        return cls(path, h5, data, offset, numbers, mask, checker, _declared_shape(h5))

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def module_shape(self) -> tuple[int, int]:
        return tuple(int(n) for n in self.data.shape[1:])  # type: ignore[return-value]

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Read frames ``start:stop`` into ``out`` (preallocated: fresh arrays per chunk are slower).

        The raw chunks are checked first: HDF5 only decodes streams a bounds-checked decoder accepted.
        One-frame bitshuffle-LZ4 chunks are checked and decoded by us in one pass instead
        (:meth:`ChunkChecker.decode`: one decompression, not two; bit-identical to HDF5's).
        """
        if not 0 <= start < stop <= self.n_frames:
            raise SourceError(f"{self.path}: frames {start}..{stop - 1} requested, the file holds {self.n_frames}")
        try:
            if self.checker.decode(start, stop, out):  # checked and decoded in one pass (bitshuffle-LZ4)
                return
            self.checker.check(start, stop)
        except CorruptChunk as exc:
            raise SourceError(f"{self.path}: frames {start}..{stop - 1} are corrupt: {exc}") from exc
        try:
            self.data.read_direct(out, np.s_[start:stop], np.s_[0 : stop - start])
        except Exception as exc:
            raise SourceError(f"{self.path}: frames {start}..{stop - 1} cannot be read ({exc})") from exc

    def close(self) -> None:
        self.h5.close()


_LAYOUT_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _declared_shape(h5: h5py.File) -> tuple[int, int] | None:
    """(rows, columns) from ``detector/layout`` (``b'1554X516'`` in P02.2 files: columns X rows)."""
    if L.LAYOUT not in h5:
        return None
    try:
        raw = np.asarray(h5[L.LAYOUT][()]).ravel()
        text = raw[0] if raw.size else ""
        text = text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
    except Exception:  # an unreadable optional field says nothing
        return None
    m = _LAYOUT_RE.match(text)
    return (int(m.group(2)), int(m.group(1))) if m else None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def open_modules(files, retries: int = 3, delay_s: float = 0.5, roots=(), locking: bool = True) -> list[ModuleFile]:
    """Open every module file of a part, or none: on a failure the ones already open are closed.
    ``locking``: as :func:`~.hdf5_io.open_h5`'s.

    With ``roots``, each file is resolved (symlinks followed) and must lie inside them: this is where
    a part's files are opened, so the check covers announced, reintegrated, requeued and sibling files.
    """
    opened: list[ModuleFile] = []
    try:
        for path in (confine(f, roots, "module file") if roots else Path(f) for f in files):
            if not path.exists():
                raise SourceError(
                    f"module file {path} is missing: not written (yet), or its module is switched off "
                    "(then say which modules are on, e.g. --modules 1,2)"
                )
            opened.append(ModuleFile.open(path, retries=retries, delay_s=delay_s, locking=locking))
    except BaseException:
        for m in opened:
            m.close()
        raise
    return opened


def frame_numbers_from_any(files: list[Path] | tuple[Path, ...]) -> list[int]:
    """Frame numbers of a part that failed, from whichever of its module files still opens.

    So that a failure is listed with the frames it cost, not as an anonymous file.
    """
    for path in files:
        try:
            m = ModuleFile.open(path, retries=0)
        except SourceError:
            continue
        try:
            return [int(v) for v in m.frame_numbers]
        finally:
            m.close()
    return []
