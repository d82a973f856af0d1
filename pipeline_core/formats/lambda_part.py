"""One part of a Lambda acquisition: its module files opened together, checked, read as stitched frames.

Every reader of module files goes through :func:`open_part` — the offline source, the Stitcher's
part check, the Stitcher re-learning parts for a requeue, and the Integrator reading a work item —
so the rules (all modules or none, confined to the data roots, counts within ±1, equal sequence
numbers, one layout) are written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..processing.stitch import StitchLayout
from . import lambda_layout as L
from .lambda_files import ModuleFile, open_modules


class PartMismatch(SourceError):
    """The module files opened but do not belong together; ``frame_numbers`` are module 1's (so the
    failure can be listed with the frames it cost)."""

    def __init__(self, message: str, frame_numbers: list[int]):
        super().__init__(message)
        self.frame_numbers = frame_numbers


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
class OpenPart:
    """The open module files of one part; close it (or use ``with``) when done."""

    modules: list[ModuleFile]
    layout: StitchLayout
    n_frames: int
    _buffers: dict = field(default_factory=dict, repr=False)

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

    def close(self) -> None:
        for m in self.modules:
            m.close()

    def __enter__(self) -> OpenPart:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_part(
    files: Sequence[str | Path], retries: int = 3, retry_delay_s: float = 0.5, roots: Sequence[str | Path] = ()
) -> OpenPart:
    """Open and check one part's module files (all or none stay open).

    ``roots``: every file must resolve inside them (OutsideRootsError, a SourceError, if not).
    Raises SourceError when a file is missing or unreadable, PartMismatch when they disagree.
    """
    modules = open_modules(files, retries, retry_delay_s, roots)
    try:
        layout, n = check_part_modules(modules)
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
