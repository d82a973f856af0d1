"""Opening HDF5 files that a detector may still be writing.

A part announced by the detector driver can still be open for writing (HDF5 file locking: errno 11)
or be cut short (superblock end-of-file beyond the size on disk). Both heal within seconds, so we
retry a bounded number of times and then fail with a message that names the file — never skip it.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters with HDF5)

from ..errors import SourceError

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


def open_h5(path: str | Path, retries: int = 3, delay_s: float = 0.5) -> h5py.File:
    """Open an HDF5 file read-only, retrying while it looks like it is still being written."""
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
            return h5py.File(path, "r")
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
