"""Scans the merge stage has closed: their summaries, and enough to tell a late twin from a loss.

A batch of a closed scan is either a late twin (an item handed out again after its lease ran out,
already in the file: ignored quietly) or frames that came too late (reported: not merged). Frame
numbers are kept for the last few scans only, so memory stays bounded over a long beamtime.

**A published scan is never reopened, a restart included.** A restarted Merger is sent, on
subscribing, the last value of every Integrator's ``patterns`` (Tango delivers an attribute's
current value to a new subscriber): the last batches of a scan it published before the restart.
Knowing nothing of that scan, it used to open a new file for them (``_v001``) and ask the Stitcher
for the 568 "missing" frames, publishing the scan a second time. So each closed scan is also
recorded in the output folder (``.merger-closed/<scan>.json``), and a restarted stage knows them.

A scan id can come back as a *new* processing: a reintegration numbered again after a Stitcher
restart (``<stem>#r1``), the same file name acquired again. Its parts are announced after everything
of the closed scan, so a batch whose ``announced_at`` (the Stitcher's clock, like the recorded one)
is later than every batch in the closed file opens a new file; one announced no later (or not at
all) belongs to the closed scan.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from ..formats.nexus_failures import format_ranges, parse_ranges
from ..messages import PatternBatch
from ..paths import file_name_problem, open_new_file
from .merge_scan import ScanSummary

log = logging.getLogger(__name__)

#: Closed scans whose frame numbers are remembered, to recognise late twins (bounded memory).
CLOSED_SCANS_KEPT = 20
#: The folder, inside the output directory, that records the closed scans across restarts.
CLOSED_FOLDER = ".merger-closed"


class ClosedScans:
    def __init__(self, directory: Path | None = None, keep: int = CLOSED_SCANS_KEPT):
        #: scan id -> summary, of every scan closed since the start (and those recorded before it)
        self.summaries: dict[str, ScanSummary] = {}
        #: the scan closed last (what the Merger shows as its last output)
        self.last: ScanSummary | None = None
        self._frames: dict[str, set[int]] = {}
        self._keep = keep
        self._folder = Path(directory) / CLOSED_FOLDER if directory is not None else None
        for summary, frames in self._recorded():
            self.summaries[summary.scan] = summary
            self._frames[summary.scan] = frames

    def __contains__(self, scan: object) -> bool:
        return scan in self.summaries

    def remember(self, summary: ScanSummary, frames: set[int]) -> None:
        self.summaries[summary.scan] = summary
        self.last = summary
        self._frames.pop(summary.scan, None)  # the newest last: the oldest are dropped first
        self._frames[summary.scan] = frames
        while len(self._frames) > self._keep:
            self._frames.pop(next(iter(self._frames)))
        self._record(summary, frames)

    def owns(self, batch: PatternBatch) -> bool:
        """Whether ``batch`` belongs to a closed scan (late, or re-delivered after a restart) rather
        than to a new processing of its id (announced after every batch the closed file holds)."""
        summary = self.summaries.get(batch.scan)
        if summary is None:
            return False
        new = batch.announced_at > 0 and summary.last_announced > 0 and batch.announced_at > summary.last_announced
        return not new

    def late(self, batch: PatternBatch) -> str | None:
        """For a batch of a closed scan: None when it is a late twin (ignore it), else why it is refused.

        One that announces another frame count than the file was closed with is never a twin: the
        published file may lack frames, and the operator is told so (a published file is never
        reopened)."""
        refused = f"batch {batch.item_id} came after scan {batch.scan} was closed: not merged"
        closed_with = self.summaries[batch.scan].total_frames
        if batch.total_frames and closed_with and batch.total_frames != closed_with:
            return (
                f"{refused}; it announces {batch.total_frames} frames where {self.summaries[batch.scan].path} "
                f"was closed with {closed_with}: that file may lack frames (reintegrate the acquisition)"
            )
        if set(batch.frame_numbers.tolist()) <= self._frames.get(batch.scan, set()):
            log.info("late duplicate %s of closed scan %s ignored", batch.item_id, batch.scan)
            return None
        return refused

    # -- the record in the output folder ------------------------------------------------------------
    def _record(self, summary: ScanSummary, frames: set[int]) -> None:
        """Write the closed scan's record (replacing an older one of its id), then drop the oldest
        beyond ``keep``. A record that cannot be written is logged: the file itself is published."""
        if self._folder is None or file_name_problem(summary.scan) is not None:
            return
        fields = {k: v for k, v in asdict(summary).items() if k != "settings"}
        fields.update(path=str(summary.path), frames=format_ranges(sorted(frames)))
        target = self._folder / f"{summary.scan}.json"
        tmp = self._folder / f".{summary.scan}.json.tmp"
        try:
            self._folder.mkdir(exist_ok=True)
            if self._folder.is_symlink():  # a link planted in the output folder: never written through
                raise OSError(f"{self._folder} is a symbolic link")
            with os.fdopen(open_new_file(tmp), "w") as f:
                f.write(json.dumps(fields))
            os.replace(tmp, target)
            for old in self._record_files()[: -self._keep]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.error("closed scan %s: cannot record it in %s (%s); a restart may not know it", summary.scan,
                      self._folder, exc)  # fmt: skip

    def _record_files(self) -> list[Path]:
        """The records, oldest first."""
        if self._folder is None or self._folder.is_symlink() or not self._folder.is_dir():
            return []
        files = [p for p in self._folder.glob("*.json") if p.is_file() and not p.is_symlink()]
        return sorted(files, key=lambda p: p.stat().st_mtime_ns)

    def _recorded(self) -> list[tuple[ScanSummary, set[int]]]:
        """The closed scans recorded by earlier runs, oldest first (an unreadable record is skipped)."""
        out = []
        for path in self._record_files()[-self._keep :]:
            try:
                fields = json.loads(path.read_text())
                frames = set(parse_ranges(fields.pop("frames")))
                summary = ScanSummary(**{**fields, "path": Path(fields["path"])})
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("record %s of a closed scan is unreadable (%s): skipped", path, exc)
                continue
            out.append((summary, frames))
        return out
