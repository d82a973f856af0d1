"""Published pressure scales of the built-in markers, taken from peritheos' records.

peritheos (Prescher, MIT) ships each record with its paper, parameters and provenance; a thermal
record (gold and NaCl-B2 of Fei et al. 2007 are Vinet + Mie–Grüneisen–Debye) is evaluated at its
reference temperature (300 K), where the thermal term is zero and the Vinet isotherm remains.
Volumes here are Å³ per conventional cell; a record's own unit is ``volume_scale`` times that.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .eos import EquationOfState


@dataclass(frozen=True)
class MarkerScales:
    """Where a built-in marker's scales are in peritheos: formula, phase, and the default record."""

    formula: str
    phase_prefix: str
    default: str


def _peritheos():
    try:
        import peritheos
    except ImportError as exc:  # a declared dependency: a broken installation, said plainly
        raise ConfigError(f"the pressure scales need the peritheos package ({exc}); pip install peritheos") from exc
    return peritheos


def reference_text(record) -> str:
    """``Fei, Ricolleau, ... (2007), Toward an internally consistent pressure scale, doi:10...``."""
    ref = record.reference
    doi = f", doi:{ref.doi}" if ref.doi else ""
    return f"{ref.authors} ({ref.year}), {ref.title}{doi}"


@functools.lru_cache(maxsize=16)
def list_scales(spec: MarkerScales) -> tuple[str, ...]:
    """Identifiers of every peritheos record for this marker's phase, in conventional-cell volume."""
    records = _peritheos().list_eos_records(formula=spec.formula, include_reference_variants=True)
    return tuple(r.identifier for r in records if _belongs(spec, r) and _usable(r.identifier))


def _usable(identifier: str) -> bool:
    """Whether a record gives a pressure at ambient (peritheos' diagnostic reconstructions do not)."""
    try:
        _build(identifier)
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=64)
def scale_from_peritheos(spec: MarkerScales, identifier: str | None) -> EquationOfState:
    """The scale ``identifier`` (default: the marker's) as an :class:`EquationOfState`."""
    name = identifier or spec.default
    try:  # the record alone, not the whole list: loading and checking every scale takes seconds
        if _belongs(spec, _peritheos().get_eos_record(name)):
            return _build(name)
    except Exception:
        pass
    raise ConfigError(
        f"pressure scale {name!r} is not one of peritheos' {spec.formula} scales; expected one of "
        f"{', '.join(list_scales(spec))} (--list-scales)"
    )


def _belongs(spec: MarkerScales, record) -> bool:
    """A record of the marker's formula and phase, in Å³ per conventional cell."""
    return (
        record.material == spec.formula
        and record.phase.upper().startswith(spec.phase_prefix)
        and record.volume_unit == "angstrom^3/conventional_unit_cell"
    )


@functools.lru_cache(maxsize=64)
def _build(name: str) -> EquationOfState:
    record = _peritheos().get_eos_record(name)
    eos, factor = record.eos, float(record.volume_scale)
    rt = getattr(eos, "rt_eos", eos)
    v0 = float(rt.V0) / factor
    args = (float(record.reference_temperature),) if record.equation_kind == "thermal" else ()

    def pressure(volume: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(eos.pressure(volume * factor, *args), dtype=np.float64)
        except Exception:  # peritheos refuses a volume outside its record's domain: NaN for that one
            return np.array([_one(eos, v * factor, args) for v in np.ravel(volume)]).reshape(np.shape(volume))

    guess = EquationOfState(f"{name}: {record.name}", reference_text(record), v0, pressure)
    # V0 = the volume where P = 0 at the reference temperature (a thermal record's rt_eos.V0 may be
    # another reference state's)
    return dataclasses.replace(guess, v0=guess.volume_at(0.0, 0.9, 1.1))


def _one(eos, volume: float, args: tuple) -> float:
    try:
        return float(eos.pressure(volume, *args))
    except Exception:
        return float("nan")
