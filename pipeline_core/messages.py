"""Small, versioned messages that chain the stages (carried by Tango events, but Tango-free here).

Events carry descriptors, never frames: a 67 MB image event takes ~1 s on loopback, a descriptor
of a few hundred bytes nothing. Three messages:

* :class:`ScanInfo` — Stitcher → everyone: an acquisition (scan) started, what it will contain;
* :class:`WorkItem` — Stitcher → Integrators: frames of one part are complete on disk and where
  they are (module file URLs, frame range); Integrators claim items one at a time so that several of
  them share the work without duplicating a frame;
* :class:`PatternBatch` — Integrator → Merger: the 1-D patterns of one work item (float32 arrays in
  a binary payload) plus the frames that failed, with reasons.

Every message is a JSON object with ``"type"`` and ``"version"``; a receiver refuses a version it
does not know instead of misreading it.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import PipelineError

VERSION = 1


class MessageError(PipelineError):
    """A message that cannot be decoded (wrong type, unknown version, damaged payload)."""


@dataclass(frozen=True)
class _Message:
    TYPE: ClassVar[str] = ""

    def to_json(self) -> str:
        return json.dumps({"type": self.TYPE, "version": VERSION, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes):
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"{cls.TYPE}: not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("type") != cls.TYPE:
            raise MessageError(f"expected a {cls.TYPE} message, got {str(data)[:120]}")
        if data.get("version") != VERSION:
            raise MessageError(
                f"{cls.TYPE} message version {data.get('version')} is not supported (we speak {VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise MessageError(f"{cls.TYPE}: {exc}") from exc


@dataclass(frozen=True)
class ScanInfo(_Message):
    TYPE: ClassVar[str] = "scan"
    scan: str  # unique id of this processing of an acquisition (stem, plus a suffix for reintegrations)
    detector: str
    stem: str
    total_frames: int | None = None  # known from the files' collection/frame_numbers, else None
    reintegration: bool = False


@dataclass(frozen=True)
class WorkItem(_Message):
    TYPE: ClassVar[str] = "work"
    item_id: str
    scan: str
    detector: str
    part: int  # index of the part: the file index in the merged file's ``files``
    module_files: list[str]
    start: int  # first frame index inside the part's files
    stop: int
    frame_numbers: list[int]
    total_frames: int | None = None
    error: str | None = None  # set when the part could not be read: the item carries the failure downstream
    announced_at: float = 0.0  # epoch seconds when the part was first announced (for the latency figure)


@dataclass(frozen=True)
class FailedFrames:
    file: str
    reason: str
    frame_numbers: list[int] = field(default_factory=list)


_MAGIC = b"XRDP"


@dataclass(frozen=True)
class PatternBatch:
    """Patterns of one work item. Encoded as ``XRDP`` + header length + JSON header + float32 arrays."""

    FORMAT: ClassVar[str] = f"xrd-patterns/{VERSION}"
    item_id: str
    scan: str
    detector: str
    integrator: str
    part: int
    settings_hash: str
    frame_numbers: np.ndarray  # (n,)
    index_in_file: np.ndarray  # (n,)
    intensities: np.ndarray  # (n, bins) float32
    radial: np.ndarray  # (bins,) float64
    sigma: np.ndarray | None = None
    failed: list[FailedFrames] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    raw_file: str = ""  # the part's module-1 file (Dioptas' ``files`` entry)
    module_files: list[str] = field(default_factory=list)  # all of the part's files (provenance)
    total_frames: int | None = None
    announced_at: float = 0.0

    def encode(self) -> tuple[str, bytes]:
        n, bins = self.intensities.shape if self.intensities.ndim == 2 else (0, len(self.radial))
        header = {
            "item_id": self.item_id,
            "scan": self.scan,
            "detector": self.detector,
            "integrator": self.integrator,
            "part": self.part,
            "settings_hash": self.settings_hash,
            "n": int(n),
            "bins": int(bins),
            "frame_numbers": [int(v) for v in self.frame_numbers],
            "index_in_file": [int(v) for v in self.index_in_file],
            "sigma": self.sigma is not None,
            "failed": [asdict(f) for f in self.failed],
            "settings": self.settings,
            "raw_file": self.raw_file,
            "module_files": list(self.module_files),
            "total_frames": self.total_frames,
            "announced_at": self.announced_at,
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        body = [
            np.ascontiguousarray(self.radial, np.float64).tobytes(),
            np.ascontiguousarray(self.intensities, np.float32).tobytes(),
        ]
        if self.sigma is not None:
            body.append(np.ascontiguousarray(self.sigma, np.float32).tobytes())
        return self.FORMAT, _MAGIC + struct.pack("<I", len(head)) + head + b"".join(body)

    @classmethod
    def decode(cls, fmt: str, payload: bytes) -> PatternBatch:
        if fmt != cls.FORMAT:
            raise MessageError(f"pattern batch format {fmt!r} is not supported (we speak {cls.FORMAT})")
        payload = bytes(payload)
        if payload[:4] != _MAGIC:
            raise MessageError("pattern batch payload does not start with XRDP")
        (hlen,) = struct.unpack_from("<I", payload, 4)
        h = json.loads(payload[8 : 8 + hlen])
        n, bins = h["n"], h["bins"]
        offset = 8 + hlen
        expected = bins * 8 + n * bins * 4 * (2 if h["sigma"] else 1)
        if len(payload) - offset != expected:
            raise MessageError(f"pattern batch {h.get('item_id')}: {len(payload) - offset} bytes, expected {expected}")
        radial = np.frombuffer(payload, np.float64, bins, offset)
        offset += bins * 8
        intensities = np.frombuffer(payload, np.float32, n * bins, offset).reshape(n, bins)
        offset += n * bins * 4
        sigma = np.frombuffer(payload, np.float32, n * bins, offset).reshape(n, bins) if h["sigma"] else None
        return cls(
            h["item_id"],
            h["scan"],
            h["detector"],
            h["integrator"],
            h["part"],
            h["settings_hash"],
            np.asarray(h["frame_numbers"], np.int64),
            np.asarray(h["index_in_file"], np.int64),
            intensities,
            radial,
            sigma,
            [FailedFrames(**f) for f in h["failed"]],
            h["settings"],
            h.get("raw_file", ""),
            h.get("module_files", []),
            h.get("total_frames"),
            h.get("announced_at", 0.0),
        )
