"""The panel's view of the devices: a table of Taurus widgets (state and counters) and the alarm text.

Taurus widgets subscribe to change events (the counters, State) and poll what has none (throughput,
queue depth), so the table needs no timer of its own. The alarm text reads State and Status directly
each second instead: it must show a device that stopped answering too, which no event ever says.
Its "Clear errors" button acknowledges the problems of the devices in ALARM (their ``ClearErrors``).
"""

from __future__ import annotations

from taurus.external.qt import Qt
from taurus.qt.qtgui.display import TaurusLabel, TaurusLed

from ..chain_client import ChainClient
from ..chain_names import ChainNames
from .states import StateLabel

#: column title -> attribute (None: the device has no such attribute)
COLUMNS = {
    "received": "framesReceived",
    "processed": "framesProcessed",
    "failed": "framesFailed",
    "throughput": "throughput",
    "latency": "latency",
    "queue": "queueDepth",
}
#: devices that have a queueDepth attribute, by class
_HAS_QUEUE = ("stitcher", "merger")


class DeviceTable(Qt.QGroupBox):
    """One row per device: name, state LED, state, counters, throughput, latency, queue depth."""

    def __init__(self, chain: ChainNames, parent=None):
        super().__init__("Devices", parent)
        self.chain = chain
        #: (device, column) -> the Taurus widget showing it ("state" for the state label)
        self.cells: dict[tuple[str, str], Qt.QWidget] = {}
        self.leds: dict[str, TaurusLed] = {}
        grid = Qt.QGridLayout(self)
        for col, title in enumerate(("device", "", "state", *COLUMNS)):
            grid.addWidget(Qt.QLabel(f"<b>{title}</b>"), 0, col)
        for row, device in enumerate(chain.devices, start=1):
            self._add_row(grid, row, device)

    def _add_row(self, grid: Qt.QGridLayout, row: int, device: str) -> None:
        grid.addWidget(Qt.QLabel(device), row, 0)
        led = TaurusLed()
        led.setModel(self.chain.trl(device, "state"))
        self.leds[device] = led
        grid.addWidget(led, row, 1)
        state = StateLabel()
        state.setAutoTrim(False)
        state.setMinimumWidth(95)  # RUNNING, ALARM, UNKNOWN in full
        state.setModel(self.chain.trl(device, "state"))
        self.cells[(device, "state")] = state
        grid.addWidget(state, row, 2)
        for col, (title, attr) in enumerate(COLUMNS.items(), start=3):
            if attr == "queueDepth" and self.chain.role(device) not in _HAS_QUEUE:
                grid.addWidget(Qt.QLabel("—"), row, col)
                continue
            label = self._label(self.chain.trl(device, attr))
            self.cells[(device, title)] = label
            grid.addWidget(label, row, col)

    @staticmethod
    def _label(model: str) -> TaurusLabel:
        label = TaurusLabel()
        label.setAutoTrim(False)  # a trimmed value shows as "..." : give the whole value, the grid grows
        label.setMinimumWidth(70)
        label.setModel(model)
        return label

    def text(self, device: str, column: str) -> str:
        """What the operator reads in that cell (for tests and screenshots)."""
        return self.cells[(device, column)].text()


class AlarmView(Qt.QGroupBox):
    """The Status text of every device in ALARM or FAULT (or not answering), refreshed each second,
    and "Clear errors": ``ClearErrors`` on each device in ALARM (the operator has read its problems)."""

    def __init__(self, chain: ChainNames, parent=None, period_ms: int = 1000):
        super().__init__("Alarms", parent)
        self.chain = chain
        self.client = ChainClient(chain, timeout_ms=1000)  # a device that hangs must not freeze the panel for long
        self.view = Qt.QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumHeight(110)
        self.clear_button = Qt.QPushButton("Clear errors")
        self.clear_button.setToolTip("ClearErrors on every device in ALARM: acknowledges the problems its Status lists")
        self.clear_button.clicked.connect(self.clear_errors)
        self.message = Qt.QLabel("")
        self.message.setWordWrap(True)
        layout = Qt.QGridLayout(self)
        layout.addWidget(self.view, 0, 0, 1, 2)
        layout.addWidget(self.clear_button, 1, 0)
        layout.addWidget(self.message, 1, 1)
        layout.setColumnStretch(1, 1)
        self.timer = Qt.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(period_ms)
        self.refresh()

    def alarms(self) -> dict[str, str]:
        """device -> "STATE: status" of each device that is not ON or RUNNING."""
        found = {}
        for device, (state, status) in self.client.state_and_status().items():
            if state == "UNKNOWN" and status.startswith("not answering"):
                found[device] = status
            elif state not in ("ON", "RUNNING"):
                found[device] = f"{state}: {status}"
        return found

    def clear_errors(self) -> bool:
        """``ClearErrors`` on each device in ALARM now (FAULT needs a repair, not an acknowledgement);
        the devices cleared (and those that refused) are shown beside the button."""
        answer = self.client.clear_errors()
        self.message.setText(answer.text)
        self.refresh()
        return answer.ok

    def refresh(self) -> None:
        found = self.alarms()
        text = "\n".join(f"{device} — {what}" for device, what in found.items()) or "no device in ALARM"
        if text != self.view.toPlainText():
            self.view.setPlainText(text)
