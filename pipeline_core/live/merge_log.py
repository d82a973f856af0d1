"""The row log beside an open merged file: what a killed Merger merged, in a form a kill cannot spoil.

HDF5 is not crash-safe: between two flushes (and during one) the library writes chunks and
metadata in its own order, so a file whose writer was killed with ``kill -9`` can hold rows whose
intensities and frame numbers come from different moments, or strings whose heap entries were
never written ("bad heap index" on reading them back). A resumed Merger therefore never continues
the HDF5 bytes it finds. Every change to an open scan's file is first appended here
(``<name>.nxs.rowlog``: the radial axis, then rows, raw-file names, failures and the acquisition's
frame count as it is learned, in order), and a
resume rebuilds the file from scratch by replaying the log through the same writer calls.

Each record is written with one ``write`` and flushed to the operating system, so a killed process
leaves every record it wrote (the kernel keeps them) and at most one torn record at the end. A record
is ``magic, payload length, CRC-32 of the payload`` and the payload; reading stops at the first record
that is short or whose checksum does not match, and the log is cut back to the last whole record
before it is appended to again. A record lost that way is a batch the Merger had not acknowledged
into its file: its frames count as missing, and the gap check asks for them again.

A full disk shows here first: before a record is appended, the folder's free space is checked for
the record *and* the change it makes to the HDF5 file (:func:`file_bytes`), plus the writer's
reserve; an append that fails all the same (ENOSPC) is cut back to the last whole record. Either way
:class:`~pipeline_core.errors.NoSpaceError` says so before anything of the change reached the file,
so the log and the file stay in step and the scan can be rebuilt from the log once room is back.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import NoSpaceError, PipelineError
from ..formats.hdf5_io import FreeBytes, SpaceGuard, is_no_space
from ..formats.nexus import MergedFileWriter, text_bytes
from ..paths import open_new_file

log = logging.getLogger(__name__)

LOG_SUFFIX = ".rowlog"
_MAGIC = b"XRL1"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32(payload)
_META = struct.Struct("<I")  # length of the JSON part of a payload
#: record kinds, in the order a file sees them (``open`` first, once)
KINDS = ("open", "rows", "raw_file", "failure", "total")


class LogError(PipelineError):
    """A row log that cannot be replayed (missing, or with no whole ``open`` record)."""


def log_path(path: Path) -> Path:
    """The row log of the result file ``path`` (its final name): ``X.nxs`` -> ``X.nxs.rowlog``."""
    return path.with_name(path.name + LOG_SUFFIX)


@dataclass
class Record:
    """One change to the file: ``kind`` (see :data:`KINDS`), its fields and its arrays."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def encode(self) -> bytes:
        arrays = {k: np.ascontiguousarray(v) for k, v in self.arrays.items()}
        meta = {
            "kind": self.kind,
            "fields": self.fields,
            "arrays": [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()],
        }
        text = json.dumps(meta).encode()
        payload = b"".join([_META.pack(len(text)), text, *(v.tobytes() for v in arrays.values())])
        return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> Record:
        (n,) = _META.unpack_from(payload)
        meta = json.loads(payload[_META.size : _META.size + n])
        offset, arrays = _META.size + n, {}
        for name, dtype, shape in meta["arrays"]:
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            arrays[name] = np.frombuffer(payload, dt, count, offset).reshape(shape).copy()
            offset += count * dt.itemsize
        return cls(meta["kind"], meta["fields"], arrays)


def read(path: Path) -> tuple[list[Record], int]:
    """The whole records of the log at ``path`` and the byte length they fill (what follows is dropped).

    LogError when there is no log or it does not start with a whole ``open`` record."""
    records, good, _damage = read_checked(path)
    return records, good


