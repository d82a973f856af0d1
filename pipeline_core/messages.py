"""Small, versioned messages that chain the stages (carried by Tango events, but Tango-free here).

Events carry descriptors, never frames: a 67 MB image event takes ~1 s on loopback, a descriptor
of a few hundred bytes nothing. The messages:

* :class:`ScanInfo` — Stitcher → everyone: an acquisition (scan) started, what it will contain;
* :class:`WorkItem` — Stitcher → Integrators: frames of one part are complete on disk and where
  they are (module file URLs, frame range); Integrators claim items one at a time so that several of
  them share the work without duplicating a frame;
* :class:`PatternBatch` — Integrator → Merger: the 1-D patterns of one work item (float32 arrays in
  a binary payload) plus the frames that failed, with reasons;
* :class:`ClaimRequest` — Integrator → Stitcher (``ClaimWork``): who asks, the initial settings it
  offers the chain (adopted only while the chain has none), and which items it has finished;
* :class:`SettingsRequest` — any device or client → Stitcher (``SetSettings``): a change of the
  chain's integration settings (PONI, mask, bins, unit), in force from the next work item on;
* :class:`RequeueRequest` — Merger → Stitcher (``RequeueFrames``): frames to make work for again;
* :class:`ReintegrateRequest` — a client → Stitcher (``Reintegrate``): the acquisition to redo.

Every message is a JSON object with ``"type"`` and ``"version"``; a receiver refuses a version it
does not know instead of misreading it. Whatever a client sends — the commands are reachable by
anyone on the control network — decoding either gives a value whose every field has the declared
type and lies within its bounds, or raises :class:`MessageError` naming the field and what was
expected; never another exception, so a device can always answer with a clear refusal.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from .errors import PipelineError
from .paths import file_name_problem
from .processing.integrate import MAX_BINS  # one bound for bins: what an engine accepts

VERSION = 1

#: Bounds of what a message may carry: generous for real use, small enough that no client can make
#: a device allocate without limit. Frame numbers are the detector's int32 sequence numbers.
MAX_TEXT = 16 * 1024 * 1024  # characters of one JSON message
MAX_FRAME_NUMBER = 2**31 - 1
MAX_FRAMES = 1_000_000  # frame numbers in one message (a 2 kHz scan of 8 minutes)
MAX_FILES = 64  # module files of one part
MAX_DONE = 10_000  # acknowledged item ids in one claim
MAX_PATH = 4096  # characters of a path (Linux PATH_MAX)
MAX_NAME = 512  # characters of an id or name
MAX_REASON = 65_536  # characters of an error text
MAX_SETTINGS = 64  # keys of a settings dictionary


class MessageError(PipelineError):
    """A message that cannot be decoded (wrong type, unknown version, damaged payload, bad field)."""


# -- field checkers: (value, where) -> value, or MessageError naming ``where`` and what was expected ---------
Check = Callable[[Any, str], Any]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(where: str, expected: str, value: Any) -> MessageError:
    return MessageError(f"{where}: expected {expected}, got {_show(value)}")


def _int(lo: int, hi: int, optional: bool = False) -> Check:
    def check(value: Any, where: str) -> Any:
        if value is None and optional:
            return None
        # bool is an int in Python, and 1.0 or 1e400 are floats in JSON: neither is a count
        if type(value) is not int or not lo <= value <= hi:
            raise _bad(where, f"an integer in {lo}..{hi}" + (" or null" if optional else ""), value)
        return value

    return check


def _float(lo: float, hi: float) -> Check:
    def check(value: Any, where: str) -> Any:
        if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
            raise _bad(where, f"a finite number in {lo:g}..{hi:g}", value)
        return float(value)

    return check


def _bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise _bad(where, "true or false", value)
    return value


def _str(max_len: int, optional: bool = False, path: bool = False) -> Check:
    def check(value: Any, where: str) -> Any:
        if value is None and optional:
            return None
        if type(value) is not str or len(value) > max_len:
            raise _bad(where, f"a string of at most {max_len} characters" + (" or null" if optional else ""), value)
        if path and "\0" in value:
            raise _bad(where, "a path without NUL characters", value)
        return value

    return check


def _list(item: Check, max_len: int, min_len: int = 0) -> Check:
    def check(value: Any, where: str) -> Any:
        if type(value) is not list or not min_len <= len(value) <= max_len:
            raise _bad(where, f"a list of {min_len}..{max_len} values", value)
        return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return check


_SCALAR = (str, int, float, bool, type(None))


def _settings(value: Any, where: str) -> dict[str, Any]:
    """Integration settings as an Integrator reports them: flat JSON values, the shown ones typed."""
    if type(value) is not dict or len(value) > MAX_SETTINGS:
        raise _bad(where, f"an object of at most {MAX_SETTINGS} settings", value)
    out: dict[str, Any] = {}
    for key, v in value.items():
        _str(MAX_NAME)(key, f"{where} key")
        if type(v) is list:
            v = _list(lambda x, w: _scalar(x, w), 64)(v, f"{where}.{key}")
        else:
            v = _scalar(v, f"{where}.{key}")
        out[key] = v
    for key, check in _SHOWN_SETTINGS.items():  # the Stitcher shows these as attributes: exact types
        if key in out:
            out[key] = check(out[key], f"{where}.{key}")
    return out


def _scalar(value: Any, where: str) -> Any:
    if type(value) not in _SCALAR:
        raise _bad(where, "a string, number, boolean or null", value)
    if type(value) is str:
        _str(MAX_PATH)(value, where)
    if type(value) is float and not math.isfinite(value):
        raise _bad(where, "a finite number", value)
    return value


_SHOWN_SETTINGS: dict[str, Check] = {
    "poni_path": _str(MAX_PATH, path=True),
    "mask_path": _str(MAX_PATH, optional=True, path=True),
    "bins": _int(1, MAX_BINS),
    "unit": _str(MAX_NAME),
}

#: Every field of ``IntegrationSettings.to_dict()``: what a work item carries, each value typed.
_ITEM_SETTINGS: dict[str, Check] = {
    **_SHOWN_SETTINGS,
    "method": _list(_str(MAX_NAME), 3, min_len=3),
    "polarization_factor": lambda v, w: None if v is None else _float(-1.0, 1.0)(v, w),
    "correct_solid_angle": _bool,
    "error_model": _str(MAX_NAME, optional=True),
}


def _item_settings(value: Any, where: str) -> dict[str, Any]:
    """A work item's settings: empty (none: the chain had none when it was queued), or every field of
    ``IntegrationSettings.to_dict()`` with its type. An unknown key is refused: it would change the
    result, so a receiver that cannot honour it must not integrate as if it were not there."""
    if type(value) is not dict:
        raise _bad(where, "an object of integration settings", value)
    if not value:
        return {}
    unknown = sorted(set(value) - set(_ITEM_SETTINGS))
    if unknown:
        raise _bad(where, f"only the settings {sorted(_ITEM_SETTINGS)}", unknown)
    missing = sorted(set(_ITEM_SETTINGS) - set(value))
    if missing:
        raise MessageError(f"{where}: missing {', '.join(missing)} (a work item carries every setting)")
    return {key: check(value[key], f"{where}.{key}") for key, check in _ITEM_SETTINGS.items()}


def _stamp(value: Any, where: str) -> list[int] | None:
    """One module file's ``[size, st_mtime_ns]`` or ``[size, st_mtime_ns, frames' digest]`` (null: the
    file was not there)."""
    if value is None:
        return None
    if type(value) is not list or len(value) not in (2, 3):
        raise _bad(where, "[size in bytes, st_mtime_ns(, frames' digest)] or null", value)
    return [_int(0, 2**63 - 1)(v, f"{where}[{i}]") for i, v in enumerate(value)]


_FRAME = _int(0, MAX_FRAME_NUMBER)
_FRAMES = _list(_FRAME, MAX_FRAMES)
_FILES = _list(_str(MAX_PATH, path=True), MAX_FILES, min_len=1)
_MODULES = _list(_int(1, 99), MAX_FILES)
_NAME = _str(MAX_NAME)
_EPOCH = _float(0.0, 1e11)


def _file_name(value: Any, where: str) -> str:
    """A stem or scan name: it becomes a file name in the Merger's output folder, so exactly one
    file-name component (``../outside/x`` from a detector's SaveFileName would write elsewhere)."""
    _NAME(value, where)
    problem = file_name_problem(value)
    if problem is not None:
        raise _bad(where, f"one file name (no '/', not empty, '.' or '..', no NUL), but it {problem}", value)
    return value


def _object(text: str | bytes, what: str) -> dict:
    """The JSON object in ``text``, or MessageError (too long, not JSON, nested too deep, not an object)."""
    if not isinstance(text, str | bytes | bytearray):
        raise MessageError(f"{what}: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise MessageError(f"{what}: {len(text)} characters, more than the {MAX_TEXT} a message may have")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MessageError(f"{what}: not JSON ({str(exc)[:200]})") from None
    if type(data) is not dict:
        raise MessageError(f"{what}: expected a JSON object, got {_show(data)}")
    return data


_M = TypeVar("_M", bound="_Message")


@dataclass(frozen=True)
class _Message:
    TYPE: ClassVar[str] = ""
    #: field name -> checker; every field of the dataclass has one
    FIELDS: ClassVar[dict[str, Check]] = {}

    def to_json(self) -> str:
        return json.dumps({"type": self.TYPE, "version": VERSION, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes):
        """Decode and validate; MessageError (naming the field and what was expected) for anything else."""
        data = _object(text, f"{cls.TYPE} message")
        if data.get("type") != cls.TYPE:
            raise MessageError(f"expected a {cls.TYPE} message, got {str(data)[:120]}")
        version = data.get("version")
        if type(version) is not int or version != VERSION:
            raise MessageError(f"{cls.TYPE} message version {_show(version)} is not supported (we speak {VERSION})")
        return cls.from_fields(data)

    @classmethod
    def from_fields(cls: type[_M], data: dict) -> _M:
        """Build from a dict of field values, checking each; unknown keys are ignored (newer senders)."""
        values = {}
        for f in dataclasses.fields(cls):
            where = f"{cls.TYPE}.{f.name}"
            if f.name in data:
                values[f.name] = cls.FIELDS[f.name](data[f.name], where)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MessageError(f"{where}: missing (required)")
        message = cls(**values)
        message.check()
        return message

    def check(self) -> None:
        """Constraints between fields (one field's checker cannot see the others)."""


@dataclass(frozen=True)
class ScanInfo(_Message):
    TYPE: ClassVar[str] = "scan"
    scan: str  # unique id of this processing of an acquisition (stem, plus a suffix for reintegrations)
    detector: str
    stem: str
    total_frames: int | None = None  # known from the files' collection/frame_numbers, else None
    reintegration: bool = False

    FIELDS: ClassVar[dict[str, Check]] = {
        "scan": _file_name,
        "detector": _NAME,
        "stem": _file_name,
        "total_frames": _int(0, MAX_FRAME_NUMBER, optional=True),
        "reintegration": _bool,
    }

    def __post_init__(self) -> None:
        """Checked where it is built too (the Stitcher builds it from the detector's SaveFileName), so a
        stem that is not one file name is refused at its source, not first at the Merger."""
        _file_name(self.scan, "scan.scan")
        _file_name(self.stem, "scan.stem")


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
    #: the settings to integrate with (``IntegrationSettings.to_dict()``), fixed for the whole scan
    #: when its first part was queued, and their fingerprint; empty while the chain has none
    settings: dict[str, Any] = field(default_factory=dict)
    settings_hash: str = ""
    #: modules switched off for the scan (no file): stitched as gaps in their places, recorded in the file
    modules_off: list[int] = field(default_factory=list)
    #: seconds the claimant's lease lasts (set by the Stitcher at each hand-out; 0: not told). An
    #: Integrator held up longer than that (SIGSTOP, swapped out) drops the item instead of
    #: integrating it a second time: the Stitcher has handed it to another one by then
    lease_s: float = 0.0
    #: ``[size, st_mtime_ns(, frames' digest)]`` of each module file (in ``module_files``' order) when the
    #: Stitcher took the part; the Integrator reads only files that still hold those frames (the same
    #: name acquired again writes them over in place). Empty: not known (an older Stitcher, a part
    #: learned from disk) -- read as they are. A field added within version 1: older readers ignore
    #: it, older senders leave it out.
    file_stamps: list[list[int] | None] = field(default_factory=list)

    FIELDS: ClassVar[dict[str, Check]] = {
        "item_id": _NAME,
        "scan": _file_name,
        "detector": _NAME,
        "part": _int(0, MAX_FRAME_NUMBER),
        "module_files": _FILES,
        "start": _int(0, MAX_FRAME_NUMBER),
        "stop": _int(0, MAX_FRAME_NUMBER),
        "frame_numbers": _FRAMES,
        "total_frames": _int(0, MAX_FRAME_NUMBER, optional=True),
        "error": _str(MAX_REASON, optional=True),
        "announced_at": _EPOCH,
        "settings": _item_settings,
        "settings_hash": _str(64),
        "modules_off": _MODULES,
        "lease_s": _float(0.0, 1e7),
        "file_stamps": _list(_stamp, MAX_FILES),
    }

    def check(self) -> None:
        if self.file_stamps and len(self.file_stamps) != len(self.module_files):
            raise MessageError(
                f"work.file_stamps: expected one stamp per module file ({len(self.module_files)}), "
                f"got {len(self.file_stamps)}"
            )
        if bool(self.settings) != bool(self.settings_hash):
            raise MessageError("work.settings_hash: expected a fingerprint exactly when settings are given")
        if self.stop < self.start:
            raise MessageError(f"work.stop: expected >= start ({self.start}), got {self.stop}")
        if self.error is None and len(self.frame_numbers) != self.stop - self.start:
            raise MessageError(
                f"work.frame_numbers: expected {self.stop - self.start} numbers (frames {self.start}..{self.stop - 1}),"
                f" got {len(self.frame_numbers)}"
            )


@dataclass(frozen=True)
class ClaimRequest(_Message):
    """What an Integrator sends with ``ClaimWork``: its name, its initial settings (its properties:
    the Stitcher adopts them only while the chain has no PONI) and the items it has finished since
    its last claim (acknowledging them ends their lease)."""

    TYPE: ClassVar[str] = "claim"
    integrator: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)

    FIELDS: ClassVar[dict[str, Check]] = {"integrator": _NAME, "settings": _settings, "done": _list(_NAME, MAX_DONE)}


@dataclass(frozen=True)
class SettingsRequest(_Message):
    """The argument of the Stitcher's ``SetSettings``: a change of the chain's integration settings.

    A field left out (or null) is unchanged; ``mask_path`` ``""`` means no user mask. ``initial``
    marks an Integrator's start-up values: the Stitcher takes them only while the chain has no PONI,
    so a restarted Integrator never overrides what an operator set since."""

    TYPE: ClassVar[str] = "settings"
    poni_path: str | None = None
    mask_path: str | None = None
    bins: int | None = None
    unit: str | None = None
    initial: bool = False

    FIELDS: ClassVar[dict[str, Check]] = {
        "poni_path": _str(MAX_PATH, optional=True, path=True),
        "mask_path": _str(MAX_PATH, optional=True, path=True),
        "bins": _int(1, MAX_BINS, optional=True),
        "unit": _str(MAX_NAME, optional=True),
        "initial": _bool,
    }

    def check(self) -> None:
        if not self.changes():
            raise MessageError("settings: expected at least one of poni_path, mask_path, bins, unit")
        if self.poni_path is not None and not self.poni_path.strip():
            raise MessageError("settings.poni_path: expected the path of a PONI file, got an empty string")

    def changes(self) -> dict[str, Any]:
        """The fields this request changes, as ``IntegrationSettings`` names them."""
        values = {"poni_path": self.poni_path, "mask_path": self.mask_path, "bins": self.bins, "unit": self.unit}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class RequeueRequest(_Message):
    """What a Merger sends with ``RequeueFrames``: frames of a scan it is missing, and any file of the
    scan (so a restarted Stitcher can find the acquisition again)."""

    TYPE: ClassVar[str] = "requeue"
    scan: str
    frames: list[int]
    raw_file: str = ""

    FIELDS: ClassVar[dict[str, Check]] = {
        "scan": _file_name,
        "frames": _list(_int(1, MAX_FRAME_NUMBER), MAX_FRAMES, min_len=1),
        "raw_file": _str(MAX_PATH, path=True),
    }


@dataclass(frozen=True)
class ReintegrateRequest(_Message):
    """The argument of ``Reintegrate``: an acquisition file (any module/part) or its directory.

    The command takes the plain path (operators type it in Jive); :meth:`from_text` checks it."""

    TYPE: ClassVar[str] = "reintegrate"
    path: str

    FIELDS: ClassVar[dict[str, Check]] = {"path": _str(MAX_PATH, path=True)}

    @classmethod
    def from_text(cls, text: Any) -> ReintegrateRequest:
        if type(text) is not str or not text.strip():
            raise _bad("reintegrate.path", "the path of an acquisition file or directory", text)
        return cls.from_fields({"path": text})


@dataclass(frozen=True)
class FailedFrames:
    file: str
    reason: str
    frame_numbers: list[int] = field(default_factory=list)


_MAGIC = b"XRDP"
#: Header of a pattern batch: field -> checker (``n`` and ``bins`` give the arrays' shapes).
_BATCH_HEADER: dict[str, Check] = {
    "item_id": _NAME,
    "scan": _file_name,
    "detector": _NAME,
    "integrator": _NAME,
    "part": _int(0, MAX_FRAME_NUMBER),
    "settings_hash": _NAME,
    "n": _int(0, MAX_FRAMES),
    "bins": _int(0, MAX_BINS),
    "frame_numbers": _FRAMES,
    "index_in_file": _FRAMES,
    "sigma": _bool,
    "failed": _list(lambda v, w: _failed(v, w), MAX_FRAMES),
    "settings": _settings,
}
_BATCH_OPTIONAL: dict[str, tuple[Check, Any]] = {
    "raw_file": (_str(MAX_PATH, path=True), ""),
    "module_files": (_list(_str(MAX_PATH, path=True), MAX_FILES), []),
    "total_frames": (_int(0, MAX_FRAME_NUMBER, optional=True), None),
    "announced_at": (_EPOCH, 0.0),
    "engine": (_str(16), ""),
    "engine_note": (_str(MAX_REASON), ""),
    "modules_off": (_MODULES, []),
}


def _failed(value: Any, where: str) -> FailedFrames:
    if type(value) is not dict:
        raise _bad(where, "an object {file, reason, frame_numbers}", value)
    return FailedFrames(
        _str(MAX_PATH)(value.get("file"), f"{where}.file"),
        _str(MAX_REASON)(value.get("reason"), f"{where}.reason"),
        _FRAMES(value.get("frame_numbers", []), f"{where}.frame_numbers"),
    )


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
    #: what integrated the rows (csr or pyfai) and why, for the merged file's provenance
    engine: str = ""
    engine_note: str = ""
    #: modules switched off for the scan (the Stitcher's switched-off rule), recorded in the merged file
    modules_off: list[int] = field(default_factory=list)

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
            "engine": self.engine,
            "engine_note": self.engine_note,
            "modules_off": list(self.modules_off),
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
    def decode(cls, fmt: Any, payload: Any) -> PatternBatch:
        """Decode and validate a batch; MessageError for any damage (never another exception)."""
        if fmt != cls.FORMAT:
            raise MessageError(f"pattern batch format {_show(fmt)} is not supported (we speak {cls.FORMAT})")
        try:
            payload = bytes(payload)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"pattern batch payload is not bytes ({exc})") from None
        if len(payload) < 8 or payload[:4] != _MAGIC:
            raise MessageError("pattern batch payload does not start with XRDP and a header length")
        (hlen,) = struct.unpack_from("<I", payload, 4)
        if hlen > len(payload) - 8:
            raise MessageError(f"pattern batch header of {hlen} bytes, but only {len(payload) - 8} follow")
        h = _object(payload[8 : 8 + hlen], "pattern batch header")
        for key, check in _BATCH_HEADER.items():
            if key not in h:
                raise MessageError(f"pattern batch header.{key}: missing (required)")
            h[key] = check(h[key], f"pattern batch {key}")
        for key, (check, default) in _BATCH_OPTIONAL.items():
            h[key] = check(h[key], f"pattern batch {key}") if key in h else default
        n, bins = h["n"], h["bins"]
        if len(h["frame_numbers"]) != n or len(h["index_in_file"]) != n:
            raise MessageError(
                f"pattern batch {h['item_id']}: {len(h['frame_numbers'])} frame numbers and "
                f"{len(h['index_in_file'])} indices for n = {n} patterns"
            )
        offset = 8 + hlen
        expected = bins * 8 + n * bins * 4 * (2 if h["sigma"] else 1)
        if len(payload) - offset != expected:
            raise MessageError(f"pattern batch {h['item_id']}: {len(payload) - offset} bytes, expected {expected}")
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
            h["failed"],
            h["settings"],
            h["raw_file"],
            h["module_files"],
            h["total_frames"],
            h["announced_at"],
            h["engine"],
            h["engine_note"],
            h["modules_off"],
        )
