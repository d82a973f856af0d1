"""The merging stage of the live pipeline, without Tango.

Pattern batches from any number of Integrators arrive in any order; each scan gets one merged file
(:class:`nexus.MergedFileWriter`, never overwriting: a reintegration becomes ``<stem>_v001.nxs``),
opened at its first batch and closed when every frame of the acquisition is merged or listed as
failed — or, when the total is unknown or frames never come, after ``scan_timeout_s`` without news,
with the missing frame numbers listed as failed. Batches integrated with other settings than the
file's are refused (listed as failed with the reason), never mixed in. A scan whose batches only
list failures has no radial axis for a file: they are held (:class:`merge_scan.PendingScan`) until a
pattern opens it, or the scan ends anyway in a file of failures only. A closed scan is never
reopened, a restart included (:mod:`merge_closed`).

An open scan's file is ``<stem>.nxs.part`` beside its journal ``<stem>.nxs.journal`` (both named
after the final name); a shutdown suspends it (status ``interrupted``), a restart resumes it, and
only closing the scan gives it its final name ``<stem>.nxs``.

The parts: :class:`merge_scan.OpenScan` (one scan's file, journal and accounting),
:mod:`merge_journal` (resume after kill -9), :class:`merge_gaps.GapCheck` (ask again, then time
out), :class:`merge_latency.LatencyWindow` (the operator's latency figure). This class owns the
stage's thread and routes typed jobs to them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NoSpaceError, OutputError, PipelineError
from ..messages import PatternBatch, ScanInfo
from ..processing.integrate import IntegrationSettings
from .deadline import Deadline
from .merge_closed import ClosedScans
from .merge_gaps import (
    DEFAULT_GAP_CHECK_S,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_SCAN_TIMEOUT_S,
    GapCheck,
    GapPolicy,
    RequestMissing,
)
from .merge_journal import JournalEntry, journal_path
from .merge_latency import LatencyWindow
from .merge_log import WaitingForRoom
from .merge_pressure import LivePressure
from .merge_scan import RESUME_ERRORS, OpenScan, PendingScan, ScanSummary, resume_open_scans
from .merge_unwritable import WaitingForWrite, refuses_writes
from .worker import ThreadContext, Worker

log = logging.getLogger(__name__)

#: seconds a stopping Merger still merges the batches queued (of the server's 8 s stop budget: the
#: rest is for SuspendAll and the other threads)
MERGE_DRAIN_S = 3.0

__all__ = [
    "DEFAULT_GAP_CHECK_S",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_SCAN_TIMEOUT_S",
    "MergeCounters",
    "MergeStage",
    "ScanSummary",
    "journal_path",
]


@dataclass
class MergeCounters:
    frames_received: int = 0
    frames_processed: int = 0
    frames_failed: int = 0
    latency_s: float = 0.0  # part announced -> its patterns merged, of the last batch


# -- the jobs of the stage's thread (submitted from any thread) -------------------------------------
@dataclass(frozen=True)
class ScanAnnounced:
    info: ScanInfo


@dataclass(frozen=True)
class BatchArrived:
    batch: PatternBatch
    sent_at: float


@dataclass(frozen=True)
class FinishScan:
    scan: str


@dataclass(frozen=True)
class ResumeScans:
    """Continue the files a killed Merger left open (always the first job)."""


@dataclass(frozen=True)
class SuspendAll:
    """Leave every open file as a part with its journal (shutdown)."""


class MergeStage:
    def __init__(
        self,
        output_directory: Path,
        on_scan_closed: Callable[[ScanSummary], None],
        on_error: Callable[[str], None],
        on_progress: Callable[[], None] | None = None,
        scan_timeout_s: float = DEFAULT_SCAN_TIMEOUT_S,
        request_missing: RequestMissing | None = None,
        gap_check_s: float = DEFAULT_GAP_CHECK_S,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        thread_context: ThreadContext | None = None,
        pressure: LivePressure | None = None,
    ):
        self.output_directory = Path(output_directory)
        #: the marker's pressure, live and into each closed file (:mod:`merge_pressure`); off by default
        self.pressure = pressure or LivePressure(None, on_error)
        self._on_scan_closed = on_scan_closed
        self._on_error = on_error
        self._on_progress = on_progress or (lambda: None)
        #: before giving up on missing frames, ask upstream for them again (events are hints)
        self.gap_policy = GapPolicy(scan_timeout_s, gap_check_s, max_requests)
        self._gaps = GapCheck(self.gap_policy, request_missing, time.monotonic, on_error)
        self._infos: dict[str, ScanInfo] = {}
        self._open: dict[str, OpenScan] = {}
        #: scans whose batches so far only list failures (no radial axis for a file yet)
        self._pending: dict[str, PendingScan] = {}
        #: scans set aside while their folder is full: rebuilt from their row logs once room is back
        self._no_room = WaitingForRoom()
        #: scans whose file the folder refused to create (read-only, permissions): opened once it takes writes
        self._no_write = WaitingForWrite(self.output_directory)
        self._closed = ClosedScans(self.output_directory)  # with the scans closed before a restart
        #: scan id -> summary of every scan closed since the start
        self.closed: dict[str, ScanSummary] = self._closed.summaries
        self.counters = MergeCounters()
        #: median latency over the recent batches of the scan being merged (what the Merger shows)
        self.latency = LatencyWindow()
        self.current_scan = ""
        self.last_output: Path | None = None
        self.settings_in_force: IntegrationSettings | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            ScanAnnounced: self._announced, BatchArrived: self._merge, FinishScan: self._finish,
            ResumeScans: self._resume, SuspendAll: self._suspend_all,
        }  # fmt: skip
        self._worker = Worker("xrd-merge", self._handle, on_error, idle=self._check_gaps,
                              idle_interval_s=1.0, thread_context=thread_context)  # fmt: skip
        self._worker.submit(ResumeScans())

    # -- inputs (any thread) --------------------------------------------------------------------
    def scan_started(self, info: ScanInfo) -> None:
        self._worker.submit(ScanAnnounced(info))

    def add_batch(self, batch: PatternBatch, sent_at: float | None = None) -> None:
        self._worker.submit(BatchArrived(batch, sent_at or time.time()))

    def finish(self, scan: str) -> None:
        """Close a scan now (operator's Stop): what is missing is listed as failed."""
        self._worker.submit(FinishScan(scan))

    @property
    def queue_depth(self) -> int:
        return self._worker.depth

    @property
    def last_closed(self) -> ScanSummary | None:
        """The summary of the scan closed last (None before the first)."""
        return self._closed.last

    def stop(self, deadline: Deadline | float | None = None, drain_s: float = MERGE_DRAIN_S) -> bool:
        """Shut down (server stop or restart): open files are suspended, not finished, so the next
        start resumes them from their journals; only completion, timeout or ``finish`` closes a scan.

        Batches already queued are merged for at most ``drain_s`` seconds (what arrived is kept without
        a request); the rest are dropped, and the resumed scan's gap check asks for them again.
        ``SuspendAll`` runs after that in any case, within ``deadline`` (see :meth:`Worker.stop`);
        False when the stage's thread did not end within it (named in the log).
        """
        return self._worker.stop(deadline, final=SuspendAll(), drain_s=drain_s)

    def missing(self, scan: OpenScan | str) -> list[int]:
        """Frames of an open scan (or scan id) neither merged nor listed as failed (total must be known)."""
        open_scan = self._open.get(scan) if isinstance(scan, str) else scan
        return open_scan.missing() if open_scan is not None else []

    # -- stage thread ---------------------------------------------------------------------------
    def _handle(self, job: object) -> None:
        self._handlers[type(job)](job)  # jobs are made only above: one handler for each type

    def _announced(self, job: ScanAnnounced) -> None:
        self._infos[job.info.scan] = job.info
        self.current_scan = job.info.scan

    def _finish(self, job: FinishScan) -> None:
        if job.scan in self._open:
            self._close(self._open[job.scan], reason="stopped by the operator")
        elif job.scan in self._pending:
            self._close_pending(self._pending[job.scan], reason="stopped by the operator")

    def _suspend_all(self, job: SuspendAll) -> None:
        for scan in self._open.values():
            scan.suspend()
        self._open.clear()
        for pending in self._pending.values():  # held in memory only: no file has an axis for them yet
            log.warning("scan %s: %d failed frame(s) held without a file are dropped at shutdown",
                        pending.scan, len(pending.failed_numbers()))  # fmt: skip
        for scan_id in self._no_write.scans():  # no file was ever created for them: nothing to resume
            log.warning("scan %s: never written (%s did not take writes); Reintegrate its acquisition",
                        scan_id, self.output_directory)  # fmt: skip

    def _resume(self, job: ResumeScans) -> None:
        """Continue the files a killed Merger left open, as their journals say (restart after kill -9)."""
        for scan in resume_open_scans(self.output_directory, self._on_error, self._resume_later):
            self._adopt(scan)

    def _resume_later(self, journal: Path, exc: NoSpaceError) -> None:
        """A file left open that cannot be rebuilt now for lack of room: it waits, as a full disk's
        scans do (its journal and row log stay)."""
        try:
            scan_id = JournalEntry.read(journal).scan
        except (OSError, ValueError, KeyError):
            scan_id = journal.name
        self._no_room.add(scan_id, exc, journal)
        self._on_error(f"{exc}; scan {scan_id} is rebuilt from its row log once there is room")

    def _adopt(self, scan: OpenScan) -> None:
        """Make ``scan`` open and the one being written (a new file, or one resumed)."""
        self._gaps.news(scan)
        self._open[scan.scan] = scan
        self.current_scan, self.last_output, self.settings_in_force = scan.scan, scan.path, scan.settings

    def _open_scan(self, batch: PatternBatch) -> OpenScan:
        scan = OpenScan.create(self.output_directory, batch, self._infos.get(batch.scan))
        self._adopt(scan)
        pending = self._pending.pop(batch.scan, None)
        if pending is not None:  # the failures that came before any pattern go in first
            self.counters.frames_failed += pending.replay(scan)
        return scan

    def _hold(self, batch: PatternBatch) -> None:
        """Failures before any pattern: no radial axis is known yet, so no file; hold them (the gap
        check watches the scan) and write a file of failures only once every frame has failed."""
        pending = self._pending.setdefault(batch.scan, PendingScan(batch.scan))
        pending.add(batch)
        self._gaps.news(pending)
        self.current_scan = batch.scan
        if pending.done:
            self._close_pending(pending)

    def _close_pending(self, pending: PendingScan, reason: str = "") -> None:
        """End a scan where nothing integrated: a published file listing every frame and its reason."""
        del self._pending[pending.scan]
        try:
            scan = pending.open_failed_only(self.output_directory, self._infos.get(pending.scan))
        except PipelineError as exc:
            self._on_error(str(exc))
            return
        self._adopt(scan)
        scan.gaps = pending.gaps  # what was asked already is said in the file
        self.counters.frames_failed += pending.replay(scan)
        self._close(scan, reason)

    def _merge(self, job: BatchArrived) -> None:
        batch = job.batch
        self.counters.frames_received += len(batch.frame_numbers) + sum(len(f.frame_numbers) for f in batch.failed)
        if batch.scan in self._no_room:  # its folder is full: these frames are asked again once it is back
            self._no_room.drop(batch.scan, len(batch.frame_numbers))
            return
        if batch.scan in self._no_write:  # its folder refuses writes: asked again once its file is open
            self._no_write.drop(batch.scan, len(batch.frame_numbers))
            return
        scan = self._open.get(batch.scan)
        if scan is None and batch.scan not in self._pending and self._closed.owns(batch):
            refused = self._closed.late(batch)  # a published scan is never reopened (README: restarts)
            if refused:
                self._on_error(refused)
            return
        if scan is None and not len(batch.frame_numbers):
            self._hold(batch)
            return
        try:
            if scan is None:
                scan = self._open_scan(batch)
            self._gaps.news(scan)
            merged, failed = scan.add(batch)
        except NoSpaceError as exc:
            self._set_aside(batch.scan, exc, batch)
            return
        except OutputError as exc:
            if scan is not None or not refuses_writes(exc):
                raise
            self._no_write.add(batch, str(exc))
            self._on_error(f"{exc}; scan {batch.scan} waits until {self.output_directory} takes writes, then "
                           "continues (missing frames are asked again)")  # fmt: skip
            return
        self.counters.frames_processed += merged
        self.counters.frames_failed += failed
        if merged:
            self.pressure.merged(scan.writer.h5, scan.settings.unit, batch)
        # latency as the operator feels it: part announced by the detector -> its patterns in the file
        self.counters.latency_s = max(0.0, time.time() - (batch.announced_at or job.sent_at))
        self.latency.record(self.current_scan, self.counters.latency_s)
        self._on_progress()
        if scan.done:
            self._close(scan)

    def _close(self, scan: OpenScan, reason: str = "") -> None:
        del self._open[scan.scan]
        try:
            self._write_pressure(scan)
            summary, failed = scan.close(reason)
        except NoSpaceError as exc:  # not even its end fits: it waits, and is closed once rebuilt
            self._open[scan.scan] = scan
            self._set_aside(scan.scan, exc)
            return
        self.counters.frames_failed += failed
        self.last_output = summary.path
        self._closed.remember(summary, set(scan.writer.frame_numbers.tolist()))
        log.info("scan %s closed: %s", scan.scan, summary)
        self._on_scan_closed(summary)

    def _write_pressure(self, scan: OpenScan) -> None:
        """``/processed/pressure`` into the closing file (NoSpaceError: it waits for room); any other
        failure is said, and the scan closes without it rather than not at all. Its room is taken
        before HDF5 writes (``reserve``) and an ENOSPC met anyway is a NoSpaceError (``writing``):
        a full disk here never leaves the file half written and the process to crash at its close."""
        try:
            self.pressure.write(scan.scan, scan.writer.h5, scan.writer.reserve, scan.writer.writing)
        except NoSpaceError:
            raise
        except Exception as exc:  # a fit or file problem must never keep a scan from closing
            log.exception("scan %s: pressure not written", scan.scan)
            self._on_error(f"scan {scan.scan}: no /processed/pressure in {scan.path} ({exc!r})")

    def _set_aside(self, scan_id: str, exc: NoSpaceError, batch: PatternBatch | None = None) -> None:
        """A full disk: suspend the scan's file (its row log holds every change that reached it) and
        wait for room. Never a second file for it, never a scan ended for it; its frames that arrive
        meanwhile are dropped and asked again by the gap check once it is back."""
        scan = self._open.pop(scan_id, None)
        journal = None
        if scan is not None:
            scan.suspend()
            journal = journal_path(scan.path)
        self._no_room.add(scan_id, exc, journal, batch if journal is None else None)
        self._on_error(f"{exc}; scan {scan_id} waits for room, then continues (missing frames are asked again)")

    def _bring_back(self) -> None:
        """Scans set aside for a full disk whose folder has room again: rebuilt from their row logs
        (or opened by their first batch); the gap check then asks for what they dropped meanwhile."""
        for entry in self._no_room.ready():
            try:
                if entry.journal is not None:
                    scan = OpenScan.resume(entry.journal)
                    self._adopt(scan)
                else:
                    scan = self._open_scan(entry.first_batch)
                    self.counters.frames_processed += scan.add(entry.first_batch)[0]
            except NoSpaceError as exc:  # still too little: it waits on (with what it waited with)
                if entry.scan in self._open:
                    self._set_aside(entry.scan, exc)
                else:
                    self._no_room.add(entry.scan, exc)
                continue
            except RESUME_ERRORS as exc:
                self._no_room.pop(entry.scan)
                self._on_error(f"scan {entry.scan} cannot continue after the full disk ({exc})")
                continue
            self._no_room.pop(entry.scan)
            log.warning("scan %s continues in %s (room is back; %d frame(s) dropped meanwhile are asked again)",
                        entry.scan, scan.path, entry.dropped)  # fmt: skip
            if scan.done:
                self._close(scan)

    def _open_writable(self) -> None:
        """Scans that waited for their folder to take writes: opened by their first batch now that it
        does (the gap check then asks for what they dropped); one refused again waits on, unsaid."""
        for entry in self._no_write.ready():
            try:
                scan = self._open_scan(entry.first_batch)
            except OutputError as exc:
                if refuses_writes(exc):
                    self._no_write.add(entry.first_batch, entry.error).dropped = entry.dropped
                else:
                    self._on_error(f"scan {entry.scan} cannot continue once its folder took writes ({exc})")
                continue
            self.counters.frames_processed += scan.add(entry.first_batch)[0]
            log.warning("scan %s continues in %s (its folder takes writes again; %d frame(s) dropped meanwhile "
                        "are asked again)", entry.scan, scan.path, entry.dropped)  # fmt: skip
            if scan.done:
                self._close(scan)

    def _check_gaps(self) -> None:
        """Idle time of the stage's thread: the gap check (ask again for missing frames, then time out)."""
        self._bring_back()
        self._open_writable()
        watched: list[OpenScan | PendingScan] = [*self._open.values(), *self._pending.values()]
        for scan, reason in self._gaps.check(watched):
            if isinstance(scan, PendingScan):
                self._close_pending(scan, reason)
            else:
                self._close(scan, reason=reason)
