"""Are a part's module files still what they were when the part was queued?

Why: an acquisition restarted under the same name makes the detector write the module files over in
place (same inode). A work item handed to an Integrator before the Stitcher noticed would read the
new acquisition's frames and send them as the old scan's. The item carries each file's size and
``st_mtime_ns`` as the Stitcher took the part (``WorkItem.file_stamps``); the reader compares them
right before and right after reading, and refuses the item when a file changed.

A new time alone is not a change: the detector writing metadata at close, a backup tool or ``touch``
move it without touching a frame, and an acquisition split in two for that would end ``incomplete``
for nothing (an audit did it). So a stamp also holds a digest of the file's frames as stored (shape,
type, the first and the last compressed chunk, read raw: no decompression), looked at only when
size or time moved; the file is the same when that digest is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..errors import SourceError
from ..formats import lambda_layout as L
from ..formats.hdf5_io import open_h5


class WrittenOverError(SourceError):
    """A module file changed since its part was queued: its frames may be another acquisition's."""


def stamp_now(path: str | Path, content: bool = False) -> tuple[int, ...] | None:
    """``(size, st_mtime_ns)`` of ``path`` now (``content``: and its :func:`content_digest`), or None
    when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if content:
        return (st.st_size, st.st_mtime_ns, content_digest(path))
    return (st.st_size, st.st_mtime_ns)


def content_digest(path: str | Path) -> int:
    """A digest of a module file's frames as stored (0 when it cannot be read as one): their shape and
    type and the raw bytes of the first and last chunks. Two acquisitions differ there (counts, noise,
    compressed sizes); the same frames under a new file time do not."""
    try:
        # without HDF5's lock: the Integrator may hold the file open without it (open_parts), and HDF5
        # refuses one file open twice in a process with other locking flags
        with open_h5(path, retries=0, locking=False) as h5:
            ds = h5[L.DATA]
            if ds.chunks is None:  # contiguous frames: no chunk to read raw, so no digest; times decide
                return 0
            digest = hashlib.sha256(repr((ds.shape, ds.dtype.str, ds.chunks)).encode())
            n = ds.id.get_num_chunks()
            for i in sorted({0, n - 1} if n else set()):
                _, chunk = ds.id.read_direct_chunk(ds.id.get_chunk_info(i).chunk_offset)
                digest.update(chunk)
            return int.from_bytes(digest.digest()[:8], "big") >> 1 or 1
    except Exception:  # noqa: BLE001 - not a readable module file: no digest, times decide
        return 0


def unchanged(path: str | Path, taken: Sequence[int] | None) -> bool:
    """Whether ``path`` is still the file ``taken`` describes: the same size and time, or else the same
    content digest where ``taken`` has one (None: the file was absent, and still is)."""
    now = stamp_now(path)
    if taken is None or now is None:
        return taken is None and now is None
    if tuple(now) == tuple(taken[:2]):
        return True
    return len(taken) > 2 and bool(taken[2]) and content_digest(path) == taken[2]


def _show(stamp: Sequence[int] | None) -> str:
    if stamp is None:
        return "absent"
    when = datetime.fromtimestamp(stamp[1] / 1e9, UTC).isoformat(timespec="microseconds")
    return f"size {stamp[0]} B, mtime {when} ({stamp[1]} ns)"


def check_unchanged(files: Sequence[str | Path], stamps: Sequence[Sequence[int] | None], when: str) -> None:
    """Raise :class:`WrittenOverError` naming the first of ``files`` whose stamp differs from ``stamps``
    (same order); ``when`` says which look found it. No stamps (an item of an older Stitcher, a
    reintegration): nothing to compare, nothing refused."""
    if not stamps:
        return
    if len(stamps) != len(files):
        raise SourceError(f"{len(stamps)} file stamps for {len(files)} module files: expected one per file")
    for f, taken in zip(files, stamps, strict=True):
        if not unchanged(f, taken):
            expected = tuple(taken) if taken is not None else None
            raise WrittenOverError(
                f"module file {Path(f).name} was written over since the part was queued ({_show(expected)} "
                f"when queued, {_show(stamp_now(f))} {when}): a new acquisition under the same name? not integrated"
            )
