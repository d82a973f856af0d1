"""One scan being merged: its file, its journal and the accounting of its frames.

A scan is done when every frame of the acquisition is merged or listed as failed; each frame is
counted once however often it arrives (a requeued item, a late twin). Batches integrated with other
settings than the file's are listed as failed with the reason, never mixed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..formats.nexus import MergedFileWriter
from ..formats.nexus_layout import record_engine
from ..messages import FailedFrames, PatternBatch, ScanInfo
from ..output import reserve_output
from ..processing.integrate import IntegrationSettings
from . import merge_journal
from .merge_gaps import GapState
from .merge_journal import JournalEntry

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
class OpenScan:
    """A scan whose file is open. Runs on the merge stage's thread only."""

    scan: str
    writer: MergedFileWriter
    settings_hash: str
    settings: IntegrationSettings
    total_frames: int | None = None
    raw_file: str = ""
    failed_numbers: set[int] = field(default_factory=set)
    gaps: GapState = field(default_factory=GapState)

    @classmethod
    def create(cls, directory: Path, batch: PatternBatch, info: ScanInfo | None) -> OpenScan:
        """Open the scan's file at its first batch with patterns (its radial axis and settings)."""
        stem = info.stem if info else batch.scan.split("#", 1)[0]
        settings = IntegrationSettings.from_dict(batch.settings)
        path = reserve_output(directory / f"{stem}.nxs")
        writer = MergedFileWriter(path, batch.radial, settings, [], [], stem)
        if batch.engine:
            record_engine(writer.h5, batch.engine, batch.engine_note)
        JournalEntry(batch.scan, batch.settings, batch.settings_hash, batch.total_frames, batch.raw_file).write(path)
        log.info("scan %s: writing %s", batch.scan, path)
        return cls(batch.scan, writer, batch.settings_hash, settings, total_frames=batch.total_frames)

    @classmethod
    def resume(cls, journal: Path) -> OpenScan:
        """Continue the file a killed Merger left open, as its journal says (PipelineError, OSError,
        ValueError or KeyError when it cannot be)."""
        entry = JournalEntry.read(journal)
        path = journal.with_suffix("")
        settings = IntegrationSettings.from_dict(entry.settings)
        writer = MergedFileWriter.reopen(path, settings)
        scan = cls(entry.scan, writer, entry.settings_hash, settings, entry.total_frames, entry.raw_file)
        for f in writer.failures:
            scan.failed_numbers |= set(f.frame_numbers)
        log.warning("resumed scan %s in %s: %d frames already merged", entry.scan, path, writer.n_frames)
        return scan

    @property
    def path(self) -> Path:
        return self.writer.path

    def add(self, batch: PatternBatch) -> tuple[int, int]:
        """Merge one batch of this scan; returns (frames merged, frames newly listed as failed)."""
        if batch.total_frames and not self.total_frames:
            self.total_frames = batch.total_frames
        if batch.raw_file:
            self.writer.set_raw_file(batch.part, batch.raw_file, batch.module_files)
            self.raw_file = batch.raw_file
        merged = failed = 0
        if len(batch.frame_numbers) and batch.settings_hash != self.settings_hash:
            reason = (
                f"integrated by {batch.integrator} with other settings ({batch.settings_hash}) than this "
                f"file's ({self.settings_hash}): not merged"
            )
            numbers = [int(v) for v in batch.frame_numbers]
            failed += self.add_failure(FailedFrames(batch.raw_file or batch.item_id, reason, numbers))
        elif len(batch.frame_numbers):
            fidx = np.full(len(batch.frame_numbers), batch.part, np.int64)
            merged = self.writer.add(batch.frame_numbers, batch.intensities, batch.sigma, fidx, batch.index_in_file)
        for f in batch.failed:
            failed += self.add_failure(FailedFrames(f.file, f.reason, list(f.frame_numbers)))
        return merged, failed

    def add_failure(self, failure: FailedFrames) -> int:
        """List frames as failed in the file; returns how many were neither merged nor listed before."""
        new = set(failure.frame_numbers) - self.failed_numbers - set(self.writer.frame_numbers.tolist())
        self.failed_numbers |= set(failure.frame_numbers)
        self.writer.add_failure(failure)
        return len(new)

    def accounted(self) -> int:
        """Frames of the scan that are merged or listed as failed (each counted once)."""
        if not self.failed_numbers:
            return self.writer.n_frames
        return self.writer.n_frames + len(self.failed_numbers - set(self.writer.frame_numbers.tolist()))

    @property
    def done(self) -> bool:
        """Every frame of the acquisition is merged or listed as failed (the total must be known)."""
        return bool(self.total_frames) and self.accounted() >= (self.total_frames or 0)

    def missing(self) -> list[int]:
        """Frame numbers of the acquisition neither merged nor listed as failed (total must be known)."""
        if not self.total_frames:
            return []
        have = set(self.writer.frame_numbers.tolist()) | self.failed_numbers
        return sorted(set(range(1, self.total_frames + 1)) - have)

    def close(self, reason: str = "") -> tuple[ScanSummary, int]:
        """Finish the file under its final name, listing what never arrived as failed; returns the
        summary and how many frames were newly listed as failed."""
        missing = self.missing()
        failed = 0
        if missing:
            asked = f", asked again {self.gaps.requests} time(s)" if self.gaps.requests else ""
            failed = self.add_failure(FailedFrames("", f"never arrived ({reason or 'scan timed out'}{asked})", missing))
        reserved = self.writer.path  # the journal is named after the reserved name, which close() may not get
        self.writer.close()
        merge_journal.remove(reserved)
        w = self.writer
        summary = ScanSummary(
            self.scan,
            w.path,
            w.n_frames,
            len(self.failed_numbers),
            w.duplicates_ignored,
            complete=not w.failures,
            settings=self.settings,
        )
        return summary, failed

    def suspend(self) -> None:
        """Leave the file as a part, with its journal, for the next start to resume."""
        self.writer.suspend()
        log.warning("scan %s suspended in %s; the next start resumes it", self.scan, self.writer.file_path)


#: What :meth:`OpenScan.resume` raises for a file or journal that cannot be continued.
RESUME_ERRORS = (OSError, ValueError, KeyError, PipelineError)


def resume_open_scans(directory: Path, on_error: Callable[[str], None]) -> list[OpenScan]:
    """Every scan whose file a killed (or stopped) Merger left open in ``directory``, continued.

    A file that cannot be continued is left as it was (never overwritten) and its journal set aside:
    its scan goes on in a new file, and the gap check asks again for the frames it held.
    """
    scans = []
    for journal in merge_journal.journals(directory):
        try:
            scans.append(OpenScan.resume(journal))
        except RESUME_ERRORS as exc:
            merge_journal.set_aside(journal)
            on_error(
                f"cannot resume {journal.with_suffix('')} ({exc}); its scan continues in a new file and "
                "missing frames are requested again"
            )
    return scans