def read_checked(path: Path) -> tuple[list[Record], int, str]:
    """:func:`read`, and what was wrong with the bytes dropped: "" for none or a tail a kill cut
    short (expected), else a sentence for the operator. A record that is whole but fails its
    checksum is damage, not a kill: it and every record after it are not replayed (a later record
    may depend on it), so their frames count as missing and are asked again; say so."""
    records: list[Record] = []
    good, damage = 0, ""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise LogError(f"no row log {path} ({exc.strerror})") from exc
    with f:
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            magic, length, crc = _HEADER.unpack(header)
            payload = f.read(length) if magic == _MAGIC else b""
            if magic == _MAGIC and len(payload) < length:
                break  # the tail a kill cut short
            if magic != _MAGIC or zlib.crc32(payload) != crc:
                damage = "has no record marker" if magic != _MAGIC else "fails its checksum"
                break
            try:
                record = Record.decode(payload)
            except (ValueError, KeyError, struct.error) as exc:  # a checksummed record we cannot read: stop
                damage = f"cannot be decoded ({exc})"
                break
            records.append(record)
            good = f.tell()
        size = f.seek(0, os.SEEK_END)
    if damage:
        damage = (
            f"row log {path}: the record at byte {good} {damage}; it and the {size - good} byte(s) after it are "
            "not replayed, their frames count as missing and are asked again"
        )
        log.warning("%s", damage)
    elif size > good:
        log.warning("%s: %d byte(s) of a record cut short by the kill dropped", path, size - good)
    if not records or records[0].kind != "open":
        raise LogError(f"row log {path} holds no whole 'open' record ({size} bytes)")
    return records, good, damage


def file_bytes(record: Record, writer: MergedFileWriter) -> int:
    """Most bytes applying ``record`` can add to ``writer``'s HDF5 file (checked with the record)."""
    if record.kind == "rows":
        return writer.row_bytes(len(record.arrays["numbers"]))
    numbers = record.arrays.get("frame_numbers")
    ranges = 12 * (0 if numbers is None else len(numbers))  # at most "1234567890," per frame
    return text_bytes([json.dumps(record.fields)]) + ranges


