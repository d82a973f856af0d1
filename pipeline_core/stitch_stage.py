"""The stitching stage of the live pipeline, without Tango.

It hears "this module file is written" announcements (from the detector driver, via the Stitcher
device), groups them into parts, and once every module file of a part exists and opens, checks the
part (layout, frame counts, sequence numbers) and cuts it into :class:`WorkItem` s of a few frames.
Integrators *claim* items one by one, so several of them share a scan without duplicating a frame.
A part whose module files do not all arrive within ``module_timeout_s`` becomes a failed item that
still travels down the chain, so the Merger lists it instead of waiting for it forever.

Frames themselves never travel: a work item says which module files and which frame range to stitch,
and the Integrator that claims it reads and stitches them with :func:`sources.read_part_range`.

Every queue a client can fill is bounded and its depth visible: announcements, reintegrations and
requeue requests waiting for the stage's thread, and the work items waiting for an Integrator.
Beyond a bound a request is refused with :class:`QueueFull` naming it — except a part that is
complete on disk while the work queue is full: it waits (back-pressure) instead of being lost.
Every file the stage opens is checked against ``data_roots`` where it is opened.

The stage also holds the chain's integration settings in force (:class:`ChainSettings`): one set for
the whole chain, changed from any device, and stamped on every work item. A scan never mixes
settings: all its items carry the settings in force when its first part was queued (for a
reintegration: when ``reintegrate`` was called), also items made again for it later (expired
leases, requeued frames). A scan queued while the chain had no PONI takes the settings in force
when its first item is handed out.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import lambda_layout as L
from .errors import ConfigError, PipelineError, SourceError
from .hdf5_io import open_h5
from .integrate import DEFAULT_BINS, IntegrationSettings, read_poni, validate_bins, validate_unit
from .lambda_files import (
    LambdaAcquisition,
    frame_numbers_from_any,
    glob_escape,
    open_modules,
    parse_lambda_name,
)
from .mask import check_mask_shape, load_mask_file
from .messages import ScanInfo, WorkItem
from .paths import OutsideRootsError, confine, inside
from .sources import check_part_modules
from .worker import Worker

log = logging.getLogger(__name__)

#: Scans remembered (to ignore repeated announcements and to redo missing frames).
MAX_SCANS = 50


@dataclass(frozen=True)
class StitchConfig:
    detector: str = "lambda"
    module_count: int = 3
    frames_per_item: int = 16
    module_timeout_s: float = 30.0
    open_retries: int = 3
    open_retry_delay_s: float = 0.5
    #: Announced and reintegrated files must lie under one of these (empty: anywhere).
    data_roots: tuple[str, ...] = ()
    #: Announcements waiting to be handled; beyond this they are refused (and reported), never blocking.
    max_pending: int = 10_000
    #: Reintegrations accepted and not yet all queued as work; beyond this Reintegrate is refused.
    max_reintegrations: int = 8
    #: RequeueFrames requests waiting to be handled; beyond this they are refused.
    max_requeues: int = 100
    #: Work items waiting for an Integrator. Beyond it requeues and reintegrations are refused and
    #: complete parts wait on disk until Integrators catch up (a part adds at most one part's items).
    max_items: int = 100_000
    #: A claimed item not acknowledged within this time is handed out again (its Integrator died?).
    lease_s: float = 60.0
    #: After this many expired leases of the same frames they are not handed out again but sent down
    #: the chain as failed: data that kills every Integrator taking it must not loop forever.
    max_lease_expiries: int = 2


class QueueFull(PipelineError):
    """A request beyond one of the stage's bounds; the message names the queue and its bound."""


#: The settings an operator changes (the devices' poniPath, maskPath, bins, unit attributes).
SETTING_FIELDS = ("poni_path", "mask_path", "bins", "unit")


