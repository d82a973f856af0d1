"""``/processed/pressure`` in a merged file: computed from its own patterns, written beside them.

Read side: the rows of ``/processed/result`` (ours or Dioptas' layout: ``data``, ``frame_number``,
``binning`` with ``@radial_unit``) and the wavelength of ``/processed/process/poni``. Write side::

    /processed/pressure             NXprocess  @default=data: program, version, date, marker,
        marker_description, scale, scale_reference, reflections, start_pressure_gpa, settings (JSON),
        and per frame reflections_used, reflections_left_out (with why), reason (why no value)
    /processed/pressure/data        NXdata  @signal=pressure @axes=[frame_number]
        pressure, pressure_errors   float64 (frames,)  GPa; NaN where no value (see reason)
        lattice_a, lattice_a_errors float64 (frames,)  Å
        d_<hkl>, d_<hkl>_errors     float64 (frames,)  Å, each chosen reflection's fitted spacing
        frame_number                int64   (frames,)

The NXdata sits inside an NXprocess because NXazint1d requires ``I`` and ``radial_axis`` of every
NXdata directly under the entry: the file stays a valid NXazint1d file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import ConfigError, SourceError
from ..formats.nexus_layout import now_iso
from .markers import Marker
from .series import PressureSeries
from .tracker import PressureSettings, PressureTracker

#: frames fitted together: each block's windows are centred on the lattice of the frame before it
BLOCK_FRAMES = 16
_STR = h5py.string_dtype()
_WAVELENGTH = re.compile(r"^\s*Wavelength\s*:\s*([0-9.eE+-]+)", re.MULTILINE)
#: relative difference between ``--wavelength`` and the file's own beyond which it is refused
WAVELENGTH_RTOL = 1e-6
_TO_ANGSTROM = {"m": 1e10, "nm": 10.0, "angstrom": 1.0, "A": 1.0, "Å": 1.0}


def _text(h5: h5py.File, path: str) -> str | None:
    ds = h5.get(path)
    if not isinstance(ds, h5py.Dataset):
        return None
    value = ds[()]
    return value.decode() if isinstance(value, bytes) else str(value)


def wavelength_of(h5: h5py.File) -> float | None:
    """The wavelength (Å) the file was integrated with: its PONI text (ours), the PONI file its
    ``cal_file`` names (Dioptas'), else an NXmonochromator's ``wavelength``."""
    texts = [_text(h5, "processed/process/poni")]
    cal_file = _text(h5, "processed/process/cal_file")
    if cal_file and Path(cal_file).is_file():
        texts.append(Path(cal_file).read_text(encoding="utf-8", errors="replace"))
    for text in texts:
        match = _WAVELENGTH.search(text or "")
        if match:
            return float(match.group(1)) * 1e10
    found: list[float] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == "wavelength" and not found:
            unit = obj.attrs.get("units", "angstrom")
            unit = unit.decode() if isinstance(unit, bytes) else str(unit)
            if unit in _TO_ANGSTROM and np.ndim(obj[()]) == 0:
                found.append(float(obj[()]) * _TO_ANGSTROM[unit])

    h5.visititems(visit)
    return found[0] if found else None


def _radial(h5: h5py.File) -> tuple[h5py.Dataset, np.ndarray, np.ndarray, str]:
    """Rows, frame numbers, radial axis and its unit. Dioptas' batch files have no ``frame_number``
    (rows are numbered from 1) and no ``@radial_unit`` (``process/int_unit`` says it)."""
    try:
        result = h5["processed/result"]
        data, binning = result["data"], result["binning"]
    except KeyError as exc:
        raise SourceError(f"{h5.filename} has no /processed/result with data and binning ({exc})") from None
    numbers = result["frame_number"][()] if "frame_number" in result else np.arange(1, len(data) + 1)
    unit = binning.attrs.get("radial_unit", None)
    unit = unit.decode() if isinstance(unit, bytes) else unit
    unit = unit or _text(h5, "processed/process/int_unit") or ""
    return data, np.asarray(numbers), binning[()], str(unit)


def compute_pressure(h5: h5py.File, settings: PressureSettings, wavelength_a: float | None = None) -> PressureSeries:
    """Pressure of every frame of an open merged file (read only), fitted block after block."""
    data, numbers, axis, unit = _radial(h5)
    wavelength = _wavelength(h5, unit, wavelength_a)
    tracker = PressureTracker(settings, axis, unit, wavelength)
    for start in range(0, len(numbers), BLOCK_FRAMES):
        stop = min(len(numbers), start + BLOCK_FRAMES)
        tracker.feed(numbers[start:stop], data[start:stop])
    return tracker.series


def _wavelength(h5: h5py.File, unit: str, given_a: float | None) -> float | None:
    """The wavelength (Å) to turn the axis into d: the file's own. A given one (``--wavelength``) only
    stands in where the file records none; a different one is refused (the file was integrated with
    its own: another would move every peak and give a wrong pressure), as is one a q or d axis never uses."""
    recorded = wavelength_of(h5)
    if given_a is not None and unit != "2th_deg":
        raise ConfigError(
            f"--wavelength {given_a:g} Å given for {h5.filename}, whose radial axis is {unit!r}: "
            "only a 2th_deg axis needs a wavelength; leave --wavelength out"
        )
    if given_a is not None and recorded is not None and abs(given_a - recorded) > WAVELENGTH_RTOL * recorded:
        raise ConfigError(
            f"--wavelength {given_a:g} Å differs from the {recorded:.6g} Å {h5.filename} was integrated with: "
            "leave --wavelength out (it stands in only where a file records none)"
        )
    wavelength = recorded if recorded is not None else given_a
    if unit == "2th_deg" and wavelength is None:
        raise ConfigError(f"{h5.filename} records no wavelength (no PONI text): give --wavelength in Å")
    return wavelength


def pressure_bytes(series: PressureSeries) -> int:
    """About what :func:`write_pressure` adds to a file (for the writer's free-space check)."""
    return (64 << 10) + len(series) * (8 * (6 + 2 * len(series.labels)) + 3 * 64)


def write_pressure(h5: h5py.File, series: PressureSeries, marker: Marker, settings: PressureSettings) -> None:
    """Write (or replace) ``/processed/pressure`` (NXprocess: provenance) and its ``data`` (NXdata)."""
    entry = h5["processed"]
    if "pressure" in entry:
        del entry["pressure"]
    proc = entry.create_group("pressure")
    proc.attrs.update(NX_class="NXprocess", default="data")
    nx = proc.create_group("data")
    nx.attrs.update(NX_class="NXdata", signal="pressure", axes=["frame_number"], frame_number_indices=0)
    nx.attrs["auxiliary_signals"] = ["lattice_a"]

    def column(name: str, values: np.ndarray, units: str, label: str) -> None:
        ds = nx.create_dataset(name, data=np.asarray(values, dtype=np.float64))
        ds.attrs.update(units=units, long_name=label)

    column("pressure", series.pressure, "GPa", f"pressure (GPa, {marker.name})")
    column("pressure_errors", series.pressure_sigma, "GPa", "pressure uncertainty (GPa, 1 sigma)")
    column("lattice_a", series.lattice_a, "angstrom", f"lattice parameter a of {marker.name} (Å)")
    column("lattice_a_errors", series.lattice_a_sigma, "angstrom", "uncertainty of a (Å, 1 sigma)")
    for j, label in enumerate(series.labels):
        column(f"d_{label}", series.d[:, j], "angstrom", f"d of {marker.name} {label} (Å)")
        column(f"d_{label}_errors", series.d_sigma[:, j], "angstrom", f"uncertainty of d {label} (Å)")
    fn = nx.create_dataset("frame_number", data=np.asarray(series.frame_number, dtype=np.int64))
    fn.attrs.update(long_name="frame number", units="")
    text = {
        "program": "xrd-pipeline pipeline_core.science (pressure from a marker)",
        "version": __version__,
        "date": now_iso(),
        "marker": marker.name,
        "marker_description": marker.description,
        "scale": marker.scale.name,
        "scale_reference": marker.scale.reference,
        "settings": json.dumps(settings.to_dict()),
    }
    for name, value in text.items():
        proc.create_dataset(name, data=value, dtype=_STR)
    proc.create_dataset("reflections", data=list(series.labels), dtype=_STR)
    proc.create_dataset("start_pressure_gpa", data=float(settings.start_pressure_gpa)).attrs["units"] = "GPa"
    n = len(series)
    proc.create_dataset("reflections_used", data=[",".join(series.used(i)) for i in range(n)], dtype=_STR)
    proc.create_dataset("reflections_left_out", data=[series.left_out_text(i) for i in range(n)], dtype=_STR)
    proc.create_dataset("reason", data=[series.reason(i) for i in range(n)], dtype=_STR)


def read_pressure(h5: h5py.File) -> dict[str, np.ndarray]:
    """``/processed/pressure`` back as arrays: the NXdata's fields and the per-frame provenance."""
    proc = h5["processed/pressure"]
    out = {name: ds[()] for name, ds in proc["data"].items()}
    for name in ("reflections_used", "reflections_left_out", "reason", "reflections"):
        out[name] = np.array([v.decode() if isinstance(v, bytes) else v for v in proc[name][()]])
    return out


def add_pressure(h5: h5py.File, settings: PressureSettings) -> PressureSeries:
    """Compute and write the pressure of an open, writable merged file: the offline hook."""
    series = compute_pressure(h5, settings)
    write_pressure(h5, series, settings.load(), settings)
    return series
