"""What the Stitcher shows of the scan it is stitching: its ScanInfo, latency, frame shape and mask.

A mixin for :class:`~tango_servers.stitcher.Stitcher` (which holds ``self.stage``, a
:class:`~pipeline_core.live.stitch_stage.StitchStage`, and ``self._scan_json``, the last ScanInfo it
pushed): read-only views of the stage, kept apart from the device's wiring.
"""

from __future__ import annotations

import numpy as np
from tango import DispLevel
from tango.server import attribute

from pipeline_core.live.stitch_stage import StitchStage


class StitcherScanView:
    """scanInfo, latency, currentScan, lastOutputFile, mask and frameShape."""

    stage: StitchStage
    _scan_json: str

    @attribute(
        dtype=str,
        label="Scan info",
        display_level=DispLevel.EXPERT,
        doc="JSON ScanInfo message of the current scan (change events feed the Merger)",
    )
    def scanInfo(self) -> str:
        return self._scan_json

    @attribute(
        dtype=float,
        label="Latency",
        unit="s",
        format="%.3f",
        min_value=0,
        doc="last part: announced by the detector -> checked and queued as work",
    )
    def latency(self) -> float:
        return self.stage.counters.latency_s

    @attribute(dtype=str, label="Current scan", doc="scan (acquisition) being stitched")
    def currentScan(self) -> str:
        return self.stage.current_scan

    @attribute(dtype=str, label="Last output file", doc="the Stitcher writes no result file; see the Merger")
    def lastOutputFile(self) -> str:
        return ""

    @attribute(
        dtype=((np.uint8,),),
        max_dim_x=4096,
        max_dim_y=4096,
        label="Detector mask",
        display_level=DispLevel.EXPERT,
        doc="gaps and the files' bad pixels of the stitched frame (1 = masked); added to the user mask",
    )
    def mask(self):
        m = self.stage.detector_mask
        return np.zeros((0, 0), np.uint8) if m is None else m.astype(np.uint8)

    @attribute(
        dtype=(int,),
        max_dim_x=2,
        label="Frame shape (px)",
        unit="",
        doc="(rows, columns) of the stitched frame in pixels, once the first part was read",
    )
    def frameShape(self):
        return list(self.stage.frame_shape or ())
