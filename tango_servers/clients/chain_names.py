"""The devices of one chain and the database they are in: what every client of the chain is pointed at.

Defaults are those of ``tango_db_setup/pipeline.yaml``; a client's ``--config FILE`` (its ``chain:``
section) or its options name others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChainNames:
    """The devices of one chain (defaults: tango_db_setup/pipeline.yaml) and the database they are in."""

    tango_host: str
    stitcher: str = "p02/xrd/stitcher"
    integrators: tuple[str, ...] = ("p02/xrd/integrator1", "p02/xrd/integrator2")
    merger: str = "p02/xrd/merger"

    def trl(self, device: str, attribute: str | None = None) -> str:
        """Full Taurus/Tango name of ``device`` (and ``attribute``) on this chain's database."""
        base = f"tango://{self.tango_host}/{device}"
        return f"{base}/{attribute}" if attribute else base

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device, in the order of the chain (Stitcher, Integrators, Merger)."""
        return (self.stitcher, *self.integrators, self.merger)

    def role(self, device: str) -> str:
        """``stitcher``, ``integrator`` or ``merger``: what ``device`` is in this chain."""
        if device == self.stitcher:
            return "stitcher"
        return "merger" if device == self.merger else "integrator"

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], tango_host: str) -> ChainNames:
        """The ``chain:`` section of a client's configuration file (keys stitcher, integrators, merger;
        tango_host there is used when ``tango_host`` is empty). ValueError naming a bad value."""
        unknown = sorted(set(section) - {"tango_host", "stitcher", "integrators", "merger"})
        if unknown:
            raise ValueError(
                f"chain: unknown key(s) {', '.join(unknown)}; expected tango_host, stitcher, integrators, merger"
            )
        defaults = cls("")
        integrators = section.get("integrators", defaults.integrators)
        if isinstance(integrators, str) or not all(isinstance(i, str) and i for i in integrators):
            raise ValueError(f"chain: integrators {integrators!r}: expected a list of device names")
        names = {k: section.get(k, getattr(defaults, k)) for k in ("stitcher", "merger")}
        for key, value in names.items():
            if not isinstance(value, str) or value.count("/") != 2:
                raise ValueError(f"chain: {key} {value!r}: expected a device name domain/family/member")
        return cls(tango_host or str(section.get("tango_host", "")), integrators=tuple(integrators), **names)
