"""One part's module files kept open across the work items cut from it (the live Integrator).

Why: a Lambda part of up to 2,000 frames becomes work items of 16 frames, and opening its three
module files for each item (h5py opens, the metadata, each module's pixel mask) took a third of the
live Integrator's reading thread (``py-spy``), where ``integrate`` opens each part once.

Kept open only while nothing on disk says otherwise: each file's identity and content stamp
(device, inode, size, modification time, taken *before* the open) must be what it was, and the part
must hold the frames asked for. A file written again, replaced, grown or truncated, or a path that
now names another file (a symlink swapped), is opened afresh, with every check of a first open
(confinement to the roots included). One part at a time, for one thread; :meth:`OpenParts.close`
when the reading thread goes idle or stops.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..formats.hdf5_io import open_h5
from ..formats.lambda_part import OpenPart, open_part
from ..paths import confine


def _identity(files: Sequence[str | Path]) -> tuple[tuple[int, int, int, int], ...] | None:
    """(device, inode, size, mtime_ns) of each file, None when one cannot be looked at."""
    try:
        stats = [os.stat(f) for f in files]
    except OSError:
        return None
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


class OpenParts:
    """The last part opened, with its stitched detector mask, reused while its files are unchanged."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._identity: tuple | None = None
        self._opened: OpenPart | None = None
        self._mask: np.ndarray | None = None
        #: opens avoided and opens made (what the tests check)
        self.reused = 0
        self.opened = 0

    def open(
        self,
        files: Sequence[str | Path],
        stop: int,
        retries: int,
        retry_delay_s: float,
        roots: Sequence[str | Path],
        modules_off: Sequence[int],
    ) -> tuple[OpenPart, np.ndarray]:
        """The part of ``files`` (open, checked as :func:`open_part` does) and its detector mask."""
        key = (tuple(str(f) for f in files), tuple(modules_off), tuple(str(r) for r in roots))
        identity = _identity(files)
        opened = self._opened
        if opened is not None and key == self._key and identity is not None and identity == self._identity \
                and stop <= opened.n_frames:  # fmt: skip
            assert self._mask is not None
            self.reused += 1
            return opened, self._mask
        self.close()
        # held between items, so without HDF5's file lock (which would refuse the detector writing the
        # files again under their names); a writer still at them is noticed as every open notices it:
        # each file, confined to the roots first, is opened once with the lock (errno 11 while written),
        # and closed (HDF5 refuses one file open twice in a process with other locking flags)
        for path in (confine(f, roots, "module file") if roots else Path(f) for f in files):
            if path.exists():  # a missing file: open_part says so, with its own message
                open_h5(path, retries, retry_delay_s).close()
        opened = open_part(files, retries, retry_delay_s, roots, modules_off, locking=False)
        self._key, self._identity, self._opened = key, identity, opened
        self._mask = opened.detector_mask()
        self._mask.setflags(write=False)  # shared by the part's items: nobody may change it under another
        self.opened += 1
        return opened, self._mask

    @property
    def held(self) -> bool:
        """A part is open now."""
        return self._opened is not None

    def close(self) -> None:
        """Close the part held, if any (the next :meth:`open` opens afresh)."""
        opened, self._opened, self._key, self._identity, self._mask = self._opened, None, None, None, None
        if opened is not None:
            opened.close()
