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

import datetime as _dt
import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import OutputError
from .integrate import UNITS, IntegrationSettings, file_sha256
from .output import part_path, publish
from .sources import FailedInput

log = logging.getLogger(__name__)
STR = h5py.string_dtype()

#: Statuses of a file that ended by itself (published under its final name).
FINISHED_STATUSES = ("complete", "incomplete")

#: How each unit is stored in ``result/binning`` for Dioptas (its radial_unit must be one it knows).
_DIOPTAS_BINNING = {
    "2th_deg": ("2th_deg", 1.0, "deg"),
    "q_nm^-1": ("q_A^-1", 0.1, "1/angstrom"),
    "q_A^-1": ("q_A^-1", 1.0, "1/angstrom"),
    "d_A": ("d_A", 1.0, "angstrom"),
}
_LONG_NAMES = {"2th_deg": "2θ (deg)", "q_nm^-1": "q (1/nm)", "q_A^-1": "q (1/Å)", "d_A": "d (Å)"}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _set_str(group: h5py.Group, name: str, value: str) -> None:
    if name in group:
        del group[name]
    group.create_dataset(name, data=value, dtype=STR)


class MergedFileWriter:
    """Writes one merged file. ``path`` must be a name reserved by :func:`output.reserve_output`.

    The bytes go to ``<path>.part`` (:attr:`file_path`); :meth:`close` publishes them under
    :attr:`path` (or the next free ``_vNNN`` if that name got taken), :meth:`suspend` leaves them.
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
        self.bins = int(len(radial))
        self.with_sigma = settings.error_model is not None
        self._numbers = np.zeros(0, dtype=np.int64)
        self._file_index = np.zeros(0, dtype=np.int64)
        self.n_raw_files = len(raw_files)
        self.duplicates_ignored = 0
        self.failures: list[FailedInput] = []
        try:
            self.h5 = h5py.File(self.file_path, "w")
        except OSError as exc:
            raise OutputError(f"cannot write result file {self.file_path} ({exc})") from exc
        self._create(np.asarray(radial, dtype=np.float64), raw_files, input_files, source_name, chunk_rows)
        self.h5.flush()

    @classmethod
    def reopen(cls, path: str | Path, settings: IntegrationSettings) -> MergedFileWriter:
        """Continue a file that a killed process left open (the Merger's resume after kill -9).

        ``path`` is the final name; the bytes are at ``<path>.part``. Rows are trusted up to the last
        valid frame number: ``frame_number`` is written after the data of each row, so a row cut
        short by the kill is dropped here and simply merged again.
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        self.file_path = part_path(self.path)
        self.settings = settings
        self.with_sigma = settings.error_model is not None
        self.duplicates_ignored = 0
        try:
            self.h5 = h5py.File(self.file_path, "r+")
            result, self.proc = self.h5["processed/result"], self.h5["processed/process"]
            self.data, self.frame_number = result["data"], result["frame_number"]
            self.errors = result.get("data_errors")
            self.pos_map = self.proc["pos_map"]
            numbers = self.frame_number[()]
        except (OSError, KeyError) as exc:
            raise OutputError(f"{self.file_path} cannot be reopened to continue it ({exc})") from exc
        self.bins = int(self.data.shape[1])
        valid = numbers > 0
        ok = int(np.argmin(valid)) if not valid.all() else len(numbers)
        if ok and np.any(np.diff(numbers[:ok]) <= 0):
            ok = int(np.argmax(np.diff(numbers[:ok]) <= 0)) + 1
        for ds in self._datasets().values():
            ds.resize(ok, axis=0)
        self._numbers = numbers[:ok].astype(np.int64)
        self._file_index = self.pos_map[:ok, 0].astype(np.int64)
        self.n_raw_files = int(self.proc["files"].shape[0])
        failed = self.proc["failed"]
        self.failures = [
            FailedInput(f.decode(), r.decode(), _parse_ranges(n.decode()))
            for f, r, n in zip(failed["file"][()], failed["reason"][()], failed["frame_numbers"][()], strict=True)
        ]
        _set_str(self.proc, "status", "running")
        self.h5.flush()
        return self

    # -- layout ---------------------------------------------------------------------------------
    def _create(self, radial, raw_files, input_files, source_name, chunk_rows) -> None:
        s = self.settings
        h5 = self.h5
        h5.attrs.update(
            NX_class="NXroot",
            default="processed",
            file_name=self.path.name,
            file_time=now_iso(),
            creator=f"xrd-pipeline {__version__}",
            HDF5_Version=h5py.version.hdf5_version,
        )
        entry = h5.create_group("processed")
        entry.attrs["NX_class"] = "NXentry"
        _set_str(entry, "title", f"{source_name} integrated ({s.unit}, {s.bins} bins)")
        _set_str(entry, "start_time", now_iso())

        rows = dict(chunks=(chunk_rows, self.bins), maxshape=(None, self.bins), dtype=np.float32)
        result = entry.create_group("result")
        result.attrs.update(NX_class="NXdata", signal="data", axes=["frame_number", "binning"])
        result.attrs["frame_number_indices"] = 0
        result.attrs["binning_indices"] = 1
        self.data = result.create_dataset("data", shape=(0, self.bins), **rows)
        self.data.attrs.update(long_name="intensity", units="counts", interpretation="spectrum")
        self.errors = result.create_dataset("data_errors", shape=(0, self.bins), **rows) if self.with_sigma else None
        self.frame_number = result.create_dataset(
            "frame_number", shape=(0,), maxshape=(None,), chunks=(1024,), dtype=np.int64
        )
        self.frame_number.attrs.update(long_name="frame number", units="")
        dioptas_unit, factor, nx_unit = _DIOPTAS_BINNING[s.unit]
        binning = result.create_dataset("binning", data=radial * factor)
        label = _LONG_NAMES[dioptas_unit]
        binning.attrs.update(units=nx_unit, unit=nx_unit, radial_unit=dioptas_unit, long_name=label)

        entry.attrs["default"] = "result"
        if s.unit != "2th_deg":
            axis_name, unit = UNITS[s.unit]
            # README and Dioptas users know result_q / result_d (not result_d_spacing)
            extra = entry.create_group("result_d" if s.unit == "d_A" else f"result_{axis_name}")
            extra.attrs.update(NX_class="NXdata", signal="data", axes=["frame_number", axis_name])
            extra.attrs["frame_number_indices"] = 0
            extra.attrs[f"{axis_name}_indices"] = 1
            extra["data"] = self.data
            extra["frame_number"] = self.frame_number
            if self.errors is not None:
                extra["data_errors"] = self.errors
            ax = extra.create_dataset(axis_name, data=radial)
            ax.attrs.update(units=unit, long_name=_LONG_NAMES[s.unit])
            entry.attrs["default"] = extra.name.rsplit("/", 1)[-1]

        proc = entry.create_group("process")
        proc.attrs["NX_class"] = "NXprocess"
        _set_str(proc, "program", "xrd-pipeline")
        _set_str(proc, "version", __version__)
        _set_str(proc, "date", now_iso())
        _set_str(proc, "cal_file", str(s.poni_path))
        _set_str(proc, "poni", s.poni_path.read_text(encoding="utf-8", errors="replace"))
        _set_str(proc, "mask_file", "" if s.mask_path is None else str(s.mask_path))
        _set_str(proc, "mask_sha256", "" if s.mask_path is None else file_sha256(s.mask_path))
        _set_str(proc, "int_method", ",".join(s.method))
        _set_str(proc, "int_unit", s.unit)
        proc.create_dataset("num_points", data=np.int64(s.bins))
        proc.create_dataset(
            "polarization_factor", data=np.nan if s.polarization_factor is None else s.polarization_factor
        )
        proc.create_dataset("solid_angle_correction", data=bool(s.correct_solid_angle))
        _set_str(proc, "error_model", s.error_model or "none")
        _set_str(proc, "start_time", now_iso())
        _set_str(proc, "status", "running")
        proc.create_dataset("files", data=list(raw_files), dtype=STR, maxshape=(None,), chunks=(256,))
        proc.create_dataset("input_files", data=list(input_files), dtype=STR, maxshape=(None,), chunks=(256,))
        self.pos_map = proc.create_dataset(
            "pos_map", shape=(0, 2), maxshape=(None, 2), chunks=(1024, 2), dtype=np.int64
        )
        proc.create_dataset(
            "file_map", data=np.zeros(self.n_raw_files + 1, dtype=np.int64), maxshape=(None,), chunks=(256,)
        )
        failed = proc.create_group("failed")
        failed.attrs["NX_class"] = "NXcollection"
        for name in ("file", "reason", "frame_numbers"):
            failed.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(64,), dtype=STR)
        self.proc = proc

    # -- rows -----------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self._numbers.size)

    @property
    def frame_numbers(self) -> np.ndarray:
        return self._numbers.copy()

    def add(
        self,
        frame_numbers: np.ndarray,
        intensities: np.ndarray,
        sigma: np.ndarray | None = None,
        file_index: np.ndarray | None = None,
        index_in_file: np.ndarray | None = None,
    ) -> int:
        """Insert patterns at their place by frame number; returns how many were new."""
        numbers = np.asarray(frame_numbers, dtype=np.int64).ravel()
        n = numbers.size
        intensities = np.asarray(intensities, dtype=np.float32).reshape(n, self.bins)
        fidx = np.full(n, -1, np.int64) if file_index is None else np.asarray(file_index, np.int64).reshape(n)
        iidx = np.full(n, -1, np.int64) if index_in_file is None else np.asarray(index_in_file, np.int64).reshape(n)
        if self.with_sigma:
            if sigma is None:
                raise OutputError(f"{self.path}: the error model is {self.settings.error_model} but no sigma came")
            sigma = np.asarray(sigma, dtype=np.float32).reshape(n, self.bins)

        _, first = np.unique(numbers, return_index=True)
        keep = np.zeros(n, bool)
        keep[first] = True
        keep &= ~np.isin(numbers, self._numbers)
        dropped = n - int(keep.sum())
        if dropped:
            self.duplicates_ignored += dropped
            log.warning("%s: ignored %d duplicate frame(s): %s", self.path.name, dropped, numbers[~keep].tolist()[:20])
        if not keep.any():
            return 0
        order = np.argsort(numbers[keep], kind="stable")
        new = {
            "numbers": numbers[keep][order],
            "data": intensities[keep][order],
            "pos": np.stack([fidx[keep][order], iidx[keep][order]], axis=1),
        }
        if self.with_sigma:
            new["errors"] = sigma[keep][order]
        self._insert(new)
        self.h5.flush()
        return int(order.size)

    def _datasets(self) -> dict[str, h5py.Dataset]:
        ds = {"numbers": self.frame_number, "data": self.data, "pos": self.pos_map}
        if self.errors is not None:
            ds["errors"] = self.errors
        return ds

    def _insert(self, new: dict[str, np.ndarray]) -> None:
        old_n = self._numbers.size
        k = new["numbers"].size
        start = int(np.searchsorted(self._numbers, new["numbers"][0]))
        datasets = self._datasets()
        if start == old_n:  # the common case: frames arrive in order
            merged = new
        else:  # out of order: rewrite the tail from the insertion point
            tail_numbers = self._numbers[start:]
            order = np.argsort(np.concatenate([tail_numbers, new["numbers"]]), kind="stable")
            merged = {}
            for key, ds in datasets.items():
                old = tail_numbers if key == "numbers" else ds[start:old_n]
                merged[key] = np.concatenate([old, new[key]])[order]
        for ds in datasets.values():
            ds.resize(old_n + k, axis=0)
        for key, ds in sorted(datasets.items(), key=lambda kv: kv[0] == "numbers"):  # frame numbers last
            ds[start : old_n + k] = merged[key]
        self._numbers = np.concatenate([self._numbers[:start], merged["numbers"]])
        self._file_index = np.concatenate([self._file_index[:start], merged["pos"][:, 0]])
        self._write_file_map()

    def set_raw_file(self, index: int, path: str, module_files: Sequence[str] = ()) -> None:
        """Name the raw (module-1) file of part ``index``; live scans learn their parts one by one.

        ``module_files`` (all files of the part) are added to ``input_files`` for provenance.
        """
        files = self.proc["files"]
        if index < files.shape[0] and files.asstr()[index] == path:
            return  # known already: every batch of a part names it again
        inputs = self.proc["input_files"]
        known = set(inputs.asstr()[()]) if inputs.shape[0] else set()
        new = [f for f in module_files if f not in known]
        if new:
            inputs.resize((inputs.shape[0] + len(new),))
            inputs[-len(new) :] = new
        if index >= files.shape[0]:
            files.resize((index + 1,))
            self.proc["file_map"].resize((index + 2,))
            self.n_raw_files = index + 1
        files[index] = path
        self._write_file_map()

    def _write_file_map(self) -> None:
        valid = self._file_index[self._file_index >= 0]
        counts = np.bincount(valid, minlength=self.n_raw_files)[: self.n_raw_files]
        self.proc["file_map"][...] = np.concatenate([[0], np.cumsum(counts)])

    def add_failure(self, failure: FailedInput) -> None:
        """List frames that could not be integrated, with the reason, in the file itself."""
        self.failures.append(failure)
        failed = self.proc["failed"]
        i = failed["file"].shape[0]
        frames = _ranges(failure.frame_numbers)
        for name, value in (("file", failure.file), ("reason", failure.reason), ("frame_numbers", frames)):
            failed[name].resize((i + 1,))
            failed[name][i] = value
        self.h5.flush()

    @property
    def is_open(self) -> bool:
        return bool(self.h5)

    def _end(self, status: str) -> None:
        _set_str(self.proc, "end_time", now_iso())
        _set_str(self.proc, "status", status)
        _set_str(self.h5["processed"], "end_time", now_iso())
        self.h5.attrs["frames_merged"] = self.n_frames
        self.h5.flush()
        self.h5.close()

    def suspend(self, status: str = "interrupted") -> None:
        """Close the file without finishing it: it stays at ``<path>.part`` with ``status``
        (``interrupted``, or ``failed`` after a crash); :meth:`reopen` can continue it."""
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


def _ranges(numbers: Sequence[int]) -> str:
    """Compact "1-10,15" text for a list of frame numbers (an operator reads it)."""
    values = sorted(set(int(v) for v in numbers))
    if not values:
        return ""
    out, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(out)


def _parse_ranges(text: str) -> list[int]:
    """Inverse of :func:`_ranges`: "1-3,7" -> [1, 2, 3, 7]."""
    out: list[int] = []
    for piece in filter(None, text.split(",")):
        first, _, last = piece.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


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
