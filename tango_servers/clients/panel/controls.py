"""Start, Stop and Reintegrate for the whole chain, with the devices' answers shown.

Start goes downstream first (Integrators, Merger, then the Stitcher), so nothing the Stitcher hands
out finds a stopped consumer; Stop goes upstream first for the same reason. Reintegrate is the
Stitcher's command: it returns at once, and the progress shows in the counters and the heatmap.
"""

from __future__ import annotations

from collections.abc import Callable

from taurus.external.qt import Qt

from ..chain_client import Answer, ChainClient
from .dialogs import choose_file


class ControlsBox(Qt.QGroupBox):
    """Start / Stop of every device, Reintegrate of an acquisition chosen in a file dialog."""

    def __init__(self, client: ChainClient, parent=None):
        super().__init__("Acquisition", parent)
        self.client = client
        self.data_roots = client.property_list("DataRoots")
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

    def _show(self, answer: Answer) -> bool:
        self.message.setText(answer.text)
        return answer.ok

    def start(self) -> bool:
        return self._show(self.client.start())

    def stop(self) -> bool:
        return self._show(self.client.stop())

    def browse_reintegrate(self) -> None:
        path = self.chooser(self, "Choose an acquisition file to reintegrate", self.data_roots)
        if path:
            self.reintegrate(path)

    def reintegrate(self, path: str) -> bool:
        """Queue ``path`` (any file of an acquisition) for reintegration; the Stitcher's answer is shown."""
        return self._show(self.client.reintegrate(path))
