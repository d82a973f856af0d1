"""One scan being merged: its file, its journal and the accounting of its frames.

A scan is done when every frame of the acquisition is merged or listed as failed; each frame is
counted once however often it arrives (a requeued item, a late twin). Batches integrated with other
settings than the file's, on another radial axis, or from another file than the one this file
recorded for their part, are listed as failed with the reason, never mixed in; so are frame numbers
outside the acquisition's ``1..N`` (:mod:`merge_accounting`). A file whose frame count was never
announced, or announced twice differently, cannot vouch for its frames: it says so in its failures,
so it never says ``complete``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NoSpaceError, OutputError, PipelineError
from ..formats import hdf5_room
from ..formats.lambda_files import parse_lambda_name
from ..formats.nexus import MergedFileWriter
from ..formats.nexus_layout import record_engine
from ..formats.nexus_modules import off_note, record_modules
from ..messages import FailedFrames, PatternBatch, ScanInfo
from ..output import part_path, reserve_output
from ..paths import check_file_name
from ..processing.integrate import IntegrationSettings
from ..processing.units import UNITS
from . import merge_accounting, merge_journal, merge_log
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
    #: latest announcement (Stitcher's clock) of a batch in the file: what a later batch is told apart by
    last_announced: float = 0.0
    #: the acquisition's frame count the file was closed with (None: never announced)
    total_frames: int | None = None


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
    #: the detector modules whose files made the rows, and those switched off (``process/modules``)
    modules_on: set[int] = field(default_factory=set)
    modules_off: set[int] = field(default_factory=set)
    #: latest ``announced_at`` of the batches in the file (the Stitcher's clock): a batch of this scan
    #: announced later is a new processing of it, one announced earlier a late or re-delivered one
    last_announced: float = 0.0
    #: every frame count announced for the acquisition (``total_frames`` is the largest); each new
    #: one is logged (a ``total`` record) before it is used, so a resume knows it
    totals: merge_accounting.Totals = field(default_factory=merge_accounting.Totals)
    _file_axis: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.totals.learn(self.total_frames)  # the journal's (the first batch's), known at open

    @classmethod
    def create(
        cls, directory: Path, batch: PatternBatch, info: ScanInfo | None, radial: np.ndarray | None = None
    ) -> OpenScan:
        """Open the scan's file at its first batch with patterns (its radial axis and settings); with
        ``radial``, the file of a scan where nothing integrated (no pattern gave an axis).

        The file is created in ``directory`` itself: its stem must be one file name (ConfigError
        otherwise), and no name is followed through a symbolic link (OutputError)."""
        check_file_name(batch.scan, "scan name")
        stem = check_file_name(info.stem if info else batch.scan.split("#", 1)[0], f"stem of scan {batch.scan!r}")
        settings = IntegrationSettings.from_dict(batch.settings)
        axis = batch.radial if radial is None else radial
        path = reserve_output(Path(directory) / f"{stem}.nxs")
        rowlog = None
        try:
            rowlog = RowLog.create(path, axis, stem, batch.engine, batch.engine_note)
            entry = JournalEntry(batch.scan, batch.settings, batch.settings_hash, batch.total_frames, batch.raw_file)
            entry.write(path)
            writer = MergedFileWriter(path, axis, settings, [], [], stem)
        except OSError as exc:  # e.g. a symbolic link planted at the row log's or journal's name: refused
            _abandon(path, rowlog)
            raise OutputError(f"scan {batch.scan}: cannot create {path} and its row log and journal ({exc})") from exc
        except BaseException:
            _abandon(path, rowlog)
            raise
        if batch.engine:
            record_engine(writer.h5, batch.engine, batch.engine_note)
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
        hdf5_room.let_go(part_path(path))  # a handle of this process that met a full disk holds it open
        writer: MergedFileWriter | None = None
        try:
            opened = records[0]
            writer = MergedFileWriter(path, opened.arrays["radial"], settings, [], [], opened.fields["source"])
            if opened.fields["engine"]:
                record_engine(writer.h5, opened.fields["engine"], opened.fields["engine_note"])
            scan = cls(entry.scan, writer, entry.settings_hash, settings, entry.total_frames, entry.raw_file)
            for record in records[1:]:
                scan._apply(record)
            with writer.writing("the rebuilt file"):
                writer.h5.flush()
        except BaseException:
            rowlog.close()
            if writer is not None:  # a rebuild cut short (no space): closed, or held if HDF5 met ENOSPC
                writer.discard()
            raise
        scan.rowlog = rowlog
        log.warning(
            "resumed scan %s in %s: rebuilt from %d logged change(s), %d frames already merged",
            entry.scan, path, len(records), writer.n_frames,
        )  # fmt: skip
        return scan

    def _log(self, record: Record) -> Record:
        if self.rowlog is not None:  # room for the record and its change to the file, or NoSpaceError
            self.rowlog.append(record, then=merge_log.file_bytes(record, self.writer))
        return record

    def _apply(self, record: Record) -> int:
        """Make one logged change to the file (live, and again when a resume replays the log)."""
        f, a = record.fields, record.arrays
        self.last_announced = max(self.last_announced, float(f.get("announced_at", 0.0)))
        if record.kind == "rows":
            return self.writer.add(a["numbers"], a["data"], a.get("sigma"), a["file_index"], a["index_in_file"])
        if record.kind == "raw_file":
            self.writer.set_raw_file(f["index"], f["path"], f["module_files"])
            self.raw_file = f["path"]
            self._note_modules(f["module_files"], f.get("modules_off", []))
            return 0
        if record.kind == "total":
            self.totals.learn(int(f["total_frames"]))
            self.total_frames = self.totals.value
            return 0
        if record.kind == "failure":
            failure = FailedFrames(f["file"], f["reason"], [int(v) for v in a["frame_numbers"]])
            new = set(failure.frame_numbers) - self.failed_numbers - set(self.writer.frame_numbers.tolist())
            self.failed_numbers |= set(failure.frame_numbers)
            self.writer.add_failure(failure)
            return len(new)
        raise LogError(f"row log of {self.path}: unexpected record {record.kind!r}")

    def _note_modules(self, module_files: list[str], off: list[int]) -> None:
        """Record which modules made the rows and which were switched off, when that changes."""
        names = (parse_lambda_name(f) for f in module_files)
        on = {n.module for n in names if n is not None and n.module is not None}
        if on <= self.modules_on and set(off) <= self.modules_off:
            return
        self.modules_on |= on
        self.modules_off |= set(off)
        note = off_note(self.modules_off, "they wrote no file: the Stitcher's switched-off rule")
        record_modules(self.writer.h5, self.modules_on, self.modules_off, note)

    @property
    def path(self) -> Path:
        return self.writer.path

    def add(self, batch: PatternBatch) -> tuple[int, int]:
        """Merge one batch of this scan; returns (frames merged, frames newly listed as failed).

        What the file cannot vouch for is refused before anything of it is logged: a batch from
        another file than the one this file recorded for its part, integrated with other settings or
        on another radial axis (its frames listed as failed with why), and frame numbers outside
        the acquisition's ``1..N``."""
        source = batch.raw_file or batch.item_id
        failed = self.learn_total(batch.total_frames, source)
        numbers = [int(v) for v in batch.frame_numbers]
        recorded = self.writer.raw_file(batch.part) if batch.raw_file else ""
        if recorded and recorded != batch.raw_file:  # another acquisition's part, or a renamed file
            everything = numbers + [int(n) for f in batch.failed for n in f.frame_numbers]
            note = merge_accounting.part_note(batch.part, batch.raw_file, recorded)
            return 0, failed + self.add_failure(FailedFrames(batch.raw_file, note, everything), batch.announced_at)
        if batch.raw_file:
            fields = {
                "index": batch.part,
                "path": batch.raw_file,
                "module_files": list(batch.module_files),
                "modules_off": list(batch.modules_off),
            }
            self._apply(self._log(Record("raw_file", fields)))
        merged = 0
        refused = self._refusal(batch) if numbers else ""
        if refused:
            failed += self.add_failure(FailedFrames(source, refused, numbers))
        elif numbers:
            merged, n_out = self._add_rows(batch)
            failed += n_out
        for f in batch.failed:
            failed += self.add_failure(FailedFrames(f.file, f.reason, list(f.frame_numbers)), batch.announced_at)
        return merged, failed

    def _refusal(self, batch: PatternBatch) -> str:
        """Why the batch's patterns cannot go into this file ("" when they can)."""
        if batch.settings_hash != self.settings_hash:
            return (
                f"integrated by {batch.integrator} with other settings ({batch.settings_hash}) than this "
                f"file's ({self.settings_hash}): not merged"
            )
        return merge_accounting.axis_problem(batch.radial, self.file_axis)

    def _add_rows(self, batch: PatternBatch) -> tuple[int, int]:
        """Log and write the batch's rows inside the acquisition's ``1..N``; those outside are listed as
        failed. Returns (frames merged, frames newly listed as failed)."""
        numbers = np.asarray(batch.frame_numbers, np.int64)
        out = merge_accounting.outside(numbers, self.total_frames)
        failed = 0
        if out.any():
            note = merge_accounting.outside_note(self.total_frames or 0)
            failed = self.add_failure(FailedFrames(batch.raw_file or batch.item_id, note, numbers[out].tolist()))
        keep = ~out
        if not keep.any():
            return 0, failed
        arrays: dict[str, np.ndarray] = {
            "numbers": numbers[keep],
            "data": np.asarray(batch.intensities, np.float32)[keep],
            "file_index": np.full(int(keep.sum()), batch.part, np.int64),
            "index_in_file": np.asarray(batch.index_in_file, np.int64)[keep],
        }
        if batch.sigma is not None:
            arrays["sigma"] = np.asarray(batch.sigma, np.float32)[keep]
        return self._apply(self._log(Record("rows", {"announced_at": batch.announced_at}, arrays))), failed

    @property
    def file_axis(self) -> np.ndarray:
        """The file's radial axis, in the unit the batches carry (the file stores it scaled for Dioptas)."""
        if self._file_axis is None:
            binning = self.writer.h5["processed/result/binning"][()]
            self._file_axis = np.asarray(binning, np.float64) / UNITS[self.settings.unit].dioptas_scale
        return self._file_axis

    def learn_total(self, total: int | None, source: str = "") -> int:
        """Take in a frame count announced for the acquisition: logged before it is used (a resume
        replays it); one that differs from an earlier one is listed as a failure naming them all, and
        the largest counts. Returns how many frames were newly listed as failed (none)."""
        if not total or total in self.totals.seen:
            return 0
        self._apply(self._log(Record("total", {"total_frames": int(total)})))
        if not self.totals.disputed:
            return 0
        return self.add_failure(FailedFrames(source, self.totals.dispute_note(), []))

    def add_failure(self, failure: FailedFrames, announced_at: float = 0.0) -> int:
        """List frames as failed in the file; returns how many were neither merged nor listed before.
        ``announced_at``: when the Stitcher announced the part of a batch's failure (0: not a batch's)."""
        fields = {"file": failure.file, "reason": failure.reason, "announced_at": announced_at}
        numbers = np.asarray(failure.frame_numbers, np.int64)
        return self._apply(self._log(Record("failure", fields, {"frame_numbers": numbers})))

    def accounted(self) -> int:
        """Frames of the scan that are merged or listed as failed (each counted once); with the total
        known, only those inside the acquisition's ``1..N`` count."""
        merged = self.writer.frame_numbers  # sorted, each once: its ends tell whether any is outside
        ends = merged[[0, -1]] if merged.size else merged
        if not self.failed_numbers and not merge_accounting.outside(ends, self.total_frames).any():
            return int(merged.size)  # the common case, without sorting a scan's numbers per batch
        have = np.union1d(merged, np.fromiter(self.failed_numbers, np.int64))
        return int((~merge_accounting.outside(have, self.total_frames)).sum())

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
        summary and how many frames were newly listed as failed. A scan whose frame count was never
        announced cannot say what never arrived: that is listed as a failure (status incomplete)."""
        missing = self.missing()
        failed = 0
        if missing:
            asked = f", asked again {self.gaps.requests} time(s)" if self.gaps.requests else ""
            if self.gaps.refused:
                asked += f", {self.gaps.refused} request(s) not taken by the Stitcher"
            failed = self.add_failure(FailedFrames("", f"never arrived ({reason or 'scan timed out'}{asked})", missing))
        elif not self.total_frames:
            have = [*self.writer.frame_numbers.tolist(), *self.failed_numbers]
            note = merge_accounting.unknown_total_note(reason, max(have, default=0))
            failed = self.add_failure(FailedFrames(self.raw_file, note, []))
        merged = self.writer.frame_numbers
        early = merged[merge_accounting.outside(merged, self.total_frames)]
        if early.size:  # merged before the frame count that excludes them was announced
            note = merge_accounting.outside_note(self.total_frames or 0, "merged before that count was announced")
            self.add_failure(FailedFrames(self.raw_file, note, early.tolist()))
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
            last_announced=self.last_announced,
            total_frames=self.total_frames,
        )
        return summary, failed

    def suspend(self) -> None:
        """Leave the file as a part, with its journal, for the next start to resume."""
        try:
            self.writer.suspend()
        except NoSpaceError as exc:  # its status stays running: the row log, which a resume replays, has it all
            log.warning("scan %s: %s", self.scan, exc)
        finally:
            if self.rowlog is not None:
                self.rowlog.close()
        log.warning("scan %s suspended in %s; the next start resumes it", self.scan, self.writer.file_path)


def _abandon(path: Path, rowlog: RowLog | None) -> None:
    """Remove what a file's creation made before it failed: a reserved name is a file written, never an
    empty ``.part`` (nor a journal) left behind for the next start to trip over."""
    if rowlog is not None:
        rowlog.remove()
    merge_journal.remove(path)
    part_path(path).unlink(missing_ok=True)


@dataclass
class PendingScan:
    """A scan whose batches so far only list failed frames: no pattern has given its file a radial axis.

    Its failures are held until a batch with patterns opens the file (they go in first), or until the
    scan must end without one — every frame failed, the gap check's timeout, the operator's Stop —
    when :meth:`open_failed_only` writes the file anyway: no rows, every frame listed with its reason
    (status ``incomplete``, as offline ``integrate`` ends a run where every frame failed). The axis
    of such a file is NaN: nothing was integrated, and the Merger has no geometry to compute one.
    """

    scan: str
    batches: list[PatternBatch] = field(default_factory=list)
    total_frames: int | None = None
    raw_file: str = ""
    gaps: GapState = field(default_factory=GapState)

    def add(self, batch: PatternBatch) -> None:
        self.batches.append(batch)
        self.total_frames = self.total_frames or batch.total_frames
        self.raw_file = self.raw_file or batch.raw_file

    def failed_numbers(self) -> set[int]:
        return {int(n) for b in self.batches for f in b.failed for n in f.frame_numbers}

    def missing(self) -> list[int]:
        """Frame numbers of the acquisition not listed as failed yet (total must be known)."""
        if not self.total_frames:
            return []
        return sorted(set(range(1, self.total_frames + 1)) - self.failed_numbers())

    @property
    def done(self) -> bool:
        """Every frame of the acquisition is listed as failed (the total must be known)."""
        return bool(self.total_frames) and not self.missing()

    def settings_batch(self) -> PatternBatch | None:
        """A batch that says which settings the scan was to be integrated with (its work items')."""
        return next((b for b in self.batches if b.settings), None)

    def replay(self, scan: OpenScan) -> int:
        """Put the held batches into ``scan``'s file; returns how many frames were newly listed as failed."""
        return sum(scan.add(b)[1] for b in self.batches)

    def open_failed_only(self, directory: Path, info: ScanInfo | None) -> OpenScan:
        """The file of a scan where nothing integrated, with every held failure in it; OutputError when
        no batch carries the scan's settings (the chain had none: there is nothing to record)."""
        first = self.settings_batch()
        if first is None:
            frames = sorted(self.failed_numbers())
            raise OutputError(
                f"scan {self.scan}: all {len(frames)} frame(s) failed and no batch names the integration settings "
                f"(the chain had no PONI?): no merged file written; failures: {self.batches[0].failed[0].reason}"
            )
        bins = int(first.settings.get("bins") or len(first.radial) or 1)
        scan = OpenScan.create(directory, first, info, radial=np.full(bins, np.nan))
        scan.learn_total(self.total_frames, self.raw_file)  # logged: a resume knows it
        return scan


#: What :meth:`OpenScan.resume` raises for a file or journal that cannot be continued.
RESUME_ERRORS = (OSError, ValueError, KeyError, PipelineError)  # LogError is a PipelineError


def resume_open_scans(
    directory: Path,
    on_error: Callable[[str], None],
    on_no_room: Callable[[Path, NoSpaceError], None] | None = None,
) -> list[OpenScan]:
    """Every scan whose file a killed (or stopped) Merger left open in ``directory``, continued.

    A file that cannot be continued is left as it was (never overwritten) and its journal set aside:
    its scan goes on in a new file, and the gap check asks again for the frames it held. One that
    cannot be rebuilt for lack of room keeps its journal and row log: ``on_no_room`` (the stage's
    wait for room), else the next start, tries again.
    """
    scans = []
    for journal in merge_journal.journals(directory):
        try:
            scans.append(OpenScan.resume(journal))
            if scans[-1].rowlog is not None and scans[-1].rowlog.damage:  # never said only in a log file
                on_error(scans[-1].rowlog.damage)
        except NoSpaceError as exc:
            if on_no_room is not None:
                on_no_room(journal, exc)
            else:
                on_error(f"cannot resume {journal.with_suffix('')} now ({exc}); tried again at the next start")
        except RESUME_ERRORS as exc:
            merge_journal.set_aside(journal)
            merge_log.set_aside(journal.with_suffix(""))
            on_error(
                f"cannot resume {journal.with_suffix('')} ({exc}); its scan continues in a new file and "
                "missing frames are requested again"
            )
    return scans
