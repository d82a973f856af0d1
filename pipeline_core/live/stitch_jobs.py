"""What the Stitcher's thread does: the jobs clients queue, as typed values, and the idle check.

Why jobs are values: a client's call (Tango's event thread, a command) must return at once, so it
only queues a job; the stage's one thread then does the file work. A frozen dataclass per kind says
what each job carries, and the thread dispatches on its type -- no string tags to mistype.

:class:`StitchJobs` joins the parts for each job: the :class:`~.scan_tracker.ScanTracker` (which
parts wait, which are queued), the :class:`~.part_checker.PartChecker` (is a part readable) and the
:class:`~.work_queue.WorkQueue` (items for Integrators). A part whose files do not all come within
``module_timeout_s`` becomes a failed item that still travels down the chain. A taken part announced
again is a repeat (ignored) unless its files changed or the detector started again: then the name
was acquired again, and a new scan takes it (:mod:`.retake`).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SourceError
from ..formats.lambda_files import LambdaAcquisition, LambdaNaming, parse_lambda_name
from ..messages import ScanInfo, WorkItem
from ..paths import confine
from ..processing.integrate import IntegrationSettings
from . import retake
from .part_checker import PartChecker, PartFailed, PartReady, PartWaiting, file_stamps
from .scan_tracker import MAX_SCANS, ScanRecord, ScanTracker
from .triggers.lambda_follow import PartDue
from .work_queue import WorkQueue

if TYPE_CHECKING:
    from .stitch_stage import StitchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Announce:
    """A module file was written (the detector's announcement)."""

    path: str


@dataclass(frozen=True)
class Requeue:
    """Make work again for frames of a scan a Merger is missing; ``raw_file``: any file of the scan."""

    scan: str
    frames: tuple[int, ...]
    raw_file: str = ""


@dataclass(frozen=True)
class Reintegrate:
    """Queue a whole acquisition again as a new scan, with the settings in force when it was asked for."""

    path: str
    settings: IntegrationSettings | None


@dataclass(frozen=True)
class AnnouncePart:
    """The detector says a part is written (the ``lambda`` trigger): its files hold ``due.frames``."""

    due: PartDue


Job = Announce | AnnouncePart | Requeue | Reintegrate


class JobSlots:
    """Jobs queued for the stage's thread and not handled yet, per kind: what MaxPending and
    MaxRequeues bound, so a burst of requests is refused instead of piling up. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: collections.Counter[type] = collections.Counter()

    def take(self, kind: type, bound: int | None = None) -> bool:
        """Count one more job of ``kind``; False (nothing counted) when ``bound`` are waiting."""
        with self._lock:
            if bound is not None and self._waiting[kind] >= bound:
                return False
            self._waiting[kind] += 1
            return True

    def release(self, kind: type) -> None:
        with self._lock:
            self._waiting[kind] -= 1

    def waiting(self, kind: type) -> int:
        return self._waiting[kind]


def check_reintegration_path(path: str, roots: tuple[str, ...]) -> None:
    """Refuse at once (ConfigError/SourceError) a path to reintegrate that resolves outside ``roots``
    or does not exist; for a folder, also the module files in it (it may hold links out of the roots)."""
    confine(path, roots, "acquisition to reintegrate")
    if not Path(path).exists():
        raise SourceError(f"cannot reintegrate {path}: it does not exist")
    if Path(path).is_dir():
        for f in sorted(Path(path).glob("*_m*.nxs"))[: 4 * MAX_SCANS]:
            if parse_lambda_name(f):
                confine(f, roots, f"module file of {path}")


@dataclass
class StitchCounters:
    frames_received: int = 0
    frames_processed: int = 0
    frames_failed: int = 0
    parts_done: int = 0
    announcements_refused: int = 0
    items_requeued: int = 0
    latency_s: float = 0.0  # part announced -> its work queued, of the last part


class PartIntake:
    """Turns parts on disk into queued work -- or into failures that still go down the chain -- and
    counts them; retries waiting parts and expires leases when idle. ``expire_leases`` may be
    called from any thread."""

    def __init__(
        self,
        config: StitchConfig,
        parts: tuple[ScanTracker, WorkQueue, PartChecker],
        on_work: Callable[[int], None],
        on_error: Callable[[str], None],
        clock: Callable[[], float],
        announcements_waiting: Callable[[], int] = lambda: 0,
    ):
        self.config = config
        self.scans, self.queue, self.checker = parts
        self._on_work, self._on_error, self._clock = on_work, on_error, clock
        #: announcements queued for the stage's thread and not handled yet (see check_pending)
        self._announcements_waiting = announcements_waiting
        self.counters = StitchCounters()
        self._count_lock = threading.Lock()
        self.frame_shape: tuple[int, int] | None = None
        self.detector_mask: np.ndarray | None = None
        self.last_check = clock()

    def try_part(self, scan: ScanRecord, part: int) -> bool:
        """Queue the part if its files are complete; False while it must wait (files, or work queue full)."""
        if self.queue.full:
            return False  # back-pressure: the part stays on disk until Integrators catch up
        scan.learn_naming_on_disk()
        files = scan.module_files(part, self.config.module_count)
        if self.unwritten(scan, part, files):
            return False  # the trigger has not seen them closed yet (or not written again): never opened early
        if part in scan.due_frames and scan.modules is None:
            files = self._modules_on(scan, part, files)
            if not files:
                return False
        # before its timeout the idle check is the retry: opening retries (sleeps) here would hold the
        # thread, and every other part's announcements and timeouts with it, for each broken file
        last_chance = self._waited(scan, part) >= self.config.module_timeout_s
        stamps = file_stamps(files)
        state = self.checker.check(
            files, self.frame_shape, retries=None if last_chance else 0, modules_off=scan.modules_off
        )
        taken = file_stamps(files, content=True) if isinstance(state, PartReady) else stamps
        if any((taken[f] or ())[:2] != (stamps[f] or ())[:2] for f in stamps):
            return False  # written to while it was read: the idle check looks again
        if isinstance(state, PartWaiting):
            if state.missing or not last_chance:
                return False  # still being written: the idle check tries again
            state = self.checker.failed(files, state.reason)
        if isinstance(state, PartReady) and len(state.frame_numbers) < scan.due_frames.get(part, 0):
            if self._waited(scan, part) < self.config.module_timeout_s:
                return False  # the detector counted more frames than the files hold yet: being written
            log.warning(
                "part %d of %s: %d frames in its files, the detector counted %d; taking those there",
                part, scan.info.stem, len(state.frame_numbers), scan.due_frames[part],
            )  # fmt: skip
        self.scans.learn_total(scan, state.total_frames)
        if isinstance(state, PartFailed):
            self.fail_part(scan, part, files, state)
            return True
        if state.detector_mask is not None:
            self.frame_shape, self.detector_mask = state.frame_shape, state.detector_mask
        scan.parts[part] = (state.files, state.frame_numbers)
        scan.stamps[part] = taken  # what the part's files were when taken, frames' digest included (see retake)
        n = len(state.frame_numbers)
        self._finish_part(scan, part, self.scans.items(scan, part, 0, n), n, failed=0)
        return True

    def _waited(self, scan: ScanRecord, part: int) -> float:
        return self._clock() - scan.pending.get(part, self._clock())

    def unwritten(self, scan: ScanRecord, part: int, files: list[Path]) -> list[Path]:
        """The files not to open yet: with ``require_announced`` (Trigger=watch) those no one has seen
        complete yet; in a scan that took its name over, those the new acquisition has not written yet."""
        stale = retake.stale_files(scan, files)
        if not self.config.require_announced:
            return stale
        seen = scan.announced_files.get(part, set())
        return [f for f in files if f not in seen or f in stale]

    def _modules_on(self, scan: ScanRecord, part: int, files: list[Path]) -> list[Path]:
        """The module files of a part the detector says is written, once the scan's modules are known.

        A module switched off writes no file: when some module files of the scan's first written part
        exist and the others still do not ``switched_off_s`` after the detector said so, the missing
        modules are taken as switched off for the whole scan (said in Status), as the offline path
        leaves out a module missing from every part. Empty while it must wait.
        """
        present = [f for f in files if f.exists()]
        if len(present) == len(files):
            scan.modules = scan.module_numbers(self.config.module_count)
            return files
        if not present or self._waited(scan, part) < self.config.switched_off_s:
            return []
        numbers = scan.module_numbers(self.config.module_count)
        scan.modules = tuple(k for k, f in zip(numbers, files, strict=True) if f in present)
        scan.modules_off = tuple(k for k in numbers if k not in scan.modules)
        off = ", ".join(f"m{k}" for k in numbers if k not in scan.modules)
        self._on_error(
            f"{scan.info.stem}: module(s) {off} wrote no file {self.config.switched_off_s:g} s after part {part} "
            f"was written: taken as switched off, the scan is stitched from {len(present)} module(s)"
        )
        return present

    def report(self, message: str) -> None:
        """Something the operator must hear of (Status) that is no failure of this stage: logged as a warning."""
        log.warning("%s", message)
        self._on_error(message)

    def fail_part(
        self, scan: ScanRecord, part: int, files: list[Path], failure: PartFailed, said: bool = False
    ) -> None:
        """A part that cannot be read still goes down the chain, as an item that says why (and in
        Status, unless the caller ``said`` so already)."""
        if not said:
            self._on_error(f"part {part} of {scan.info.stem}: {failure.reason}")
        item = self.scans.failed_item(scan, part, files, failure.reason, failure.frame_numbers)
        n = len(failure.frame_numbers)
        self._finish_part(scan, part, [item], n, failed=n)

    def _finish_part(self, scan: ScanRecord, part: int, items: list[WorkItem], n: int, failed: int) -> None:
        self.queue.put(items)
        with self._count_lock:
            if part in scan.announced_at:
                self.counters.latency_s = max(0.0, time.time() - scan.announced_at[part])
            c = self.counters
            c.frames_received, c.frames_processed = c.frames_received + n, c.frames_processed + n - failed
            c.frames_failed, c.parts_done = c.frames_failed + failed, c.parts_done + 1
        self.scans.part_done(scan, part)
        self._on_work(len(items))

    def check_pending(self, if_due_s: float = 0.0) -> None:
        """Retry parts whose module files were incomplete; give up on them after the timeout.
        ``if_due_s``: only if the last check is that old (a busy thread checks between jobs)."""
        if if_due_s and self._clock() - self.last_check <= if_due_s:
            return
        self.last_check = self._clock()
        self.expire_leases()
        timeout = self.config.module_timeout_s
        for scan in self.scans.scans():
            for part, since in list(scan.pending.items()):
                if self.try_part(scan, part):
                    continue
                if self.queue.full:
                    return  # waiting for room, not for files: no timeout runs meanwhile
                if self._announcements_waiting():
                    continue  # the files may be announced in the queue already: handled first, then timed
                if self._clock() - since > timeout:
                    files = scan.module_files(part, self.config.module_count)
                    unseen = set(self.unwritten(scan, part, files))
                    missing = ", ".join(f.name for f in files if not f.exists() or f in unseen)
                    closed = " (or not closed)" if self.config.require_announced else ""
                    closed += " (still the earlier acquisition's)" if retake.stale_files(scan, files) else ""
                    reason = f"module file(s) {missing} not written{closed} within {timeout:.0f} s"
                    self.fail_part(scan, part, files, self.checker.failed(files, reason))

    def expire_leases(self) -> int:
        """Hand out again the items whose lease ran out, fail those that ran out too often (the
        counters follow); returns how many items were queued (again or as failed)."""
        expired = self.queue.expire()
        with self._count_lock:
            self.counters.items_requeued += len(expired.requeued)
        self._count_failed(expired.died)
        for item in expired.died:
            self._on_error(f"{item.item_id}: {item.error}")
        if expired:
            self._on_work(len(expired))
        return len(expired)

    def _count_failed(self, items: list[WorkItem]) -> None:
        """Items that failed after being counted as processed: their frames move to failed."""
        with self._count_lock:
            for item in items:
                self.counters.frames_failed += len(item.frame_numbers)
                self.counters.frames_processed -= len(item.frame_numbers)

    def hand_out(self, item: WorkItem) -> WorkItem:
        """An item as it is handed out (:meth:`ScanTracker.stamp_late`); one failed there (its files
        written over by a new acquisition under its name) counts as failed, not processed."""
        out = self.scans.stamp_late(item)
        if out.error and not item.error:
            self._count_failed([item])
        return out

    def count_requeued(self, n: int) -> None:
        with self._count_lock:
            self.counters.items_requeued += n


class StitchJobs:
    """Runs each job on the stage's thread: finds the scan and part a job is about, or makes them,
    and hands parts to the :class:`PartIntake`."""

    def __init__(
        self,
        intake: PartIntake,
        on_scan: Callable[[ScanInfo], None],
        on_work: Callable[[int], None],
        clock: Callable[[], float],
    ):
        self.intake, self.config = intake, intake.config
        self.scans, self.queue, self.checker = intake.scans, intake.queue, intake.checker
        self._on_scan, self._on_work, self._clock = on_scan, on_work, clock
        self._try_part = intake.try_part
        self._requeues = itertools.count(1)
        self._handlers: dict[type, Callable] = {
            Announce: self._announce,
            AnnouncePart: self._announce_part,
            Requeue: self._requeue,
            Reintegrate: self._reintegrate,
        }

    def handle(self, job: Job) -> None:
        self._handlers[type(job)](job)

    def _announce(self, job: Announce) -> None:
        path = confine(job.path, self.config.data_roots, "announced file")
        name = parse_lambda_name(path)
        if name is None or name.module is None:
            raise SourceError(f"announced file {path} is not a Lambda module file (<stem>_m<k>[_part<NNNNN>].nxs)")
        part = name.part or 0
        scan = self.scans.live(name.stem) or self._new_scan(path.parent, name.stem, reintegration=False)
        scan = self._acquired_again(scan, part)
        scan.learn_naming(path.name)
        scan.announced_files.setdefault(part, set()).add(path)
        self._part_announced(scan, part)

    def _announce_part(self, job: AnnouncePart) -> None:
        due = job.due
        directory = confine(due.directory, self.config.data_roots, "the detector's SaveFilePath")
        if not due.stem:
            raise SourceError(f"the detector announced part {due.part} in {directory} without a file name (stem)")
        scan = self.scans.live(due.stem) or self._new_scan(
            directory, due.stem, reintegration=False, total=due.total_frames
        )
        scan = self._acquired_again(scan, due.part, due.acquisition, due.total_frames)
        if scan.acquisition is None:
            scan.acquisition = due.acquisition
        if not scan.naming_seen:
            scan.naming = LambdaNaming(scan.naming.module_width, due.parts_suffix)
        scan.due_frames[due.part] = due.frames
        self._part_announced(scan, due.part)

    def _part_announced(self, scan: ScanRecord, part: int) -> None:
        if part in scan.done_parts:
            log.info("part %d of %s announced again: ignored (already queued)", part, scan.info.stem)
            return
        scan.pending.setdefault(part, self._clock())
        scan.announced_at.setdefault(part, time.time())
        self._try_part(scan, part)

    def _acquired_again(
        self, scan: ScanRecord, part: int, acquisition: int | None = None, total: int | None = None
    ) -> ScanRecord:
        """The scan an announcement of ``part`` goes to: ``scan``, or a new one (``<stem>#<n>``) when
        the name was acquired again. Said in Status; the old scan's frames it never took are lost
        (their files hold the new acquisition) and go down the chain as failed."""
        why = retake.why_new(scan, part, acquisition)
        if not why:
            return scan
        stem = scan.info.stem
        new = self._new_scan(scan.directory, stem, reintegration=False, scan_id=f"{stem}#{scan.take + 1}", total=total)
        self.scans.retake(scan, new)
        new.acquisition = acquisition
        lost = retake.lost_frames(scan)
        self.intake.report(f"{why}: a new acquisition under the same name, merged as scan {new.info.scan}; "
                           f"scan {scan.info.scan} keeps what it had ({len(lost)} frame(s) of it lost)")  # fmt: skip
        if lost:
            index = retake.first_untaken_part(scan)
            files = scan.module_files(index, self.config.module_count)
            reason = f"never taken before {stem} was acquired again (its files now hold scan {new.info.scan})"
            self.intake.fail_part(scan, index, files, PartFailed(reason, lost), said=True)
        return new

    def _reintegrate(self, job: Reintegrate) -> None:
        scan = None
        try:
            path = Path(job.path)
            target = path
            if path.is_dir():
                found = next((p for p in sorted(path.glob("*_m*.nxs")) if parse_lambda_name(p)), None)
                if found is None:
                    raise SourceError(f"no Lambda module files (<stem>_m<k>*.nxs) in {path}")
                target = found
            acq = LambdaAcquisition.from_file(target)
            scan = self._new_scan(acq.directory, acq.stem, reintegration=True)
            if job.settings is not None:  # the settings in force when Reintegrate was called
                self.scans.fix_settings(scan, job.settings)
            scan.learn_naming(acq.parts[0].files[0].name)
            for part in acq.parts:
                scan.announced_files[part.index] = set(part.files)  # on disk already: complete
                scan.pending[part.index] = self._clock() - self.config.module_timeout_s  # files complete: no wait
                scan.announced_at[part.index] = time.time()
                self._try_part(scan, part.index)
        finally:
            self.scans.reintegration_started(scan)  # counted until its last part is queued

    def _requeue(self, job: Requeue) -> None:
        scan = self.scans.get(job.scan)
        if scan is None and job.raw_file:  # e.g. the Stitcher restarted: rebuild the scan from its files
            raw_file = confine(job.raw_file, self.config.data_roots, "raw_file of the requeue request")
            acq = LambdaAcquisition.from_file(raw_file)
            scan = self._new_scan(acq.directory, acq.stem, reintegration=False, scan_id=job.scan)
        if scan is None:
            raise SourceError(
                f"frames {list(job.frames[:5])}... of unknown scan {job.scan} requested again: no file to read"
            )
        if scan.superseded_by:
            raise SourceError(
                f"frames {list(job.frames[:5])}... of scan {job.scan} requested again, refused: its files were "
                f"written again by a new acquisition under the same name (scan {scan.superseded_by})"
            )
        self._learn_parts(scan)
        wanted, settled = self.queue.settle(job.scan, job.frames)
        tag = f":again{int(time.time())}-{next(self._requeues)}"
        items: list[WorkItem] = []
        for part, (_, numbers) in sorted(scan.parts.items()):
            for run in _runs([i for i, n in enumerate(numbers) if n in wanted]):
                items += self.scans.items(scan, part, run[0], run[-1] + 1, tag=tag)
        self.queue.put_again(items, f"frames of {job.scan} requested again")
        self.intake.count_requeued(len(items))
        log.warning(
            "scan %s: %d frame(s) requested again -> %d item(s), %d lease(s) settled",
            job.scan, len(job.frames), len(items), settled,
        )
        if items:
            self._on_work(len(items))

    def _learn_parts(self, scan: ScanRecord) -> None:
        """Learn the frame numbers of parts on disk this Stitcher never handled (announcements lost,
        or they came while it was down) -- without queueing them: only the frames asked for are redone."""
        try:
            acq = LambdaAcquisition.from_stem(scan.directory, scan.info.stem, scan.modules)
        except SourceError:
            return
        scan.learn_naming(acq.parts[0].files[0].name)
        for index, (files, numbers) in self.checker.readable_parts(acq, skip=scan.parts).items():
            self.scans.learned(scan, index, files, numbers)

    def _new_scan(
        self, directory: Path, stem: str, reintegration: bool, scan_id: str | None = None, total: int | None = None
    ) -> ScanRecord:
        """A new scan; its frame count from ``total`` (the detector said) or else its files."""
        total = total or self.checker.total_frames(directory, stem)
        scan = self.scans.add(directory, stem, total, reintegration, scan_id)
        self._on_scan(scan.info)
        return scan


def _runs(indices: list[int]) -> list[list[int]]:
    """Split sorted indices into runs of consecutive values: [1,2,3,7,8] -> [[1,2,3],[7,8]]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
