"""File dialogs that stay inside a set of roots (the calibration roots, the data roots).

Qt's file dialog cannot forbid a folder; this one starts in the first root, lists only the roots in
its sidebar and goes back to the first root whenever the operator browses out of them. What is
finally chosen is checked again by the caller (and by the Stitcher): the dialog only guides.
"""

from __future__ import annotations

import os

from taurus.external.qt import Qt

from ..settings_request import outside_roots


def confined_dialog(parent: Qt.QWidget, title: str, roots: list[str]) -> Qt.QFileDialog:
    dialog = Qt.QFileDialog(parent, title)
    dialog.setOption(Qt.QFileDialog.DontUseNativeDialog, True)  # the native one ignores the sidebar
    dialog.setFileMode(Qt.QFileDialog.ExistingFile)
    existing = [r for r in roots if os.path.isdir(r)]
    if existing:
        dialog.setDirectory(existing[0])
        dialog.setSidebarUrls([Qt.QUrl.fromLocalFile(r) for r in existing])

        def back_inside(folder: str) -> None:
            if outside_roots(folder, existing, "folder"):
                dialog.setDirectory(existing[0])

        dialog.directoryEntered.connect(back_inside)
    return dialog


def choose_file(parent: Qt.QWidget, title: str, roots: list[str]) -> str:
    """A file chosen by the operator inside ``roots`` (empty: anywhere), or "" if cancelled."""
    dialog = confined_dialog(parent, title, roots)
    if dialog.exec_() != Qt.QDialog.Accepted or not dialog.selectedFiles():
        return ""
    return dialog.selectedFiles()[0]
