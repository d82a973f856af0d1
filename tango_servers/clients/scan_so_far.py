"""The Merger's current file as far as it is written: the heatmap of the scan so far, for every client.

Read without taking the writer's lock (the Merger holds the file open, not in SWMR mode): a read
that meets a half-written moment gives None and the client keeps its last picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline_core.output import part_path
from pipeline_core.processing.units import UNITS


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
    import h5py  # here, not at the top: cli.py imports the clients at every start

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
