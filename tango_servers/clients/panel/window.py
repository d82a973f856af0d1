"""The operator panel of one chain (``xrd-pipeline panel``): a Taurus GUI for what the P02.2 web
interface gave its operators.

One window: the devices with their counters (:class:`~.devices.DeviceTable`), the chain's
settings with Apply (:class:`~.settings.SettingsBox`), Start/Stop/Reintegrate
(:class:`~.controls.ControlsBox`), the latest pattern and the heatmap of the scan so far
(:mod:`.plots`) and the Status of any device in ALARM (:class:`~.devices.AlarmView`).

This module imports Qt, Taurus and pyqtgraph (the ``[panel]`` extra): the command's options live
in :mod:`.command`, which imports this only when the panel is opened. Every box refreshes on
its own Qt timer; SIGINT, SIGTERM and SIGHUP close the window (:mod:`.signals`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import tango
from taurus.external.qt import Qt

from pipeline_core.signals import Interrupted

from ..chain_client import ChainClient
from ..chain_names import ChainNames
from .controls import ControlsBox
from .devices import AlarmView, DeviceTable
from .plots import PatternPlot, ScanHeatmap
from .pressure_plot import PressurePlot
from .settings import SettingsBox
from .stop_signals import StopOnSignals


class PanelWindow(Qt.QMainWindow):
    """The panel's window: devices and controls on top, settings beside them, pictures below."""

    def __init__(self, chain: ChainNames, parent=None):
        super().__init__(parent)
        self.chain = chain
        self.setWindowTitle(f"xrd-pipeline — {chain.stitcher} on {chain.tango_host}")
        self.client = ChainClient(chain)
        self.proxies = self.client.proxies
        self.devices = DeviceTable(chain)
        self.controls = ControlsBox(self.client)
        self.settings = SettingsBox(self.client)
        self.pattern = PatternPlot(chain, self.proxies)
        self.heatmap = ScanHeatmap(self.proxies[chain.merger])
        self.pressure = PressurePlot(self.proxies[chain.merger])  # P(t) beside the heatmap (issue 19)
        self.alarms = AlarmView(chain)
        self.setCentralWidget(self._layout())
        self.resize(1400, 900)

    def _layout(self) -> Qt.QWidget:
        left = Qt.QVBoxLayout()
        left.addWidget(self.devices)
        left.addWidget(self.controls)
        left.addWidget(self.alarms)
        top = Qt.QHBoxLayout()
        top.addLayout(left, 3)
        top.addWidget(self.settings, 2)
        plots = Qt.QHBoxLayout()
        plots.addWidget(self.pattern)
        plots.addWidget(self.heatmap)
        plots.addWidget(self.pressure)
        central = Qt.QWidget()
        outer = Qt.QVBoxLayout(central)
        outer.addLayout(top)
        outer.addLayout(plots, 1)
        return central

    def screenshot(self, path: str | Path) -> Path:
        """Save the window as a PNG (works off-screen too) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path)):
            raise OSError(f"could not write the panel's screenshot to {path}")
        return path

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        for box in (self.pattern, self.heatmap, self.pressure, self.alarms, self.settings):
            box.timer.stop()
        for widget in self.findChildren(Qt.QWidget):
            if hasattr(widget, "setModel") and hasattr(widget, "getModelName"):
                widget.setModel("")  # unsubscribe the Taurus widgets from the chain's events
        super().closeEvent(event)


def application() -> Qt.QApplication:
    """The running Qt application, or a new TaurusApplication (Taurus widgets need one)."""
    from taurus.qt.qtgui.application import TaurusApplication

    app = Qt.QApplication.instance()
    return app if app is not None else TaurusApplication(sys.argv[:1], cmd_line_parser=None)


def run_panel(chain: ChainNames) -> int:
    """Open the panel for ``chain`` and run until its window is closed (its exit status) or a stop
    signal comes (:class:`~pipeline_core.signals.Interrupted`: the CLI exits 128 + the signal)."""
    app = application()
    try:
        window = PanelWindow(chain)
    except tango.DevFailed as exc:
        print(f"xrd-pipeline panel: cannot reach the chain on {chain.tango_host}: {exc.args[0].desc}", file=sys.stderr)
        return 1
    window.show()
    # on sys.__stderr__: TaurusApplication sends sys.stderr to its logger
    opened = f"xrd-pipeline panel: open on {chain.stitcher} at {chain.tango_host} (close the window or Ctrl-C to stop)"
    Qt.QTimer.singleShot(0, lambda: print(opened, file=sys.__stderr__, flush=True))
    with StopOnSignals(app) as stop:
        code = int(app.exec_())
    if stop.received is not None:
        raise Interrupted(stop.received)
    return code
