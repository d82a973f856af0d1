"""Following a Lambda Tango server's acquisition from its own attributes: which parts are written.

Why: the Lambda servers at PETRA III announce no file paths. They say where they save
(``SaveFilePath``, ``SaveFileName`` -- or ``FilePrefix`` + ``FileStartNum``), how they split
(``FramesPerFile``, ``FrameNumbers``) and how far they are (``LatestImageNumber``, ``State``); their
clients poll. Files are named ``<SaveFilePath>/<stem>_m<k>[_part<NNNNN>].nxs``, with part suffixes
only when ``FrameNumbers > FramesPerFile``. From that, part k is written once ``LatestImageNumber``
has passed its last frame, and the last part once ``State`` returns to ON.

:class:`LambdaFollower` is the rule alone, fed with :class:`LambdaSnapshot` s (from change events or
polling, the Tango layer decides) and answering with :class:`PartDue` s. It holds no thread, no
clock and no proxy, so every case -- a restart in the middle of an acquisition, an acquisition
stopped early, one that began and ended between two polls -- is a unit test.

``LatestImageNumber`` is read as the number of frames acquired so far (the latest frame's number,
counted from 1). A server that counts from 0 makes a part due one frame late, never early.

The same file name can be acquired twice (an aborted scan restarted under its name: the files are
overwritten in place). Each :class:`PartDue` says which acquisition it is of (``acquisition``: the
follower counts the starts it sees), so the Stitcher starts a new scan when that changes instead of
taking the new parts as the old scan's -- without looking at file times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Lambda server states during an acquisition; every other state (ON, FAULT, ...) means none runs.
ACQUIRING_STATES = frozenset({"MOVING", "RUNNING"})

#: The attributes a snapshot is read from, in the order of :class:`LambdaSnapshot`'s fields.
LAMBDA_ATTRIBUTES = (
    "State",
    "SaveFilePath",
    "SaveFileName",
    "FilePrefix",
    "FileStartNum",
    "FramesPerFile",
    "FrameNumbers",
    "LatestImageNumber",
)


@dataclass(frozen=True)
class LambdaSnapshot:
    """The Lambda server's attributes at one moment (one ``read_attributes`` or one event)."""

    state: str
    save_file_path: str
    save_file_name: str = ""
    file_prefix: str = ""
    file_start_num: int = 0
    frames_per_file: int = 0
    frame_numbers: int = 0
    latest_image_number: int = 0

    @property
    def acquiring(self) -> bool:
        return self.state.upper() in ACQUIRING_STATES

    @property
    def stem(self) -> str:
        """The files' stem: ``SaveFileName``, else ``<FilePrefix>_<FileStartNum:05d>``."""
        if self.save_file_name:
            return self.save_file_name
        if self.file_prefix:
            return f"{self.file_prefix}_{self.file_start_num:05d}"
        return ""


@dataclass(frozen=True)
class PartDue:
    """Part ``part`` of acquisition ``stem`` in ``directory`` is written: ``frames`` frames, by the
    detector's count. ``parts_suffix``: its files are named ``_part<NNNNN>``; ``last``: the
    acquisition has ended (no further part will come)."""

    directory: Path
    stem: str
    part: int
    frames: int
    parts_suffix: bool
    last: bool = False
    #: frames the whole acquisition is to have (``FrameNumbers``; None when the server says 0)
    total_frames: int | None = None
    #: which acquisition of this follower the part is of (0 for the first it saw start, then 1, ...):
    #: the same stem with another number is the name acquired again, a new scan
    acquisition: int = 0


@dataclass(frozen=True)
class _Acquisition:
    directory: Path
    stem: str
    frames: int
    frames_per_file: int
    number: int = 0

    @classmethod
    def of(cls, snap: LambdaSnapshot, number: int) -> _Acquisition:
        frames = max(0, int(snap.frame_numbers))
        per_file = int(snap.frames_per_file) if snap.frames_per_file > 0 else max(frames, 1)
        return cls(Path(snap.save_file_path), snap.stem, frames, per_file, number)

    @property
    def parts_suffix(self) -> bool:
        return self.frames > self.frames_per_file

    def written(self, latest: int) -> int:
        """Frames written by the detector's count, never more than the acquisition has."""
        latest = max(0, int(latest))
        return min(latest, self.frames) if self.frames else latest


