"""The Stitcher's memory of scans: which parts wait for files, which are queued, and how to re-make them.

Why apart from the stage: what a scan *is* -- its parts waiting since when, the parts already queued
(so a repeated announcement is ignored), each part's files and frame numbers (so lost frames can be
made again), the settings fixed for it, a reintegration still counting against its bound -- is
bookkeeping with no I/O, and testable as such. It also cuts parts into :class:`WorkItem` s, since an
item is made of exactly that record: the scan's info, the part's files and frames, the scan's settings.

A scan never mixes acquisitions either: the same file name acquired again (files overwritten in place)
becomes a new scan, ``<stem>#2`` (see :mod:`.retake`); the stem's *live* scan is the one new
announcements of the stem go to. The one look at the disk here: an item of a scan taken over is
checked (file sizes and times, else the frames' digest) as it is handed out, so it never reads
the new acquisition's frames;
and every item carries those stamps (``WorkItem.file_stamps``) for the Integrator to check again at
its read, in case the files are written over after the hand-out.

A scan never mixes settings: its items carry the settings in force when the first of them was made
(for a reintegration: when it was asked for), fixed from then on -- also for items made again later.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..formats.lambda_files import LambdaNaming, glob_escape, parse_lambda_name
from ..messages import ScanInfo, WorkItem
from ..processing.integrate import IntegrationSettings
from . import retake
from .part_checker import Stamp
from .work_queue import QueueFull

#: Scans remembered (to ignore repeated announcements and to redo missing frames).
MAX_SCANS = 50


@dataclass
class ScanRecord:
    """One scan (a processing of an acquisition) as the Stitcher knows it."""

    info: ScanInfo
    directory: Path
    pending: dict[int, float] = field(default_factory=dict)  # part -> first announcement (monotonic)
    announced_at: dict[int, float] = field(default_factory=dict)  # part -> first announcement (epoch)
    done_parts: set[int] = field(default_factory=set)
    naming: LambdaNaming = field(default_factory=LambdaNaming)
    #: part -> (module files, frame numbers): enough to re-make any of its work items
    parts: dict[int, tuple[list[Path], list[int]]] = field(default_factory=dict)
    #: a reintegration whose parts are not all queued yet (counts against max_reintegrations)
    reintegrating: bool = False
    #: what every item of the scan is integrated with (``to_dict()`` and fingerprint), fixed once
    settings: dict = field(default_factory=dict)
    settings_hash: str = ""
    #: the modules whose files make a part; None = all ``module_count`` (a module switched off writes
    #: no file: learned once for the scan, see PartIntake)
    modules: tuple[int, ...] | None = None
    #: the modules taken as switched off (the rest of ``module_count``): every item carries them, so
    #: the Integrator stitches them as gaps in their places and the merged file records them
    modules_off: tuple[int, ...] = ()
    #: part -> module files announced complete (a trigger that knows when a file is closed)
    announced_files: dict[int, set[Path]] = field(default_factory=dict)
    #: part -> frames the detector says the part holds (the ``lambda`` trigger): files holding fewer
    #: are still being written
    due_frames: dict[int, int] = field(default_factory=dict)
    #: the naming was read from a file of the scan (not only assumed)
    naming_seen: bool = False
    #: part -> its module files' stamps when it was taken: the part announced again with files that
    #: changed since is the same name acquired again (a new scan), with the same files a repeat
    stamps: dict[int, dict[Path, Stamp]] = field(default_factory=dict)
    #: module file -> the stamp it had in the earlier acquisition under this name (a scan taken again,
    #: ``<stem>#2``): a file still so is not written again yet, whatever exists on disk
    stale: dict[Path, Stamp] = field(default_factory=dict)
    #: which acquisition of the ``lambda`` trigger the scan is (PartDue.acquisition); None: not said
    acquisition: int | None = None
    #: which acquisition under this stem the scan is: 1, then 2 for ``<stem>#2``, ...
    take: int = 1
    #: the scan that took this one's name over (the name acquired again); '' while it is the live one
    superseded_by: str = ""

    def learn_naming(self, file_name: str | Path) -> None:
        """Follow the naming of one of the scan's module files (other names are ignored)."""
        naming = LambdaNaming.from_name(file_name)
        if naming is not None:
            self.naming, self.naming_seen = naming, True

    def learn_naming_on_disk(self) -> None:
        """Learn the naming from any module file of the scan already written (the ``lambda`` trigger
        knows the stem and whether parts have suffixes, not the module numbers' width)."""
        if self.naming_seen:
            return
        for f in self.directory.glob(f"{glob_escape(self.info.stem)}_m*.nxs"):
            name = parse_lambda_name(f)
            if name is not None and name.stem == self.info.stem and name.module is not None:
                self.learn_naming(f.name)
                if self.naming_seen:
                    return

    def module_numbers(self, module_count: int) -> tuple[int, ...]:
        return self.modules if self.modules is not None else tuple(range(1, module_count + 1))

    def module_files(self, part: int, module_count: int) -> list[Path]:
        return [
            self.naming.module_file(self.directory, self.info.stem, k, part) for k in self.module_numbers(module_count)
        ]


