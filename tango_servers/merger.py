"""Merger device: collects pattern batches from every Integrator into one NeXus file per scan.

It subscribes to the Stitcher's ``scanInfo`` and to each Integrator's ``patterns`` events, orders
rows by frame number, never writes a frame twice and closes the file when every frame of the
acquisition is merged or listed as failed. Its PONI/mask/bins/unit attributes show the chain's
settings (the Stitcher's); a write is validated here and forwarded to the Stitcher, changing them
for the whole chain from the next scan on. The file records the settings of its own scan.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tango
from tango.server import command, device_property, run

from pipeline_core.errors import PipelineError, UpstreamError
from pipeline_core.live.merge_stage import DEFAULT_GAP_CHECK_S, DEFAULT_SCAN_TIMEOUT_S, MergeStage, ScanSummary
from pipeline_core.messages import MessageError, PatternBatch, RequeueRequest, ScanInfo, SettingsRequest

from .chain_settings import ChainSettingsClient, ChainSettingsDevice
from .dev_failed import one_line, throw, unreachable
from .merger_attributes import MergerAttributes
from .merger_pressure import PRESSURE_ATTRIBUTES, MergerPressure


class Merger(MergerAttributes, MergerPressure, ChainSettingsDevice):
    """Merges every Integrator's pattern batches; the stage holds the state, the device shows it."""

    StitcherDevice = device_property(dtype=str, default_value="", doc="TRL of the Stitcher (scan announcements)")
    IntegratorDevices = device_property(dtype=(str,), default_value=[], doc="TRLs of the Integrators to collect from")
    GapCheck = device_property(
        dtype=float,
        default_value=DEFAULT_GAP_CHECK_S,
        doc="seconds of quiet after which missing frames are requested again",
    )
    QueueAlarm = device_property(dtype=int, default_value=1000, doc="ALARM when this many batches wait")
    ScanTimeout = device_property(
        dtype=float,
        default_value=DEFAULT_SCAN_TIMEOUT_S,
        doc="close a scan after this many seconds without news (missing frames listed)",
    )
    AutoStart = device_property(
        dtype=bool,
        default_value=True,
        doc="merge pattern batches from init on (so a restarted Merger goes on by itself); Stop/Start toggle it",
    )

    def init_device(self) -> None:
        super().init_device()
        self.stage = self.create_stage()
        self.publisher.watch("poniPath", "maskPath", "bins", "unit", "currentOutputFile", "queueDepth")
        self.publisher.watch(*PRESSURE_ATTRIBUTES, exact=True)  # results: every change, to the last digit
        self._running = bool(self.AutoStart)
        self._ignored_while_stopped = 0
        self.chain_settings = ChainSettingsClient(self.StitcherDevice)
        subscriptions = [(self.StitcherDevice, "scanInfo", self._scan)] if self.StitcherDevice else []
        subscriptions += [(trl, "patterns", self._batch) for trl in self.IntegratorDevices]
        if not self.IntegratorDevices:
            self.set_fault("no IntegratorDevices property: nothing to merge")
        for trl, attr, handler in subscriptions:
            self.subscribe(trl, attr, handler)

    def create_stage(self) -> MergeStage:
        """The stage this device adapts, with everything it needs passed in (the seam tests use)."""
        return MergeStage(
            Path(self.OutputDirectory),
            self._closed,
            self.report_error,
            on_progress=self.push_progress,
            scan_timeout_s=self.ScanTimeout,
            request_missing=self._request_missing if self.StitcherDevice else None,
            gap_check_s=self.GapCheck,
            thread_context=tango.EnsureOmniThread,  # its thread pushes events and calls the Stitcher
            pressure=self.live_pressure(self.report_error),
        )

    # -- callbacks: decode (small) and enqueue --------------------------------------------------------
    def _scan(self, event) -> None:
        text = event.attr_value.value if event.attr_value is not None else ""
        if not text:
            return
        try:
            info = ScanInfo.from_json(text)
        except MessageError as exc:  # e.g. a stem that is not one file name: refused, and said
            self.report_error(f"undecodable scan announcement from {event.device}: {exc}")
            return
        self.stage.scan_started(info)
        self.publisher.wake()

    def _batch(self, event) -> None:
        value = event.attr_value.value if event.attr_value is not None else None
        if not value or not value[1]:
            return  # the initial read of an Integrator that has sent nothing yet
        if not self._running:
            self._refuse_while_stopped(event.device)
            return
        try:
            batch = PatternBatch.decode(value[0], value[1])
        except MessageError as exc:
            self.report_error(f"undecodable batch from {event.device}: {exc}")
            return
        self.stage.add_batch(batch, sent_at=event.attr_value.time.totime())

    def _refuse_while_stopped(self, sender) -> None:
        """A batch that arrives while stopped is not merged: say so once per Stop, count the rest."""
        self._ignored_while_stopped += 1
        if self._ignored_while_stopped == 1:
            self.report_error(
                f"Merger stopped: pattern batches from {sender} are not merged; Start it, then Reintegrate "
                "the acquisition"
            )

    def _request_missing(self, scan: str, frames: list[int], raw_file: str) -> None:
        """Called on the stage's thread: ask the Stitcher to make work again for missing frames.

        Raises UpstreamError when the Stitcher cannot take the request now (down, restarting, at its
        bound): the gap check then asks again later, and does not count this one; PipelineError when it
        refuses it for good (counted)."""
        what = f"scan {scan}: {len(frames)} frame(s) missing ({frames[0]}..{frames[-1]})"
        request = RequeueRequest(scan, [int(n) for n in frames], raw_file).to_json()
        try:
            tango.DeviceProxy(self.StitcherDevice).command_inout("RequeueFrames", request)
        except tango.DevFailed as exc:
            refused = f"{self.StitcherDevice} did not take the request ({one_line(exc.args)})"
            if unreachable(exc.args) or exc.args[0].reason == "XRD_QueueFull":  # it may take it later
                raise UpstreamError(f"{what}; {refused}") from exc
            raise PipelineError(f"{what}; {refused}") from exc  # refused for good (e.g. a path out of its roots)
        self.report_error(f"{what}; requested again")

    def _closed(self, summary: ScanSummary) -> None:
        self.push_progress()  # lastOutputFile, Status, State back to ON: from the publisher
        if not summary.complete:
            self.report_error(f"scan {summary.scan}: {summary.frames_failed} frame(s) failed; listed in {summary.path}")

    def _apply(self, **changes) -> None:
        """Forward a write to the Stitcher, which checks it against its CalibrationRoots *before* it
        opens a file. The Merger has no roots and sees no frames: checking here first opened any path
        a client named, and the answer told whether it exists ('/etc/shadow cannot be read', '...
        does not exist'). Without a Stitcher the Merger holds the settings itself (no roots: anywhere)."""
        client = self.chain_settings
        where = f"{self.get_name()} write"
        if client.proxy is None:
            client.write(changes, None, where)
            return
        try:
            client.proxy.command_inout("SetSettings", SettingsRequest(**changes).to_json())
        except tango.DevFailed as exc:
            throw(exc.args[0].reason, exc.args[0].desc.strip(), where)
        client.shown()

    # -- interface --------------------------------------------------------------------------------------
    def counters(self):
        return self.stage.counters

    def is_busy(self) -> bool:
        scan = self.stage.current_scan  # announced (scanInfo) or open; a stopped Merger works on nothing
        return self._running and bool(scan) and scan not in self.stage.closed

    def alarm(self) -> str | None:
        depth = self.stage.queue_depth
        if depth >= self.QueueAlarm:
            return f"{depth} pattern batches waiting to be written (alarm at {self.QueueAlarm}): is the disk slow?"
        return None

    def describe(self) -> str:
        c = self.stage.counters
        last = self.stage.last_closed
        text = "Started, " if self._running else f"Stopped ({self._ignored_while_stopped} batch(es) not merged), "
        text += f"merged {c.frames_processed} frames, {c.frames_failed} failed; scan {self.stage.current_scan or '-'}"
        if last:
            text += f"; last file {last.path} ({'complete' if last.complete else 'INCOMPLETE'})"
        return f"{text}; {self.chain_settings.describe()}{self.pressure_note()}"

    @command
    def Start(self) -> None:
        """Merge pattern batches from now on (at init already, unless the AutoStart property is false)."""
        self._running = True
        self._ignored_while_stopped = 0
        self.publisher.wake()

    @command
    def Stop(self) -> None:
        """Close the open scan now and merge nothing more until Start.

        The open file is finished: frames that have not arrived are listed in it as failed ("stopped
        by the operator"). Batches that arrive while stopped — of that scan or of new ones — are not
        merged (Status says so; State is ALARM until ClearErrors): the Integrators' work is not
        held anywhere, so Reintegrate the acquisition after Start to get a file for it. Like the
        Stitcher's and Integrator's Stop, it halts taking new input; unlike theirs it also closes,
        because an open file is the Merger's unit of work.
        """
        self._running = False
        if self.stage.current_scan:
            self.stage.finish(self.stage.current_scan)
        self.publisher.wake()

    @command(dtype_in=str, doc_in="an acquisition file (any module/part) or its directory", dtype_out=str)
    def Reintegrate(self, path: str) -> str:
        """Reprocess an acquisition through the chain into a new file (forwarded to the Stitcher)."""
        if not self.StitcherDevice:
            tango.Except.throw_exception("XRD_NotConfigured", "no StitcherDevice property", "Merger.Reintegrate")
        return tango.DeviceProxy(self.StitcherDevice).command_inout("Reintegrate", path)


SERVER = "XrdMerger"


def main(args: list[str] | None = None) -> None:
    """``xrd-merger INSTANCE [Tango/omniORB options]`` — the XrdMerger device server (Starter-compatible)."""
    run((Merger,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
