"""Start, Stop and Reintegrate for the whole chain, with the devices' answers shown.

Start goes downstream first (Integrators, Merger, then the Stitcher), so nothing the Stitcher hands
out finds a stopped consumer; Stop goes upstream first for the same reason. Reintegrate is the
Stitcher's command: it returns at once, and the progress shows in the counters and the heatmap.
"""

from __future__ import annotations

from collections.abc import Callable

import tango
from taurus.external.qt import Qt

from .panel_data import ChainNames
from .panel_dialogs import choose_file


class ControlsBox(Qt.QGroupBox):
    """Start / Stop of every device, Reintegrate of an acquisition chosen in a file dialog."""

    def __init__(self, chain: ChainNames, proxies: dict[str, tango.DeviceProxy], parent=None):
        super().__init__("Acquisition", parent)
        self.chain = chain
        self.proxies = proxies
        stitcher = proxies[chain.stitcher]
        self.data_roots = list(stitcher.get_property("DataRoots")["DataRoots"])
        #: (parent, title, roots) -> chosen path or "" (tests replace it: no modal dialog)
        self.chooser: Callable[[Qt.QWidget, str, list[str]], str] = choose_file
        self.start_button, self.stop_button = Qt.QPushButton("Start"), Qt.QPushButton("Stop")
        self.reintegrate_button = Qt.QPushButton("Reintegrate…")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.reintegrate_button.clicked.connect(self.browse_reintegrate)
        self.message = Qt.QLabel("")
        self.message.setWordWrap(True)
        layout = Qt.QGridLayout(self)
        for col, button in enumerate((self.start_button, self.stop_button, self.reintegrate_button)):
            layout.addWidget(button, 0, col)
        layout.addWidget(self.message, 1, 0, 1, 3)

    def _run(self, devices: list[str], command: str) -> bool:
        failed = []
        for device in devices:
            try:
                self.proxies[device].command_inout(command)
            except tango.DevFailed as exc:
                failed.append(f"{device}: {exc.args[0].desc.strip()}")
        self.message.setText(f"{command}: " + ("; ".join(failed) if failed else f"done on {len(devices)} devices"))
        return not failed

    def start(self) -> bool:
        return self._run([*self.chain.integrators, self.chain.merger, self.chain.stitcher], "Start")

    def stop(self) -> bool:
        return self._run([self.chain.stitcher, *self.chain.integrators, self.chain.merger], "Stop")

    def browse_reintegrate(self) -> None:
        path = self.chooser(self, "Choose an acquisition file to reintegrate", self.data_roots)
        if path:
            self.reintegrate(path)

    def reintegrate(self, path: str) -> bool:
        """Queue ``path`` (any file of an acquisition) for reintegration; the Stitcher's answer is shown."""
        try:
            answer = self.proxies[self.chain.stitcher].command_inout("Reintegrate", path)
        except tango.DevFailed as exc:
            error = exc.args[0]
            self.message.setText(f"Reintegrate refused ({error.reason}): {error.desc.strip()}")
            return False
        self.message.setText(answer)
        return True
