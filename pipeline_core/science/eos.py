"""Room-temperature equations of state: pressure (GPa) from the conventional-cell volume (Å³).

Two published forms are written out here (so they can be checked by hand and serve JCPDS files),
the rest come from peritheos records (:mod:`.scales`):

* Vinet, Ferrante, Rose & Smith, J. Geophys. Res. 92, 9319 (1987), the form of Fei et al. 2007:
  ``P = 3 K0 (1 - x) / x² · exp(1.5 (K0' - 1)(1 - x))`` with ``x = (V/V0)^(1/3)``;
* third-order Birch–Murnaghan as Dioptas' ``jcpds.bm3_inverse`` writes it:
  ``P = 1.5 K0 (y^(7/3) - y^(5/3)) (1 + 0.75 (K0' - 4)(y^(2/3) - 1))`` with ``y = V0/V``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

PressureFunction = Callable[[np.ndarray], np.ndarray]


def vinet_pressure(volume, v0: float, k0: float, k0_prime: float) -> np.ndarray:
    """Vinet pressure (GPa) at ``volume`` (same unit as ``v0``)."""
    x = np.cbrt(np.asarray(volume, dtype=np.float64) / v0)
    return 3.0 * k0 * (1.0 - x) / x**2 * np.exp(1.5 * (k0_prime - 1.0) * (1.0 - x))


def bm3_pressure(volume, v0: float, k0: float, k0_prime: float) -> np.ndarray:
    """Third-order Birch–Murnaghan pressure (GPa), Dioptas' form."""
    y = v0 / np.asarray(volume, dtype=np.float64)
    return 1.5 * k0 * (y ** (7 / 3) - y ** (5 / 3)) * (1.0 + 0.75 * (k0_prime - 4.0) * (y ** (2 / 3) - 1.0))


@dataclass(frozen=True)
class EquationOfState:
    """A pressure scale: its name, the paper it comes from, V0 (Å³, conventional cell) and P(V)."""

    name: str
    reference: str
    v0: float
    function: PressureFunction

    def pressure(self, volume) -> np.ndarray:
        """P (GPa) at ``volume`` (Å³); NaN where the volume is NaN (a frame without a value)."""
        v = np.asarray(volume, dtype=np.float64)
        out = np.full(v.shape, np.nan)
        finite = np.isfinite(v)
        if finite.any():
            out[finite] = self.function(v[finite])
        return out

    def bulk_modulus(self, volume) -> np.ndarray:
        """K = -V dP/dV (GPa), by a central difference: turns a volume error into a pressure error."""
        v = np.asarray(volume, dtype=np.float64)
        h = 1e-5 * self.v0
        return -v * (self.pressure(v + h) - self.pressure(v - h)) / (2 * h)

    def volume_at(self, pressure_gpa: float, lo_frac: float = 0.3, hi_frac: float = 1.2) -> float:
        """The volume at ``pressure_gpa`` (bisection: P(V) falls monotonically from 0.3 V0 to 1.2 V0)."""
        lo, hi = lo_frac * self.v0, hi_frac * self.v0
        p_lo, p_hi = float(self.pressure(lo)), float(self.pressure(hi))
        if not p_hi <= pressure_gpa <= p_lo:
            raise ConfigError(
                f"start pressure {pressure_gpa} GPa is outside what {self.name} covers "
                f"({p_hi:.1f} to {p_lo:.0f} GPa between {hi_frac} V0 and {lo_frac} V0)"
            )
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if float(self.pressure(mid)) > pressure_gpa:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)


def vinet(name: str, reference: str, v0: float, k0: float, k0_prime: float) -> EquationOfState:
    return EquationOfState(name, reference, v0, lambda v: vinet_pressure(v, v0, k0, k0_prime))


def bm3(name: str, reference: str, v0: float, k0: float, k0_prime: float) -> EquationOfState:
    return EquationOfState(name, reference, v0, lambda v: bm3_pressure(v, v0, k0, k0_prime))
