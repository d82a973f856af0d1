"""Is this part ready to be queued? The Stitcher's look at one part's module files on disk.

Why apart from the stage: the answer -- ready (with its frame numbers and layout), still waiting
(files not all written, or not readable yet), or failed (and why) -- is what the stage decides on,
and a test can ask it of files on disk without threads, queues or clocks. Every module file is
read through :func:`~.lambda_part.open_part`, so the rules for a part (all modules or none, inside
the data roots, counts within ±1, equal sequence numbers, one layout) are the offline path's too.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..formats.lambda_files import LambdaAcquisition, frame_numbers_from_any, glob_escape
from ..formats.lambda_part import PartMismatch, open_part
from ..paths import OutsideRootsError, inside
from ..processing.file_stamps import stamp_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartReady:
    """Every module file opened and agreed: the part can be cut into work items."""

    files: list[Path]
    frame_numbers: list[int]
    frame_shape: tuple[int, int]
    #: the stitched detector mask, only when the frame shape differs from the one the caller knew
    detector_mask: np.ndarray | None
    total_frames: int | None


@dataclass(frozen=True)
class PartWaiting:
    """Not ready yet: ``missing`` files are not written, or (none missing) they do not open yet."""

    reason: str
    missing: list[str]


@dataclass(frozen=True)
class PartFailed:
    """The part cannot be read and never will; it still goes down the chain, as a failure."""

    reason: str
    frame_numbers: list[int]
    total_frames: int | None = None


PartState = PartReady | PartWaiting | PartFailed

#: What a file is on disk: (size, st_mtime_ns[, content digest]); None when it does not exist. Not the
#: inode: a file written again in place (HDF5 truncating it) keeps its inode. Compared with
#: :func:`~pipeline_core.processing.file_stamps.unchanged`: a new time with the same frames is the same file.
Stamp = tuple[int, ...] | None


def file_stamps(files: Sequence[Path], content: bool = False) -> dict[Path, Stamp]:
    """Each file's :data:`Stamp` now (``content``: with its frames' digest, as a taken part records them):
    what tells a part written again under the same name from the part that was taken."""
    return {Path(f): stamp_now(f, content) for f in files}


class PartChecker:
    """Opens parts' module files (with bounded retries, inside ``roots``) and says what they are."""

    def __init__(self, retries: int = 3, retry_delay_s: float = 0.5, roots: Sequence[str] = ()):
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.roots = tuple(roots)

    def check(
        self,
        files: list[Path],
        known_shape: tuple[int, int] | None = None,
        retries: int | None = None,
        modules_off: Sequence[int] = (),
    ) -> PartState:
        """The state of the part made of ``files``; ``known_shape``: the frame shape seen so far (the
        detector mask is built only when the shape changes). ``retries``: opening attempts after the
        first, instead of the checker's -- 0 where the caller looks again later anyway, so that a
        broken file does not hold the caller's thread in sleeps meanwhile. ``modules_off``: modules
        switched off for the scan, placed as gaps (the frame keeps its shape)."""
        missing = [f.name for f in files if not f.exists()]
        if missing:
            return PartWaiting(f"module file(s) {', '.join(missing)} not written", missing)
        try:
            part = open_part(
                files, self.retries if retries is None else retries, self.retry_delay_s, self.roots, modules_off
            )
        except OutsideRootsError as exc:  # a sibling that links out of the roots: never read it
            return self.failed(files, str(exc))
        except PartMismatch as exc:
            return self.failed(files, str(exc), exc.frame_numbers, self._total_of(files[:1]))
        except SourceError as exc:
            return PartWaiting(str(exc), [])  # still being written? the caller decides how long to wait
        with part:
            shape = part.layout.frame_shape
            mask = part.detector_mask() if shape != known_shape else None
            return PartReady(list(files), [int(v) for v in part.frame_numbers], shape, mask, part.total_frames())

    def failed(
        self, files: Sequence[Path], reason: str, numbers: Sequence[int] = (), total_frames: int | None = None
    ) -> PartFailed:
        """A failed part, listed with the frames it cost: ``numbers`` if known, else those of whichever
        of its files still opens -- only files inside the roots are opened."""
        if not numbers:
            numbers = frame_numbers_from_any([f for f in files if inside(f, self.roots)])
        return PartFailed(reason, [int(v) for v in numbers], total_frames)

    def total_frames(self, directory: Path, stem: str) -> int | None:
        """Frames the acquisition will have, from ``collection/frame_numbers`` of any of its files
        (each opened alone: the others of its part may not be written yet)."""
        for f in sorted(Path(directory).glob(f"{glob_escape(stem)}_m*.nxs")):
            total = self._total_of([f])
            if total:
                return total
        return None

    def readable_parts(
        self, acquisition: LambdaAcquisition, skip: Container[int] = ()
    ) -> dict[int, tuple[list[Path], list[int]]]:
        """Files and frame numbers of the acquisition's parts that read (those in ``skip`` are not
        opened): what a requeue needs to re-make work for parts this Stitcher never handled."""
        found: dict[int, tuple[list[Path], list[int]]] = {}
        for p in acquisition.parts:
            if p.index in skip:
                continue
            try:
                with open_part(p.files, retries=0, roots=self.roots, modules_off=acquisition.modules_off) as part:
                    found[p.index] = (list(p.files), [int(v) for v in part.frame_numbers])
            except PartMismatch as exc:
                log.warning("part %d of %s: %s", p.index, acquisition.stem, exc)
            except SourceError as exc:
                log.warning("part %d of %s cannot be read again: %s", p.index, acquisition.stem, exc)
        return found

    def _total_of(self, files: Sequence[Path]) -> int | None:
        if not all(inside(f, self.roots) for f in files):
            return None
        try:
            with open_part(files, retries=0, roots=self.roots) as part:
                return part.total_frames()
        except SourceError:
            return None