class ScanTracker:
    """The scans of one Stitcher, their parts and their settings. Thread-safe.

    ``current_settings`` gives the chain's settings in force (None while it has no PONI).
    """

    def __init__(
        self,
        detector: str,
        frames_per_item: int,
        current_settings: Callable[[], IntegrationSettings | None],
        max_reintegrations: int,
    ):
        self.detector = detector
        self.frames_per_item = frames_per_item
        self.max_reintegrations = max_reintegrations
        self._current_settings = current_settings
        self._lock = threading.Lock()
        self._stamp_lock = threading.Lock()
        self._scans: dict[str, ScanRecord] = {}
        self._live: dict[str, str] = {}  # stem -> its scan acquired again last (absent: the stem itself)
        self._reintegration_ids = itertools.count(1)
        self._reintegrations_waiting = 0
        self.current_scan = ""

    # -- the registry ------------------------------------------------------------------------------
    def get(self, scan_id: str) -> ScanRecord | None:
        with self._lock:
            return self._scans.get(scan_id)

    def live(self, stem: str) -> ScanRecord | None:
        """The scan announcements of ``stem`` go to: its latest acquisition (None: none known)."""
        with self._lock:
            scan = self._scans.get(self._live.get(stem, stem))
        return scan if scan is not None and not scan.superseded_by else None

    def retake(self, old: ScanRecord, new: ScanRecord) -> None:
        """``new`` is ``old``'s name acquired again: the stem's live scan from now on, and the files
        as ``old`` took them are not ``new``'s until they change."""
        new.take, old.superseded_by = old.take + 1, new.info.scan
        for stamps in old.stamps.values():
            new.stale.update(stamps)
        old.pending.clear()  # its files are being written again: the new scan's now
        with self._lock:
            self._live[old.info.stem] = new.info.scan

    def scans(self) -> list[ScanRecord]:
        with self._lock:
            return list(self._scans.values())

    def add(
        self, directory: Path, stem: str, total_frames: int | None, reintegration: bool, scan_id: str | None = None
    ) -> ScanRecord:
        """A new scan (a reintegration gets a new id, ``<stem>#r<n>``); the oldest scans with no part
        waiting are forgotten beyond MAX_SCANS -- a beamtime has hundreds."""
        scan_id = scan_id or (stem if not reintegration else f"{stem}#r{next(self._reintegration_ids)}")
        scan = ScanRecord(ScanInfo(scan_id, self.detector, stem, total_frames, reintegration), directory)
        with self._lock:
            self._scans[scan_id] = scan
            idle = [k for k, s in self._scans.items() if not s.pending and k != scan_id]
            for k in idle[: max(0, len(self._scans) - MAX_SCANS)]:
                stem = self._scans.pop(k).info.stem
                if self._live.get(stem) == k:
                    self._live.pop(stem)
        self.current_scan = scan_id
        return scan

    def learn_total(self, scan: ScanRecord, total: int | None) -> None:
        """Record the acquisition's frame count when the scan did not know it yet."""
        if scan.info.total_frames is None and total:
            scan.info = dataclasses.replace(scan.info, total_frames=total)

    # -- parts ---------------------------------------------------------------------------------------
    def part_done(self, scan: ScanRecord, part: int) -> None:
        """The part is queued (as work or as a failure); a reintegration whose last part it was stops
        counting against its bound."""
        scan.pending.pop(part, None)
        scan.done_parts.add(part)
        with self._lock:
            if scan.reintegrating and not scan.pending:
                scan.reintegrating = False
                self._reintegrations_waiting -= 1

    def learned(self, scan: ScanRecord, part: int, files: list[Path], numbers: list[int]) -> None:
        """A part found on disk, to re-make its items when asked -- not queued now."""
        scan.parts[part] = (files, numbers)
        scan.done_parts.add(part)
        scan.pending.pop(part, None)

    # -- reintegrations ------------------------------------------------------------------------------
    @property
    def pending_reintegrations(self) -> int:
        """Reintegrations accepted whose parts are not all queued as work yet."""
        return self._reintegrations_waiting

    def reserve_reintegration(self, path: str) -> None:
        """Count a reintegration of ``path`` against ``max_reintegrations``, or refuse it (QueueFull)."""
        with self._lock:
            if self._reintegrations_waiting >= self.max_reintegrations:
                raise QueueFull(
                    f"reintegration of {path} refused: {self._reintegrations_waiting} reintegrations are waiting "
                    f"(bound MaxReintegrations = {self.max_reintegrations}); try again when they are queued"
                )
            self._reintegrations_waiting += 1

    def reintegration_started(self, scan: ScanRecord | None) -> None:
        """The reservation stays until the scan's last part is queued (:meth:`part_done`); released now
        when nothing waits (every part queued already, or the reintegration failed)."""
        with self._lock:
            if scan is not None and scan.pending:
                scan.reintegrating = True
            else:
                self._reintegrations_waiting -= 1

    # -- settings and work items ---------------------------------------------------------------------
    def fix_settings(self, scan: ScanRecord, settings: IntegrationSettings) -> None:
        """Fix the scan's settings now (a reintegration: those in force when it was asked for)."""
        with self._stamp_lock:
            scan.settings, scan.settings_hash = settings.to_dict(), settings.fingerprint()

    def settings_fields(self, scan: ScanRecord) -> dict:
        """The settings fields of the scan's items: fixed at the first call that finds settings in force."""
        with self._stamp_lock:
            if not scan.settings:
                settings = self._current_settings()
                if settings is not None:
                    scan.settings, scan.settings_hash = settings.to_dict(), settings.fingerprint()
            return {"settings": dict(scan.settings), "settings_hash": scan.settings_hash}

    def stamp_late(self, item: WorkItem) -> WorkItem:
        """An item as it is handed out: queued while the chain had no PONI, with its scan's settings
        (fixed from now on); of a scan whose name was acquired again, failed if its files were written
        over since its part was taken (an Integrator would read the new acquisition's frames)."""
        with self._lock:
            taken_by = self._scans.get(item.scan)
        written_over = retake.written_over(taken_by, item.part) if taken_by is not None and not item.error else ""
        if written_over:
            return dataclasses.replace(item, error=written_over)
        if item.settings or self._current_settings() is None:
            return item
        with self._lock:
            scan = self._scans.get(item.scan)
            if scan is None:  # forgotten (MAX_SCANS): its items are all stamped alike from the current settings
                placeholder = ScanRecord(ScanInfo(item.scan, item.detector, item.scan), Path("."))
                scan = self._scans.setdefault(item.scan, placeholder)
        return dataclasses.replace(item, **self.settings_fields(scan))

    def items(self, scan: ScanRecord, part: int, first: int, stop: int, tag: str = "") -> list[WorkItem]:
        """Work items of frames ``first:stop`` (indices in the part's files), ``frames_per_item`` each."""
        files, numbers = scan.parts[part]
        step = self.frames_per_item
        info, settings = scan.info, self.settings_fields(scan)
        return [
            WorkItem(
                f"{info.scan}:{part}:{start}{tag}", info.scan, self.detector, part, [str(f) for f in files],
                start, min(start + step, stop), numbers[start : min(start + step, stop)], info.total_frames,
                announced_at=scan.announced_at.get(part, 0.0), modules_off=list(scan.modules_off),
                file_stamps=_item_stamps(scan, part, files), **settings,
            )  # fmt: skip
            for start in range(first, stop, step)
        ]

    def failed_item(self, scan: ScanRecord, part: int, files: list[Path], reason: str, numbers: list[int]) -> WorkItem:
        """The item that carries a part's failure down the chain: no Integrator reads data for it."""
        info = scan.info
        return WorkItem(
            f"{info.scan}:{part}:failed", info.scan, self.detector, part, [str(f) for f in files], 0, 0, numbers,
            info.total_frames, error=reason, modules_off=list(scan.modules_off), **self.settings_fields(scan),
        )  # fmt: skip


def _item_stamps(scan: ScanRecord, part: int, files: list[Path]) -> list[list[int] | None]:
    """What the part's ``files`` were when it was taken, for the Integrator to compare right before and
    after it reads them (see :mod:`.retake`); empty when some file's stamp is not known (a part
    learned from disk): such an item is read as it is, nothing is guessed."""
    taken = scan.stamps.get(part, {})
    if not files or any(Path(f) not in taken for f in files):
        return []
    return [list(stamp) if stamp is not None else None for stamp in (taken[Path(f)] for f in files)]
