"""The failure list of a merged file: ``process/failed/{file, reason, frame_numbers}``.

What could not be integrated is listed in the result itself, one row per failure, with the frame
numbers as compact ranges an operator reads ("1-10,15"); a resumed file reads its list back.
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py

from ..messages import FailedFrames

_FIELDS = ("file", "reason", "frame_numbers")


class FailureList:
    """The ``failed`` NXcollection of one open file and the failures it lists, in order."""

    def __init__(self, group: h5py.Group, items: list[FailedFrames] | None = None):
        self._group = group
        self.items: list[FailedFrames] = items if items is not None else []

    @classmethod
    def read(cls, group: h5py.Group) -> FailureList:
        """The list as a file holds it (a resumed file keeps what it listed before the restart)."""
        rows = zip(*(group[name][()] for name in _FIELDS), strict=True)
        return cls(group, [FailedFrames(f.decode(), r.decode(), parse_ranges(n.decode())) for f, r, n in rows])

    def add(self, failure: FailedFrames) -> None:
        """Append one row (the caller flushes)."""
        self.items.append(failure)
        i = self._group["file"].shape[0]
        values = (failure.file, failure.reason, format_ranges(failure.frame_numbers))
        for name, value in zip(_FIELDS, values, strict=True):
            self._group[name].resize((i + 1,))
            self._group[name][i] = value


def format_ranges(numbers: Sequence[int]) -> str:
    """Compact "1-10,15" text for a list of frame numbers (an operator reads it)."""
    values = sorted(set(int(v) for v in numbers))
    if not values:
        return ""
    out, start, prev = [], values[0], values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(out)


def parse_ranges(text: str) -> list[int]:
    """Inverse of :func:`format_ranges`: "1-3,7" -> [1, 2, 3, 7]."""
    out: list[int] = []
    for piece in filter(None, text.split(",")):
        first, _, last = piece.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out