def check_settings(
    settings: IntegrationSettings, frame_shape: tuple[int, int] | None = None, roots: tuple[str, ...] = ()
) -> IntegrationSettings:
    """Refuse settings the chain could not integrate with: the PONI must parse (and hold a usable
    geometry), the mask must load and fit the frames (once their shape is known), both inside
    ``roots`` (empty: anywhere). Checked where they are written, so a bad value never reaches a scan."""
    confine(settings.poni_path, roots, "PONI file")
    read_poni(settings.poni_path)
    if settings.mask_path is not None:
        confine(settings.mask_path, roots, "mask file")
        mask = load_mask_file(settings.mask_path)
        if frame_shape is not None:
            check_mask_shape(mask, tuple(frame_shape), f"file {settings.mask_path}")
    return settings


class ChainSettings:
    """The chain's integration settings in force, as plain values changed field by field.

    Why field by field: operators (and Tango's memorized attributes at a restart) write ``poniPath``,
    ``maskPath``, ``bins`` and ``unit`` one at a time; bins may come before any PONI. Each change is
    validated on the whole value it makes (a mask against the frame shape, say) and refused with the
    old value kept. Fields never given take IntegrationSettings' defaults once a PONI is given.
    Thread-safe.
    """

    def __init__(self, given: dict | None = None, roots: tuple[str, ...] = ()):
        self._lock = threading.Lock()
        self.roots = tuple(roots)
        self._given: dict = {}
        self._current: IntegrationSettings | None = None
        if given:
            self.change(given)

    @classmethod
    def from_shown(cls, shown: dict, roots: tuple[str, ...] = ()) -> ChainSettings:
        """Rebuild from what a Stitcher shows (``""``/``0`` = never given), without validating again."""
        copy = cls(roots=roots)
        copy._given = {k: v for k, v in shown.items() if k in SETTING_FIELDS and v not in ("", 0, None)}
        if copy._given.get("poni_path"):
            copy._current = copy._build(copy._given)
        return copy

    def current(self) -> IntegrationSettings | None:
        """The settings in force, or None while no PONI was given."""
        return self._current

    def shown(self) -> dict:
        """poni_path, mask_path, bins, unit as devices show them ("" / 0 for a field not given yet)."""
        s, g = self._current, self._given
        if s is not None:
            return {"poni_path": str(s.poni_path), "mask_path": str(s.mask_path or ""), "bins": s.bins, "unit": s.unit}
        return {
            "poni_path": "",
            "mask_path": str(g.get("mask_path") or ""),
            "bins": int(g.get("bins", 0)),
            "unit": str(g.get("unit", "")),
        }

    def change(
        self, changes: dict, frame_shape: tuple[int, int] | None = None, initial: bool = False
    ) -> IntegrationSettings | None:
        """Apply ``changes`` (names of SETTING_FIELDS; mask ``""`` = none) or raise ConfigError, keeping
        the old value. ``initial`` (an Integrator's start-up values) applies only while there is no PONI,
        and only to fields nobody gave. Returns the settings in force afterwards."""
        unknown = set(changes) - set(SETTING_FIELDS)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; expected {', '.join(SETTING_FIELDS)}")
        with self._lock:
            if initial:
                if self._current is not None:
                    return self._current
                changes = {k: v for k, v in changes.items() if k not in self._given}
            given = {**self._given, **changes}
            if "bins" in changes:
                given["bins"] = validate_bins(changes["bins"])
            if "unit" in changes:
                validate_unit(changes["unit"])
            if changes.get("mask_path") and not given.get("poni_path"):
                confine(changes["mask_path"], self.roots, "mask file")
                mask = load_mask_file(changes["mask_path"])
                if frame_shape is not None:
                    check_mask_shape(mask, tuple(frame_shape), f"file {changes['mask_path']}")
            settings = None
            if given.get("poni_path"):
                settings = check_settings(self._build(given), frame_shape, self.roots)
            self._given, self._current = given, settings
            return settings

    @staticmethod
    def _build(given: dict) -> IntegrationSettings:
        return IntegrationSettings(
            given["poni_path"],
            bins=given.get("bins", DEFAULT_BINS),
            unit=given.get("unit") or "2th_deg",
            mask_path=given.get("mask_path") or None,
        )


