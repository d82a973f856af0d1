"""Scans whose file cannot be created because the output folder refuses writes (a read-only mount,
permissions): they wait for the folder, as a full disk's scans wait for room.

Before, each batch of such a scan tried to create the file, failed, and was dropped: the scan was
lost batch by batch, never closed, never recorded, and the frames of its last batches were never
asked again once the folder was writable. Now the scan keeps its first batch (the radial axis and
settings its file needs), drops the others while it waits (counted), and is opened as soon as the
folder takes writes again; the gap check then asks for every frame it dropped.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from ..messages import PatternBatch

#: errno values meaning "this folder refuses writes" (not: a bad name, a planted link, a full disk)
REFUSED_WRITES = (errno.EROFS, errno.EACCES, errno.EPERM)


def refuses_writes(exc: BaseException) -> bool:
    """True when ``exc`` (an OutputError raised while creating a file) comes from a folder that
    refuses writes: only then is waiting the answer (a planted link never goes away by itself)."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in REFUSED_WRITES


@dataclass
class Unwritable:
    """A scan waiting for its folder: the batch that opens its file, and the frames dropped since."""

    scan: str
    first_batch: PatternBatch
    error: str
    dropped: int = 0


class WaitingForWrite:
    """The scans of one output folder that wait until it takes writes again."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._scans: dict[str, Unwritable] = {}

    def __contains__(self, scan: object) -> bool:
        return scan in self._scans

    def add(self, batch: PatternBatch, error: str) -> Unwritable:
        """Set ``batch``'s scan aside with ``batch`` as the one that opens its file (kept if already waiting)."""
        entry = self._scans.get(batch.scan) or Unwritable(batch.scan, batch, error)
        self._scans[batch.scan] = entry
        return entry

    def scans(self) -> list[str]:
        return list(self._scans)

    def drop(self, scan: str, frames: int) -> None:
        """Frames of a waiting scan arrived: not merged (asked again once its file is open)."""
        self._scans[scan].dropped += frames

    def ready(self) -> list[Unwritable]:
        """Every waiting scan, taken out, when the folder takes writes now (else none)."""
        if not self._scans or not os.access(self.folder, os.W_OK):
            return []
        ready, self._scans = list(self._scans.values()), {}
        return ready
