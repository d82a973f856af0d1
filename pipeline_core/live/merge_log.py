"""The row log beside an open merged file: what a killed Merger merged, in a form a kill cannot spoil.

HDF5 is not crash-safe: between two flushes (and during one) the library writes chunks and
metadata in its own order, so a file whose writer was killed with ``kill -9`` can hold rows whose
intensities and frame numbers come from different moments, or strings whose heap entries were
never written ("bad heap index" on reading them back). A resumed Merger therefore never continues
the HDF5 bytes it finds. Every change to an open scan's file is first appended here
(``<name>.nxs.rowlog``: the radial axis, then rows, raw-file names and failures, in order), and a
resume rebuilds the file from scratch by replaying the log through the same writer calls.

Each record is written with one ``write`` and flushed to the operating system, so a killed process
leaves every record it wrote (the kernel keeps them) and at most one torn record at the end. A record
is ``magic, payload length, CRC-32 of the payload`` and the payload; reading stops at the first record
that is short or whose checksum does not match, and the log is cut back to the last whole record
before it is appended to again. A record lost that way is a batch the Merger had not acknowledged
into its file: its frames count as missing, and the gap check asks for them again.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import PipelineError

log = logging.getLogger(__name__)

LOG_SUFFIX = ".rowlog"
_MAGIC = b"XRL1"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32(payload)
_META = struct.Struct("<I")  # length of the JSON part of a payload
#: record kinds, in the order a file sees them (``open`` first, once)
KINDS = ("open", "rows", "raw_file", "failure")


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
    """The whole records of the log at ``path`` and the byte length they fill (what follows is torn).

    LogError when there is no log or it does not start with a whole ``open`` record."""
    records: list[Record] = []
    good = 0
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
            if magic != _MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
                break
            try:
                record = Record.decode(payload)
            except (ValueError, KeyError, struct.error) as exc:  # a checksummed record we cannot read: stop
                log.warning("%s: record at byte %d unreadable (%s); the log ends there", path, good, exc)
                break
            records.append(record)
            good = f.tell()
        size = f.seek(0, os.SEEK_END)
    if size > good:
        log.warning("%s: %d byte(s) of a record cut short by the kill dropped", path, size - good)
    if not records or records[0].kind != "open":
        raise LogError(f"row log {path} holds no whole 'open' record ({size} bytes)")
    return records, good


class RowLog:
    """Appends records to one scan's log; each record reaches the kernel before the file is touched."""

    def __init__(self, path: Path, handle: BinaryIO):
        self.path = path
        self._f = handle

    @classmethod
    def create(cls, path: Path, radial: np.ndarray, source: str, engine: str = "", engine_note: str = "") -> RowLog:
        """A new log for the file ``path`` (final name), starting with the ``open`` record."""
        target = log_path(path)
        rowlog = cls(target, target.open("wb"))
        rowlog.append(Record("open", {"source": source, "engine": engine, "engine_note": engine_note},
                             {"radial": np.asarray(radial, np.float64)}))  # fmt: skip
        return rowlog

    @classmethod
    def resume(cls, path: Path) -> tuple[RowLog, list[Record]]:
        """The log of ``path`` (final name) cut back to its last whole record, and its records."""
        target = log_path(path)
        records, good = read(target)
        handle = target.open("r+b")
        handle.truncate(good)
        handle.seek(good)
        return cls(target, handle), records

    def append(self, record: Record) -> None:
        self._f.write(record.encode())
        self._f.flush()  # in the kernel's hands: a kill -9 of this process no longer loses it

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