@dataclass
class _Scan:
    info: ScanInfo
    directory: Path
    pending: dict[int, float] = field(default_factory=dict)  # part -> first announcement (monotonic)
    announced_at: dict[int, float] = field(default_factory=dict)  # part -> first announcement (epoch)
    done_parts: set[int] = field(default_factory=set)
    module_width: int = 1
    parts_suffix: bool = True
    #: part -> (module files, frame numbers): enough to re-make any of its work items
    parts: dict[int, tuple[list[Path], list[int]]] = field(default_factory=dict)
    #: a reintegration whose parts are not all queued yet (counts against max_reintegrations)
    reintegrating: bool = False
    #: what every item of the scan is integrated with (``to_dict()`` and fingerprint), fixed once
    settings: dict = field(default_factory=dict)
    settings_hash: str = ""

    def learn_naming(self, file_name: str) -> None:
        """Module-number width (``_m1`` or ``_m01``) and part suffix, from one of the scan's files,
        so that the names of a part's other module files can be derived."""
        name = parse_lambda_name(file_name)
        if name is not None and name.module is not None:
            self.module_width = len(file_name[len(name.stem) + 2 :].split("_")[0].split(".")[0])
            self.parts_suffix = name.part is not None


@dataclass
class StitchCounters:
    frames_received: int = 0
    frames_processed: int = 0
    frames_failed: int = 0
    parts_done: int = 0
    announcements_refused: int = 0
    items_requeued: int = 0
    latency_s: float = 0.0  # part announced -> its work queued, of the last part


