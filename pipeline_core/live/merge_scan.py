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
from ..output import part_path, reserve_output
from ..processing.integrate import IntegrationSettings
from . import merge_journal, merge_log
from .merge_gaps import GapState
from .merge_journal import JournalEntry
from .merge_log import LogError, Record, RowLog

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
    """A scan whose file is open. Runs on the merge stage's thread only.

    Every change goes to the row log first (:mod:`merge_log`), then to the file: a Merger killed
    at any moment leaves a log from which :meth:`resume` rebuilds the file."""

    scan: str
    writer: MergedFileWriter
    settings_hash: str
    settings: IntegrationSettings
    total_frames: int | None = None
    raw_file: str = ""
    failed_numbers: set[int] = field(default_factory=set)
    gaps: GapState = field(default_factory=GapState)
    rowlog: RowLog | None = None

    @classmethod
    def create(cls, directory: Path, batch: PatternBatch, info: ScanInfo | None) -> OpenScan:
        """Open the scan's file at its first batch with patterns (its radial axis and settings)."""
        stem = info.stem if info else batch.scan.split("#", 1)[0]
        settings = IntegrationSettings.from_dict(batch.settings)
        path = reserve_output(directory / f"{stem}.nxs")
        rowlog = RowLog.create(path, batch.radial, stem, batch.engine, batch.engine_note)
        writer = MergedFileWriter(path, batch.radial, settings, [], [], stem)
        if batch.engine:
            record_engine(writer.h5, batch.engine, batch.engine_note)
        JournalEntry(batch.scan, batch.settings, batch.settings_hash, batch.total_frames, batch.raw_file).write(path)
        log.info("scan %s: writing %s", batch.scan, path)
        return cls(batch.scan, writer, batch.settings_hash, settings, total_frames=batch.total_frames, rowlog=rowlog)

    @classmethod
    def resume(cls, journal: Path) -> OpenScan:
        """Continue the scan a killed (or stopped) Merger left open, as its journal says: the file is
        rebuilt from its row log, never continued from the HDF5 bytes a kill may have left half
        written (PipelineError, OSError, ValueError or KeyError when it cannot be)."""
        entry = JournalEntry.read(journal)
        path = journal.with_suffix("")
        if not part_path(path).exists():  # published before its journal was removed, or removed by hand
            raise LogError(f"{part_path(path)} is not there to continue")
        settings = IntegrationSettings.from_dict(entry.settings)
        rowlog, records = RowLog.resume(path)
        try:
            opened = records[0]
            writer = MergedFileWriter(path, opened.arrays["radial"], settings, [], [], opened.fields["source"])
            if opened.fields["engine"]:
                record_engine(writer.h5, opened.fields["engine"], opened.fields["engine_note"])
            scan = cls(entry.scan, writer, entry.settings_hash, settings, entry.total_frames, entry.raw_file)
            for record in records[1:]:
                scan._apply(record)
        except BaseException:
            rowlog.close()
            raise
        scan.rowlog = rowlog
        scan.writer.h5.flush()
        log.warning(
            "resumed scan %s in %s: rebuilt from %d logged change(s), %d frames already merged",
            entry.scan, path, len(records), writer.n_frames,
        )  # fmt: skip
        return scan

    def _log(self, record: Record) -> Record:
        if self.rowlog is not None:
            self.rowlog.append(record)
        return record

    def _apply(self, record: Record) -> int:
        """Make one logged change to the file (live, and again when a resume replays the log)."""
        f, a = record.fields, record.arrays
        if record.kind == "rows":
            return self.writer.add(a["numbers"], a["data"], a.get("sigma"), a["file_index"], a["index_in_file"])
        if record.kind == "raw_file":
            self.writer.set_raw_file(f["index"], f["path"], f["module_files"])
            self.raw_file = f["path"]
            return 0
        if record.kind == "failure":
            failure = FailedFrames(f["file"], f["reason"], [int(v) for v in a["frame_numbers"]])
            new = set(failure.frame_numbers) - self.failed_numbers - set(self.writer.frame_numbers.tolist())
            self.failed_numbers |= set(failure.frame_numbers)
            self.writer.add_failure(failure)
            return len(new)
        raise LogError(f"row log of {self.path}: unexpected record {record.kind!r}")

    @property
    def path(self) -> Path:
        return self.writer.path

    def add(self, batch: PatternBatch) -> tuple[int, int]:
        """Merge one batch of this scan; returns (frames merged, frames newly listed as failed)."""
        if batch.total_frames and not self.total_frames:
            self.total_frames = batch.total_frames
        if batch.raw_file:
            fields = {"index": batch.part, "path": batch.raw_file, "module_files": list(batch.module_files)}
            self._apply(self._log(Record("raw_file", fields)))
        merged = failed = 0
        if len(batch.frame_numbers) and batch.settings_hash != self.settings_hash:
            reason = (
                f"integrated by {batch.integrator} with other settings ({batch.settings_hash}) than this "
                f"file's ({self.settings_hash}): not merged"
            )
            numbers = [int(v) for v in batch.frame_numbers]
            failed += self.add_failure(FailedFrames(batch.raw_file or batch.item_id, reason, numbers))
        elif len(batch.frame_numbers):
            n = len(batch.frame_numbers)
            arrays: dict[str, np.ndarray] = {
                "numbers": np.asarray(batch.frame_numbers, np.int64),
                "data": np.asarray(batch.intensities, np.float32),
                "file_index": np.full(n, batch.part, np.int64),
                "index_in_file": np.asarray(batch.index_in_file, np.int64),
            }
            if batch.sigma is not None:
                arrays["sigma"] = np.asarray(batch.sigma, np.float32)
            merged = self._apply(self._log(Record("rows", arrays=arrays)))
        for f in batch.failed:
            failed += self.add_failure(FailedFrames(f.file, f.reason, list(f.frame_numbers)))
        return merged, failed

    def add_failure(self, failure: FailedFrames) -> int:
        """List frames as failed in the file; returns how many were neither merged nor listed before."""
        fields = {"file": failure.file, "reason": failure.reason}
        numbers = np.asarray(failure.frame_numbers, np.int64)
        return self._apply(self._log(Record("failure", fields, {"frame_numbers": numbers})))

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
        if self.rowlog is not None:
            self.rowlog.remove()
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
        if self.rowlog is not None:
            self.rowlog.close()
        log.warning("scan %s suspended in %s; the next start resumes it", self.scan, self.writer.file_path)


#: What :meth:`OpenScan.resume` raises for a file or journal that cannot be continued.
RESUME_ERRORS = (OSError, ValueError, KeyError, PipelineError)  # LogError is a PipelineError


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
            merge_log.set_aside(journal.with_suffix(""))
            on_error(
                f"cannot resume {journal.with_suffix('')} ({exc}); its scan continues in a new file and "
                "missing frames are requested again"
            )
    return scans
