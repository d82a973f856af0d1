"""The chain's settings in the panel: what is in force (Taurus labels) and an editor with Apply.

Apply sends ONE ``SetSettings`` to the Stitcher with every field, so the chain takes all of them or
none (the Stitcher validates everything before changing anything); a refusal's text is shown as the
Stitcher gave it. PONI and mask files are chosen in a dialog that stays inside the Stitcher's
``CalibrationRoots``; a path outside them is refused here, with the roots named, before Apply.
"""

from __future__ import annotations

from collections.abc import Callable

import tango
from taurus.external.qt import Qt
from taurus.qt.qtgui.display import TaurusLabel

from pipeline_core.processing.integrate import MAX_BINS
from pipeline_core.processing.units import DEFAULT_UNIT, UNITS

from .panel_data import ChainNames, outside_roots, settings_request
from .panel_dialogs import choose_file

#: attribute of the Stitcher -> label in the "in force" column
IN_FORCE = {"poniPath": "PONI", "maskPath": "mask", "bins": "bins", "unit": "unit"}


class SettingsBox(Qt.QGroupBox):
    """PONI, mask (file dialogs), bins, unit; Apply; the settings in force and the last answer."""

    def __init__(self, chain: ChainNames, stitcher: tango.DeviceProxy, parent=None):
        super().__init__("Chain settings", parent)
        self.stitcher = stitcher
        self.roots = list(stitcher.get_property("CalibrationRoots")["CalibrationRoots"])
        #: (title, start folder, roots) -> chosen path or "" (tests replace it: no modal dialog)
        self.chooser: Callable[[Qt.QWidget, str, list[str]], str] = choose_file
        self.poni, self.mask = Qt.QLineEdit(), Qt.QLineEdit()
        for editor in (self.poni, self.mask):
            editor.textChanged.connect(editor.setToolTip)  # the whole path, however narrow the field
        self.poni.setPlaceholderText("PONI file (required)")
        self.mask.setPlaceholderText("no user mask")
        self.bins = Qt.QSpinBox()
        self.bins.setRange(1, MAX_BINS)
        self.unit = Qt.QComboBox()
        self.unit.addItems(list(UNITS))
        self.apply_button = Qt.QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply)
        self.message = Qt.QLabel("")
        self.message.setWordWrap(True)
        self.in_force: dict[str, TaurusLabel] = {}
        self._layout(chain)
        self.load()

    def _layout(self, chain: ChainNames) -> None:
        """New values (editors) on top, Apply, then what the Stitcher holds (full width: paths are long)."""
        grid = Qt.QGridLayout(self)
        grid.setColumnStretch(1, 1)
        grid.addWidget(Qt.QLabel("<b>new value</b>"), 0, 0, 1, 3)
        editors = {"poniPath": self.poni, "maskPath": self.mask, "bins": self.bins, "unit": self.unit}
        for row, (attr, title) in enumerate(IN_FORCE.items(), start=1):
            grid.addWidget(Qt.QLabel(title), row, 0)
            grid.addWidget(editors[attr], row, 1)
        for row, (editor, what) in enumerate(((self.poni, "PONI file"), (self.mask, "mask file")), start=1):
            browse = Qt.QPushButton("…")
            browse.clicked.connect(lambda _=False, e=editor, w=what: self.browse(e, w))
            grid.addWidget(browse, row, 2)
        grid.addWidget(self.apply_button, 5, 1)
        grid.addWidget(Qt.QLabel(f"<b>in force</b> ({chain.stitcher})"), 6, 0, 1, 3)
        for row, (attr, title) in enumerate(IN_FORCE.items(), start=7):
            label = TaurusLabel()
            label.setAutoTrim(False)
            label.setModel(chain.trl(chain.stitcher, attr))
            label.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignVCenter)
            self.in_force[attr] = label
            grid.addWidget(Qt.QLabel(title), row, 0)
            grid.addWidget(label, row, 1, 1, 2)
        roots = ", ".join(self.roots) if self.roots else "anywhere (no CalibrationRoots)"
        grid.addWidget(Qt.QLabel(f"calibration roots: {roots}"), 11, 0, 1, 3)
        grid.addWidget(self.message, 12, 0, 1, 3)

    def load(self) -> None:
        """Fill the editor with the settings in force (at start, and after each Apply)."""
        values = {a: self.stitcher.read_attribute(a).value for a in IN_FORCE}
        self.poni.setText(values["poniPath"])
        self.mask.setText(values["maskPath"])
        self.bins.setValue(max(1, int(values["bins"])))
        self.unit.setCurrentText(values["unit"] or DEFAULT_UNIT)

    def browse(self, editor: Qt.QLineEdit, what: str) -> None:
        path = self.chooser(self, f"Choose the {what}", self.roots)
        if path:
            self.choose(editor, what, path)

    def choose(self, editor: Qt.QLineEdit, what: str, path: str) -> bool:
        """Put ``path`` in ``editor`` if it lies under the calibration roots; else say why not."""
        refusal = outside_roots(path, self.roots, what)
        if refusal:
            self.show_message(refusal, error=True)
            return False
        editor.setText(path)
        self.show_message("")
        return True

    def apply(self) -> bool:
        """Send every field in one SetSettings; True if the chain took them."""
        try:
            request = settings_request(self.poni.text(), self.mask.text(), self.bins.value(), self.unit.currentText())
            self.stitcher.command_inout("SetSettings", request)
        except tango.DevFailed as exc:
            error = exc.args[0]
            self.show_message(f"refused ({error.reason}): {error.desc.strip()}", error=True)
            return False
        except ValueError as exc:
            self.show_message(f"refused: {exc}", error=True)
            return False
        self.load()
        self.show_message(
            f"applied: {self.poni.text()}, mask {self.mask.text() or 'none'}, {self.bins.value()} bins, "
            f"{self.unit.currentText()} (from the next work item on)"
        )
        return True

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet("color: #b00020;" if error else "color: #1b5e20;")
        self.message.setText(text)
