"""Integrator device: claims work from the Stitcher, integrates with pyFAI, sends pattern batches.

Each work item carries the settings to integrate it with (the chain's, held by the Stitcher), so
every Integrator of a chain integrates alike. Its ``poniPath``/``maskPath``/``bins``/``unit`` show
the chain's values; a write is validated here (CalibrationRoots, PONI, mask against the frames seen)
and forwarded to the Stitcher: it changes the settings of the whole chain from the next scan on.
Run several, in separate processes or on other hosts, to share one Stitcher's work: each claims
items with the Stitcher's ``ClaimWork``.
"""

from __future__ import annotations

import sys

import tango
from tango.server import command, device_property, run

from pipeline_core.errors import PipelineError
from pipeline_core.live.integrate_stage import DEFAULT_POLL_INTERVAL_S, IntegrateStage
from pipeline_core.processing.engine_choice import DEFAULT_ENGINE, ENGINES
from pipeline_core.processing.engine_store import EngineStore, store_for
from pipeline_core.processing.integrate import DEFAULT_BINS
from pipeline_core.processing.units import DEFAULT_UNIT

from .chain_settings import ChainSettingsClient, ChainSettingsDevice
from .dev_failed import throw
from .integrator_attributes import IntegratorAttributes
from .work_source import TangoWorkSource


