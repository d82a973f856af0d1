"""d-spacing (Å) from a radial axis in any of the pipeline's units, and back.

2θ needs the wavelength (Bragg: ``d = λ / (2 sin θ)``); q does not (``d = 2π / q``).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

#: unit names as pyFAI and Dioptas write them (``binning@radial_unit``, ``process/int_unit``)
RADIAL_UNITS = ("2th_deg", "q_nm^-1", "q_A^-1", "d_A")


def _check(unit: str, wavelength_a: float | None) -> None:
    if unit not in RADIAL_UNITS:
        raise ConfigError(f"radial unit {unit!r} is unknown; expected one of {', '.join(RADIAL_UNITS)}")
    if unit == "2th_deg" and not (wavelength_a and wavelength_a > 0):
        raise ConfigError(f"a 2θ axis needs the wavelength to give d; got {wavelength_a!r} (Å)")


def to_d(x, unit: str, wavelength_a: float | None = None) -> np.ndarray:
    """d (Å) at radial positions ``x`` in ``unit``."""
    _check(unit, wavelength_a)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if unit == "2th_deg":
            return wavelength_a / (2.0 * np.sin(np.radians(x) / 2.0))
        if unit == "q_nm^-1":
            return 20.0 * np.pi / x
        if unit == "q_A^-1":
            return 2.0 * np.pi / x
        return x


def from_d(d, unit: str, wavelength_a: float | None = None) -> np.ndarray:
    """Radial position in ``unit`` of spacing ``d`` (Å); NaN where 2θ does not exist (d < λ/2)."""
    _check(unit, wavelength_a)
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if unit == "2th_deg":
            return 2.0 * np.degrees(np.arcsin(wavelength_a / (2.0 * d)))
        if unit == "q_nm^-1":
            return 20.0 * np.pi / d
        if unit == "q_A^-1":
            return 2.0 * np.pi / d
        return d


def d_slope(x, unit: str, wavelength_a: float | None = None) -> np.ndarray:
    """|dd/dx| at ``x``: turns a position error in the axis unit into a d error."""
    x = np.asarray(x, dtype=np.float64)
    h = 1e-6 * np.maximum(np.abs(x), 1e-3)
    return np.abs(to_d(x + h, unit, wavelength_a) - to_d(x - h, unit, wavelength_a)) / (2 * h)
