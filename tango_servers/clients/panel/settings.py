"""The chain's settings in the panel: what is in force (Taurus labels) and an editor with Apply.

Others change the settings too (a Sardana macro, another panel, Jive): the editor follows what is in
force, each second, in every field the operator has not edited, and Apply sends ONE ``SetSettings``
with only the fields the operator changed. So Apply never puts back an old value over someone
else's, and the chain takes all of the operator's changes or none (the Stitcher validates everything
before changing anything); a refusal's text is shown as the Stitcher gave it. A field changed on the
chain while the operator was editing it is named in the message: Apply would replace it.
PONI and mask files are chosen in a dialog that stays inside the Stitcher's ``CalibrationRoots``; a
path outside them is refused here, with the roots named, before Apply.
"""

from __future__ import annotations

from collections.abc import Callable

import tango
from taurus.external.qt import Qt
from taurus.qt.qtgui.display import TaurusLabel

from pipeline_core.processing.integrate import MAX_BINS
from pipeline_core.processing.units import DEFAULT_UNIT, UNITS

from ..chain_client import ChainClient
from ..chain_names import ChainNames
from ..settings_request import edited_settings, outside_roots
from .dialogs import choose_file

#: attribute of the Stitcher -> label in the "in force" column
IN_FORCE = {"poniPath": "PONI", "maskPath": "mask", "bins": "bins", "unit": "unit"}


class SettingsBox(Qt.QGroupBox):
    """PONI, mask (file dialogs), bins, unit; Apply, Revert; the settings in force and the last answer."""

    def __init__(self, client: ChainClient, parent=None, period_ms: int = 1000):
        super().__init__("Chain settings", parent)
        chain = client.chain
        self.client = client
        self.stitcher = client.stitcher
        self.roots = client.property_list("CalibrationRoots")
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
        self.revert_button = Qt.QPushButton("Revert")
        self.revert_button.setToolTip("drop your edits: show the settings in force")
        self.revert_button.clicked.connect(self.load)
        self.message = Qt.QLabel("")
        self.message.setWordWrap(True)
        self.in_force: dict[str, TaurusLabel] = {}
        #: attribute -> the value in force the editor was last filled with (edited: the editor differs)
        self.shown: dict[str, object] = {}
        self._layout(chain)
        self.load()
        self.timer = Qt.QTimer(self)
        self.timer.timeout.connect(self.follow)
        self.timer.start(period_ms)

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
        buttons = Qt.QHBoxLayout()
        buttons.addWidget(self.apply_button)
        buttons.addWidget(self.revert_button)
        grid.addLayout(buttons, 5, 1)
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

    def read_in_force(self) -> dict[str, object]:
        """The Stitcher's settings, as the editor shows them (no bins yet: 1; no unit yet: the default)."""
        values = self.client.settings_in_force()
        return {
            "poniPath": values["poniPath"] or "",
            "maskPath": values["maskPath"] or "",
            "bins": max(1, int(values["bins"] or 0)),
            "unit": values["unit"] or DEFAULT_UNIT,
        }

    def editor_values(self) -> dict[str, object]:
        """What the editor holds now (attribute -> value)."""
        return {
            "poniPath": self.poni.text(),
            "maskPath": self.mask.text(),
            "bins": self.bins.value(),
            "unit": self.unit.currentText(),
        }

    def edited(self) -> dict[str, object]:
        """The fields the operator changed (attribute -> new value): what Apply sends."""
        return edited_settings(self.shown, self.editor_values())

    def _show(self, attr: str, value: object) -> None:
        if attr == "poniPath":
            self.poni.setText(str(value))
        elif attr == "maskPath":
            self.mask.setText(str(value))
        elif attr == "bins":
            self.bins.setValue(int(value))
        else:
            self.unit.setCurrentText(str(value))
        self.shown[attr] = value

    def load(self) -> None:
        """Fill the editor with the settings in force, dropping any edit (at start, after Apply, Revert)."""
        for attr, value in self.read_in_force().items():
            self._show(attr, value)

    def follow(self) -> None:
        """Each tick: show what is in force in every field the operator has not edited; name a field
        changed on the chain while the operator was editing it (Apply would replace that value)."""
        try:
            in_force = self.read_in_force()
        except tango.DevFailed:
            return  # the alarm view says the Stitcher is not answering
        editor, meanwhile = self.editor_values(), []
        for attr, value in in_force.items():
            if editor[attr] in (self.shown.get(attr), value):  # not edited, or edited to what is now in force
                if editor[attr] != value or self.shown.get(attr) != value:
                    self._show(attr, value)
            elif value != self.shown.get(attr):
                meanwhile.append(f"{IN_FORCE[attr]} was changed on the chain to {value} while you edited it")
                self.shown[attr] = value
        if meanwhile:
            self.show_message("; ".join(meanwhile) + ": Apply sends your value", error=True)

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
        """Send the fields the operator changed in one SetSettings; True if the chain took them."""
        changes = self.edited()
        if not changes:
            self.show_message("nothing to apply: the editor shows the settings in force")
            return False
        answer = self.client.apply_settings(changes)
        if not answer.ok:
            self.show_message(answer.text, error=True)
            return False
        self.load()
        sent = ", ".join(f"{IN_FORCE[a]} {v if v != '' else 'none'}" for a, v in changes.items())
        self.show_message(f"applied: {sent} (from the next work item on)")
        return True

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet("color: #b00020;" if error else "color: #1b5e20;")
        self.message.setText(text)
