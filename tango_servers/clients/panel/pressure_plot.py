"""The panel's P(t): the Merger's ``pressureTrace`` (frame number, GPa) of the current scan, beside
the heatmap, with the last pressure ± sigma and the compression rate in its title.

Refreshed on a Qt timer like the other pictures, redrawn only when the trace changed. A Merger
without the pressure attributes (an older server) or without a ``Marker`` (NaN) is said in the
title; frames without a value are gaps in the curve.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
import tango
from taurus.external.qt import Qt

from .plots import _plot_widget

#: the Merger's attributes this box reads (issue 19)
ATTRIBUTES = ("pressureTrace", "pressure", "pressureSigma", "compressionRate")


def pressure_title(pressure: float, sigma: float, rate: float) -> str:
    """``61.23 ± 0.04 GPa, 102.56 GPa/s``; ``no pressure`` when the last frame has none."""
    if not math.isfinite(pressure):
        return "no pressure (no Marker, or none for the last frame)"
    rate_text = f"{rate:.2f} GPa/s" if math.isfinite(rate) else "rate unknown"
    return f"{pressure:.2f} ± {sigma:.2f} GPa, {rate_text}"


class PressurePlot(Qt.QGroupBox):
    """Pressure (GPa) against frame number of the Merger's current scan."""

    def __init__(self, merger: tango.DeviceProxy, parent=None, period_ms: int = 1000):
        super().__init__("Pressure", parent)
        self.merger = merger
        self.plot = _plot_widget("no pressure yet")
        self.plot.setLabel("bottom", "frame number")
        self.plot.setLabel("left", "pressure (GPa)")
        self.curve = self.plot.plot([], [], pen=pg.mkPen("#d62728", width=1.5), symbol="o", symbolSize=4,
                                    symbolBrush="#d62728", connect="finite")  # fmt: skip
        self.trace = np.zeros((0, 2))
        self.title = ""
        Qt.QVBoxLayout(self).addWidget(self.plot)
        self.timer = Qt.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(period_ms)

    def refresh(self) -> None:
        try:
            trace, pressure, sigma, rate = (a.value for a in self.merger.read_attributes(list(ATTRIBUTES)))
        except tango.DevFailed:  # not answering (the alarm view says so) or a Merger without pressure
            return
        trace = np.zeros((0, 2)) if trace is None else np.asarray(trace, np.float64).reshape(-1, 2)
        if not np.array_equal(trace, self.trace, equal_nan=True):
            self.trace = trace
            self.curve.setData(trace[:, 0], trace[:, 1])
        title = pressure_title(float(pressure), float(sigma), float(rate))
        if title != self.title:
            self.title = title
            self.plot.setTitle(title, color="k")
