"""Opening HDF5 files that a detector may still be writing.

A part announced by the detector driver can still be open for writing (HDF5 file locking: errno 11)
or be cut short (superblock end-of-file beyond the size on disk). Both heal within seconds, so we
retry a bounded number of times and then fail with a message that names the file — never skip it.

Writing has its own hazard: HDF5 does not survive ENOSPC (after one failed flush the process
segfaults when the file is closed, or at exit), so :class:`SpaceGuard` checks the free space of a
result's folder before each write and refuses it with :class:`~pipeline_core.errors.NoSpaceError`
while room is still left to close the file properly.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters with HDF5)

from ..errors import NoSpaceError, SourceError

_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def recorded_eof(path: Path) -> int | None:
    """End-of-file address recorded in the HDF5 superblock, or None if it cannot be read.

    Reads a few bytes without taking the HDF5 lock, so it is safe on a file another process writes.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return None
    if not head.startswith(_SIGNATURE) or len(head) < 48:
        return None
    version = head[8]
    if version in (0, 1):
        sizeof_addr = head[13]
        # base, free-space/extension, EOF, driver addresses follow the 24 (v0) or 28 (v1) header bytes
        start = 24 if version == 0 else 28
        offset = start + 2 * sizeof_addr
    elif version in (2, 3):
        sizeof_addr = head[9]
        offset = 12 + 2 * sizeof_addr
    else:
        return None
    fmt = {4: "<I", 8: "<Q"}.get(sizeof_addr)
    if fmt is None or len(head) < offset + sizeof_addr:
        return None
    return struct.unpack_from(fmt, head, offset)[0]


def check_not_truncated(path: Path) -> None:
    """Raise SourceError when the file on disk is shorter than its superblock says."""
    eof = recorded_eof(path)
    size = path.stat().st_size
    if eof is not None and size < eof:
        raise SourceError(f"{path} is truncated: {size} bytes on disk, HDF5 expects {eof} (still being written?)")


def open_h5(path: str | Path, retries: int = 3, delay_s: float = 0.5, locking: bool = True) -> h5py.File:
    """Open an HDF5 file read-only, retrying while it looks like it is still being written.

    ``locking`` False: HDF5's file lock is not taken. A handle kept open between reads must not hold
    it: the lock would refuse the detector's writer (errno 11) re-writing the file under its name."""
    path = Path(path)
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(delay_s)
        if not path.exists():
            last = SourceError(f"{path} does not exist")
            continue
        try:
            check_not_truncated(path)
            # True leaves HDF5's default (what every other open in the process uses: flags that differ
            # between two opens of one file are refused); False takes no lock
            return h5py.File(path, "r", locking=None if locking else False)
        except SourceError as exc:
            last = exc
        except (OSError, KeyError) as exc:
            last = SourceError(f"{path} cannot be opened as HDF5 ({_short(exc)})")
    assert last is not None
    if retries:
        raise SourceError(f"{last} [after {retries + 1} attempts over {retries * delay_s:.1f} s]") from last
    raise last


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- room to write ----------------------------------------------------------------------------------
#: ``free_bytes(folder)``: bytes an unprivileged writer may still use in ``folder``'s file system.
FreeBytes = Callable[[Path], int]

#: Room every check keeps free beyond the write it allows: enough for HDF5 to write what a file's
#: end needs (status, end time, the metadata cache's flush) after the last write was refused, and
#: for the small JSON records beside it (job records, journals). Measured on tmpfs: a new merged
#: file takes ~56 kB, ending one 4 kB, listing a failure 4 kB.
END_RESERVE = 1 << 20
#: What one HDF5 write adds besides its raw bytes and new chunks (chunk index, object headers,
#: global-heap collections of strings).
METADATA_PER_WRITE = 64 << 10


def free_bytes(folder: Path) -> int:
    """Free bytes for an unprivileged writer in ``folder``'s file system (``statvfs``: f_bavail)."""
    st = os.statvfs(folder)
    return int(st.f_bavail) * int(st.f_frsize)


class SpaceGuard:
    """Refuses a write to ``folder`` unless its bytes plus :data:`END_RESERVE` are free.

    ``free`` is injectable (tests pass a function; the default asks the file system), so a full
    disk can be simulated without filling one."""

    def __init__(self, folder: Path, free: FreeBytes | None = None, reserve: int = END_RESERVE):
        self.folder = Path(os.path.abspath(folder))  # named in messages: absolute, as an operator looks for it
        self.free = free or free_bytes
        self.reserve = reserve

    def require(self, needed: int, what: str, keep_reserve: bool = True) -> None:
        """NoSpaceError naming the folder, ``what`` and the bytes when ``needed`` (+ the reserve,
        unless ``keep_reserve`` is False: the file's end may use it) is more than is free."""
        total = int(needed) + (self.reserve if keep_reserve else 0)
        try:
            free = self.free(self.folder)
        except OSError as exc:  # the folder went: the write that follows fails with its own reason
            raise NoSpaceError(self.folder, total, 0, what, f"its free space cannot be read ({exc})") from exc
        if free < total:
            raise NoSpaceError(self.folder, total, free, what)

    def room(self, needed: int) -> bool:
        """Whether ``needed`` bytes plus the reserve are free now (a stalled writer polls this)."""
        try:
            return self.free(self.folder) >= needed + self.reserve
        except OSError:
            return False


def is_no_space(exc: BaseException) -> bool:
    """True for an OSError with errno ENOSPC, or an HDF5 error (h5py: RuntimeError/OSError) that
    reports one in its text (``errno = 28``) — what a check could not foresee (another writer)."""
    if isinstance(exc, NoSpaceError) or getattr(exc, "errno", None) == errno.ENOSPC:
        return True
    return isinstance(exc, (RuntimeError, OSError)) and f"errno = {errno.ENOSPC}," in str(exc)
