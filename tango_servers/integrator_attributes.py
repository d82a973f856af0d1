"""What an Integrator publishes: pattern batches for the Merger, the last pattern for a live plot.

A mixin for :class:`~tango_servers.integrator.Integrator` (which holds ``self.stage``, an
:class:`~pipeline_core.live.integrate_stage.IntegrateStage`): the read-only attributes and the change
events that carry each batch on, kept apart from the device's wiring and commands.
"""

from __future__ import annotations

import time

import numpy as np
import tango
from tango import DispLevel
from tango.server import attribute

from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.messages import PatternBatch
from pipeline_core.processing.integrate import MAX_BINS
from pipeline_core.processing.units import DEFAULT_UNIT, UNITS

from .counter_attributes import latency_attribute

#: attributes whose change events carry each batch (the Merger subscribes to ``patterns``)
PUBLISHED = ("patterns", "lastPattern", "radialAxis")
#: what the publisher pushes when it changes (besides every device's and the settings)
INTEGRATOR_EVENTED = ("poniPath", "maskPath", "bins", "unit", "busyFraction")


def _stage_array(field: str, **config) -> attribute:
    """A spectrum attribute over ``stage.<field>`` (empty before the first frame)."""

    def read(self) -> np.ndarray:
        value = getattr(self.stage, field)
        return np.zeros(0) if value is None else value

    return attribute(fget=read, dtype=(float,), max_dim_x=MAX_BINS, **config)


class IntegratorAttributes:
    """The batch last sent, the last pattern and its axis, latency and how busy the Integrator is."""

    stage: IntegrateStage
    _t_start: float

    def init_published(self) -> None:
        """Called from ``init_device``: nothing sent yet, change events on for what :meth:`publish` pushes."""
        self._encoded: tuple[str, bytes] = ("", b"")
        self._current_scan = ""
        self._radial_unit = ""
        for name in PUBLISHED:
            self.set_change_event(name, True, False)  # type: ignore[attr-defined]
        self.publisher.watch(*INTEGRATOR_EVENTED)  # type: ignore[attr-defined]
        self.follow_radial_unit(DEFAULT_UNIT)

    def follow_radial_unit(self, chain_unit: str) -> None:
        """Give ``radialAxis`` the unit of its values (the last item's settings, else the chain's), so a
        plot labels its x axis: pint names (deg, 1/nm, 1/angstrom, angstrom) from the units table."""
        settings = self.stage.last_settings if getattr(self, "stage", None) is not None else None
        name = settings.unit if settings is not None else (chain_unit or DEFAULT_UNIT)
        unit = UNITS[name].units if name in UNITS else ""
        if unit == self._radial_unit:
            return
        attr = self.get_device_attr().get_attr_by_name("radialAxis")  # type: ignore[attr-defined]
        props = attr.get_properties()
        props.unit = unit
        attr.set_properties(props)
        self._radial_unit = unit

    def publish(self, batch: PatternBatch) -> None:
        """Send ``batch`` on (the ``patterns`` event) and update the live plot and the counters."""
        push = self.push_change_event  # type: ignore[attr-defined]
        self._current_scan = batch.scan
        self._encoded = batch.encode()
        push("patterns", *self._encoded)
        if self.stage.last_pattern is not None and len(batch.frame_numbers):
            self.follow_radial_unit("")  # the unit of this batch's axis, before the axis is pushed
            push("lastPattern", self.stage.last_pattern)
            push("radialAxis", self.stage.radial)
        self.push_progress()  # type: ignore[attr-defined]

    @attribute(
        dtype=tango.DevEncoded,
        label="Pattern batch",
        display_level=DispLevel.EXPERT,
        doc="the last batch of 1-D patterns (format xrd-patterns/1; change events feed the Merger)",
    )
    def patterns(self):
        return self._encoded

    lastPattern = _stage_array(
        "last_pattern",
        label="Last pattern (counts)",
        unit="",
        doc="intensity of the last integrated frame, in detector counts (change events: live plot)",
    )
    radialAxis = _stage_array(
        "radial",
        label="Radial axis",
        unit=UNITS[DEFAULT_UNIT].units,
        doc="bin centres of lastPattern, in the unit of its settings (the attribute's unit follows it)",
    )

    @latency_attribute("last work item: part announced by the detector -> its patterns sent to the Merger")
    def latency(self) -> float:
        return self.stage.counters.latency_s

    @attribute(dtype=str, label="Current scan", doc="scan of the last integrated work item")
    def currentScan(self) -> str:
        return self._current_scan

    @attribute(dtype=str, label="Last output file", doc="the Integrator writes no file; see the Merger")
    def lastOutputFile(self) -> str:
        return ""

    @attribute(
        dtype=tango.DevLong64,
        label="Hints while stopped",
        display_level=DispLevel.EXPERT,
        doc="work hints and polls that came while stopped and claimed nothing: growing while stopped "
        "shows the Integrator is asked for work and declines it (0 for one started all along)",
    )
    def hintsWhileStopped(self) -> int:
        return self.stage.hints_while_stopped

    @attribute(
        dtype=str,
        label="Engine source",
        display_level=DispLevel.EXPERT,
        doc="how the last integration engine came to be: loaded from the engine cache (and in how long) or "
        "built (a restarted Integrator that builds again instead of loading says so here)",
    )
    def engineSource(self) -> str:
        return self.stage.engines.last_source

    @attribute(
        dtype=float,
        label="Busy fraction",
        unit="",
        format="%.2f",
        min_value=0,
        max_value=1,
        doc="fraction of time spent integrating since start (1 = saturated: add an Integrator)",
    )
    def busyFraction(self) -> float:
        elapsed = time.monotonic() - self._t_start
        return min(1.0, self.stage.counters.busy_s / elapsed) if elapsed > 0 else 0.0
