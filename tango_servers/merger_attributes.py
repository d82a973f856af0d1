"""The Merger's read-only attributes: what it is writing, what it wrote, how far behind it is.

A mixin (pytango collects the attributes of a device's bases), so the device class itself keeps
only its wiring and commands. Every value is read from the stage: the device keeps none of it.
"""

from __future__ import annotations

from tango.server import attribute

from pipeline_core.live.merge_stage import MergeStage

from .counter_attributes import latency_attribute


class MergerAttributes:
    """Attributes of a device with a :class:`MergeStage` in ``self.stage``."""

    stage: MergeStage

    @attribute(dtype=str, label="Current scan", doc="scan whose file is being written")
    def currentScan(self) -> str:
        return self.stage.current_scan

    @attribute(dtype=str, label="Last output file", doc="merged file of the last closed scan (change event on close)")
    def lastOutputFile(self) -> str:
        last = self.stage.last_closed
        return str(last.path) if last else ""

    @attribute(dtype=str, label="Current output file", doc="file being written now (or the last one)")
    def currentOutputFile(self) -> str:
        return str(self.stage.last_output or "")

    @latency_attribute("median over recent batches of: part announced by the detector → its patterns in the file")
    def latency(self) -> float:
        return self.stage.latency.median()

    @attribute(
        dtype=int,
        label="Queue depth (batches)",
        unit="",
        format="%d",
        min_value=0,
        doc="pattern batches waiting to be written",
    )
    def queueDepth(self) -> int:
        return self.stage.queue_depth
