"""Pressure markers: a cell, its reflections and a pressure scale.

Built-in markers (``au``, ``pt``, ``nacl-b2``, ``cu``) take their default scale from peritheos as the
issue names them: gold, platinum and NaCl-B2 on Fei et al. 2007 (PNAS 104, 9182; Vinet, V0 67.850,
60.38, 41.35 Å³; K0 167, 277, 26.86 GPa; K0' 6.00, 5.08, 5.25), copper on Dewaele et al. 2004
(PRB 70, 094112; Vinet, V0 47.24 Å³, K0 132.4 GPa, K0' 5.32). Any other peritheos scale of the same
material and phase can be named instead. A Dioptas JCPDS file is a marker too (:mod:`.jcpds`).

The cell is taken to shrink isotropically, as Dioptas does: every reflection then gives the same
ratio ``s = d / d0``, the lattice parameter is ``a = a0 s`` and the volume ``V = V0 s³``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .eos import EquationOfState
from .scales import MarkerScales, list_scales, scale_from_peritheos

SYMMETRIES = ("CUBIC", "TETRAGONAL", "ORTHORHOMBIC", "HEXAGONAL", "RHOMBOHEDRAL", "MONOCLINIC", "TRICLINIC")


@dataclass(frozen=True)
class Cell:
    """A unit cell at ambient pressure (Å, degrees), completed from its symmetry as Dioptas does."""

    symmetry: str
    a: float
    b: float
    c: float
    alpha: float
    beta: float
    gamma: float

    @classmethod
    def from_values(cls, symmetry: str, a: float, b=0.0, c=0.0, alpha=0.0, beta=0.0, gamma=0.0) -> Cell:
        sym = symmetry.upper()
        if sym not in SYMMETRIES:
            raise ConfigError(f"symmetry {symmetry!r} is unknown; expected one of {', '.join(SYMMETRIES)}")
        right = 90.0
        if sym == "CUBIC":
            b, c, alpha, beta, gamma = a, a, right, right, right
        elif sym == "TETRAGONAL":
            b, alpha, beta, gamma = a, right, right, right
        elif sym == "ORTHORHOMBIC":
            alpha, beta, gamma = right, right, right
        elif sym == "HEXAGONAL":
            b, alpha, beta, gamma = a, right, right, 120.0
        elif sym == "RHOMBOHEDRAL":
            b, c, beta, gamma = a, a, alpha, alpha
        elif sym == "MONOCLINIC":
            alpha, gamma = right, right
        cell = cls(sym, a, b, c, alpha, beta, gamma)
        if not (min(a, b, c) > 0 and min(alpha, beta, gamma) > 0):
            raise ConfigError(f"cell {cell} lacks a length or an angle its symmetry needs")
        return cell

    def _metric(self) -> np.ndarray:
        a, b, c = self.a, self.b, self.c
        ca, cb, cg = np.cos(np.radians([self.alpha, self.beta, self.gamma]))
        return np.array(
            [[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca], [a * c * cb, b * c * ca, c * c]]
        )

    @property
    def volume(self) -> float:
        return float(np.sqrt(np.linalg.det(self._metric())))

    def d_spacings(self, hkl: np.ndarray) -> np.ndarray:
        """d (Å) of reflections ``hkl`` (n, 3): 1/d² = hᵀ G⁻¹ h, G the metric tensor (any symmetry)."""
        hkl = np.atleast_2d(np.asarray(hkl, dtype=np.float64))
        inv = np.linalg.inv(self._metric())
        return 1.0 / np.sqrt(np.einsum("ni,ij,nj->n", hkl, inv, hkl))


@dataclass(frozen=True)
class Reflection:
    hkl: tuple[int, int, int]
    d0: float

    @property
    def label(self) -> str:
        """``111``; ``1-0-10`` when an index has two digits or a sign."""
        if all(0 <= i <= 9 for i in self.hkl):
            return "".join(str(i) for i in self.hkl)
        return "-".join(str(i) for i in self.hkl)


@dataclass(frozen=True)
class Marker:
    """What the pressure fit needs of a marker: ambient cell, reflections (with d0) and P(V)."""

    name: str
    description: str
    cell: Cell
    reflections: tuple[Reflection, ...]
    scale: EquationOfState

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(r.label for r in self.reflections)

    @property
    def d0(self) -> np.ndarray:
        return np.array([r.d0 for r in self.reflections])

    def select(self, labels: tuple[str, ...] | None) -> Marker:
        """The marker with only the reflections ``labels`` (``("111", "200")``); None keeps all."""
        if labels is None:
            return self
        by_label = {r.label: r for r in self.reflections}
        unknown = [lab for lab in labels if lab not in by_label]
        if unknown or not labels:
            raise ConfigError(
                f"reflection(s) {', '.join(unknown) or '(none)'} of {self.name}: expected some of {', '.join(by_label)}"
            )
        return dataclasses.replace(self, reflections=tuple(by_label[lab] for lab in dict.fromkeys(labels)))

    def ratio_at(self, pressure_gpa: float) -> float:
        """``s = a / a0`` at a pressure (the first frame's starting guess)."""
        return float(np.cbrt(self.scale.volume_at(pressure_gpa) / self.cell.volume))

    def pressure(self, ratio) -> np.ndarray:
        """P (GPa) at lattice ratio(s) ``s`` (isotropic: V = V0 s³)."""
        return self.scale.pressure(self.cell.volume * np.asarray(ratio, dtype=np.float64) ** 3)

    def pressure_sigma(self, ratio, ratio_sigma) -> np.ndarray:
        """σP = K(V) · 3 σs / s: the bulk modulus turns a volume strain error into a pressure error."""
        s = np.asarray(ratio, dtype=np.float64)
        return self.scale.bulk_modulus(self.cell.volume * s**3) * 3.0 * np.asarray(ratio_sigma) / s


@dataclass(frozen=True)
class BuiltinMarker:
    description: str
    scales: MarkerScales
    reflections: tuple[tuple[int, int, int], ...]


_FCC = ((1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2))
_B2 = ((1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 0, 0), (2, 1, 0), (2, 1, 1))
BUILTIN_MARKERS: dict[str, BuiltinMarker] = {
    "au": BuiltinMarker("gold (Au, fcc)", MarkerScales("Au", "CUBIC", "gold_fei_2007_vinet_2"), _FCC),
    "pt": BuiltinMarker("platinum (Pt, fcc)", MarkerScales("Pt", "CUBIC", "platinum_fei_2007_vinet_300k"), _FCC),
    "nacl-b2": BuiltinMarker("NaCl-B2 (CsCl structure)", MarkerScales("NaCl", "B2", "nacl_b2_fei_2007"), _B2),
    "cu": BuiltinMarker("copper (Cu, fcc)", MarkerScales("Cu", "CUBIC", "copper_dewaele_2004_vinet_1"), _FCC),
}
ALIASES = {"gold": "au", "platinum": "pt", "copper": "cu", "nacl": "nacl-b2", "nacl_b2": "nacl-b2"}


def marker_names() -> str:
    return ", ".join(BUILTIN_MARKERS)


def _builtin(name: str) -> BuiltinMarker:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BUILTIN_MARKERS:
        raise ConfigError(f"marker {name!r} is neither one of {marker_names()} nor a JCPDS file that exists")
    return BUILTIN_MARKERS[key]


def scales_of(name: str) -> tuple[str, tuple[str, ...]]:
    """The default scale and every peritheos scale of built-in marker ``name`` (``--list-scales``)."""
    spec = _builtin(name).scales
    return spec.default, list_scales(spec)


def load_marker(name: str, scale: str | None = None, reflections: tuple[str, ...] | None = None) -> Marker:
    """A built-in marker by name (with ``scale``, default its published one) or a JCPDS file's path."""
    path = Path(name)
    if path.suffix.lower() == ".jcpds" or path.is_file():
        from .jcpds import load_jcpds

        if scale is not None:
            raise ConfigError(f"--pressure-scale {scale!r}: a JCPDS marker's scale is its file's K0 and K0'")
        return load_jcpds(path).select(reflections)
    spec = _builtin(name)
    eos = scale_from_peritheos(spec.scales, scale)
    cell = Cell.from_values("CUBIC", float(np.cbrt(eos.v0)))
    hkl = np.array(spec.reflections, dtype=np.float64)
    refl = tuple(Reflection(h, float(d)) for h, d in zip(spec.reflections, cell.d_spacings(hkl), strict=True))
    key = ALIASES.get(name.lower(), name.lower())
    return Marker(key, spec.description, cell, refl, eos).select(reflections)
