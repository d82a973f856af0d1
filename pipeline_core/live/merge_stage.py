"""The merging stage of the live pipeline, without Tango.

Pattern batches from any number of Integrators arrive in any order; each scan gets one merged file
(:class:`nexus.MergedFileWriter`, never overwriting: a reintegration becomes ``<stem>_v001.nxs``),
opened at its first batch and closed when every frame of the acquisition is merged or listed as
failed — or, when the total is unknown or frames never come, after ``scan_timeout_s`` without news,
with the missing frame numbers listed as failed. Batches integrated with other settings than the
file's are refused (listed as failed with the reason), never mixed in.

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

from ..messages import FailedFrames, PatternBatch, ScanInfo
from ..processing.integrate import IntegrationSettings
from .merge_closed import ClosedScans
from .merge_gaps import (
    DEFAULT_GAP_CHECK_S,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_SCAN_TIMEOUT_S,
    GapCheck,
    GapPolicy,
    RequestMissing,
)
from .merge_journal import journal_path
from .merge_latency import LatencyWindow
from .merge_scan import OpenScan, ScanSummary, resume_open_scans
from .worker import ThreadContext, Worker

log = logging.getLogger(__name__)

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
    ):
        self.output_directory = Path(output_directory)
        self._on_scan_closed = on_scan_closed
        self._on_error = on_error
        self._on_progress = on_progress or (lambda: None)
        #: before giving up on missing frames, ask upstream for them again (events are hints)
        self.gap_policy = GapPolicy(scan_timeout_s, gap_check_s, max_requests)
        self._gaps = GapCheck(self.gap_policy, request_missing, time.monotonic)
        self._infos: dict[str, ScanInfo] = {}
        self._open: dict[str, OpenScan] = {}
        self._pending_failures: dict[str, list[FailedFrames]] = {}
        self._closed = ClosedScans()
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

    def stop(self) -> None:
        """Shut down (server stop or restart): open files are suspended, not finished, so the next
        start resumes them from their journals; only completion, timeout or ``finish`` closes a scan."""
        self._worker.submit(SuspendAll())
        self._worker.stop()

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

    def _suspend_all(self, job: SuspendAll) -> None:
        for scan in self._open.values():
            scan.suspend()
        self._open.clear()

    def _resume(self, job: ResumeScans) -> None:
        """Continue the files a killed Merger left open, as their journals say (restart after kill -9)."""
        for scan in resume_open_scans(self.output_directory, self._on_error):
            self._adopt(scan)

    def _adopt(self, scan: OpenScan) -> None:
        """Make ``scan`` open and the one being written (a new file, or one resumed)."""
        self._gaps.news(scan)
        self._open[scan.scan] = scan
        self.current_scan, self.last_output, self.settings_in_force = scan.scan, scan.path, scan.settings

    def _open_scan(self, batch: PatternBatch) -> OpenScan:
        scan = OpenScan.create(self.output_directory, batch, self._infos.get(batch.scan))
        self._adopt(scan)
        for failure in self._pending_failures.pop(batch.scan, []):
            self.counters.frames_failed += scan.add_failure(failure)
        return scan

    def _merge(self, job: BatchArrived) -> None:
        batch = job.batch
        self.counters.frames_received += len(batch.frame_numbers) + sum(len(f.frame_numbers) for f in batch.failed)
        if batch.scan in self._closed:
            refused = self._closed.late(batch)
            if refused:
                self._on_error(refused)
            return
        scan = self._open.get(batch.scan)
        if scan is None:
            if not batch.settings:
                # Failures before any pattern: no radial axis is known yet, so no file; keep them for it.
                pending = self._pending_failures.setdefault(batch.scan, [])
                pending.extend(FailedFrames(f.file, f.reason, list(f.frame_numbers)) for f in batch.failed)
                return
            scan = self._open_scan(batch)
        self._gaps.news(scan)
        merged, failed = scan.add(batch)
        self.counters.frames_processed += merged
        self.counters.frames_failed += failed
        # latency as the operator feels it: part announced by the detector -> its patterns in the file
        self.counters.latency_s = max(0.0, time.time() - (batch.announced_at or job.sent_at))
        self.latency.record(self.current_scan, self.counters.latency_s)
        self._on_progress()
        if scan.done:
            self._close(scan)

    def _close(self, scan: OpenScan, reason: str = "") -> None:
        del self._open[scan.scan]
        summary, failed = scan.close(reason)
        self.counters.frames_failed += failed
        self.last_output = summary.path
        self._closed.remember(summary, set(scan.writer.frame_numbers.tolist()))
        log.info("scan %s closed: %s", scan.scan, summary)
        self._on_scan_closed(summary)

    def _check_gaps(self) -> None:
        """Idle time of the stage's thread: the gap check (ask again for missing frames, then time out)."""
        for scan, reason in self._gaps.check(list(self._open.values())):
            self._close(scan, reason=reason)
