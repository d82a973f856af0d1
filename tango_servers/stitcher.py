"""Stitcher device: hears the detector's "file written" events and queues stitched-frame work.

Upstream is configured, not coded: ``DetectorDevice`` + ``DetectorAttribute`` name the attribute
whose change events announce written module files (our LambdaSimulator's ``lastWrittenFile``, or
the real Lambda server's). Integrators hear ``workAvailable`` events and claim items with
``ClaimWork``, so any number of them share the work and no frame is integrated twice.

It holds the chain's integration settings (``poniPath``, ``maskPath``, ``bins``, ``unit``: memorized
here, validated, a bad value refused with the reason and the old one kept). Integrators and the
Merger show these values and forward writes to ``SetSettings``; every work item carries the settings
of its scan, so all Integrators integrate a scan alike (see pipeline_core.stitch_stage).
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import tango
from tango import AttrWriteType
from tango.server import attribute, command, device_property, run

from pipeline_core.errors import PipelineError
from pipeline_core.integrate import MAX_BINS, UNITS
from pipeline_core.messages import ClaimRequest, MessageError, ReintegrateRequest, RequeueRequest, SettingsRequest
from pipeline_core.stitch_stage import ChainSettings, QueueFull, StitchConfig, StitchStage

from .base import PipelineDevice


class Stitcher(PipelineDevice):
    """Groups module files into parts, checks them and hands out work items to Integrators."""

    DetectorDevice = device_property(dtype=str, default_value="", doc="TRL of the detector (or simulator) device")
    DetectorAttribute = device_property(
        dtype=str,
        default_value="lastWrittenFile",
        doc="attribute whose change events carry each written module file's path",
    )
    DetectorName = device_property(dtype=str, default_value="lambda", doc="detector (stream) name in messages")
    ModuleCount = device_property(dtype=int, default_value=3, doc="module files per part")
    FramesPerItem = device_property(dtype=int, default_value=16, doc="frames per work item")
    DataRoots = device_property(
        dtype=(str,), default_value=[], doc="announced/reintegrated files must lie under one of these (empty: anywhere)"
    )
    AutoStart = device_property(
        dtype=bool,
        default_value=True,
        doc="take announcements from init on (so a restarted Stitcher goes on by itself); Stop/Start toggle it",
    )
    LeaseTimeout = device_property(
        dtype=float,
        default_value=60.0,
        doc="seconds a claimed item may stay unacknowledged before it is handed out again",
    )
    MaxPending = device_property(dtype=int, default_value=10_000, doc="bound of the announcement queue")
    MaxReintegrations = device_property(
        dtype=int, default_value=8, doc="reintegrations waiting to be queued as work; beyond it Reintegrate is refused"
    )
    MaxRequeues = device_property(
        dtype=int, default_value=100, doc="RequeueFrames requests waiting; beyond it they are refused"
    )
    MaxItems = device_property(
        dtype=int,
        default_value=100_000,
        doc="work items waiting for an Integrator; beyond it requeues and reintegrations are refused and "
        "complete parts wait on disk",
    )
    ModuleTimeout = device_property(
        dtype=float, default_value=60.0, doc="seconds to wait for a part's missing module files before failing it"
    )
    CalibrationRoots = device_property(
        dtype=(str,), default_value=[], doc="PONI and mask files must lie under one of these (empty: anywhere)"
    )

    def init_device(self) -> None:
        super().init_device()
        # the first PONI check imports pyFAI (~1 s, more on a busy host): do it now, not inside a
        # SetSettings call that an Integrator forwards within its client's 3 s timeout
        threading.Thread(target=_import_pyfai, name="xrd-import-pyfai", daemon=True).start()
        self._running = bool(self.AutoStart)
        for name in ("workAvailable", "scanInfo", "settings"):
            self.set_change_event(name, True, False)
        self._scan_json = ""
        self.stage = StitchStage(
            StitchConfig(
                self.DetectorName,
                self.ModuleCount,
                self.FramesPerItem,
                self.ModuleTimeout,
                data_roots=tuple(self.DataRoots),
                max_pending=self.MaxPending,
                max_reintegrations=self.MaxReintegrations,
                max_requeues=self.MaxRequeues,
                max_items=self.MaxItems,
                lease_s=self.LeaseTimeout,
            ),
            on_scan=self._scan_started,
            on_work=self._work_queued,
            on_error=self.report_error,
            settings=ChainSettings(roots=tuple(self.CalibrationRoots)),
        )
        if self.DetectorDevice:
            self.subscribe(self.DetectorDevice, self.DetectorAttribute, self._announced)

    # -- callbacks: enqueue and return ----------------------------------------------------------------
    def _announced(self, event) -> None:
        path = event.attr_value.value if event.attr_value is not None else ""
        if self._running and path:
            self.stage.announce(path)

    def _scan_started(self, info) -> None:
        self._scan_json = info.to_json()
        self.push_change_event("scanInfo", self._scan_json)
        self.push_change_event("currentScan", info.scan)

    def _work_queued(self, n_items: int) -> None:
        self.push_change_event("workAvailable", self.stage.queue_depth)
        self.push_progress()

    # -- interface --------------------------------------------------------------------------------------
    def counters(self):
        return self.stage.counters

    def is_busy(self) -> bool:
        return self.stage.queue_depth > 0 or self.stage.pending_announcements > 0

    def alarm(self) -> str | None:
        pending = self.stage.pending_announcements
        if pending >= 0.8 * self.MaxPending:
            return (
                f"{pending} announcements waiting (bound {self.MaxPending}): the detector is faster than "
                "stitching; beyond the bound announcements are refused"
            )
        items = self.stage.queue_depth
        if items >= 0.8 * self.MaxItems:
            return (
                f"{items} work items waiting (bound MaxItems = {self.MaxItems}): the Integrators are behind; "
                "beyond the bound complete parts wait on disk and requeues/reintegrations are refused"
            )
        return None

    @attribute(
        dtype=int,
        label="Queue depth",
        unit="announcements",
        format="%d",
        min_value=0,
        doc="announcements waiting to be stitched (ALARM at 80 % of MaxPending, refused beyond it)",
    )
    def queueDepth(self) -> int:
        return self.stage.pending_announcements

    @attribute(
        dtype=int,
        label="Reintegrations waiting",
        unit="acquisitions",
        format="%d",
        min_value=0,
        doc="reintegrations accepted whose parts are not all queued as work yet (refused beyond MaxReintegrations)",
    )
    def reintegrationsPending(self) -> int:
        return self.stage.pending_reintegrations

    @attribute(
        dtype=int,
        label="Requeue requests waiting",
        unit="requests",
        format="%d",
        min_value=0,
        doc="RequeueFrames requests not yet handled (refused beyond MaxRequeues)",
    )
    def requeuesPending(self) -> int:
        return self.stage.pending_requeues

    def describe(self) -> str:
        c = self.stage.counters
        state = "listening to " + (
            f"{self.DetectorDevice}/{self.DetectorAttribute}"
            if self.DetectorDevice
            else "nothing (no DetectorDevice property)"
        )
        return (
            f"{'Started' if self._running else 'Stopped'}, {state}; scan {self.stage.current_scan or '-'}: "
            f"{c.parts_done} parts, {c.frames_processed} frames queued, {c.frames_failed} failed, "
            f"{self.stage.queue_depth} items waiting"
            + ("" if self.stage.settings.current() else " (no PONI set in the chain: write poniPath)")
        )

    @attribute(
        dtype=int,
        label="Work available",
        unit="items",
        format="%d",
        min_value=0,
        doc="work items waiting to be claimed by an Integrator (change events wake Integrators)",
    )
    def workAvailable(self) -> int:
        return self.stage.queue_depth

    @attribute(dtype=str, label="Scan info", doc="JSON ScanInfo message of the current scan (change events)")
    def scanInfo(self) -> str:
        return self._scan_json

    @attribute(
        dtype=float,
        label="Latency",
        unit="s",
        format="%.3f",
        min_value=0,
        doc="last part: announced by the detector -> checked and queued as work",
    )
    def latency(self) -> float:
        return self.stage.counters.latency_s

    @attribute(dtype=str, label="Current scan", doc="scan (acquisition) being stitched")
    def currentScan(self) -> str:
        return self.stage.current_scan

    @attribute(dtype=str, label="Last output file", doc="the Stitcher writes no result file; see the Merger")
    def lastOutputFile(self) -> str:
        return ""

    @attribute(
        dtype=((np.uint8,),),
        max_dim_x=4096,
        max_dim_y=4096,
        label="Detector mask",
        doc="gaps and the files' bad pixels of the stitched frame (1 = masked); added to the user mask",
    )
    def mask(self):
        m = self.stage.detector_mask
        return np.zeros((0, 0), np.uint8) if m is None else m.astype(np.uint8)

    # -- the chain's integration settings ----------------------------------------------------------------
    def _shown(self) -> dict:
        return self.stage.settings.shown()

    def _change(self, changes: dict, initial: bool = False, where: str = "write") -> None:
        """Change the chain's settings (XRD_InvalidValue with the reason, the old value kept), then say so."""
        try:
            self.stage.set_settings(changes, initial=initial)
        except PipelineError as exc:
            tango.Except.throw_exception("XRD_InvalidValue", str(exc), f"{self.get_name()} {where}")
        self.push_change_event("settings", self._settings_json())

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="PONI file",
        doc="pyFAI calibration of the chain, for the work queued from now on; refused if it does not parse",
    )
    def poniPath(self) -> str:
        return self._shown()["poni_path"]

    @poniPath.write
    def poniPath(self, value: str) -> None:
        self._change({"poni_path": value})

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Mask file",
        doc="user mask of the chain (EDF/TIFF/.mask/.npy, non-zero = masked); empty = gaps only",
    )
    def maskPath(self) -> str:
        return self._shown()["mask_path"]

    @maskPath.write
    def maskPath(self, value: str) -> None:
        self._change({"mask_path": value})

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
        doc="number of radial bins of each 1-D pattern of the chain (0 = not set yet)",
    )
    def bins(self) -> int:
        return int(self._shown()["bins"])

    @bins.write
    def bins(self, value: int) -> None:
        self._change({"bins": int(value)})

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Radial unit",
        doc=f"radial unit of the chain: one of {', '.join(UNITS)} (pyFAI names; empty = not set yet)",
    )
    def unit(self) -> str:
        return self._shown()["unit"]

    @unit.write
    def unit(self, value: str) -> None:
        self._change({"unit": value})

    @attribute(
        dtype=str,
        label="Settings in force",
        doc="JSON {poni_path, mask_path, bins, unit, fingerprint} of the chain (change events on every change; "
        "fingerprint empty while no PONI is set)",
    )
    def settings(self) -> str:
        return self._settings_json()

    def _settings_json(self) -> str:
        current = self.stage.settings.current()
        return json.dumps({**self._shown(), "fingerprint": current.fingerprint() if current else ""})

    @command(
        dtype_in=str,
        doc_in='JSON SettingsRequest {"type": "settings", "version": 1, "poni_path": ..., "mask_path": ..., '
        '"bins": ..., "unit": ..., "initial": false} (fields left out are unchanged)',
        dtype_out=str,
        doc_out="the settings attribute afterwards",
    )
    def SetSettings(self, request: str) -> str:
        """Change the chain's settings from the next work item on (Integrators and the Merger forward
        their writes here). ``initial`` values apply only while the chain has no PONI."""
        r = self._parse(SettingsRequest, request, "SetSettings")
        self._change(r.changes(), initial=r.initial, where="SetSettings")
        if not r.initial:
            self._memorize(r.changes())
        return self._settings_json()

    def _memorize(self, changes: dict) -> None:
        """Store forwarded values as Tango stores a memorized attribute write (the ``__value`` attribute
        property), so that a restarted Stitcher restores what was last set, whichever device set it."""
        if not tango.Util._UseDb:  # e.g. a test context without database
            return
        names = {"poni_path": "poniPath", "mask_path": "maskPath", "bins": "bins", "unit": "unit"}
        props = {names[k]: {"__value": [str(v)]} for k, v in changes.items()}
        try:
            tango.Util.instance().get_database().put_device_attribute_property(self.get_name(), props)
        except tango.DevFailed as exc:
            self.report_error(f"settings in force but not memorized (restart restores the old ones): {exc}")

    @attribute(
        dtype=(int,),
        max_dim_x=2,
        label="Frame shape",
        unit="px",
        doc="(rows, columns) of the stitched frame, once the first part was read",
    )
    def frameShape(self):
        return list(self.stage.frame_shape or ())

    @command(
        dtype_in=str,
        doc_in='JSON ClaimRequest {"type": "claim", "version": 1, "integrator": name, "settings": {...}, '
        '"done": [item ids]}',
        dtype_out=str,
        doc_out="JSON WorkItem, or empty string when there is no work",
    )
    def ClaimWork(self, request: str) -> str:
        """Hand the next work item to exactly one Integrator (a malformed request: XRD_InvalidValue)."""
        claim = self._parse(ClaimRequest, request, "ClaimWork")
        had = self.stage.settings.current()
        item = self.stage.claim(claim.integrator, claim.done, offer=_offer(claim.settings))
        if had is None and self.stage.settings.current() is not None:
            self.push_change_event("settings", self._settings_json())
        return item.to_json() if item is not None else ""

    @command(
        dtype_in=str,
        doc_in='JSON RequeueRequest {"type": "requeue", "version": 1, "scan": id, "frames": [numbers], '
        '"raw_file": any file of the scan}',
    )
    def RequeueFrames(self, request: str) -> None:
        """Make work again for frames a Merger is missing (lost events, a killed Integrator). Returns at once."""
        r = self._parse(RequeueRequest, request, "RequeueFrames")
        self._forward(lambda: self.stage.requeue_frames(r.scan, r.frames, r.raw_file), "RequeueFrames")

    def _parse(self, message_type, text: str, command: str):
        """The command's argument as a validated message, or XRD_InvalidValue naming the field."""
        try:
            return message_type.from_json(text)
        except MessageError as exc:
            tango.Except.throw_exception("XRD_InvalidValue", f"{command}: {exc}", f"Stitcher.{command}")

    def _forward(self, call, command: str) -> None:
        """Run a stage call; its refusals become XRD_QueueFull / XRD_InvalidValue with the stage's message."""
        try:
            call()
        except QueueFull as exc:
            tango.Except.throw_exception("XRD_QueueFull", str(exc), f"Stitcher.{command}")
        except PipelineError as exc:
            tango.Except.throw_exception("XRD_InvalidValue", str(exc), f"Stitcher.{command}")

    @attribute(
        dtype=int,
        label="Items leased",
        unit="items",
        format="%d",
        min_value=0,
        doc="work items claimed by Integrators and not yet acknowledged",
    )
    def itemsLeased(self) -> int:
        return self.stage.leased

    @attribute(
        dtype=int,
        label="Items handed out again",
        unit="items",
        format="%d",
        min_value=0,
        doc="items re-queued after an expired lease or a Merger's request for missing frames",
    )
    def itemsRequeued(self) -> int:
        return self.stage.counters.items_requeued

    @command(doc_in="", doc_out="")
    def Start(self) -> None:
        """Begin live processing: announcements from the detector are stitched from now on."""
        self._running = True

    @command
    def Stop(self) -> None:
        """Stop taking announcements (queued work is still handed out)."""
        self._running = False

    @command(
        dtype_in=str,
        doc_in="an acquisition file (any module/part) or its directory",
        dtype_out=str,
        doc_out="what was queued",
    )
    def Reintegrate(self, path: str) -> str:
        """Reprocess an acquisition through the chain with the current settings into a new file. Returns at once."""
        try:
            request = ReintegrateRequest.from_text(path)
        except MessageError as exc:
            tango.Except.throw_exception("XRD_InvalidValue", f"Reintegrate: {exc}", "Stitcher.Reintegrate")
        self._forward(lambda: self.stage.reintegrate(request.path), "Reintegrate")
        return f"queued {path} for reintegration; watch framesProcessed on the Merger"

    @attribute(dtype=str, label="Detector", access=AttrWriteType.READ, doc="upstream TRL/attribute")
    def detectorAnnouncement(self) -> str:
        return f"{self.DetectorDevice}/{self.DetectorAttribute}"


def _offer(settings: dict) -> dict | None:
    """The initial settings an Integrator offers with its claims (its properties), or None."""
    offer = {k: settings[k] for k in ("poni_path", "mask_path", "bins", "unit") if settings.get(k) is not None}
    return offer if offer.get("poni_path") else None


def _import_pyfai() -> None:
    import pyFAI.integrator.azimuthal  # noqa: F401


SERVER = "XrdStitcher"


def main(args: list[str] | None = None) -> None:
    """``xrd-stitcher INSTANCE [Tango/omniORB options]`` — the XrdStitcher device server (Starter-compatible)."""
    run((Stitcher,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