class StitchStage:
    """Turns module-file announcements into claimable work items. Thread-safe; callbacks never block.

    ``clock`` (monotonic seconds) times leases and module timeouts; tests pass a fake one.
    """

    def __init__(
        self,
        config: StitchConfig,
        on_scan: Callable[[ScanInfo], None],
        on_work: Callable[[int], None],
        on_error: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        settings: ChainSettings | None = None,
    ):
        self.config = config
        #: the chain's settings in force; ``set_settings`` changes them for the work queued from then on
        self.settings = settings or ChainSettings()
        self._stamp_lock = threading.Lock()
        self._on_scan = on_scan
        self._on_work = on_work
        self._on_error = on_error
        self._clock = clock
        self._lock = threading.Lock()
        self._scans: dict[str, _Scan] = {}
        self._queue: collections.deque[WorkItem] = collections.deque()
        self._leases: dict[str, tuple[WorkItem, str, float]] = {}
        #: frames range (scan:part:start:stop) -> hand-outs and expired leases, until acknowledged
        self._handouts: dict[str, int] = {}
        self._expiries: dict[str, int] = {}
        self._jobs: collections.Counter[str] = collections.Counter()  # jobs waiting per kind
        self._reintegrations_waiting = 0
        self._reintegrations = itertools.count(1)
        self._requeues = itertools.count(1)
        self._last_check = clock()
        self.counters = StitchCounters()
        self.frame_shape: tuple[int, int] | None = None
        self.detector_mask: np.ndarray | None = None
        self.current_scan = ""
        self._worker = Worker("xrd-stitch", self._handle, on_error, idle=self._check_pending, idle_interval_s=0.5)

    # -- inputs (any thread) --------------------------------------------------------------------
    def announce(self, path: str) -> None:
        """A module file was written. Returns at once; the work happens on the stage's thread."""
        if not self._take_slot("announce", self.config.max_pending):
            self.counters.announcements_refused += 1
            self._on_error(
                f"announcement queue full ({self.config.max_pending}): {path} refused; "
                "Reintegrate the acquisition once the burst is over"
            )
            return
        self._worker.submit(("announce", str(path)))

    def _take_slot(self, kind: str, bound: int) -> bool:
        with self._lock:
            if self._jobs[kind] >= bound:
                return False
            self._jobs[kind] += 1
            return True

    @property
    def pending_announcements(self) -> int:
        return self._jobs["announce"]

    @property
    def pending_requeues(self) -> int:
        return self._jobs["requeue"]

    @property
    def pending_reintegrations(self) -> int:
        """Reintegrations accepted whose parts are not all queued as work yet."""
        return self._reintegrations_waiting

    def reintegrate(self, path: str) -> None:
        """Queue every part of the acquisition that ``path`` (a file or directory) belongs to, as a new scan.

        Refused at once (ConfigError/SourceError) when the path or the module files it leads to resolve
        outside the data roots or do not exist, and (QueueFull) beyond ``max_reintegrations``.
        """
        confine(path, self.config.data_roots, "acquisition to reintegrate")
        if not Path(path).exists():
            raise SourceError(f"cannot reintegrate {path}: it does not exist")
        if Path(path).is_dir():  # a folder inside the roots may hold links to files outside them
            for f in sorted(Path(path).glob("*_m*.nxs"))[: 4 * MAX_SCANS]:
                if parse_lambda_name(f):
                    confine(f, self.config.data_roots, f"module file of {path}")
        with self._lock:
            if self._reintegrations_waiting >= self.config.max_reintegrations:
                raise QueueFull(
                    f"reintegration of {path} refused: {self._reintegrations_waiting} reintegrations are waiting "
                    f"(bound MaxReintegrations = {self.config.max_reintegrations}); try again when they are queued"
                )
            self._reintegrations_waiting += 1
            self._jobs["reintegrate"] += 1
        self._worker.submit(("reintegrate", (str(path), self.settings.current())))

    def claim(
        self, claimant: str = "", done: list[str] | tuple[str, ...] = (), offer: dict | None = None
    ) -> WorkItem | None:
        """Hand out the next item to ``claimant``; ``done`` acknowledges the items it has finished.

        ``offer`` (the claimant's initial settings) becomes the chain's while it has no PONI. An item
        queued while the chain had none gets its scan's settings now, fixed for the scan from here on.

        An item stays *leased* until acknowledged; if its lease runs out (the Integrator was killed,
        say) it is handed out again. A frame integrated twice is harmless — the Merger keeps one —
        a frame never integrated is not.
        """
        if offer and self.settings.current() is None:
            try:
                self.set_settings(offer, initial=True)
            except PipelineError as exc:
                self._on_error(f"initial settings offered by {claimant or '?'} refused: {exc}")
        with self._lock:
            for item_id in done:
                entry = self._leases.pop(item_id, None)
                if entry is not None:
                    self._handouts.pop(_range_key(entry[0]), None)
                    self._expiries.pop(_range_key(entry[0]), None)
            if not self._queue:
                return None
            item = self._queue.popleft()
            if not item.settings and self.settings.current() is not None:
                item = self._stamp_late(item)
            self._leases[item.item_id] = (item, claimant, self._clock())
            key = _range_key(item)
            self._handouts[key] = self._handouts.get(key, 0) + 1
            _trim(self._handouts)
            return item

    def _stamp_late(self, item: WorkItem) -> WorkItem:
        scan = self._scans.get(item.scan)
        if scan is None:  # forgotten (MAX_SCANS): its items are all stamped alike from the current settings
            scan = _Scan(ScanInfo(item.scan, item.detector, item.scan), Path("."))
            self._scans.setdefault(item.scan, scan)
        return dataclasses.replace(item, **self._scan_settings(scan))

    def _scan_settings(self, scan: _Scan) -> dict:
        """The settings fields of the scan's items: fixed at the first call that finds settings in force."""
        with self._stamp_lock:
            if not scan.settings:
                settings = self.settings.current()
                if settings is not None:
                    scan.settings, scan.settings_hash = settings.to_dict(), settings.fingerprint()
            return {"settings": dict(scan.settings), "settings_hash": scan.settings_hash}

    def set_settings(self, changes: dict, initial: bool = False) -> IntegrationSettings | None:
        """Change the chain's settings from the next queued scan on (see ChainSettings.change).

        Raises ConfigError (the old value kept) for a PONI that does not parse, a mask that does not
        load or does not fit the frames seen so far, bins or unit out of range."""
        return self.settings.change(changes, self.frame_shape, initial=initial)

    @property
    def leased(self) -> int:
        with self._lock:
            return len(self._leases)

    def requeue_frames(self, scan_id: str, frame_numbers: list[int], raw_file: str = "") -> None:
        """Make work items again for frames the Merger is missing (lost events, dead Integrators).

        Returns at once. Refused (ConfigError) when ``raw_file`` resolves outside the data roots, and
        (QueueFull) when requeue requests or work items are at their bounds.
        """
        if raw_file:
            confine(raw_file, self.config.data_roots, "raw_file of the requeue request")
        if self.queue_depth >= self.config.max_items:
            raise QueueFull(
                f"frames of {scan_id} requested again, refused: {self.queue_depth} work items are waiting "
                f"(bound MaxItems = {self.config.max_items})"
            )
        if not self._take_slot("requeue", self.config.max_requeues):
            raise QueueFull(
                f"frames of {scan_id} requested again, refused: {self.config.max_requeues} requeue requests "
                f"are waiting (bound MaxRequeues = {self.config.max_requeues})"
            )
        self._worker.submit(("requeue", (scan_id, list(frame_numbers), raw_file)))

    def expire_leases(self) -> int:
        """Hand out again the items whose lease ran out; fail those whose leases ran out twice.

        Returns how many items were queued (again or as failed)."""
        now = self._clock()
        failed: list[WorkItem] = []
        with self._lock:
            expired = [k for k, (_, _, t) in self._leases.items() if now - t > self.config.lease_s]
            for item_id in expired:
                item, claimant, _ = self._leases.pop(item_id)
                key = _range_key(item)
                self._expiries[key] = self._expiries.get(key, 0) + 1
                _trim(self._expiries)
                if item.error is None and self._expiries[key] >= self.config.max_lease_expiries:
                    failed.append(self._died(item, self._handouts.get(key, 0)))
                    continue
                self._queue.appendleft(item)
                self.counters.items_requeued += 1
                log.warning("lease of %s (claimed by %s) expired: handed out again", item_id, claimant or "?")
            self._queue.extend(failed)
            for item in failed:
                self.counters.frames_failed += len(item.frame_numbers)
                self.counters.frames_processed -= len(item.frame_numbers)
        for item in failed:
            self._on_error(f"{item.item_id}: {item.error}")
        if expired:
            self._on_work(len(expired))
        return len(expired)

    def _died(self, item: WorkItem, handouts: int) -> WorkItem:
        """The failed item that replaces one whose Integrators died: it names the files, and no
        Integrator reads data for it (it only carries the failure to the Merger)."""
        first, last = (item.frame_numbers[0], item.frame_numbers[-1]) if item.frame_numbers else (0, 0)
        reason = (
            f"Integrators taking this item died twice (corrupt data?): frames {first}..{last} "
            f"(handed out {handouts} times, {self.config.max_lease_expiries} leases expired) "
            f"of {', '.join(item.module_files)}"
        )
        return dataclasses.replace(item, item_id=f"{item.item_id}:died", error=reason)

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return len(self._queue)

    def _items_full(self) -> bool:
        with self._lock:
            return len(self._queue) >= self.config.max_items

    def stop(self) -> None:
        self._worker.stop()

    # -- stage thread ---------------------------------------------------------------------------
    def _handle(self, job: tuple[str, object]) -> None:
        kind, arg = job
        with self._lock:
            self._jobs[kind] -= 1
        try:
            if kind == "announce":
                self._announce(Path(arg))  # type: ignore[arg-type]
            elif kind == "requeue":
                self._requeue(*arg)  # type: ignore[misc]
            else:
                self._start_reintegration(*arg)  # type: ignore[misc]
        finally:
            # a steady stream of jobs keeps the worker from ever being idle: check leases and waiting parts anyway
            if self._clock() - self._last_check > 0.5:
                self._check_pending()

    def _start_reintegration(self, path: str, settings: IntegrationSettings | None) -> None:
        scan = None
        try:
            scan = self._reintegrate(Path(path), settings)
        finally:
            with self._lock:
                if scan is not None and scan.pending:
                    scan.reintegrating = True  # counted until its last part is queued (_finish_part)
                else:
                    self._reintegrations_waiting -= 1

    def _announce(self, path: Path) -> None:
        path = confine(path, self.config.data_roots, "announced file")
        name = parse_lambda_name(path)
        if name is None or name.module is None:
            raise SourceError(f"announced file {path} is not a Lambda module file (<stem>_m<k>[_part<NNNNN>].nxs)")
        scan = self._scans.get(name.stem)
        if scan is None:
            scan = self._new_scan(path.parent, name.stem, reintegration=False)
        scan.learn_naming(path.name)
        part = name.part or 0
        if part in scan.done_parts:
            log.info("part %d of %s announced again: ignored (already queued)", part, name.stem)
            return
        scan.pending.setdefault(part, self._clock())
        scan.announced_at.setdefault(part, time.time())
        self._try_part(scan, part)

    def _new_scan(self, directory: Path, stem: str, reintegration: bool, scan_id: str | None = None) -> _Scan:
        scan_id = scan_id or (stem if not reintegration else f"{stem}#r{next(self._reintegrations)}")
        total = _total_frames(directory, stem, self.config.data_roots)
        info = ScanInfo(scan_id, self.config.detector, stem, total, reintegration)
        scan = _Scan(info, directory)
        self._scans[scan_id] = scan
        # a beamtime has hundreds of scans: keep the recent ones, and every one with parts still waiting
        idle = [k for k, s in self._scans.items() if not s.pending and k != scan_id]
        for k in idle[: max(0, len(self._scans) - MAX_SCANS)]:
            self._scans.pop(k)
        self.current_scan = scan_id
        self._on_scan(info)
        return scan

    def _module_files(self, scan: _Scan, part: int) -> list[Path]:
        suffix = f"_part{part:05d}" if scan.parts_suffix else ""
        return [
            scan.directory / f"{scan.info.stem}_m{k:0{scan.module_width}d}{suffix}.nxs"
            for k in range(1, self.config.module_count + 1)
        ]

    def _try_part(self, scan: _Scan, part: int) -> bool:
        """Queue the part if its files are complete; False while it must wait (files, or work queue full)."""
        if self._items_full():
            return False  # back-pressure: the part stays on disk until Integrators catch up
        files = self._module_files(scan, part)
        if not all(f.exists() for f in files):
            return False
        try:
            modules = open_modules(files, self.config.open_retries, self.config.open_retry_delay_s, self._roots)
        except OutsideRootsError as exc:  # a sibling that links out of the roots: never read it
            self._fail_part(scan, part, files, str(exc))
            return True
        except SourceError as exc:
            if self._clock() - scan.pending[part] < self.config.module_timeout_s:
                return False  # still being written: the idle check tries again
            self._fail_part(scan, part, files, str(exc))
            return True
        try:
            if scan.info.total_frames is None:
                total = _read_total(modules[0].h5)
                if total:
                    scan.info = dataclasses.replace(scan.info, total_frames=total)
            layout, n = check_part_modules(modules)
            numbers = [int(v) for v in modules[0].frame_numbers[:n]]
            if self.frame_shape is None or self.frame_shape != layout.frame_shape:
                self.frame_shape = layout.frame_shape
                self.detector_mask = layout.stitch_mask([m.pixel_mask for m in modules])
        except SourceError as exc:
            self._fail_part(scan, part, files, str(exc), [int(v) for v in modules[0].frame_numbers])
            return True
        finally:
            for m in modules:
                m.close()
        self._queue_part(scan, part, files, numbers)
        return True

    @property
    def _roots(self) -> tuple[str, ...]:
        return self.config.data_roots

    def _queue_part(self, scan: _Scan, part: int, files: list[Path], numbers: list[int]) -> None:
        scan.parts[part] = (files, numbers)
        self._finish_part(scan, part, self._items(scan, part, files, numbers, 0, len(numbers)), len(numbers), failed=0)

    def _items(
        self, scan: _Scan, part: int, files: list[Path], numbers: list[int], first: int, stop: int, tag: str = ""
    ) -> list[WorkItem]:
        """Work items of frames ``first:stop`` (indices in the part's files), ``frames_per_item`` each."""
        step = self.config.frames_per_item
        return [
            WorkItem(
                f"{scan.info.scan}:{part}:{start}{tag}",
                scan.info.scan,
                self.config.detector,
                part,
                [str(f) for f in files],
                start,
                min(start + step, stop),
                numbers[start : min(start + step, stop)],
                scan.info.total_frames,
                announced_at=scan.announced_at.get(part, 0.0),
                **self._scan_settings(scan),
            )
            for start in range(first, stop, step)
        ]

    def _fail_part(self, scan: _Scan, part: int, files: list[Path], reason: str, numbers: list[int] | None = None):
        """A part that cannot be read still goes down the chain, as an item that says why."""
        # the frame numbers come from whichever file still opens -- only from files inside the roots
        numbers = numbers or frame_numbers_from_any([f for f in files if inside(f, self._roots)])
        self._on_error(f"part {part} of {scan.info.stem}: {reason}")
        item = WorkItem(
            f"{scan.info.scan}:{part}:failed",
            scan.info.scan,
            self.config.detector,
            part,
            [str(f) for f in files],
            0,
            0,
            numbers,
            scan.info.total_frames,
            error=reason,
            **self._scan_settings(scan),
        )
        self._finish_part(scan, part, [item], len(numbers), failed=len(numbers))

    def _finish_part(self, scan: _Scan, part: int, items: list[WorkItem], n: int, failed: int) -> None:
        if part in scan.announced_at:
            self.counters.latency_s = max(0.0, time.time() - scan.announced_at[part])
        scan.pending.pop(part, None)
        scan.done_parts.add(part)
        with self._lock:
            self._queue.extend(items)
            self.counters.frames_received += n
            self.counters.frames_processed += n - failed
            self.counters.frames_failed += failed
            self.counters.parts_done += 1
            if scan.reintegrating and not scan.pending:
                scan.reintegrating = False
                self._reintegrations_waiting -= 1
        self._on_work(len(items))

    def _requeue(self, scan_id: str, wanted: list[int], raw_file: str) -> None:
        scan = self._scans.get(scan_id)
        if scan is None and raw_file:  # e.g. the Stitcher restarted: rebuild the scan from its files
            acq = LambdaAcquisition.from_file(confine(raw_file, self._roots, "raw_file of the requeue request"))
            scan = self._new_scan(acq.directory, acq.stem, reintegration=False, scan_id=scan_id)
        if scan is None:
            raise SourceError(f"frames {wanted[:5]}... of unknown scan {scan_id} requested again: no file to read")
        self._learn_parts(scan)
        wanted_set = set(wanted)
        with self._lock:
            # frames still waiting in the queue will be handed out anyway; leases covering wanted frames
            # are settled now (their Integrator died, or its patterns were lost): else they would expire
            # later and the same frames would be integrated a second time
            for item in self._queue:
                if item.scan == scan_id:
                    wanted_set.difference_update(item.frame_numbers)
            settled = [
                k
                for k, (item, _, _) in self._leases.items()
                if item.scan == scan_id and wanted_set & set(item.frame_numbers)
            ]
            for item_id in settled:
                self._leases.pop(item_id)
        tag = f":again{int(time.time())}-{next(self._requeues)}"
        items = []
        for part, (files, numbers) in sorted(scan.parts.items()):
            index = [i for i, n in enumerate(numbers) if n in wanted_set]
            for run in _runs(index):
                items += self._items(scan, part, files, numbers, run[0], run[-1] + 1, tag=tag)
        with self._lock:
            room = self.config.max_items - len(self._queue)
            if len(items) > room:
                raise QueueFull(
                    f"frames of {scan_id} requested again: {len(items)} work items would not fit "
                    f"(bound MaxItems = {self.config.max_items}, {max(0, room)} free); refused"
                )
            self._queue.extend(items)
            self.counters.items_requeued += len(items)
        log.warning(
            "scan %s: %d frame(s) requested again -> %d item(s), %d lease(s) settled",
            scan_id,
            len(wanted),
            len(items),
            len(settled),
        )
        if items:
            self._on_work(len(items))

    def _learn_parts(self, scan: _Scan) -> None:
        """Learn the frame numbers of parts on disk this Stitcher never handled (announcements lost,
        or they came while it was down) — without queueing them: only the frames asked for are redone."""
        try:
            acq = LambdaAcquisition.from_stem(scan.directory, scan.info.stem)
        except SourceError:
            return
        scan.learn_naming(acq.parts[0].files[0].name)
        for part in acq.parts:
            if part.index in scan.parts:
                continue
            try:
                modules = open_modules(part.files, retries=0, roots=self._roots)
            except SourceError as exc:
                log.warning("part %d of %s cannot be read again: %s", part.index, scan.info.stem, exc)
                continue
            try:
                _, n = check_part_modules(modules)
                scan.parts[part.index] = (list(part.files), [int(v) for v in modules[0].frame_numbers[:n]])
                scan.done_parts.add(part.index)
                scan.pending.pop(part.index, None)
            except SourceError as exc:
                log.warning("part %d of %s: %s", part.index, scan.info.stem, exc)
            finally:
                for m in modules:
                    m.close()

    def _check_pending(self) -> None:
        """Retry parts whose module files were incomplete; give up on them after the timeout."""
        self._last_check = self._clock()
        self.expire_leases()
        for scan in list(self._scans.values()):
            for part, since in list(scan.pending.items()):
                if self._try_part(scan, part):
                    continue
                if self._items_full():
                    return  # waiting for room, not for files: no timeout runs meanwhile
                if self._clock() - since > self.config.module_timeout_s:
                    files = self._module_files(scan, part)
                    missing = [f.name for f in files if not f.exists()]
                    self._fail_part(
                        scan,
                        part,
                        files,
                        f"module file(s) {', '.join(missing)} not written within {self.config.module_timeout_s:.0f} s",
                    )

    def _reintegrate(self, path: Path, settings: IntegrationSettings | None) -> _Scan:
        target = path
        if path.is_dir():
            target = next((p for p in sorted(path.glob("*_m*.nxs")) if parse_lambda_name(p)), None)
            if target is None:
                raise SourceError(f"no Lambda module files (<stem>_m<k>*.nxs) in {path}")
        acq = LambdaAcquisition.from_file(target)
        scan = self._new_scan(acq.directory, acq.stem, reintegration=True)
        if settings is not None:  # the settings in force when Reintegrate was called
            scan.settings, scan.settings_hash = settings.to_dict(), settings.fingerprint()
        scan.learn_naming(acq.parts[0].files[0].name)
        for part in acq.parts:
            scan.pending[part.index] = self._clock() - self.config.module_timeout_s  # files complete: no wait
            scan.announced_at[part.index] = time.time()
            self._try_part(scan, part.index)
        return scan


