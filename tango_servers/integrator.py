"""Integrator device: claims work from the Stitcher, integrates with pyFAI, sends pattern batches.

It owns the integration settings (PONI, mask, bins, unit: memorized, validated — a bad value is
refused with the reason and the old one stays). Run several, in separate processes or on other
hosts, to share one Stitcher's work: each claims items with the Stitcher's ``ClaimWork``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import tango
from tango import AttrWriteType
from tango.server import attribute, command, device_property, run

from pipeline_core.errors import PipelineError
from pipeline_core.integrate import DEFAULT_BINS, MAX_BINS, UNITS, IntegrationSettings
from pipeline_core.integrate_stage import IntegrateStage
from pipeline_core.messages import ClaimRequest, WorkItem
from pipeline_core.paths import confine

from .base import PipelineDevice


class Integrator(PipelineDevice):
    """Integrates claimed frames with the current PONI / mask / bins / unit."""

    StitcherDevice = device_property(dtype=str, default_value="", doc="TRL of the Stitcher to claim work from")
    PoniPath = device_property(dtype=str, default_value="", doc="initial PONI file (the memorized value wins)")
    MaskPath = device_property(dtype=str, default_value="", doc="initial mask file (the memorized value wins)")
    Bins = device_property(dtype=int, default_value=DEFAULT_BINS, doc="initial number of bins")
    Unit = device_property(dtype=str, default_value="2th_deg", doc="initial radial unit")
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
        doc="claim work as soon as a valid PONI is set (so a restarted Integrator rejoins by itself)",
    )
    PollInterval = device_property(
        dtype=float, default_value=1.0, doc="seconds between claims when no event came (events can be lost)"
    )

    def init_device(self) -> None:
        super().init_device()
        for name in ("patterns", "lastPattern", "radialAxis"):
            self.set_change_event(name, True, False)
        self._encoded = ("", b"")
        self._current_scan = ""
        self._stitcher = tango.DeviceProxy(self.StitcherDevice) if self.StitcherDevice else None
        self._poni, self._mask, self._bins, self._unit = self.PoniPath, self.MaskPath, self.Bins, self.Unit
        settings = None
        if self._poni:
            try:
                settings = self._settings()
            except PipelineError as exc:
                self.report_error(f"PoniPath/MaskPath/Bins/Unit properties: {exc}")
        self.stage = IntegrateStage(
            self.get_name(),
            settings,
            self._claim,
            self._send,
            self.report_error,
            poll_interval_s=self.PollInterval,
            data_roots=tuple(self.DataRoots),
        )
        self._want_running = bool(self.AutoStart)
        if self._want_running and settings is not None:
            self.stage.start()
        if self._stitcher is None:
            self.set_fault("no StitcherDevice property: nothing to integrate")
        else:
            self.subscribe(self.StitcherDevice, "workAvailable", self._hint)

    # -- wiring -----------------------------------------------------------------------------------------
    def _hint(self, event) -> None:
        self.stage.wake()

    def _claim(self) -> WorkItem | None:
        assert self._stitcher is not None
        s = self.stage.settings
        request = ClaimRequest(self.get_name(), s.to_dict() if s else {}, self.stage.take_done())
        answer = self._stitcher.command_inout("ClaimWork", request.to_json())
        return WorkItem.from_json(answer) if answer else None

    def _send(self, batch) -> None:
        self._current_scan = batch.scan
        self._encoded = batch.encode()
        self.push_change_event("patterns", *self._encoded)
        if self.stage.last_pattern is not None and len(batch.frame_numbers):
            self.push_change_event("lastPattern", self.stage.last_pattern)
            self.push_change_event("radialAxis", self.stage.radial)
        self.push_progress()

    def _settings(self, **changes) -> IntegrationSettings:
        values = dict(poni=self._poni, mask=self._mask, bins=self._bins, unit=self._unit) | changes
        if not values["poni"]:
            raise PipelineError("no PONI file set: write poniPath")
        confine(values["poni"], self.CalibrationRoots, "PONI file")
        if values["mask"]:
            confine(values["mask"], self.CalibrationRoots, "mask file")
        return IntegrationSettings(
            values["poni"], bins=values["bins"], unit=values["unit"], mask_path=values["mask"] or None
        )

    def _apply(self, **changes) -> None:
        try:
            settings = self._settings(**changes)
            self.stage.set_settings(settings)
        except PipelineError as exc:
            tango.Except.throw_exception("XRD_InvalidValue", str(exc), f"{self.get_name()} write")
        self._poni, self._mask = str(settings.poni_path), str(settings.mask_path or "")
        self._bins, self._unit = settings.bins, settings.unit
        if self._want_running and not self.stage.running:  # memorized values restored after a restart
            self.stage.start()

    # -- interface --------------------------------------------------------------------------------------
    def counters(self):
        return self.stage.counters

    def is_busy(self) -> bool:
        return self.stage.running

    def describe(self) -> str:
        c = self.stage.counters
        s = self.stage.settings
        what = f"{s.poni_path.name}, {s.bins} bins, {s.unit}" if s else "no settings"
        return (
            f"{'Started' if self.stage.running else 'Stopped'} ({what}); integrated {c.frames_processed} "
            f"frames, {c.frames_failed} failed"
        )

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="PONI file",
        doc="pyFAI calibration used for the next frames; refused if it does not parse",
    )
    def poniPath(self) -> str:
        return self._poni

    @poniPath.write
    def poniPath(self, value: str) -> None:
        self._apply(poni=value)

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Mask file",
        doc="user mask (EDF/TIFF/.mask/.npy, non-zero = masked); empty = gaps only",
    )
    def maskPath(self) -> str:
        return self._mask

    @maskPath.write
    def maskPath(self, value: str) -> None:
        self._apply(mask=value)

    @attribute(
        dtype=int,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Bins",
        unit="bins",
        format="%d",
        min_value=1,
        max_value=MAX_BINS,
        doc="number of radial bins of each 1-D pattern",
    )
    def bins(self) -> int:
        return int(self._bins)

    @bins.write
    def bins(self, value: int) -> None:
        self._apply(bins=int(value))

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Radial unit",
        doc=f"one of {', '.join(UNITS)} (pyFAI names)",
    )
    def unit(self) -> str:
        return self._unit

    @unit.write
    def unit(self, value: str) -> None:
        self._apply(unit=value)

    @attribute(
        dtype=tango.DevEncoded,
        label="Pattern batch",
        doc="the last batch of 1-D patterns (format xrd-patterns/1; change events feed the Merger)",
    )
    def patterns(self):
        return self._encoded

    @attribute(
        dtype=(float,),
        max_dim_x=MAX_BINS,
        label="Last pattern",
        unit="counts",
        doc="intensity of the last integrated frame (change events: live plot)",
    )
    def lastPattern(self):
        p = self.stage.last_pattern
        return np.zeros(0) if p is None else p

    @attribute(
        dtype=(float,),
        max_dim_x=MAX_BINS,
        label="Radial axis",
        doc="bin centres of lastPattern, in the unit attribute's unit",
    )
    def radialAxis(self):
        r = self.stage.radial
        return np.zeros(0) if r is None else r

    @attribute(
        dtype=float,
        label="Latency",
        unit="s",
        format="%.3f",
        min_value=0,
        doc="last work item: part announced by the detector -> its patterns sent to the Merger",
    )
    def latency(self) -> float:
        return self.stage.counters.latency_s

    @attribute(dtype=str, label="Current scan", doc="scan of the last integrated work item")
    def currentScan(self) -> str:
        return self._current_scan

    @attribute(dtype=str, label="Last output file", doc="the Integrator writes no file; see the Merger")
    def lastOutputFile(self) -> str:
        return ""

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

    @command
    def Start(self) -> None:
        """Begin claiming and integrating work."""
        if self.stage.settings is None:
            tango.Except.throw_exception(
                "XRD_NotConfigured", "no PONI file set: write poniPath first", "Integrator.Start"
            )
        self._want_running = True
        self.stage.start()

    @command
    def Stop(self) -> None:
        """Stop claiming new work (the item in hand is finished); stays stopped until Start."""
        self._want_running = False
        self.stage.pause()

    @command(dtype_in=str, doc_in="an acquisition file (any module/part) or its directory", dtype_out=str)
    def Reintegrate(self, path: str) -> str:
        """Reprocess an acquisition with this Integrator's current settings (forwarded to the Stitcher)."""
        if self._stitcher is None:
            tango.Except.throw_exception("XRD_NotConfigured", "no StitcherDevice property", "Integrator.Reintegrate")
        return self._stitcher.command_inout("Reintegrate", path)


SERVER = "XrdIntegrator"


def main(args: list[str] | None = None) -> None:
    """``xrd-integrator INSTANCE [Tango/omniORB options]`` — the XrdIntegrator device server (Starter-compatible)."""
    run((Integrator,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
