"""The state column painted in Tango's state colours, the ones Jive and ATK panels use.

A TaurusLabel paints its background from the attribute's *quality* by default, and State's quality
is always VALID: every state came out lime green, ALARM and RUNNING included, and only the LED
told them apart. :class:`StateLabel` paints the background from the state itself.
"""

from __future__ import annotations

from taurus.qt.qtgui.display import TaurusLabel
from taurus.qt.qtgui.display.tauruslabel import TaurusLabelControllerAttribute

from ..states import STATE_COLOURS, state_colour

__all__ = ["STATE_COLOURS", "StateLabel", "state_colour", "state_style"]

def state_style(state: str) -> str:
    """The label's style sheet: the state's colour, with white text where the colour is dark."""
    r, g, b = state_colour(state)
    text = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 110 else "black"
    return f"QLabel {{ background-color: rgb({r}, {g}, {b}); color: {text}; padding: 1px 4px; }}"


class _StateController(TaurusLabelControllerAttribute):
    """Taurus's label controller, with the background taken from the state read (not its quality)."""

    def _updateBackground(self, label: StateLabel) -> None:  # noqa: N802 (Taurus's name)
        value = self.value()
        label.paint(getattr(value, "name", None) or "UNKNOWN")


class StateLabel(TaurusLabel):
    """A device's State as text, on Tango's colour for that state (:data:`STATE_COLOURS`)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.painted = ""
        self.paint("UNKNOWN")

    def _calculate_controller_class(self):
        chosen = super()._calculate_controller_class()
        return _StateController if chosen is TaurusLabelControllerAttribute else chosen

    def paint(self, state: str) -> None:
        if state != self.painted:
            self.painted = state
            self.setStyleSheet(state_style(state))
