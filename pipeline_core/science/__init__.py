"""Science on the integrated patterns: pressure from a marker's diffraction lines (pure Python, no Tango).

The API, for the offline run, the ``pressure`` command and the live Merger alike (one code path):

* :class:`PressureSettings` — marker (``au``, ``pt``, ``nacl-b2``, ``cu`` or a Dioptas JCPDS path),
  ``scale`` (a peritheos identifier; None = the marker's published default), ``reflections``
  (``("111", "200")``; None = all), ``start_pressure_gpa``; ``to_dict``/``from_dict`` (versioned).
* :class:`PressureTracker` ``(settings, radial_axis, unit, wavelength_Å)`` — ``feed(frame_numbers,
  rows)`` a batch (any order, any size) → :class:`PressureSeries` of that batch; ``series`` → all
  frames so far. It keeps the lattice to follow: each batch starts from the nearest earlier frame.
* :class:`PressureSeries` — per frame ``pressure``, ``pressure_sigma`` (GPa), ``lattice_a`` (Å),
  ``d`` per reflection; ``used(i)``, ``left_out_text(i)``, ``reason(i)``; ``records()`` for JSON.
* :func:`compute_pressure` (open merged file → series), :func:`write_pressure` (series →
  ``/processed/pressure``), :func:`add_pressure` (both: the offline hook).
* :func:`load_marker`, :func:`scales_of` (``--list-scales``), :func:`load_jcpds`.
"""

from .jcpds import load_jcpds
from .markers import BUILTIN_MARKERS, Marker, load_marker, scales_of
from .nexus_pressure import add_pressure, compute_pressure, read_pressure, wavelength_of, write_pressure
from .peaks import FitSettings
from .series import PressureSeries
from .tracker import PressureSettings, PressureTracker, parse_reflections

__all__ = [
    "BUILTIN_MARKERS",
    "FitSettings",
    "Marker",
    "PressureSeries",
    "PressureSettings",
    "PressureTracker",
    "add_pressure",
    "compute_pressure",
    "load_jcpds",
    "load_marker",
    "parse_reflections",
    "read_pressure",
    "scales_of",
    "wavelength_of",
    "write_pressure",
]
