"""The groups and datasets of a merged NeXus file: created once for a new file, found again on reopen.

Kept apart from the writer so the layout (what Dioptas' Batch View, silx and h5web read) is in one
place and the writer only fills rows; :mod:`nexus` documents the layout itself.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from .. import __version__
from ..processing.integrate import IntegrationSettings, file_sha256
from ..processing.units import UNITS
from .nexus_azint import Instrument, write_entry_flags, write_instrument, write_reduction

STR = h5py.string_dtype()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def set_str(group: h5py.Group, name: str, value: str) -> None:
    """Write (or replace) a scalar string: the process fields are rewritten when a run ends."""
    if name in group:
        del group[name]
    group.create_dataset(name, data=value, dtype=STR)


@dataclass(frozen=True)
class ResultDatasets:
    """The datasets a writer fills row by row (all resizable along the first axis)."""

    data: h5py.Dataset
    errors: h5py.Dataset | None
    frame_number: h5py.Dataset
    pos_map: h5py.Dataset
    proc: h5py.Group

    def rows(self) -> dict[str, h5py.Dataset]:
        """The row-aligned datasets by the names the writer's row arrays use."""
        ds = {"numbers": self.frame_number, "data": self.data, "pos": self.pos_map}
        if self.errors is not None:
            ds["errors"] = self.errors
        return ds


def open_layout(h5: h5py.File) -> ResultDatasets:
    """The datasets of an existing merged file (KeyError when it is not one)."""
    result, proc = h5["processed/result"], h5["processed/process"]
    return ResultDatasets(result["data"], result.get("data_errors"), result["frame_number"], proc["pos_map"], proc)


def create_layout(
    h5: h5py.File,
    file_name: str,
    settings: IntegrationSettings,
    radial: np.ndarray,
    raw_files: Sequence[str],
    input_files: Sequence[str],
    source_name: str,
    chunk_rows: int,
    instrument: Instrument | None = None,
) -> ResultDatasets:
    """Create every group of a new merged file, with no rows yet: Dioptas' ``result`` and ``process``,
    NXazint1d's fields (:mod:`nexus_azint`) and the default plot (:func:`_create_view`)."""
    s = settings
    h5.attrs.update(
        NX_class="NXroot",
        default="processed",
        file_name=file_name,
        file_time=now_iso(),
        creator=f"xrd-pipeline {__version__}",
        HDF5_Version=h5py.version.hdf5_version,
    )
    entry = h5.create_group("processed")
    entry.attrs["NX_class"] = "NXentry"
    set_str(entry, "title", f"{source_name} integrated ({s.unit}, {s.bins} bins)")
    set_str(entry, "start_time", now_iso())
    write_entry_flags(entry, s.correct_solid_angle, s.polarization_factor is not None)
    radial = np.asarray(radial, dtype=np.float64)
    data, errors, frame_number = _create_result(entry, s.unit, radial, s.error_model is not None, chunk_rows)
    _create_view(entry, s.unit, radial)
    proc = _create_process(entry, s, raw_files, input_files)
    write_instrument(entry, proc["poni"].asstr()[()], instrument or Instrument())
    write_reduction(entry, proc, proc["date"].asstr()[()])
    pos_map = proc.create_dataset("pos_map", shape=(0, 2), maxshape=(None, 2), chunks=(1024, 2), dtype=np.int64)
    proc.create_dataset(
        "file_map", data=np.zeros(len(raw_files) + 1, dtype=np.int64), maxshape=(None,), chunks=(256,)
    )
    failed = proc.create_group("failed")
    failed.attrs["NX_class"] = "NXcollection"
    for name in ("file", "reason", "frame_numbers"):
        failed.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(64,), dtype=STR)
    return ResultDatasets(data, errors, frame_number, pos_map, proc)


