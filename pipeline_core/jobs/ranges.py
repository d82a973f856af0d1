"""Splitting an acquisition's frames into ranges, one per task, from what its files say (cheaply).

A Lambda acquisition is read part by part (a part = one file per module, 2,000 frames at P02.2):
when there are at least as many parts as ranges, ranges are cut at part boundaries, so each task
opens and decompresses only its own files; with fewer parts a part is shared (cut at a multiple of
the reader's chunk), and each task keeps its frames of it. Ranges cover the frame numbers without
a gap (``first`` of one range is ``last`` of the previous one plus one), so every frame the files
hold belongs to exactly one range.

Only the sequence numbers (Lambda) or the dataset shapes (HDF5 stacks) are read here; an image
series is one range.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SourceError
from ..formats.hdf5_io import open_h5
from ..formats.lambda_files import frame_numbers_from_any
from ..processing.offline import DEFAULT_CHUNK_SIZE
from ..processing.sources import DEFAULT_DATASETS, FrameSource, Hdf5Source, LambdaSource
from .spec import MAX_FRAME_NUMBER, MAX_RANGES, FrameRange


@dataclass(frozen=True)
class FrameLayout:
    """The frame numbers of each file (part) of a source, in reading order; None where unreadable now."""

    numbers: tuple[tuple[int, ...] | None, ...]
    #: ranges may name the parts they read (Lambda); False: every task reads every file (HDF5, images)
    by_part: bool

    @property
    def total(self) -> int:
        return sum(len(n) for n in self.numbers if n is not None)


def frame_layout(source: FrameSource) -> FrameLayout | None:
    """What the files say about their frames, or None when it cannot be told cheaply (images)."""
    if isinstance(source, LambdaSource):
        found: list[tuple[int, ...] | None] = []
        for part in source.acquisition.parts:
            read = frame_numbers_from_any(files=part.files)
            found.append(tuple(read) if read else None)
        return FrameLayout(tuple(found), by_part=True)
    if isinstance(source, Hdf5Source):
        counts = [_stack_length(path, source.dataset) for path in source.files]
        if any(c is None for c in counts):
            return None
        start, stacks = 1, []
        for count in counts:
            assert count is not None
            stacks.append(tuple(range(start, start + count)))
            start += count
        return FrameLayout(tuple(stacks), by_part=False)
    return None


def _stack_length(path, dataset: str | None) -> int | None:
    """Frames in one HDF5 stack (as Hdf5Source reads it: a 2-D dataset is one frame)."""
    try:
        with open_h5(path, retries=0) as h5:
            for name in (dataset,) if dataset else DEFAULT_DATASETS:
                if name in h5 and getattr(h5[name], "ndim", 0) in (2, 3):
                    ds = h5[name]
                    return 1 if ds.ndim == 2 else int(ds.shape[0])
    except SourceError:
        return None
    return None


def _nearest(allowed: list[int], target: float) -> int:
    return min(allowed, key=lambda a: abs(a - target))


def plan_ranges(layout: FrameLayout | None, wanted: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[FrameRange]:
    """At most ``wanted`` ranges covering every frame of ``layout`` (one range when it is unknown).

    Cuts fall at part (file) boundaries when there are enough parts, otherwise at multiples of
    ``chunk_size`` frames into a part: the reader's chunks then never straddle two ranges, so each task
    integrates exactly the batches ``integrate`` does. Parts whose frame numbers cannot be read now
    are read by every range (each keeps its own frames, and their failure is reported once).
    """
    wanted = max(1, min(wanted, MAX_RANGES))
    if layout is None or layout.total == 0:
        return [FrameRange(0, 0, MAX_FRAME_NUMBER, 0, None)]
    seq = [
        (part, offset, n)
        for part, numbers in enumerate(layout.numbers)
        if numbers is not None
        for offset, n in enumerate(numbers)
    ]
    numbers = [n for _, _, n in seq]
    total = len(seq)
    if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
        # not increasing across the files: ranges of numbers would not be ranges of the files
        every = tuple(range(len(layout.numbers))) if layout.by_part else None
        return [FrameRange(0, min(numbers), max(numbers), total, every)]
    part_starts = [i for i, (_, offset, _) in enumerate(seq) if offset == 0]
    if wanted <= len(part_starts):
        allowed = part_starts
    else:
        allowed = [i for i, (_, offset, _) in enumerate(seq) if offset % max(1, chunk_size) == 0]
    wanted = min(wanted, len(allowed))
    cuts = sorted({_nearest(allowed, k * total / wanted) for k in range(wanted)})
    if cuts[0] != 0:
        cuts.insert(0, 0)
    unknown = set(p for p, n in enumerate(layout.numbers) if n is None)
    ranges = []
    for i, start in enumerate(cuts):
        stop = cuts[i + 1] if i + 1 < len(cuts) else total
        last = numbers[stop] - 1 if stop < total else numbers[-1]
        parts = tuple(sorted({seq[j][0] for j in range(start, stop)} | unknown)) if layout.by_part else None
        ranges.append(FrameRange(i, numbers[start], last, stop - start, parts))
    return ranges
