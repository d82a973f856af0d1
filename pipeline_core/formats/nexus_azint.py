"""What makes a merged file an NXazint1d file: the entry's flags, ``instrument`` and ``reduction``.

NXazint1d (NeXus application definition for azimuthally integrated 1-D data, written by MAX IV's
azint and checked by nexusformat's ``nxvalidate -a NXazint1d``) asks the entry for its ``definition``,
whether solid angle, polarization, normalization and monitor corrections were applied, the
instrument (name, monochromator wavelength and energy, source name, type and probe) and an NXprocess
``reduction`` with the program, its reference and its ``input`` parameters. Every value written here
is what the writer knows for a fact (the settings, the PONI's wavelength); what it cannot know (the
beamline, the facility) is taken from :class:`Instrument`, ``unknown`` unless a caller says.

The ``input`` parameters are pyFAI's ``integrate1d`` argument names, HDF5 hard links to the fields
of ``process`` Dioptas reads (one value, two names): no copy can disagree with the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import metadata

import h5py
import numpy as np

from .. import __version__

#: Planck constant times the speed of light in keV·Å (CODATA 2018, exact SI values; pyFAI's ``units.hc``).
HC_KEV_ANGSTROM = 12.398419843320026
#: The algorithm's citation (NXazint1d ``reduction/reference``): pyFAI's paper; our csr engine applies
#: pyFAI's own CSR matrix and corrections, so the rows are pyFAI's azimuthal integration either way.
PYFAI_REFERENCE = (
    "G. Ashiotis, A. Deschildre, Z. Nawaz, J. P. Wright, D. Karkoulis, F. E. Picca and J. Kieffer, "
    "The fast azimuthal integration Python library: pyFAI, J. Appl. Cryst. 48 (2015) 510-519, "
    "doi:10.1107/S1600576715004306"
)
#: ``input`` parameter (pyFAI's ``integrate1d`` name) -> the ``process`` field it links to.
INPUT_LINKS = {
    "poni": "poni",
    "poni_file": "cal_file",
    "npt": "num_points",
    "unit": "int_unit",
    "method": "int_method",
    "polarization_factor": "polarization_factor",
    "correctSolidAngle": "solid_angle_correction",
    "error_model": "error_model",
    "mask_file": "mask_file",
    "mask_sha256": "mask_sha256",
}
UNKNOWN = "unknown"
STR = h5py.string_dtype()


@dataclass(frozen=True)
class Instrument:
    """Where the frames were measured: not in a PONI or a raw file, so a caller must say it.

    ``unknown`` is written rather than a guess; ``probe`` is ``x-ray`` because these are X-ray
    diffraction frames integrated with an X-ray wavelength."""

    #: the beamline (NXazint1d ``instrument/name``), e.g. ``P02.2``
    name: str = UNKNOWN
    #: the laboratory (``instrument/source/name``), e.g. ``PETRA III, DESY``
    source_name: str = UNKNOWN
    #: NXsource's type, e.g. ``Synchrotron X-ray Source``
    source_type: str = UNKNOWN
    probe: str = "x-ray"


def poni_wavelength_m(poni_text: str) -> float:
    """The ``Wavelength`` (metres) of a PONI file's text, read as pyFAI reads its keys (``key: value``,
    case-insensitive, ``#`` lines skipped); NaN when it has none or it is not a positive number
    (a file then says "not known" rather than a made-up value)."""
    for line in poni_text.splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        if key.strip().lower() == "wavelength":
            try:
                wavelength = float(value.strip())
            except ValueError:
                return math.nan
            return wavelength if math.isfinite(wavelength) and wavelength > 0 else math.nan
    return math.nan


def pyfai_version() -> str:
    """pyFAI's installed version, read without importing it (the Merger never needs pyFAI itself)."""
    try:
        return metadata.version("pyFAI")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def _set(group: h5py.Group, name: str, value, **attrs) -> None:
    ds = group.create_dataset(name, data=value, dtype=STR if isinstance(value, str) else None)
    ds.attrs.update(attrs)


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def write_entry_flags(entry: h5py.Group, solid_angle: bool, polarization: bool) -> None:
    """``definition`` and the ``*_applied`` flags. Normalization is applied: pyFAI's integrate1d
    (and the csr engine, which refuses unweighted means) divides each bin's summed signal by its
    summed normalization (pixel fractions × solid angle × polarization); no monitor (I0) is used."""
    _set(entry, "definition", "NXazint1d")
    for name, value in (
        ("solid_angle_applied", solid_angle),
        ("polarization_applied", polarization),
        ("normalization_applied", True),
        ("monitor_applied", False),
    ):
        entry.create_dataset(name, data=np.bool_(value))


def write_instrument(entry: h5py.Group, poni_text: str, instrument: Instrument) -> None:
    """``instrument``: the beamline's name, the monochromator's wavelength (Å) and energy (keV) from
    the PONI's wavelength, and the source."""
    group = _group(entry, "instrument", "NXinstrument")
    _set(group, "name", instrument.name)
    mono = _group(group, "monochromator", "NXmonochromator")
    wavelength = poni_wavelength_m(poni_text) * 1e10
    _set(mono, "wavelength", np.float64(wavelength), units="angstrom")
    _set(mono, "energy", np.float64(HC_KEV_ANGSTROM / wavelength), units="keV")
    source = _group(group, "source", "NXsource")
    _set(source, "name", instrument.source_name)
    _set(source, "type", instrument.source_type)
    _set(source, "probe", instrument.probe)


def write_reduction(entry: h5py.Group, proc: h5py.Group, date: str) -> None:
    """``reduction``: program, version, date, pyFAI's reference, a note, and ``input`` (links into
    ``proc`` plus what the settings never pass to pyFAI: no dark, no flat, no monitor normalization).
    ``mask_applied`` is always true: invalid counts are left out of every frame, and the detector's
    gaps and pixel_mask (and a mask file when given) of every frame."""
    group = _group(entry, "reduction", "NXprocess")
    _set(group, "program", "xrd-pipeline")
    _set(group, "version", __version__)
    _set(group, "date", date)
    _set(group, "reference", PYFAI_REFERENCE)
    _set(group, "note", (
        "One row per frame, ordered by frame number (result/frame_number), integrated with pyFAI's "
        "integrate1d settings in input; process/engine says whether pyFAI or the csr engine (pyFAI's "
        "CSR matrix applied in NumPy) integrated them. Pixels left out: the detector's gaps and "
        "pixel_mask, counts that are not valid (negative, NaN) in each frame, and input/mask_file."
    ))  # fmt: skip
    params = _group(group, "input", "NXparameters")
    for name, field in INPUT_LINKS.items():
        params[name] = proc[field]
    _set(params, "pyfai_version", pyfai_version())
    _set(params, "dark", "none")
    _set(params, "flat", "none")
    _set(params, "normalization_factor", np.float64(1.0))
    params.create_dataset("mask_applied", data=np.bool_(True))