class LambdaFollower:
    """Turns snapshots of a Lambda server into the parts that became written since the last one.

    An acquisition starts when a snapshot shows an acquiring state (also the first snapshot after
    this follower was made: a Stitcher restarted mid-acquisition then announces the parts it missed);
    it ends when a snapshot shows any other state (the remaining parts are due, the last one as
    ``last``). While idle, a stem that changed since the last snapshot with frames counted means an
    acquisition began and ended between two snapshots: all of its parts are due. While acquiring, a
    ``LatestImageNumber`` that went back means the acquisition was stopped and the same name started
    again between two snapshots: the first one ends (with the frames last seen), a new one starts.
    """

    def __init__(self) -> None:
        self._acq: _Acquisition | None = None
        self._next_part = 0
        self._idle_stem: tuple[str, str] | None = None  # (directory, stem) last seen while idle
        self._started = 0  # acquisitions started so far: the next one's number
        self._latest = 0  # the highest LatestImageNumber seen in the acquisition followed

    @property
    def acquisition(self) -> str:
        """The stem of the acquisition being followed ('' when none runs)."""
        return self._acq.stem if self._acq else ""

    def update(self, snap: LambdaSnapshot) -> list[PartDue]:
        if snap.acquiring:
            if self._acq is None:
                self._start(snap)
                return self._parts_written(snap.latest_image_number)
            if (self._acq.directory, self._acq.stem) != (Path(snap.save_file_path), snap.stem):
                due = self._end(self._acq.frames)  # a new one without ON between
                self._start(snap)
                return due + self._parts_written(snap.latest_image_number)
            if snap.latest_image_number < self._latest:  # the same name started again between two looks
                log.warning("acquisition %s started again (LatestImageNumber went back)", snap.stem)
                self._end(self._latest)
                self._start(snap)
                # the old acquisition's parts not announced yet are not announced at all: by the time the
                # Stitcher reads one, the new acquisition may be writing over it, and nothing tells which
                # frames it would read. Their frames end as failed in the old scan's file (the Stitcher's
                # "never taken before ... acquired again"): refuse rather than guess
                return self._parts_written(snap.latest_image_number)
            return self._parts_written(snap.latest_image_number)
        if self._acq is not None:
            due = self._end(snap.latest_image_number)
            self._idle_stem = (snap.save_file_path, snap.stem)
            return due
        seen, self._idle_stem = self._idle_stem, (snap.save_file_path, snap.stem)
        if seen is not None and seen != self._idle_stem and snap.stem and snap.latest_image_number > 0:
            log.warning("acquisition %s began and ended between two looks at the detector", snap.stem)
            self._start(snap)
            return self._end(snap.latest_image_number)
        return []

    def _start(self, snap: LambdaSnapshot) -> None:
        self._acq = _Acquisition.of(snap, self._started)
        self._started += 1
        self._next_part = 0
        self._latest = 0
        log.info(
            "acquisition %s started in %s: %d frames, %d per file",
            self._acq.stem, self._acq.directory, self._acq.frames, self._acq.frames_per_file,
        )  # fmt: skip

    def _parts_written(self, latest: int) -> list[PartDue]:
        """Parts whose last frame the detector has passed (all but possibly the last, running one)."""
        acq = self._acq
        assert acq is not None
        self._latest = max(self._latest, int(latest))
        written = acq.written(latest)
        return self._take(written // acq.frames_per_file, written, last=False)

    def _end(self, latest: int) -> list[PartDue]:
        """The acquisition ended: every part holding a written frame is due; the last says so."""
        acq = self._acq
        assert acq is not None
        written = acq.written(latest)
        due = self._take(-(-written // acq.frames_per_file), written, last=True)
        self._acq = None
        return due

    def _take(self, n_parts: int, written: int, last: bool) -> list[PartDue]:
        acq = self._acq
        assert acq is not None
        due = []
        for part in range(self._next_part, n_parts):
            frames = min(acq.frames_per_file, written - part * acq.frames_per_file)
            due.append(
                PartDue(
                    acq.directory, acq.stem, part, frames, acq.parts_suffix, last and part == n_parts - 1,
                    acq.frames or None, acq.number,
                )  # fmt: skip
            )
        self._next_part = max(self._next_part, n_parts)
        return due
