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
import threading
import time

import numpy as np
import tango
from tango.server import attribute, command, device_property, run

from pipeline_core.integrate import DEFAULT_BINS, MAX_BINS
from pipeline_core.integrate_stage import IntegrateStage
from pipeline_core.messages import ClaimRequest, WorkItem

from .chain_settings import ChainSettingsClient, ChainSettingsDevice


class Integrator(ChainSettingsDevice):
    """Integrates claimed frames with the settings each work item carries (the chain's)."""

    StitcherDevice = device_property(dtype=str, default_value="", doc="TRL of the Stitcher to claim work from")
    PoniPath = device_property(
        dtype=str,
        default_value="",
        doc="initial PONI of the chain: offered to the Stitcher while it has none (its memorized value wins)",
    )
    MaskPath = device_property(dtype=str, default_value="", doc="initial mask of the chain (with PoniPath)")
    Bins = device_property(dtype=int, default_value=DEFAULT_BINS, doc="initial bins of the chain (with PoniPath)")
    Unit = device_property(dtype=str, default_value="2th_deg", doc="initial radial unit of the chain (with PoniPath)")
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
        dtype=float, default_value=1.0, doc="seconds between claims when no event came (events can be lost)"
    )

    def init_device(self) -> None:
        super().init_device()
        for name in ("patterns", "lastPattern", "radialAxis"):
            self.set_change_event(name, True, False)
        self._encoded = ("", b"")
        self._current_scan = ""
        self._stitcher = tango.DeviceProxy(self.StitcherDevice) if self.StitcherDevice else None
        self._initial = {"poni_path": self.PoniPath, "mask_path": self.MaskPath, "bins": self.Bins, "unit": self.Unit}
        self.chain_settings = ChainSettingsClient(self.StitcherDevice, tuple(self.CalibrationRoots), self._initial)
        if self.chain_settings.initial_error:
            self.report_error(f"PoniPath/MaskPath/Bins/Unit properties: {self.chain_settings.initial_error}")
        self.stage = IntegrateStage(
            self.get_name(),
            None,  # no settings of its own: an item is integrated with the settings it carries
            self._claim,
            self._send,
            self.report_error,
            poll_interval_s=self.PollInterval,
            data_roots=tuple(self.DataRoots),
            calibration_roots=tuple(self.CalibrationRoots),
        )
        self._want_running = bool(self.AutoStart)
        if self._want_running and self._stitcher is not None:
            self.stage.start()
        if self._stitcher is None:
            self.set_fault("no StitcherDevice property: nothing to integrate")
        else:
            self.subscribe(self.StitcherDevice, "workAvailable", self._hint)
        self._offering = threading.Event()
        if self.PoniPath and self._stitcher is not None:
            threading.Thread(target=self._offer_initial, name="xrd-offer-settings", daemon=True).start()

    def delete_device(self) -> None:
        self._offering.set()
        super().delete_device()

    def _offer_initial(self) -> None:
        """Offer the properties' values to the Stitcher until it answers (it may start after us), so the
        chain shows them before any claim; claims offer them too. Ignored once the chain has a PONI."""
        with tango.EnsureOmniThread():
            for _ in range(120):
                try:
                    self.chain_settings.offer()
                    return
                except tango.DevFailed as exc:
                    if exc.args[0].reason == "XRD_InvalidValue":  # reached it, and it refused the values
                        self.report_error(f"PoniPath/MaskPath/Bins/Unit properties refused: {exc.args[0].desc}")
                        return
                if self._offering.wait(1.0):
                    return

    # -- wiring -----------------------------------------------------------------------------------------
    def _hint(self, event) -> None:
        self.stage.wake()

    def _claim(self) -> WorkItem | None:
        assert self._stitcher is not None
        offer = self._initial if self.PoniPath else {}  # adopted by the Stitcher only while the chain has none
        request = ClaimRequest(self.get_name(), offer, self.stage.take_done())
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

    def _apply(self, **changes) -> None:
        """Validate here (roots, PONI, mask against the frames this Integrator has seen), forward to the Stitcher."""
        self.chain_settings.write(changes, self.stage.frame_shape, f"{self.get_name()} write")

    # -- interface --------------------------------------------------------------------------------------
    def counters(self):
        return self.stage.counters

    def is_busy(self) -> bool:
        return self.stage.running

    def describe(self) -> str:
        c = self.stage.counters
        s = self.stage.last_settings
        what = self.chain_settings.describe()
        what += f"; last item: {s.poni_path.name}, {s.bins} bins, {s.unit}" if s else ""
        return (
            f"{'Started' if self.stage.running else 'Stopped'} ({what}); integrated {c.frames_processed} "
            f"frames, {c.frames_failed} failed"
        )

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
        """Begin claiming and integrating work (with the settings each item carries)."""
        if self._stitcher is None:
            tango.Except.throw_exception("XRD_NotConfigured", "no StitcherDevice property", "Integrator.Start")
        self._want_running = True
        self.stage.start()

    @command
    def Stop(self) -> None:
        """Stop claiming new work (the item in hand is finished); stays stopped until Start."""
        self._want_running = False
        self.stage.pause()

    @command(dtype_in=str, doc_in="an acquisition file (any module/part) or its directory", dtype_out=str)
    def Reintegrate(self, path: str) -> str:
        """Reprocess an acquisition with the chain's current settings (forwarded to the Stitcher)."""
        if self._stitcher is None:
            tango.Except.throw_exception("XRD_NotConfigured", "no StitcherDevice property", "Integrator.Reintegrate")
        return self._stitcher.command_inout("Reintegrate", path)


SERVER = "XrdIntegrator"


def main(args: list[str] | None = None) -> None:
    """``xrd-integrator INSTANCE [Tango/omniORB options]`` — the XrdIntegrator device server (Starter-compatible)."""
    run((Integrator,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
