"""The four attributes of the chain's settings (poniPath, maskPath, bins, unit), declared once.

The Stitcher holds the chain's settings and the Integrators and the Merger show and forward them;
all of them declare the same attributes with the same type, label, limits and meaning. Each device
says only where a read comes from and where a write goes (and may add options, e.g. memorized).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tango import AttrWriteType
from tango.server import attribute

from pipeline_core.processing.integrate import MAX_BINS, UNITS

from .change_events import follow_set_point

#: setting field -> (type, attribute options) of its attribute
SETTING_ATTRIBUTES: dict[str, tuple[type, dict[str, Any]]] = {
    "poni_path": (str, dict(label="PONI file", doc="pyFAI calibration of the chain; refused if it does not parse")),
    "mask_path": (
        str,
        dict(
            label="Mask file", doc="user mask of the chain (EDF/TIFF/.mask/.npy, non-zero = masked); empty = gaps only"
        ),
    ),
    "bins": (
        int,
        dict(
            label="Bins",
            unit="",
            format="%d",
            min_value=1,
            max_value=MAX_BINS,
            doc="number of radial bins of each 1-D pattern of the chain (0 = not set yet)",
        ),
    ),
    "unit": (str, dict(label="Radial unit", doc=f"radial unit of the chain: one of {', '.join(UNITS)} (pyFAI names)")),
}

#: setting field -> its attribute's name
ATTRIBUTE_NAMES = {"poni_path": "poniPath", "mask_path": "maskPath", "bins": "bins", "unit": "unit"}

#: (device, field) -> the value shown
Reader = Callable[[Any, str], Any]
#: (device, {field: value}) -> None; raises DevFailed to refuse
Writer = Callable[[Any, dict], None]


def setting_attribute(field: str, read: Reader, write: Writer, **options) -> attribute:
    """The READ_WRITE attribute of setting ``field``; ``options`` (e.g. ``doc``, ``memorized``) override."""
    convert, config = SETTING_ATTRIBUTES[field]

    def fget(self):
        value = convert(read(self, field))
        follow_set_point(self, ATTRIBUTE_NAMES[field], value)
        return value

    def fset(self, value) -> None:
        write(self, {field: convert(value)})

    return attribute(fget=fget, fset=fset, access=AttrWriteType.READ_WRITE, dtype=convert, **{**config, **options})
