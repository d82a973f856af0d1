"""The radial units an operator may choose, and every name each one goes by, in one table.

A unit has four audiences that name it differently: pyFAI (``2th_deg``, the name operators type),
NeXus (the axis dataset and its ``units`` attribute, which Taurus plots: ``deg``, ``1/nm``,
``angstrom``), Dioptas (which knows only its own ``radial_unit`` names, so q in 1/nm is stored
as q in 1/Å, scaled) and people (the long label). Keeping them in one row per unit means adding a
unit cannot leave one of them out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RadialUnit:
    """One radial unit under all its names."""

    #: pyFAI's name, the one operators type and settings carry
    name: str
    #: NeXus axis dataset name
    axis: str
    #: NeXus ``units`` attribute of that axis (strings Taurus understands)
    units: str
    #: long label for plots
    label: str
    #: Dioptas' ``radial_unit`` this unit is stored as in ``result/binning``
    dioptas_name: str
    #: factor from this unit to the Dioptas unit
    dioptas_scale: float

    @property
    def dioptas(self) -> RadialUnit:
        """The unit ``result/binning`` is written in (its own units string and label)."""
        return UNITS[self.dioptas_name]


#: pyFAI name -> unit, in the order offered to operators.
UNITS: dict[str, RadialUnit] = {
    u.name: u
    for u in (
        RadialUnit("2th_deg", "two_theta", "deg", "2θ (deg)", "2th_deg", 1.0),
        RadialUnit("q_nm^-1", "q", "1/nm", "q (1/nm)", "q_A^-1", 0.1),
        RadialUnit("q_A^-1", "q", "1/angstrom", "q (1/Å)", "q_A^-1", 1.0),
        RadialUnit("d_A", "d_spacing", "angstrom", "d (Å)", "d_A", 1.0),
    )
}
DEFAULT_UNIT = "2th_deg"