def _create_result(
    entry: h5py.Group, unit_name: str, radial: np.ndarray, with_sigma: bool, chunk_rows: int
) -> tuple[h5py.Dataset, h5py.Dataset | None, h5py.Dataset]:
    """``result``: the NXdata Dioptas' Batch View reads by path (``data``, axis ``binning`` in a unit
    it knows: q in 1/nm is stored as q in 1/Å, scaled) and NXazint1d's NXdata (``I``, ``I_errors``,
    ``radial_axis``: hard links to the same datasets; in d, ``radial_axis`` is q = 2π/d of the bins,
    since NXazint1d's radial axis is q or 2θ)."""
    bins = int(len(radial))
    rows = dict(chunks=(chunk_rows, bins), maxshape=(None, bins), dtype=np.float32)
    result = entry.create_group("result")
    result.attrs.update(NX_class="NXdata", signal="I", axes=[".", "radial_axis"], interpretation="spectrum")
    result.attrs.update(frame_number_indices=0, radial_axis_indices=1, binning_indices=1)
    data = result.create_dataset("data", shape=(0, bins), **rows)
    data.attrs.update(long_name="intensity", units="arbitrary units")
    result["I"] = data
    errors = None
    if with_sigma:
        errors = result.create_dataset("data_errors", shape=(0, bins), **rows)
        errors.attrs.update(long_name="estimated intensity error", units="arbitrary units")
        result["I_errors"] = errors
    frame_number = result.create_dataset("frame_number", shape=(0,), maxshape=(None,), chunks=(1024,), dtype=np.int64)
    frame_number.attrs.update(long_name="frame number", units="")
    unit = UNITS[unit_name]
    dioptas = unit.dioptas
    binning = result.create_dataset("binning", data=radial * unit.dioptas_scale)
    binning.attrs.update(units=dioptas.units, unit=dioptas.units, radial_unit=dioptas.name, long_name=dioptas.label)
    if dioptas.name == "d_A":
        q = result.create_dataset("radial_axis", data=2 * np.pi / binning[()])
        q.attrs.update(units="1/angstrom", long_name="q")
    else:
        binning.attrs["long_name"] = AZINT_LONG_NAMES[dioptas.axis]
        result["radial_axis"] = binning
    return data, errors, frame_number


#: NXazint1d's ``radial_axis/@long_name`` for each axis it allows.
AZINT_LONG_NAMES = {"two_theta": "2theta", "q": "q"}
#: The default plot's group for each integration unit (``result_q``/``result_d`` are older names users know).
VIEW_NAMES = {"two_theta": "result_2th", "q": "result_q", "d_spacing": "result_d"}


def _create_view(entry: h5py.Group, unit_name: str, radial: np.ndarray) -> None:
    """The entry's default plot: an image of the rows (frames × radial bins) on an axis in the
    integration unit, with the label and units viewers show (silx labels an axis by its long_name
    alone, and NXazint1d fixes radial_axis's to a bare ``2theta``/``q``: so the plotted axis is a
    dataset of its own, bins floats). Every other dataset is a hard link into ``result``
    (``data``/``data_errors`` kept for scripts that read them by those names)."""
    unit = UNITS[unit_name]
    result = entry["result"]
    view = entry.create_group(VIEW_NAMES[unit.axis])
    view.attrs.update(NX_class="NXdata", signal="I", axes=["frame_number", unit.axis], interpretation="image")
    view.attrs.update({"frame_number_indices": 0, f"{unit.axis}_indices": 1, "radial_axis_indices": 1})
    for name in ("I", "data", "I_errors", "data_errors", "frame_number", "radial_axis"):
        if name in result:
            view[name] = result[name]
    ax = view.create_dataset(unit.axis, data=radial)
    ax.attrs.update(units=unit.units, long_name=unit.label)
    entry.attrs["default"] = view.name.rsplit("/", 1)[-1]


def record_engine(h5: h5py.File, name: str, note: str) -> None:
    """``process/engine`` (csr or pyfai: what integrated the rows) and ``process/engine_note`` (what it
    is, and why it was chosen: e.g. the csr engine falling back to pyFAI for the azimuthal error model)."""
    proc = h5["processed/process"]
    set_str(proc, "engine", name)
    set_str(proc, "engine_note", note)


def _create_process(
    entry: h5py.Group, s: IntegrationSettings, raw_files: Sequence[str], input_files: Sequence[str]
) -> h5py.Group:
    """``process``: how the patterns were made (what Dioptas reads unconditionally, and provenance)."""
    proc = entry.create_group("process")
    proc.attrs["NX_class"] = "NXprocess"
    set_str(proc, "program", "xrd-pipeline")
    set_str(proc, "version", __version__)
    set_str(proc, "date", now_iso())
    set_str(proc, "cal_file", str(s.poni_path))
    set_str(proc, "poni", s.poni_path.read_text(encoding="utf-8", errors="replace"))
    set_str(proc, "mask_file", "" if s.mask_path is None else str(s.mask_path))
    set_str(proc, "mask_sha256", "" if s.mask_path is None else file_sha256(s.mask_path))
    set_str(proc, "int_method", ",".join(s.method))
    set_str(proc, "int_unit", s.unit)
    proc.create_dataset("num_points", data=np.int64(s.bins))
    proc.create_dataset("polarization_factor", data=np.nan if s.polarization_factor is None else s.polarization_factor)
    proc.create_dataset("solid_angle_correction", data=bool(s.correct_solid_angle))
    set_str(proc, "error_model", s.error_model or "none")
    set_str(proc, "start_time", now_iso())
    set_str(proc, "status", "running")
    proc.create_dataset("files", data=list(raw_files), dtype=STR, maxshape=(None,), chunks=(256,))
    proc.create_dataset("input_files", data=list(input_files), dtype=STR, maxshape=(None,), chunks=(256,))
    return proc
