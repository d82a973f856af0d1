"""Scans the merge stage has closed: their summaries, and enough to tell a late twin from a loss.

A batch of a closed scan is either a late twin (an item handed out again after its lease ran out,
already in the file: ignored quietly) or frames that came too late (reported: not merged). Frame
numbers are kept for the last few scans only, so memory stays bounded over a long beamtime.
"""

from __future__ import annotations

import logging

from ..messages import PatternBatch
from .merge_scan import ScanSummary

log = logging.getLogger(__name__)

#: Closed scans whose frame numbers are remembered, to recognise late twins (bounded memory).
CLOSED_SCANS_KEPT = 20


class ClosedScans:
    def __init__(self, keep: int = CLOSED_SCANS_KEPT):
        #: scan id -> summary, of every scan closed since the start
        self.summaries: dict[str, ScanSummary] = {}
        #: the scan closed last (what the Merger shows as its last output)
        self.last: ScanSummary | None = None
        self._frames: dict[str, set[int]] = {}
        self._keep = keep

    def __contains__(self, scan: object) -> bool:
        return scan in self.summaries

    def remember(self, summary: ScanSummary, frames: set[int]) -> None:
        self.summaries[summary.scan] = summary
        self.last = summary
        self._frames[summary.scan] = frames
        while len(self._frames) > self._keep:
            self._frames.pop(next(iter(self._frames)))

    def late(self, batch: PatternBatch) -> str | None:
        """For a batch of a closed scan: None when it is a late twin (ignore it), else why it is refused."""
        if set(batch.frame_numbers.tolist()) <= self._frames.get(batch.scan, set()):
            log.info("late duplicate %s of closed scan %s ignored", batch.item_id, batch.scan)
            return None
        return f"batch {batch.item_id} came after scan {batch.scan} was closed: not merged"
