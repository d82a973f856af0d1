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
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PipelineError
from .integrate import IntegrationSettings
from .messages import PatternBatch, ScanInfo
from .nexus import MergedFileWriter
from .output import reserve_output
from .sources import FailedInput
from .worker import Worker

log = logging.getLogger(__name__)


@dataclass
class ScanSummary:
    scan: str
    path: Path
    frames_merged: int
    frames_failed: int
    duplicates_ignored: int
    complete: bool
    settings: IntegrationSettings | None = None


@dataclass
class _OpenScan:
    info: ScanInfo | None
    writer: MergedFileWriter
    settings_hash: str
    settings: IntegrationSettings
    failed_numbers: set[int] = field(default_factory=set)
    total_frames: int | None = None
    last_news: float = field(default_factory=time.monotonic)
    last_request: float = 0.0
    requests: int = 0
    raw_file: str = ""


@dataclass
class MergeCounters:
    frames_received: int = 0
    frames_processed: int = 0
    frames_failed: int = 0
    latency_s: float = 0.0  # part announced -> its patterns merged, of the last batch


class MergeStage:
    def __init__(
        self,
        output_directory: Path,
        on_scan_closed: Callable[[ScanSummary], None],
        on_error: Callable[[str], None],
        on_progress: Callable[[], None] | None = None,
        scan_timeout_s: float = 120.0,
        request_missing: Callable[[str, list[int], str], None] | None = None,
        gap_check_s: float = 10.0,
        max_requests: int = 3,
    ):
        self.output_directory = Path(output_directory)
        self._on_scan_closed = on_scan_closed
        self._on_error = on_error
        self._on_progress = on_progress or (lambda: None)
        self.scan_timeout_s = scan_timeout_s
        #: Before giving up on missing frames, ask upstream for them again (events are hints).
        self._request_missing = request_missing
        self.gap_check_s = gap_check_s
        self.max_requests = max_requests
        self._infos: dict[str, ScanInfo] = {}
        self._open: dict[str, _OpenScan] = {}
        self._pending_failures: dict[str, list] = {}
        self._closed_frames: dict[str, set[int]] = {}
        self.closed: dict[str, ScanSummary] = {}
        self.counters = MergeCounters()
        self.current_scan = ""
        self.last_output: Path | None = None
        self.settings_in_force: IntegrationSettings | None = None
        self._worker = Worker("xrd-merge", self._handle, on_error, idle=self._check_timeouts, idle_interval_s=1.0)
        self._worker.submit(("resume", None, 0.0))

    # -- inputs (any thread) --------------------------------------------------------------------
    def scan_started(self, info: ScanInfo) -> None:
        self._worker.submit(("scan", info, time.time()))

    def add_batch(self, batch: PatternBatch, sent_at: float | None = None) -> None:
        self._worker.submit(("batch", batch, sent_at or time.time()))

    def finish(self, scan: str) -> None:
        """Close a scan now (operator's Stop): what is missing is listed as failed."""
        self._worker.submit(("finish", scan, 0.0))

    @property
    def queue_depth(self) -> int:
        return self._worker.depth

    def stop(self) -> None:
        """Shut down (server stop or restart): open files are suspended, not finished, so the next
        start resumes them from their journals; only completion, timeout or ``finish`` closes a scan."""
        self._worker.submit(("suspend_all", None, 0.0))
        self._worker.stop()

    # -- stage thread ---------------------------------------------------------------------------
    def _handle(self, job) -> None:
        kind, payload, t = job
        if kind == "scan":
            self._infos[payload.scan] = payload
            self.current_scan = payload.scan
        elif kind == "batch":
            self._merge(payload, t)
        elif kind == "finish":
            if payload in self._open:
                self._close(payload, reason="stopped by the operator")
        elif kind == "resume":
            self._resume()
        elif kind == "suspend_all":
            for scan_id, scan in list(self._open.items()):
                scan.writer.suspend()
                log.warning("scan %s suspended in %s; the next start resumes it", scan_id, scan.writer.file_path)
            self._open.clear()

    def _resume(self) -> None:
        """Continue the files a killed Merger left open, as their journals say (restart after kill -9)."""
        for journal in sorted(self.output_directory.glob("*.nxs.journal")):
            path = journal.with_suffix("")
            try:
                entry = json.loads(journal.read_text())
                settings = IntegrationSettings.from_dict(entry["settings"])
                writer = MergedFileWriter.reopen(path, settings)
            except (OSError, ValueError, KeyError, PipelineError) as exc:
                journal.rename(journal.with_name(journal.name + ".broken"))
                self._on_error(
                    f"cannot resume {path} ({exc}); its scan continues in a new file and missing "
                    "frames are requested again"
                )
                continue
            scan = _OpenScan(
                None,
                writer,
                entry["settings_hash"],
                settings,
                total_frames=entry.get("total_frames"),
                raw_file=entry.get("raw_file", ""),
            )
            for f in writer.failures:
                scan.failed_numbers |= set(f.frame_numbers)
            self._open[entry["scan"]] = scan
            self.current_scan, self.last_output, self.settings_in_force = entry["scan"], path, settings
            log.warning("resumed scan %s in %s: %d frames already merged", entry["scan"], path, writer.n_frames)

    def _open_scan(self, batch: PatternBatch) -> _OpenScan:
        info = self._infos.get(batch.scan)
        stem = info.stem if info else batch.scan.split("#", 1)[0]
        settings = IntegrationSettings.from_dict(batch.settings)
        path = reserve_output(self.output_directory / f"{stem}.nxs")
        writer = MergedFileWriter(path, batch.radial, settings, [], [], stem)
        scan = _OpenScan(info, writer, batch.settings_hash, settings, total_frames=batch.total_frames)
        _write_journal(
            path,
            {
                "scan": batch.scan,
                "settings": batch.settings,
                "settings_hash": batch.settings_hash,
                "total_frames": batch.total_frames,
                "raw_file": batch.raw_file,
            },
        )
        self._open[batch.scan] = scan
        self.current_scan = batch.scan
        self.last_output = path
        self.settings_in_force = settings
        log.info("scan %s: writing %s", batch.scan, path)
        return scan

    def _merge(self, batch: PatternBatch, sent_at: float) -> None:
        n_in = len(batch.frame_numbers) + sum(len(f.frame_numbers) for f in batch.failed)
        self.counters.frames_received += n_in
        if batch.scan in self.closed:
            if set(batch.frame_numbers.tolist()) <= self._closed_frames.get(batch.scan, set()):
                # a late twin (an item handed out again after a lease ran out): already in the file
                log.info("late duplicate %s of closed scan %s ignored", batch.item_id, batch.scan)
            else:
                self._on_error(f"batch {batch.item_id} came after scan {batch.scan} was closed: not merged")
            return
        scan = self._open.get(batch.scan)
        if scan is None:
            if not batch.settings:
                # Failures before any pattern: no radial axis is known yet, so no file; keep them for it.
                self._pending_failures.setdefault(batch.scan, []).extend(batch.failed)
                return
            scan = self._open_scan(batch)
            for f in self._pending_failures.pop(batch.scan, []):
                self._add_failure(scan, FailedInput(f.file, f.reason, list(f.frame_numbers)))
        scan.last_news = time.monotonic()
        if batch.total_frames and not scan.total_frames:
            scan.total_frames = batch.total_frames
        w = scan.writer
        if batch.raw_file:
            w.set_raw_file(batch.part, batch.raw_file, batch.module_files)
            scan.raw_file = batch.raw_file
        if len(batch.frame_numbers) and batch.settings_hash != scan.settings_hash:
            reason = (
                f"integrated by {batch.integrator} with other settings ({batch.settings_hash}) than this "
                f"file's ({scan.settings_hash}): not merged"
            )
            self._add_failure(
                scan, FailedInput(batch.raw_file or batch.item_id, reason, [int(v) for v in batch.frame_numbers])
            )
        elif len(batch.frame_numbers):
            fidx = [batch.part] * len(batch.frame_numbers)
            added = w.add(batch.frame_numbers, batch.intensities, batch.sigma, fidx, batch.index_in_file)
            self.counters.frames_processed += added
        for f in batch.failed:
            self._add_failure(scan, FailedInput(f.file, f.reason, list(f.frame_numbers)))
        # latency as the operator feels it: part announced by the detector -> its patterns in the file
        self.counters.latency_s = max(0.0, time.time() - (batch.announced_at or sent_at))
        self._on_progress()
        if scan.total_frames and self._accounted(scan) >= scan.total_frames:
            self._close(batch.scan)

    def _add_failure(self, scan: _OpenScan, failure: FailedInput) -> None:
        new = set(failure.frame_numbers) - scan.failed_numbers - set(scan.writer.frame_numbers.tolist())
        scan.failed_numbers |= set(failure.frame_numbers)
        self.counters.frames_failed += len(new)
        scan.writer.add_failure(failure)

    @staticmethod
    def _accounted(scan: _OpenScan) -> int:
        """Frames of the scan that are merged or listed as failed (each counted once)."""
        if not scan.failed_numbers:
            return scan.writer.n_frames
        return scan.writer.n_frames + len(scan.failed_numbers - set(scan.writer.frame_numbers.tolist()))

    def _close(self, scan_id: str, reason: str = "") -> None:
        scan = self._open.pop(scan_id)
        w = scan.writer
        missing = self.missing(scan)
        if missing:
            asked = f", asked again {scan.requests} time(s)" if scan.requests else ""
            self._add_failure(scan, FailedInput("", f"never arrived ({reason or 'scan timed out'}{asked})", missing))
        journal = journal_path(w.path)  # named after the reserved name, which close() may not get
        w.close()
        journal.unlink(missing_ok=True)
        self.last_output = w.path
        summary = ScanSummary(
            scan_id,
            w.path,
            w.n_frames,
            len(scan.failed_numbers),
            w.duplicates_ignored,
            complete=not w.failures,
            settings=scan.settings,
        )
        self.closed[scan_id] = summary
        self._closed_frames[scan_id] = set(w.frame_numbers.tolist())
        while len(self._closed_frames) > 20:  # enough to recognise late twins; bounded memory
            self._closed_frames.pop(next(iter(self._closed_frames)))
        log.info("scan %s closed: %s", scan_id, summary)
        self._on_scan_closed(summary)

    def missing(self, scan: _OpenScan) -> list[int]:
        """Frame numbers of the acquisition neither merged nor listed as failed (total must be known)."""
        if not scan.total_frames:
            return []
        have = set(scan.writer.frame_numbers.tolist()) | scan.failed_numbers
        return sorted(set(range(1, scan.total_frames + 1)) - have)

    def _check_timeouts(self) -> None:
        """Gap check: a quiet scan with missing frames asks for them again, then gives up and lists them."""
        now = time.monotonic()
        for scan_id, scan in list(self._open.items()):
            idle = now - scan.last_news
            if (
                self._request_missing
                and scan.requests < self.max_requests
                and idle > self.gap_check_s
                and now - scan.last_request > self.gap_check_s
            ):
                gaps = self.missing(scan)
                if gaps:
                    scan.requests += 1
                    scan.last_request = now
                    log.warning(
                        "scan %s: %d frame(s) missing after %.0f s quiet; asking again (%d/%d)",
                        scan_id,
                        len(gaps),
                        idle,
                        scan.requests,
                        self.max_requests,
                    )
                    self._request_missing(scan_id, gaps, scan.raw_file)
                    continue
            if idle > self.scan_timeout_s:
                self._close(scan_id, reason=f"no news for {self.scan_timeout_s:.0f} s")


def journal_path(path: Path) -> Path:
    """The journal beside a result file: which scan and settings it holds, while it is open.

    ``path`` is the final name (``X.nxs`` -> ``X.nxs.journal``); the bytes are at ``X.nxs.part``.
    """
    return path.with_name(path.name + ".journal")


def _write_journal(path: Path, entry: dict) -> None:
    tmp = journal_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, journal_path(path))
