"""The merged result file: every 1-D pattern of one scan of one detector in one NeXus file.

Layout = the P02.2 pipeline's processed file, so Dioptas' Batch View opens it (it reads
``processed/result/data``, ``binning`` and ``process/...`` by path), and at the same time a NeXus
NXazint1d file (``nxvalidate -a NXazint1d``: 0 errors; :mod:`nexus_azint`), whose default plot is an
image of the rows (silx, h5web)::

    / @default=processed
    /processed                  NXentry  @default=result_2th (result_q / result_d)
        definition = NXazint1d, solid_angle_applied, polarization_applied, normalization_applied,
        monitor_applied, title, start_time, end_time
    /processed/result           NXdata   @signal=I @axes=[., radial_axis] @interpretation=spectrum
        data          float32 (frames, bins)        Dioptas' name
        I             the same dataset as data (HDF5 hard link): NXazint1d's name
        data_errors   float32 (frames, bins)        when an error model is set; I_errors: the same
        frame_number  int64   (frames,)             acquisition frame numbers, increasing
        binning       float64 (bins,)               evenly spaced; @radial_unit for Dioptas
        radial_axis   the same dataset as binning (2θ in deg, q in 1/Å); in d: q = 2π/d of the bins
    /processed/result_2th|_q|_d NXdata   @signal=I @axes=[frame_number, two_theta|q|d_spacing]
                                         @interpretation=image: the default plot, axis in the chosen
                                         unit, labelled; every row dataset a hard link into result
    /processed/instrument       NXinstrument  name; monochromator/{wavelength, energy} (from the
                                         PONI); source/{name, type, probe}
    /processed/reduction        NXprocess program, version, date, reference (pyFAI's paper), note,
                                         input (NXparameters: pyFAI's integrate1d arguments, links
                                         into process)
    /processed/process          NXprocess
        program, version, cal_file, poni, mask_file, mask_sha256, int_method, int_unit,
        num_points, polarization_factor, solid_angle_correction, error_model,
        files, pos_map, file_map, input_files, start_time, end_time, status
        failed/{file, reason, frame_numbers}   NXcollection: what could not be integrated

NXazint1d's NXdata is unnamed, so a validator checks every NXdata directly under ``/processed``
against it (``I`` and ``radial_axis`` required): another result written into the entry (the
marker's pressure) goes in a group of another class (NXprocess, NXcollection) or deeper, never as
an NXdata beside ``result``.

The file is written incrementally as patterns arrive (resizable datasets, flushed after each batch)
and rows are kept ordered by frame number even when batches arrive out of order; a frame number
already in the file is never written twice.

While it is written the file is ``<name>.part`` (``process/status`` = ``running``); it gets its
final name only when the run ends by itself (``complete``, or ``incomplete`` with the failed frames
listed). A run that is stopped keeps the part name with status ``interrupted`` (``failed`` when it
crashed); one killed outright leaves it ``running``. Readers that open ``*.nxs`` (Dioptas) never
see those, and :func:`read_merged` reports the status so our own tools can refuse them.

A full disk is refused before HDF5 meets it (HDF5 does not survive ENOSPC: the process segfaults
when the file is closed): every write first checks the folder's free space against what it needs
plus a reserve (:class:`hdf5_io.SpaceGuard`) and raises :class:`~pipeline_core.errors.NoSpaceError`,
leaving the file as it was after the last write and room to end it (``failed``, ``interrupted``).
The check races other writers, so the room is then taken past the file's end before HDF5 writes
(:meth:`MergedFileWriter.reserve`, :mod:`hdf5_room`); an ENOSPC HDF5 meets anyway (a file system that
cannot reserve) is a NoSpaceError too, and its handle, which HDF5 can no longer flush or close, is
held until there is room instead of being closed on a full disk.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import NoSpaceError, OutputError
from ..messages import FailedFrames
from ..output import part_path, publish
from ..processing.integrate import IntegrationSettings
from . import hdf5_room
from .hdf5_io import METADATA_PER_WRITE, FreeBytes, SpaceGuard, is_no_space
from .nexus_azint import Instrument
from .nexus_failures import FailureList, format_ranges
from .nexus_layout import create_layout, now_iso, record_engine, set_str
from .nexus_rows import RowStore

log = logging.getLogger(__name__)

#: Statuses of a file that ended by itself (published under its final name).
FINISHED_STATUSES = ("complete", "incomplete")

#: A new file before its first row: groups, object headers, the scalar fields, the PONI text and the
#: radial axes (measured 118 kB with 4038 bins and errors, the NXazint1d groups included), with room to spare.
NEW_FILE_BYTES = 256 << 10
#: What ending a file writes (status, end times, the last metadata flush): taken from the reserve
#: every earlier write left (:data:`hdf5_io.END_RESERVE`).
END_BYTES = 128 << 10


def text_bytes(texts: Sequence[str]) -> int:
    """Room for strings written to the file (variable-length: global heap objects, one write's metadata)."""
    return METADATA_PER_WRITE + sum(len(t.encode()) + 32 for t in texts)


def _describe(numbers: np.ndarray) -> str:
    text = format_ranges(np.asarray(numbers).ravel().tolist())
    return text if len(text) <= 60 else text[:57] + "..."


class MergedFileWriter:
    """Writes one merged file. ``path`` must be a name reserved by :func:`output.reserve_output`.

    The bytes go to ``<path>.part`` (:attr:`file_path`); :meth:`close` publishes them under
    :attr:`path` (or the next free ``_vNNN`` if that name got taken), :meth:`suspend` leaves them.
    ``instrument`` names the beamline and source (NXazint1d), ``unknown`` when not given.
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
        free_bytes: FreeBytes | None = None,
        instrument: Instrument | None = None,
    ):
        self.path = Path(path)
        self.file_path = part_path(self.path)
        self.settings = settings
        #: every write asks it first (``free_bytes``: the file system's, or a test's)
        self.space = SpaceGuard(self.file_path.parent, free_bytes)
        #: HDF5 met ENOSPC all the same (another writer took the room after the check)
        self._damaged = False
        poni_bytes = settings.poni_path.stat().st_size if settings.poni_path.exists() else 0
        needed = NEW_FILE_BYTES + poni_bytes + text_bytes([*raw_files, *input_files])
        what = f"the new result file {self.file_path}"
        self.space.require(needed, what)
        try:
            self.h5 = h5py.File(self.file_path, "w")
        except OSError as exc:
            raise OutputError(f"cannot write result file {self.file_path} ({exc})") from exc
        try:
            self._take_room(needed, what)  # the room its layout takes, before HDF5 writes it
        except BaseException:
            self.h5.close()
            raise
        layout = create_layout(
            self.h5, self.path.name, settings, radial, raw_files, input_files, source_name, chunk_rows, instrument
        )
        self._rows = RowStore(self.path, layout, settings.error_model, len(raw_files))
        self._failures = FailureList(layout.proc["failed"])
        with self._writing("its layout"):
            self._flush()

    def reserve(self, needed: int, what: str, keep_reserve: bool = True) -> None:
        """Check the folder's free space, then take ``needed`` bytes past the file's end for it
        (:func:`hdf5_room.reserve`): the write that follows cannot meet a disk another writer filled
        after the check. NoSpaceError (nothing written, the file intact) when either says no. What
        an earlier write did not use is given back first, so the check sees the disk as the file
        uses it (this write's slack, :data:`METADATA_PER_WRITE`, covers what an unflushed one left
        in HDF5's cache); what this one does not use is given back after its flush (:meth:`_flush`)."""
        hdf5_room.trim(self.file_path)
        self.space.require(needed, what, keep_reserve)
        self._take_room(needed, what)

    def _take_room(self, needed: int, what: str) -> None:
        try:
            hdf5_room.reserve(self.file_path, needed + METADATA_PER_WRITE)
        except OSError as exc:
            if not is_no_space(exc):
                raise OutputError(f"cannot write {what} ({exc})") from exc
            free = self.space.free(self.space.folder)
            raise NoSpaceError(self.space.folder, needed, free, what,
                               "the disk filled up after the check (another writer)") from exc  # fmt: skip

    def _flush(self) -> None:
        """Flush, then give back the room reserved past the file's end that the flush did not use
        (held between writes it would count against every other writer's free space)."""
        self.h5.flush()
        hdf5_room.trim(self.file_path)

    def writing(self, what: str) -> contextlib.AbstractContextManager[None]:
        """The context a write into :attr:`h5` by others (the marker's pressure) runs in: see :meth:`_writing`."""
        return self._writing(what)

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turn an ENOSPC that HDF5 met all the same (the check raced another writer) into a
        NoSpaceError naming the file, and remember that the handle is damaged (HDF5 can neither
        flush nor close it properly any more: :mod:`hdf5_room`)."""
        try:
            yield
        except (RuntimeError, OSError) as exc:
            if isinstance(exc, NoSpaceError) or not is_no_space(exc):
                raise
            self._damaged = True
            free = self.space.free(self.space.folder)
            raise NoSpaceError(
                self.space.folder, 0, free, f"{what} of {self.file_path}",
                "HDF5 met the full disk (another writer took the room after the check)",
            ) from exc  # fmt: skip

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

    def raw_file(self, index: int) -> str:
        """The raw (module-1) file recorded for part ``index``; "" when none is yet."""
        return self._rows.raw_file(index)

    @property
    def n_raw_files(self) -> int:
        return self._rows.n_raw_files

    @property
    def duplicates_ignored(self) -> int:
        return self._rows.duplicates_ignored

    def row_bytes(self, n: int) -> int:
        """Most bytes ``n`` more rows can add to the file (:meth:`nexus_rows.RowStore.bytes_for`)."""
        return self._rows.bytes_for(n)

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
        """Insert patterns at their place by frame number; returns how many were new.

        NoSpaceError (nothing written) when the folder has no room for them."""
        numbers = np.asarray(frame_numbers).ravel()
        what = f"{numbers.size} row(s) (frames {_describe(numbers)}) of {self.file_path}"
        self.reserve(self._rows.bytes_for(numbers.size), what)
        with self._writing(what):
            added = self._rows.add(frame_numbers, intensities, sigma, file_index, index_in_file)
            if added:
                self._flush()
        return added

    def set_raw_file(self, index: int, path: str, module_files: Sequence[str] = ()) -> None:
        """Name the raw (module-1) file of part ``index``; live scans learn their parts one by one.

        ``module_files`` (all files of the part) are added to ``input_files`` for provenance.
        """
        what = f"the raw file name {path} in {self.file_path}"
        self.reserve(text_bytes([path, *module_files]), what)
        with self._writing(what):
            self._rows.set_raw_file(index, path, module_files)

    def add_failure(self, failure: FailedFrames) -> None:
        """List frames that could not be integrated, with the reason, in the file itself."""
        frames = _describe(np.asarray(failure.frame_numbers))
        what = f"the failure of {failure.file or 'frames'} {frames} in {self.file_path}"
        self.reserve(text_bytes([failure.file, failure.reason, format_ranges(failure.frame_numbers)]), what)
        with self._writing(what):
            self._failures.add(failure)
            self._flush()

    def record_engine(self, name: str, note: str) -> None:
        """``process/engine`` and ``engine_note`` (:func:`nexus_layout.record_engine`), space checked."""
        what = f"the engine's name in {self.file_path}"
        self.reserve(text_bytes([name, note]), what)
        with self._writing(what):
            record_engine(self.h5, name, note)

    # -- end ------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return bool(self.h5)

    def discard(self) -> None:
        """Let go of a file whose writing was cut short (a rebuild that met a full disk), as it is:
        closed when its last flush went through, held for later (:mod:`hdf5_room`) when HDF5 met ENOSPC."""
        if self._damaged:
            hdf5_room.hold(self.file_path, self.h5)
        elif self.is_open:
            self.h5.close()

    def _end(self, status: str) -> None:
        """Write the status and close. With no room even for that (the reserve was taken by someone
        else), close without writing and raise NoSpaceError: the file keeps what its last flush wrote
        (status ``running``); the caller decides whether to keep it. A handle HDF5 met ENOSPC in is
        never flushed or closed here (that crashes the process): it is held until there is room
        (:func:`hdf5_room.let_go`), and NoSpaceError says the file stays as its last good flush left it."""
        what = f"the status {status!r} of {self.file_path}"
        if self._damaged:
            hdf5_room.hold(self.file_path, self.h5)
            raise NoSpaceError(self.space.folder, END_BYTES, self.space.free(self.space.folder), what,
                               "HDF5 met the full disk in an earlier write: the file stays as its last flush "
                               "left it (status running) until room comes back")  # fmt: skip
        try:
            self.reserve(END_BYTES, what, keep_reserve=False)
        except NoSpaceError:
            self.h5.close()  # nothing changed since the last flush: closing writes nothing new
            hdf5_room.trim(self.file_path)
            raise
        with self._writing(what):
            proc = self._rows.ds.proc
            set_str(proc, "end_time", now_iso())
            set_str(proc, "status", status)
            set_str(self.h5["processed"], "end_time", now_iso())
            self.h5.attrs["frames_merged"] = self.n_frames
            self.h5.flush()
        self.h5.close()
        hdf5_room.trim(self.file_path)

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
