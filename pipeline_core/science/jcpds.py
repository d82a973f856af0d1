"""Dioptas' JCPDS phase files (versions 4 and 1) read as pressure markers.

The format is Dioptas' (``dioptas/model/util/jcpds.py``, after Mark Rivers): version 4 is
``KEYWORD: value`` lines (``VERSION: 4`` first; K0, K0P, SYMMETRY, A, B, C, ALPHA, BETA, GAMMA,
DIHKL: d I h k l, ...); version 1 is a comment line, then ``symmetry-code a0 K0 K0' c0/a0``
(1 = cubic, 2 = hexagonal), a line of column labels, then ``d I h k l`` lines. Like Dioptas, the cell
shrinks isotropically (every axis by (V/V0)^(1/3)) and P(V) is third-order Birch–Murnaghan with
the file's K0 and K0'; d0 of each reflection is recomputed from the cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .eos import bm3
from .markers import Cell, Marker, Reflection

_SYMMETRY_CODES = {1: "CUBIC", 2: "HEXAGONAL"}
_CELL_KEYS = {"A:": 0, "B:": 1, "C:": 2, "ALPHA:": 3, "BETA:": 4, "GAMMA:": 5}


def _number(value: str, what: str, path: Path) -> float:
    try:
        return float(value.replace(",", " ").split()[0])
    except (ValueError, IndexError):
        raise ConfigError(f"{path}: {what} {value!r} is not a number") from None


def _reflection(fields: list[str], path: Path) -> tuple[int, int, int]:
    if len(fields) < 5:
        raise ConfigError(f"{path}: reflection line {' '.join(fields)!r} needs d, intensity, h, k, l")
    try:
        return int(float(fields[2])), int(float(fields[3])), int(float(fields[4]))
    except ValueError:
        raise ConfigError(f"{path}: reflection line {' '.join(fields)!r} has a non-integer h, k or l") from None


def _read_v4(lines: list[str], path: Path) -> tuple[str, list[float], float, float | None, list[tuple[int, int, int]]]:
    symmetry, k0, k0p = "", 0.0, None
    cell = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    hkls = []
    for line in lines[1:]:
        tag, _, value = line.strip().partition(" ")
        tag = tag.upper()
        if tag == "SYMMETRY:":
            symmetry = value.strip().upper()
        elif tag == "K0:":
            k0 = _number(value, "K0", path)
        elif tag == "K0P:":
            k0p = _number(value, "K0P", path)
        elif tag in _CELL_KEYS:
            cell[_CELL_KEYS[tag]] = _number(value, tag[:-1], path)
        elif tag == "DIHKL:":
            hkls.append(_reflection(value.split(), path))
    return symmetry, cell, k0, k0p, hkls


def _read_v1(lines: list[str], path: Path) -> tuple[str, list[float], float, float, list[tuple[int, int, int]]]:
    if len(lines) < 3:
        raise ConfigError(f"{path}: a version-1 JCPDS file needs a comment, a cell line and a label line")
    fields = lines[1].replace(",", " ").split()
    try:
        code, a0, k0, k0p, c_over_a = (float(v) for v in fields[:5])
    except ValueError:
        raise ConfigError(f"{path}: line 2 {lines[1].strip()!r} is not 'symmetry a0 K0 K0p c0/a0'") from None
    if int(code) not in _SYMMETRY_CODES:
        raise ConfigError(f"{path}: symmetry code {code:g} is unknown; version 1 knows 1 (cubic) and 2 (hexagonal)")
    hkls = [_reflection(line.split(), path) for line in lines[3:] if line.strip()]
    return _SYMMETRY_CODES[int(code)], [a0, 0.0, a0 * c_over_a, 0.0, 0.0, 0.0], k0, k0p, hkls


def load_jcpds(path: str | Path) -> Marker:
    """A marker from a Dioptas JCPDS file; refuses a file without K0, K0P, cell or reflections."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise ConfigError(f"JCPDS file {path} cannot be read ({exc})") from exc
    if not lines:
        raise ConfigError(f"JCPDS file {path} is empty")
    first = lines[0].split()
    version = "4" if first and first[0].upper() == "VERSION:" else "1"
    symmetry, values, k0, k0p_read, hkls = (_read_v4 if version == "4" else _read_v1)(lines, path)
    k0p = _k0p(k0p_read, path)
    if k0 <= 0:
        raise ConfigError(f"{path}: K0 is {k0:g}; a pressure marker needs its bulk modulus (K0 > 0, GPa)")
    if not hkls:
        raise ConfigError(f"{path}: no reflections (DIHKL lines)")
    try:
        cell = Cell.from_values(symmetry, *values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    d0 = cell.d_spacings(np.array(hkls, dtype=np.float64))
    reflections = tuple(Reflection(hkl, float(d)) for hkl, d in zip(hkls, d0, strict=True))
    v0 = cell.volume
    scale = bm3(
        f"BM3 of {path.name} (K0 {k0:g} GPa, K0' {k0p:g})",
        f"JCPDS file {path} (version {version}), third-order Birch-Murnaghan as in Dioptas",
        v0, k0, k0p,
    )  # fmt: skip
    return Marker(path.stem, f"{path.stem} (JCPDS {symmetry.lower()})", cell, reflections, scale)


def _k0p(k0p: float | None, path: Path) -> float:
    """K0' of the file; a version-4 file without ``K0P:`` is refused. Dioptas' ``jcpds.load_file``
    keeps its initial ``k0p0 = 0`` there, but a third-order Birch-Murnaghan with K0' = 0 is no
    pressure scale: P(V) peaks at a/a0 = 0.915 (0.19 K0: 32 GPa for gold) and falls after, and at
    a/a0 = 0.95 it reads 23.6 GPa where K0' = 5.5 gives 39.2. Nobody meant that: ask for the value."""
    if k0p is None:
        raise ConfigError(
            f"{path}: no K0P line (K0', the pressure derivative of the bulk modulus): expected 'K0P: value' "
            "(usually 4 to 6); Dioptas would read it as 0, which gives no usable Birch-Murnaghan scale"
        )
    return k0p
