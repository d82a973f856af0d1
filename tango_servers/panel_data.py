"""What the operator panel computes without Qt: the chain's device names, root checks, the settings
request, and the scan-so-far read from the Merger's file.

Kept apart from the widgets so the rules (a PONI outside the calibration roots is refused, one
all-or-nothing ``SetSettings`` with only the fields the operator changed, a ``.part`` file read
without taking the writer's lock) are plain functions, and ``xrd-pipeline`` without Qt can import
this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline_core.messages import MessageError, SettingsRequest
from pipeline_core.output import part_path
from pipeline_core.processing.units import UNITS


@dataclass(frozen=True)
class ChainNames:
    """The devices of one chain (defaults: tango_db_setup/pipeline.yaml) and the database they are in."""

    tango_host: str
    stitcher: str = "p02/xrd/stitcher"
    integrators: tuple[str, ...] = ("p02/xrd/integrator1", "p02/xrd/integrator2")
    merger: str = "p02/xrd/merger"

    def trl(self, device: str, attribute: str | None = None) -> str:
        """Full Taurus/Tango name of ``device`` (and ``attribute``) on this chain's database."""
        base = f"tango://{self.tango_host}/{device}"
        return f"{base}/{attribute}" if attribute else base

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device, in the order of the chain (Stitcher, Integrators, Merger)."""
        return (self.stitcher, *self.integrators, self.merger)


def outside_roots(path: str, roots: list[str] | tuple[str, ...], what: str) -> str:
    """Why ``path`` may not be chosen ("" if it may): it must lie under one of ``roots`` (none: anywhere).

    The Stitcher refuses such a file anyway; saying so in the panel, before Apply, names the roots."""
    if not roots:
        return ""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return ""
    return f"{what} {path} is outside the calibration roots ({', '.join(roots)}); choose a file under one of them"


#: the Stitcher's setting attributes (what the panel shows) -> the fields of ``SetSettings``
SETTING_FIELDS = {"poniPath": "poni_path", "maskPath": "mask_path", "bins": "bins", "unit": "unit"}


def edited_settings(in_force: Mapping[str, object], editor: Mapping[str, object]) -> dict[str, object]:
    """The fields (attribute names) where the editor differs from the value in force it was showing:
    what the operator changed. Only these are sent, so Apply never puts back a value that someone
    else (a macro, another panel) set since the editor was filled."""
    return {attr: value for attr, value in editor.items() if value != in_force.get(attr)}


def settings_request(changes: Mapping[str, object]) -> str:
    """The JSON of the one ``SetSettings`` Apply sends: the changed fields (attribute names -> value),
    all taken or none; a field left out stays as the chain has it. ValueError (naming the value) for
    no change, an unknown field or unit, or an empty PONI path."""
    unknown = sorted(set(changes) - set(SETTING_FIELDS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(SETTING_FIELDS)}")
    if "unit" in changes and changes["unit"] not in UNITS:
        raise ValueError(f"unit {changes['unit']!r} is unknown; expected one of {', '.join(UNITS)}")
    fields = {SETTING_FIELDS[attr]: value for attr, value in changes.items()}
    if "bins" in fields:
        fields["bins"] = int(fields["bins"])
    request = SettingsRequest(**fields)
    try:
        request.check()
    except MessageError as exc:
        raise ValueError(str(exc)) from exc
    return request.to_json()


def axis_label(unit: str) -> str:
    """The plot label of a pyFAI unit name ("2θ (deg)"), or the name itself if it is unknown or empty."""
    return UNITS[unit].label if unit in UNITS else (unit or "radial axis")


@dataclass(frozen=True)
class ScanSoFar:
    """The rows merged so far: ``data`` (frames × bins), their frame numbers and the radial axis."""

    path: Path
    data: np.ndarray
    frame_number: np.ndarray
    axis: np.ndarray
    axis_label: str
    status: str


def read_scan_so_far(name: str, previous: ScanSoFar | None = None) -> ScanSoFar | None:
    """The Merger's file ``name`` as far as it is written (the ``.part`` while it is open), or None.

    ``previous`` (the last read) is returned as it is when the file, its row count and its status are
    unchanged: a long scan's data are then not read again every few seconds for nothing.

    The Merger keeps the file open for writing (not in SWMR mode) and flushes after each batch: the
    file is opened without HDF5's lock (which the writer holds) and read whole-dataset at once; a read
    that meets a half-written state fails and the caller keeps its last picture until the next try.
    Only complete rows count: the frame numbers and data are cut to the shorter of the two."""
    if not name:
        return None
    path = Path(name)
    if not path.exists():
        path = part_path(path)
    if not path.exists():
        return None
    import h5py  # here, not at the top: cli.py imports this module (via panel_command) at every start

    try:
        with h5py.File(path, "r", locking=False) as h5:
            entry = h5["processed"]
            result = entry["result"]
            status = entry["process/status"][()]
            status = status.decode() if isinstance(status, bytes) else str(status)
            if previous is not None and (previous.path, previous.status) == (path, status):
                if result["frame_number"].shape[0] == len(previous.frame_number):
                    return previous
            data, numbers = result["data"][()], result["frame_number"][()]
            nxdata = entry[entry.attrs.get("default", "result")]
            axis_name = nxdata.attrs["axes"][-1]
            axis = nxdata[axis_name]
            label = axis.attrs.get("long_name", axis_name)
            n = min(len(numbers), len(data))
            return ScanSoFar(
                path,
                np.asarray(data[:n], np.float32),
                np.asarray(numbers[:n]),
                np.asarray(axis[()], np.float64),
                label.decode() if isinstance(label, bytes) else str(label),
                status,
            )
    except (OSError, KeyError, ValueError, RuntimeError):
        return None