class RowLog:
    """Appends records to one scan's log; each record reaches the kernel before the file is touched.

    The handle is unbuffered: a failed write leaves nothing pending in a buffer to reach the log
    later, behind the cut-back."""

    def __init__(self, path: Path, handle: BinaryIO, free_bytes: FreeBytes | None = None):
        self.path = path
        self._f = handle
        self._size = handle.tell()  # the end of the last whole record
        self.space = SpaceGuard(path.parent, free_bytes)
        #: what a resume found wrong in the log (:func:`read_checked`): "" when nothing
        self.damage = ""

    @classmethod
    def create(
        cls, path: Path, radial: np.ndarray, source: str, engine: str = "", engine_note: str = "",
        free_bytes: FreeBytes | None = None,
    ) -> RowLog:  # fmt: skip
        """A new log for the file ``path`` (final name), starting with the ``open`` record; no log is
        left when that record cannot be written (NoSpaceError)."""
        target = log_path(path)
        handle = os.fdopen(open_new_file(target), "wb", buffering=0)  # never through a planted link
        rowlog = cls(target, handle, free_bytes)
        opened = Record("open", {"source": source, "engine": engine, "engine_note": engine_note},
                        {"radial": np.asarray(radial, np.float64)})  # fmt: skip
        try:
            rowlog.append(opened)
        except BaseException:
            rowlog.remove()
            raise
        return rowlog

    @classmethod
    def resume(cls, path: Path, free_bytes: FreeBytes | None = None) -> tuple[RowLog, list[Record]]:
        """The log of ``path`` (final name) cut back to its last whole record, and its records."""
        target = log_path(path)
        records, good, damage = read_checked(target)
        handle = target.open("r+b", buffering=0)
        handle.truncate(good)
        handle.seek(good)
        rowlog = cls(target, handle, free_bytes)
        rowlog.damage = damage
        return rowlog, records

    def append(self, record: Record, then: int = 0) -> None:
        """Append one record (in the kernel's hands when this returns: a kill -9 no longer loses it).

        ``then``: bytes the change will take in the HDF5 file, checked with the record's own
        (:func:`file_bytes`). NoSpaceError, with the log as it was, when they are not free."""
        data = record.encode()
        what = f"a {record.kind!r} change to {self.path.name[: -len(LOG_SUFFIX)]} (row log and file)"
        self.space.require(len(data) + then, what)
        try:
            self._write_all(data)
        except OSError as exc:
            self._cut_back()
            if is_no_space(exc):
                free = self.space.free(self.space.folder)
                note = "the row log met the full disk; cut back to its last whole record"
                raise NoSpaceError(self.space.folder, len(data) + then, free, what, note) from exc
            raise
        self._size += len(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._f.write(view)
            if not written:  # a regular file writes something or raises; never spin
                raise OSError(errno.ENOSPC, f"{self.path}: the write wrote nothing")
            view = view[written:]

    def _cut_back(self) -> None:
        """Drop what a failed append wrote of its record (a torn record would end the log there)."""
        try:
            self._f.truncate(self._size)
            self._f.seek(self._size)
        except OSError:  # the torn tail is dropped by the next read in any case
            log.exception("%s: cannot cut back to %d bytes", self.path, self._size)

    def close(self) -> None:
        self._f.close()

    def remove(self) -> None:
        """The file is finished: its log is not needed any more."""
        self.close()
        self.path.unlink(missing_ok=True)


def set_aside(path: Path) -> None:
    """Keep the log of a file that could not be resumed (as ``.broken``), beside its journal."""
    target = log_path(path)
    if target.exists():
        target.rename(target.with_name(target.name + ".broken"))


# -- scans waiting for room ---------------------------------------------------------------------------
@dataclass
class SetAside:
    """A scan whose folder ran out of room: its file is suspended (or was never created), its frames
    arriving meanwhile are dropped, and it comes back once ``error.needed`` bytes are free again."""

    scan: str
    error: NoSpaceError
    #: the journal of its suspended file (a resume rebuilds the file from the row log); None when
    #: the file could not be created at all: ``first_batch`` then opens it
    journal: Path | None = None
    first_batch: Any = None
    #: frames that arrived while it waited (not merged: the gap check asks for them again)
    dropped: int = 0


class WaitingForRoom:
    """The scans set aside for a full disk, and the check that tells when each can come back.

    Kept apart from the stage so the rule is in one place: a full disk never ends a scan and never
    starts a second file for it (the name stays reserved by its ``.part``); it waits, and is
    rebuilt from its row log when the folder has room for the write that failed (plus the reserve
    that check asked for, already in ``error.needed``)."""

    def __init__(self, free_bytes: FreeBytes | None = None):
        self._free = free_bytes
        self._scans: dict[str, SetAside] = {}

    def __contains__(self, scan: object) -> bool:
        return scan in self._scans

    def __len__(self) -> int:
        return len(self._scans)

    def add(self, scan: str, error: NoSpaceError, journal: Path | None = None, first_batch: Any = None) -> SetAside:
        """Set ``scan`` aside (again: what it waited with is kept, the new error replaces the old)."""
        before = self._scans.get(scan)
        entry = SetAside(scan, error, journal, first_batch)
        if before is not None:
            entry.journal = journal or before.journal
            entry.first_batch = first_batch or before.first_batch
            entry.dropped = before.dropped
        self._scans[scan] = entry
        return entry

    def drop(self, scan: str, frames: int) -> None:
        """Frames of a waiting scan arrived: not merged (asked again once it is back)."""
        self._scans[scan].dropped += frames

    def ready(self) -> list[SetAside]:
        """The waiting scans whose folder has room again, now."""
        out = []
        for entry in self._scans.values():
            guard = SpaceGuard(Path(str(entry.error.folder)), self._free, reserve=0)
            if guard.room(entry.error.needed):
                out.append(entry)
        return out

    def pop(self, scan: str) -> SetAside:
        return self._scans.pop(scan)