def _range_key(item: WorkItem) -> str:
    """The frames an item covers, whatever its id: a requeued copy shares it with the original."""
    return f"{item.scan}:{item.part}:{item.start}:{item.stop}"


def _trim(counts: dict[str, int], bound: int = 100_000) -> None:
    """Keep a per-item bookkeeping dict bounded (items never acknowledged would otherwise pile up)."""
    while len(counts) > bound:
        counts.pop(next(iter(counts)))


def _runs(indices: list[int]) -> list[list[int]]:
    """Split sorted indices into runs of consecutive values: [1,2,3,7,8] -> [[1,2,3],[7,8]]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _read_total(h5) -> int | None:
    value = h5.get(f"{L.DETECTOR_GROUP}/collection/frame_numbers")
    try:
        return int(np.asarray(value[()]).ravel()[0]) if value is not None else None
    except (ValueError, IndexError, TypeError):
        return None


def _total_frames(directory: Path, stem: str, roots: tuple[str, ...] = ()) -> int | None:
    """Frames the acquisition will have, from ``collection/frame_numbers`` of any of its files
    (inside ``roots``: a sibling that links elsewhere is not opened)."""
    for f in sorted(directory.glob(f"{glob_escape(stem)}_m*.nxs")):
        if not inside(f, roots):
            continue
        try:
            with open_h5(f, retries=0) as h5:
                total = _read_total(h5)
        except (SourceError, OSError):
            continue
        if total:
            return total
    return None
