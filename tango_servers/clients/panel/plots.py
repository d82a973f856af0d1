"""The panel's live pictures: each Integrator's last pattern, and the heatmap of the scan so far.

Both refresh on a Qt timer and redraw only when something changed. The pattern comes from the
Integrators' ``lastPattern``/``radialAxis`` (its x axis labelled in the chain's unit); the heatmap
from the Merger's current output file, read as far as it is written (frame × radial axis, the
same picture ``xrd-pipeline heatmap`` draws of a finished file).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import tango
from taurus.external.qt import Qt

from ..chain_names import ChainNames
from ..scan_so_far import ScanSoFar, axis_label, read_scan_so_far

_PENS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _plot_widget(title: str) -> pg.PlotWidget:
    widget = pg.PlotWidget(background="w")
    widget.setTitle(title, color="k")
    for side in ("left", "bottom"):
        widget.getAxis(side).setPen("k")
        widget.getAxis(side).setTextPen("k")
    return widget


class PatternPlot(Qt.QGroupBox):
    """The last integrated pattern of every Integrator, intensity against the radial axis."""

    def __init__(self, chain: ChainNames, proxies: dict[str, tango.DeviceProxy], parent=None, period_ms: int = 500):
        super().__init__("Latest pattern", parent)
        self.chain = chain
        self.proxies = proxies
        self.plot = _plot_widget("")
        self.plot.addLegend(offset=(-10, 10))
        self.plot.setLabel("left", "intensity (counts)")
        self.curves = {
            d: self.plot.plot([], [], pen=pg.mkPen(_PENS[i % len(_PENS)], width=1.5), name=d)
            for i, d in enumerate(chain.integrators)
        }
        self.x_label = ""
        Qt.QVBoxLayout(self).addWidget(self.plot)
        self.timer = Qt.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(period_ms)

    def refresh(self) -> None:
        unit = ""
        for device, curve in self.curves.items():
            try:
                y, x, unit_value = (
                    a.value for a in self.proxies[device].read_attributes(["lastPattern", "radialAxis", "unit"])
                )
            except tango.DevFailed:
                continue  # the alarm view says the device is not answering
            unit = unit or unit_value
            if y is not None and x is not None and len(x) == len(y) and len(x):
                x_old, y_old = curve.getData()
                if x_old is None or len(x_old) != len(x) or not np.array_equal(y_old, y):
                    curve.setData(np.asarray(x), np.asarray(y))
        label = axis_label(unit)
        if label != self.x_label:
            self.x_label = label
            self.plot.setLabel("bottom", label)

    def points(self) -> dict[str, int]:
        """Integrator -> points in its curve (for tests)."""
        return {d: 0 if c.getData()[0] is None else len(c.getData()[0]) for d, c in self.curves.items()}


class ScanHeatmap(Qt.QGroupBox):
    """Frames merged so far × radial axis, from the Merger's ``currentOutputFile`` (its ``.part``)."""

    def __init__(self, merger: tango.DeviceProxy, parent=None, period_ms: int = 2000):
        super().__init__("Scan so far", parent)
        self.merger = merger
        self.plot = _plot_widget("no scan yet")
        self.plot.setLabel("left", "frame number")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("viridis"))
        self.plot.addItem(self.image)
        self.plot.getViewBox().invertY(True)  # frames downwards, as in Dioptas' Batch View
        self.scan: ScanSoFar | None = None
        Qt.QVBoxLayout(self).addWidget(self.plot)
        self.timer = Qt.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(period_ms)

    def refresh(self) -> None:
        try:
            name = self.merger.read_attribute("currentOutputFile").value
        except tango.DevFailed:
            return
        scan = read_scan_so_far(name, self.scan)
        if scan is None or scan is self.scan or scan.data.size == 0:
            return  # nothing new, nothing readable yet, or a half-written moment: keep the last picture
        self.scan = scan
        self._draw(scan)

    def _draw(self, scan: ScanSoFar) -> None:
        image = np.sqrt(np.clip(np.nan_to_num(scan.data), 0, None))  # sqrt: weak rings stay visible
        lo, hi = np.percentile(image, [1, 99.8])
        self.image.setImage(image, levels=(lo, hi if hi > lo else lo + 1))
        x0, x1 = float(scan.axis[0]), float(scan.axis[-1])
        f0, f1 = float(scan.frame_number[0]) - 0.5, float(scan.frame_number[-1]) + 0.5
        self.image.setRect(Qt.QRectF(x0, f0, (x1 - x0) or 1.0, f1 - f0))
        self.plot.setLabel("bottom", scan.axis_label)
        self.plot.setTitle(f"{scan.path.name}: {len(scan.frame_number)} frames ({scan.status})", color="k")

    def rows(self) -> int:
        """Frames shown (for tests)."""
        return 0 if self.scan is None else int(self.scan.data.shape[0])
