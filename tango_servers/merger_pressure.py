"""The Merger's pressure: its properties (marker, scale, reflections, start, frame period) and the four
attributes the operator and the web UI read — ``pressure``, ``pressureSigma``, ``compressionRate``,
``pressureTrace`` — all pushed as change events by the device's publisher.

A mixin: the logic is :mod:`pipeline_core.live.merge_pressure` (a tracker fed on the stage's thread,
the file's ``/processed/pressure`` written at close through the offline code). A marker, scale or
reflection the core refuses is said in Status — State stays as it was, not FAULT or ALARM — and
the chain merges on without pressure.
"""

from __future__ import annotations

import math

import numpy as np
from tango.server import attribute, device_property

from pipeline_core.errors import ConfigError
from pipeline_core.live.merge_pressure import MAX_TRACE_ROWS, LivePressure, settings_from_properties
from pipeline_core.live.merge_stage import MergeStage

#: the attributes this mixin adds (the device's publisher watches them)
PRESSURE_ATTRIBUTES = ("pressure", "pressureSigma", "compressionRate", "pressureTrace")


class MergerPressure:
    """Pressure properties and attributes of a device with a :class:`MergeStage` in ``self.stage``."""

    stage: MergeStage
    Marker = device_property(
        dtype=str,
        default_value="",
        doc="pressure marker: au, pt, nacl-b2, cu or a Dioptas JCPDS file's path; empty: no pressure",
    )
    PressureScale = device_property(
        dtype=str, default_value="", doc="equation of state by peritheos name (xrd-pipeline pressure --list-scales)"
    )
    MarkerReflections = device_property(
        dtype=str, default_value="", doc="reflections to fit, e.g. 111,200; empty: all of the marker's"
    )
    StartPressure = device_property(dtype=float, default_value=0.0, doc="GPa of the first frame's starting guess")
    FramePeriod = device_property(
        dtype=float,
        default_value=0.0,
        doc="seconds between frames, for compressionRate when the raw files record no count_time (the simulator's)",
    )

    def live_pressure(self, on_error) -> LivePressure:
        """The stage's pressure from the properties; a refused value leaves it off and says why."""
        self.pressure_refused = ""
        try:
            settings = settings_from_properties(
                self.Marker, self.PressureScale, self.MarkerReflections, self.StartPressure
            )
        except ConfigError as exc:
            self.pressure_refused = (
                f"no pressure: Marker {self.Marker!r}, PressureScale {self.PressureScale!r}, MarkerReflections "
                f"{self.MarkerReflections!r} refused ({exc}); merging goes on without it"
            )
            settings = None
        period = float(self.FramePeriod)
        return LivePressure(settings, on_error, period if math.isfinite(period) and period > 0 else None)

    def pressure_note(self) -> str:
        """For Status: the marker followed, or why none is."""
        if self.pressure_refused:
            return f"; {self.pressure_refused}"
        settings = self.stage.pressure.settings
        return f"; pressure from {settings.marker}" if settings is not None else ""

    @attribute(
        dtype=float, label="Pressure", unit="GPa", format="%.2f",
        doc="marker pressure of the current scan's last frame (NaN: no marker, or that frame has none); "
        "once the scan closes, the value in its file's /processed/pressure",
    )  # fmt: skip
    def pressure(self) -> float:
        return self.stage.pressure.reading.pressure_gpa

    @attribute(dtype=float, label="Pressure sigma", unit="GPa", format="%.3f",
               doc="1-sigma uncertainty of pressure, from the peak fits")  # fmt: skip
    def pressureSigma(self) -> float:
        return self.stage.pressure.reading.sigma_gpa

    @attribute(
        dtype=float, label="Compression rate", unit="GPa/s", format="%.3f",
        doc="slope of pressure over time for the last 20 frames with a value; a frame's time is frame number x "
        "the detector's frame period (Lambda files carry no per-frame timestamps): count_time + "
        "detector_readout_time of the raw files where recorded, else the FramePeriod property; NaN without one",
    )  # fmt: skip
    def compressionRate(self) -> float:
        return self.stage.pressure.reading.rate_gpa_s

    @attribute(
        dtype=((float,),), max_dim_x=2, max_dim_y=MAX_TRACE_ROWS, label="Pressure trace",
        doc="rows of [frame_number, pressure_gpa] of the current scan (its last 10000 frames), NaN where a "
        "frame has no pressure",
    )  # fmt: skip
    def pressureTrace(self) -> np.ndarray:
        return self.stage.pressure.reading.trace
