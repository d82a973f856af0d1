"""Room taken for an HDF5 file before HDF5 writes, and the handles HDF5 could not survive.

A free-space check (:class:`hdf5_io.SpaceGuard`) races every other writer of the disk: it can say
there is room, and HDF5 meets ENOSPC all the same. HDF5 (2.0, h5py 3.16) does not survive that:

- a failed ``H5Fflush`` leaves the metadata cache's skip list enabled, so every later flush and the
  close fail ("slist already enabled?") whether or not room came back;
- an object (a dataset) closed while the disk is full fails to close and its identifier stays;
  at exit the library's ``H5_term_library`` closes it again and the process dies of SIGSEGV.

So the room a write needs is *taken*, not only looked at: :func:`reserve` allocates it past the
file's end (``fallocate(FALLOC_FL_KEEP_SIZE)``: the blocks belong to the file, its size does not
change), and HDF5's writes land in blocks no other writer can take. Where the file system cannot
(not Linux, ``EOPNOTSUPP``) it does nothing and the check alone stands. :func:`trim` gives back what
a write (and at last the closed file) did not use.

A handle that met ENOSPC anyway (a file system that cannot reserve, or a write larger than its
estimate) is :func:`hold`-ed, never flushed or closed while the disk is full, and let go
(:func:`let_go`) once there is room: a flush then writes the raw data still cached (its metadata
part fails, as above), then the close; the row log of the file holds every change, so its scan is
rebuilt into a new file in the same process. That is the best HDF5 allows, not a cure: objects whose
close failed on the full disk stay in the library's tables, and the process may still die of
SIGSEGV at its exit (measured: 5 runs of 7 after a failure-list write met ENOSPC). Hence the
reservation, which keeps HDF5 from meeting ENOSPC at all.

The registry is process-wide because the HDF5 library's table of open files is: a new file of the
same name cannot be created in this process while the old handle is open.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import logging
import os
import sys
from pathlib import Path

import h5py

log = logging.getLogger(__name__)

_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV)


def _libc_fallocate():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _libc_fallocate()


def reserve(path: Path, nbytes: int) -> bool:
    """Allocate ``nbytes`` past the end of ``path`` for the file alone (its size unchanged).

    OSError(ENOSPC) when the disk has not that much; False (nothing done) where the file system or
    platform cannot reserve, True when the room is the file's."""
    if _FALLOCATE is None or nbytes <= 0:
        return False
    fd = os.open(path, os.O_WRONLY)
    try:
        if _FALLOCATE(fd, _KEEP_SIZE, os.fstat(fd).st_size, int(nbytes)) == 0:
            return True
        err = ctypes.get_errno()
    finally:
        os.close(fd)
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, f"cannot reserve {nbytes} bytes for {path}: {os.strerror(err)}")


def trim(path: Path) -> None:
    """Give back the blocks reserved past the end of a closed file (a shrinking truncate frees them)."""
    try:
        size = path.stat().st_size
        os.truncate(path, size + 1)
        os.truncate(path, size)
    except OSError as exc:  # the file is complete without it: only some disk stays taken
        log.warning("could not give back the room reserved for %s (%s)", path, exc)


_HELD: dict[Path, h5py.File] = {}


def hold(path: Path, h5: h5py.File) -> None:
    """Keep a handle that met ENOSPC inside HDF5 until :func:`let_go` (never closed on a full disk)."""
    _HELD[Path(path)] = h5


def holds(path: Path) -> bool:
    return Path(path) in _HELD


def let_go(path: Path) -> None:
    """Close the damaged handle of ``path`` (if this process holds one), now that there is room:
    flush first (the cached raw data goes out; the metadata part fails, HDF5's skip-list bug), then
    close; what HDF5 says is logged, never raised — the file is rebuilt from its row log."""
    h5 = _HELD.pop(Path(path), None)
    if h5 is None:
        return
    for step in (h5.flush, h5.close):
        try:
            step()
        except (RuntimeError, OSError, ValueError) as exc:
            log.info("%s: %s of the handle damaged by the full disk: %s", path, step.__name__, exc)


@atexit.register
def _let_go_all() -> None:
    """Before the HDF5 library ends (its own exit handler runs after Python's): no damaged handle left."""
    for path in list(_HELD):
        let_go(path)
