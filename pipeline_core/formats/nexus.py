"""The merged result file: every 1-D pattern of one scan of one detector in one NeXus file.

Layout = the P02.2 pipeline's processed file, so Dioptas' Batch View opens it, plus the NeXus
default-plot attributes so silx and h5web plot it::

    / @default=processed
    /processed                  NXentry  @default=result (or result_q / result_d)
    /processed/result           NXdata   @signal=data @axes=[frame_number, binning]
        data          float32 (frames, bins)
        data_errors   float32 (frames, bins)        when an error model is set
        frame_number  int64   (frames,)             acquisition frame numbers, increasing
        binning       float64 (bins,)               evenly spaced; @radial_unit for Dioptas
    /processed/result_q|_d      NXdata   same data (hard link), axis in the chosen unit
    /processed/process          NXprocess
        program, version, cal_file, poni, mask_file, mask_sha256, int_method, int_unit,
        num_points, polarization_factor, solid_angle_correction, error_model,
        files, pos_map, file_map, input_files, start_time, end_time, status
        failed/{file, reason, frame_numbers}   NXcollection: what could not be integrated

The file is written incrementally as patterns arrive (resizable datasets, flushed after each batch)
and rows are kept ordered by frame number even when batches arrive out of order; a frame number
already in the file is never written twice.

While it is written the file is ``<name>.part`` (``process/status`` = ``running``); it gets its
final name only when the run ends by itself (``complete``, or ``incomplete`` with the failed frames
listed). A run that is stopped keeps the part name with status ``interrupted`` (``failed`` when it
crashed); one killed outright leaves it ``running``. Readers that open ``*.nxs`` (Dioptas) never
see those, and :func:`read_merged` reports the status so our own tools can refuse them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import OutputError
from ..messages import FailedFrames
from ..output import part_path, publish
from ..processing.integrate import IntegrationSettings
from .nexus_failures import FailureList
from .nexus_layout import create_layout, now_iso, set_str
from .nexus_rows import RowStore

log = logging.getLogger(__name__)

#: Statuses of a file that ended by itself (published under its final name).
FINISHED_STATUSES = ("complete", "incomplete")



class MergedFileWriter:
    """Writes one merged file. ``path`` must be a name reserved by :func:`output.reserve_output`.

    The bytes go to ``<path>.part`` (:attr:`file_path`); :meth:`close` publishes them under
    :attr:`path` (or the next free ``_vNNN`` if that name got taken), :meth:`suspend` leaves them.
    The layout is :mod:`nexus_layout`'s, the rows :class:`nexus_rows.RowStore`'s, the failure list
    :class:`nexus_failures.FailureList`'s; this class owns the file's life: create, flush
    after each change, end it as a result or leave it as a part.
    """

    def __init__(
        self,
        path: str | Path,
        radial: np.ndarray,
        settings: IntegrationSettings,
        raw_files: Sequence[str],
        input_files: Sequence[str],
        source_name: str = "",
        chunk_rows: int = 64,
    ):
        self.path = Path(path)
        self.file_path = part_path(self.path)
        self.settings = settings
        try:
            self.h5 = h5py.File(self.file_path, "w")
        except OSError as exc:
            raise OutputError(f"cannot write result file {self.file_path} ({exc})") from exc
        layout = create_layout(
            self.h5, self.path.name, settings, radial, raw_files, input_files, source_name, chunk_rows
        )
        self._rows = RowStore(self.path, layout, settings.error_model, len(raw_files))
        self._failures = FailureList(layout.proc["failed"])
        self.h5.flush()

    # -- rows -----------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self._rows.numbers.size)

    @property
    def frame_numbers(self) -> np.ndarray:
        return self._rows.numbers.copy()

    @property
    def bins(self) -> int:
        return self._rows.bins

    @property
    def n_raw_files(self) -> int:
        return self._rows.n_raw_files

    @property
    def duplicates_ignored(self) -> int:
        return self._rows.duplicates_ignored

    @property
    def failures(self) -> list[FailedFrames]:
        return self._failures.items

    def add(
        self,
        frame_numbers: np.ndarray,
        intensities: np.ndarray,
        sigma: np.ndarray | None = None,
        file_index: np.ndarray | None = None,
        index_in_file: np.ndarray | None = None,
    ) -> int:
        """Insert patterns at their place by frame number; returns how many were new."""
        added = self._rows.add(frame_numbers, intensities, sigma, file_index, index_in_file)
        if added:
            self.h5.flush()
        return added

    def set_raw_file(self, index: int, path: str, module_files: Sequence[str] = ()) -> None:
        """Name the raw (module-1) file of part ``index``; live scans learn their parts one by one.

        ``module_files`` (all files of the part) are added to ``input_files`` for provenance.
        """
        self._rows.set_raw_file(index, path, module_files)

    def add_failure(self, failure: FailedFrames) -> None:
        """List frames that could not be integrated, with the reason, in the file itself."""
        self._failures.add(failure)
        self.h5.flush()

    # -- end ------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return bool(self.h5)

    def _end(self, status: str) -> None:
        proc = self._rows.ds.proc
        set_str(proc, "end_time", now_iso())
        set_str(proc, "status", status)
        set_str(self.h5["processed"], "end_time", now_iso())
        self.h5.attrs["frames_merged"] = self.n_frames
        self.h5.flush()
        self.h5.close()

    def suspend(self, status: str = "interrupted") -> None:
        """Close the file without finishing it: it stays at ``<path>.part`` with ``status``
        (``interrupted``, or ``failed`` after a crash); a Merger's resume rebuilds it from its row log
        (:mod:`pipeline_core.live.merge_log`)."""
        if not self.is_open:
            return
        self._end(status)

    def close(self) -> Path:
        """Finish the file (status complete, or incomplete when anything failed) and give it its
        final name; returns that name (also :attr:`path`), a ``_vNNN`` one if ``path`` got taken."""
        if not self.is_open:
            return self.path
        self._end("complete" if not self.failures else "incomplete")
        final = publish(self.path)
        if final != self.path:
            log.warning("%s was taken meanwhile; the result is %s", self.path, final)
        self.path = self.file_path = final
        return final

    def __enter__(self) -> MergedFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # an exception means the run did not end by itself: never publish it as a result
            self.suspend("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")


def read_merged(path: str | Path) -> dict[str, np.ndarray]:
    """Read back the essentials of a merged file (for tests, the heatmap and users' scripts).

    ``status`` says whether it is a result: ``complete``/``incomplete`` (:data:`FINISHED_STATUSES`)
    or not (``running``: being written or its writer was killed; ``interrupted``; ``failed``);
    ``finished`` is True only for the former.
    """
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise OutputError(
            f"{path} cannot be read as a merged file ({exc}); a file still being written, or left by a "
            "killed process, may be locked or unreadable"
        ) from exc
    with h5:
        result = h5["processed/result"]
        proc = h5["processed/process"]
        out = {
            "data": result["data"][()],
            "frame_number": result["frame_number"][()],
            "binning": result["binning"][()],
            "radial_unit": result["binning"].attrs["radial_unit"],
            "int_unit": proc["int_unit"][()].decode(),
            "pos_map": proc["pos_map"][()],
            "file_map": proc["file_map"][()],
            "files": [f.decode() for f in proc["files"][()]],
            "input_files": [f.decode() for f in proc["input_files"][()]],
            "failed_files": [f.decode() for f in proc["failed/file"][()]],
            "failed_reasons": [f.decode() for f in proc["failed/reason"][()]],
            "failed_frames": [f.decode() for f in proc["failed/frame_numbers"][()]],
            "status": proc["status"][()].decode(),
        }
        out["finished"] = out["status"] in FINISHED_STATUSES
        if "data_errors" in result:
            out["sigma"] = result["data_errors"][()]
        default = h5["processed"].attrs["default"]
        nxdata = h5["processed"][default]
        axis = nxdata.attrs["axes"][-1]
        out["default_axis"] = nxdata[axis][()]
        out["default_axis_units"] = nxdata[axis].attrs.get("units", "")
        out["default_axis_label"] = nxdata[axis].attrs.get("long_name", axis)
        return out