class Integrator(IntegratorAttributes, ChainSettingsDevice):
    """Integrates claimed frames with the settings each work item carries (the chain's)."""

    StitcherDevice = device_property(dtype=str, default_value="", doc="TRL of the Stitcher to claim work from")
    PoniPath = device_property(
        dtype=str,
        default_value="",
        doc="initial PONI of the chain: offered to the Stitcher while it has none (its memorized value wins)",
    )
    MaskPath = device_property(dtype=str, default_value="", doc="initial mask of the chain (with PoniPath)")
    Bins = device_property(dtype=int, default_value=DEFAULT_BINS, doc="initial bins of the chain (with PoniPath)")
    Unit = device_property(
        dtype=str, default_value=DEFAULT_UNIT, doc="initial radial unit of the chain (with PoniPath)"
    )
    DataRoots = device_property(
        dtype=(str,),
        default_value=[],
        doc="module files of claimed work must resolve inside one of these (empty: anywhere); set the Stitcher's",
    )
    CalibrationRoots = device_property(
        dtype=(str,), default_value=[], doc="PONI and mask files must lie under one of these (empty: anywhere)"
    )
    AutoStart = device_property(
        dtype=bool,
        default_value=True,
        doc="claim work from init on (so a restarted Integrator rejoins by itself); Stop/Start toggle it",
    )
    PollInterval = device_property(
        dtype=float,
        default_value=DEFAULT_POLL_INTERVAL_S,
        doc="seconds between claims when no event came (events can be lost)",
    )
    Engine = device_property(
        dtype=str,
        default_value=DEFAULT_ENGINE,
        doc=f"integration engine, one of {', '.join(ENGINES)}: auto = the sparse csr engine where it equals "
        "pyFAI exactly, else pyFAI's own path; an unknown name is reported and no work is claimed",
    )
    EngineCache = device_property(
        dtype=str,
        default_value="",
        doc="folder of the engine cache (pyFAI's coefficients built once per geometry, loaded by a restarted "
        "Integrator in well under a second): an absolute folder, 'off' (build every time), or empty = the "
        "server's environment ($XRD_PIPELINE_ENGINE_CACHE, else $XDG_CACHE_HOME/xrd-pipeline/engines)",
    )
    EngineCacheShared = device_property(
        dtype=bool,
        default_value=False,
        doc="the EngineCache folder is shared on purpose: everyone who can write it is trusted",
    )

    def init_device(self) -> None:
        super().init_device()
        self.init_published()
        self._stitcher = tango.DeviceProxy(self.StitcherDevice) if self.StitcherDevice else None
        self.work_source = TangoWorkSource(self._stitcher, self.subscriptions) if self._stitcher is not None else None
        self._initial = {"poni_path": self.PoniPath, "mask_path": self.MaskPath, "bins": self.Bins, "unit": self.Unit}
        self.chain_settings = ChainSettingsClient(self.StitcherDevice, tuple(self.CalibrationRoots), self._initial)
        if self.chain_settings.initial_error:
            self.report_error(f"PoniPath/MaskPath/Bins/Unit properties: {self.chain_settings.initial_error}")
        self.stage = self.create_stage()
        if self._stitcher is None:
            self.set_fault("no StitcherDevice property: nothing to integrate")
            return
        if self.AutoStart:
            self.stage.start()
        self.subscribe(self.StitcherDevice, "workAvailable", self._hint)
        self.chain_settings.offer_until_answered(
            lambda why: self.report_error(f"PoniPath/MaskPath/Bins/Unit properties refused: {why}")
        )

    def delete_device(self) -> None:
        self.chain_settings.close()
        super().delete_device()

    def create_stage(self) -> IntegrateStage:
        """The stage this device adapts, with everything it needs passed in (the seam tests use)."""
        return IntegrateStage(
            self.get_name(),
            None,  # no settings of its own: an item is integrated with the settings it carries
            self.work_source,  # a Stitcher out of reach is a link out (Status), not a failure
            self.publish,
            self.report_error,
            poll_interval_s=self.PollInterval,
            data_roots=tuple(self.DataRoots),
            calibration_roots=tuple(self.CalibrationRoots),
            offer=self._initial if self.PoniPath else {},  # adopted by the Stitcher only while the chain has none
            thread_context=tango.EnsureOmniThread,  # its threads call the Stitcher and push events
            engine=self.Engine,
            engine_store=self._engine_store(),
        )

    def _engine_store(self) -> EngineStore | None:
        """The store the EngineCache property names; a bad value is said in Status and the engines are
        built every time (the patterns are the same, only slower to start)."""
        try:
            return store_for(self.EngineCache, self.EngineCacheShared)
        except PipelineError as exc:
            self.report_error(f"EngineCache property: {exc}; engines are built every time")
            return None

    # -- wiring -----------------------------------------------------------------------------------------
    def _hint(self, event) -> None:
        self.stage.wake()

    def _apply(self, **changes) -> None:
        """Validate here (roots, PONI, mask against the frames this Integrator has seen), forward to the Stitcher."""
        self.chain_settings.write(changes, self.stage.frame_shape, f"{self.get_name()} write")

    def _require_stitcher(self, where: str) -> tango.DeviceProxy:
        if self._stitcher is None:
            throw("XRD_NotConfigured", "no StitcherDevice property", where)
        return self._stitcher

    # -- interface --------------------------------------------------------------------------------------
    def counters(self):
        return self.stage.counters

    def is_busy(self) -> bool:
        """Started and integrated in the last seconds (a started Integrator without work is ON)."""
        return self.stage.running and self.recently_worked()

    def before_publish(self) -> None:
        try:
            super().before_publish()
        finally:  # the Stitcher out of reach: the unit of the last item still holds
            self.follow_radial_unit(str(self.chain_settings.last_shown.get("unit", "")))

    def describe(self) -> str:
        c = self.stage.counters
        s = self.stage.last_settings
        what = self.chain_settings.describe()
        what += f"; last item: {s.poni_path.name}, {s.bins} bins, {s.unit}" if s else ""
        return (
            f"{'Started' if self.stage.running else 'Stopped'} ({what}); integrated {c.frames_processed} "
            f"frames, {c.frames_failed} failed"
        )

    @command
    def Start(self) -> None:
        """Begin claiming and integrating work (with the settings each item carries)."""
        self._require_stitcher("Integrator.Start")
        self.stage.start()
        self.publisher.wake()

    @command
    def Stop(self) -> None:
        """Stop claiming new work (the item in hand is finished); stays stopped until Start."""
        self.stage.pause()
        if self.work_source is not None:
            self.work_source.forget()  # no claims now: a Stitcher out of reach no longer matters here
        self.publisher.wake()

    @command(dtype_in=str, doc_in="an acquisition file (any module/part) or its directory", dtype_out=str)
    def Reintegrate(self, path: str) -> str:
        """Reprocess an acquisition with the chain's current settings (forwarded to the Stitcher)."""
        return self._require_stitcher("Integrator.Reintegrate").command_inout("Reintegrate", path)


SERVER = "XrdIntegrator"


def main(args: list[str] | None = None) -> None:
    """``xrd-integrator INSTANCE [Tango/omniORB options]`` — the XrdIntegrator device server (Starter-compatible)."""
    run((Integrator,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
