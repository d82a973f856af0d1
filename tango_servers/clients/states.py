"""Tango's state colours, as Jive and ATK panels paint them: one table for the panel and the web page."""

from __future__ import annotations

#: state -> background (r, g, b): Tango's colours as Jive/ATK paint them, copied from Taurus 5's
#: ``taurus.core.util.colors.TANGO_STATE_COLORS`` (its "Tango" policy; Taurus's own default policy
#: repaints ON lime and RUNNING cornflower blue, so it is not used here).
STATE_COLOURS: dict[str, tuple[int, int, int]] = {
    "ON": (0, 255, 0),
    "OFF": (255, 255, 255),
    "CLOSE": (255, 255, 255),
    "OPEN": (0, 255, 0),
    "INSERT": (255, 255, 255),
    "EXTRACT": (0, 255, 0),
    "MOVING": (128, 160, 255),
    "STANDBY": (255, 255, 0),
    "FAULT": (255, 0, 0),
    "INIT": (204, 204, 122),
    "RUNNING": (0, 125, 0),
    "ALARM": (255, 140, 0),
    "DISABLE": (255, 0, 255),
    "UNKNOWN": (155, 155, 155),
}


def state_colour(state: str) -> tuple[int, int, int]:
    """The background of ``state`` (a DevState name); UNKNOWN's grey for anything else (no answer)."""
    return STATE_COLOURS.get(state, STATE_COLOURS["UNKNOWN"])
