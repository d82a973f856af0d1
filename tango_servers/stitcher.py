"""Stitcher device: learns which parts the detector has written and queues stitched-frame work.

Upstream is configured, not coded: ``Trigger`` says how new parts are found (a Lambda server's
attributes, a watched directory, or an attribute announcing file paths: :mod:`.triggers`).
Integrators hear ``workAvailable`` events and claim items with ``ClaimWork``, so any number of them
share the work and no frame is integrated twice.

It holds the chain's integration settings (``poniPath``, ``maskPath``, ``bins``, ``unit``: memorized
here, validated, a bad value refused with the reason and the old one kept). Integrators and the
Merger show these values and forward writes to ``SetSettings``; every work item carries the settings
of its scan, so all Integrators integrate a scan alike (see pipeline_core.live.stitch_stage).
"""

from __future__ import annotations

import sys
import threading

import tango
from tango import AttrWriteType
from tango.server import attribute, command, device_property, run

from pipeline_core.errors import PipelineError
from pipeline_core.live.chain_settings import ChainSettings
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage

from .base import PipelineDevice
from .stitcher_jobs import DEFAULT_REINTEGRATION_BACKEND, StitcherJobs
from .stitcher_queues import StitcherQueues
from .stitcher_scan import StitcherScanView
from .stitcher_settings import StitcherSettings
from .stitcher_work import StitcherWork
from .triggers import make_trigger

#: the Stitcher's attributes pushed when they change (besides every device's)
STITCHER_EVENTED = (
    "poniPath",
    "maskPath",
    "bins",
    "unit",
    "settings",
    "queueDepth",
    "reintegrationsPending",
    "requeuesPending",
    "itemsLeased",
    "itemsRequeued",
    "frameShape",
    "detectorAnnouncement",
    "jobs",
    "lastJobState",
)


class Stitcher(StitcherQueues, StitcherSettings, StitcherWork, StitcherScanView, StitcherJobs, PipelineDevice):
    """Groups module files into parts, checks them and hands out work items to Integrators.

    The queues and their bounds (:class:`StitcherQueues`), the chain's settings
    (:class:`StitcherSettings`), the work commands (:class:`StitcherWork`) and the view of the scan
    being stitched (:class:`StitcherScanView`) are mixins; this class builds the stage and wires it
    to the detector's events.
    """

    Trigger = device_property(
        dtype=str,
        default_value="lambda",
        doc="how new parts are found: lambda (follow the Lambda server DetectorDevice), watch (WatchDirectories), "
        "file-attribute (change events of DetectorDevice/DetectorAttribute carry file paths)",
    )
    DetectorDevice = device_property(dtype=str, default_value="", doc="TRL of the detector (or simulator) device")
    DetectorAttribute = device_property(
        dtype=str,
        default_value="lastWrittenFile",
        doc="Trigger=file-attribute: attribute whose change events carry each written module file's path",
    )
    DetectorPollPeriod = device_property(
        dtype=float, default_value=0.5, doc="Trigger=lambda: seconds between reads of the Lambda server"
    )
    WatchDirectories = device_property(
        dtype=(str,), default_value=[], doc="Trigger=watch: folders (and their subfolders) the detector writes into"
    )
    WatchStableTime = device_property(
        dtype=float, default_value=2.0, doc="Trigger=watch: a file quiet this long is complete (for the sweep)"
    )
    WatchSweepPeriod = device_property(
        dtype=float, default_value=2.0, doc="Trigger=watch: seconds between sweeps (where inotify sees nothing)"
    )
    WatchBacklog = device_property(
        dtype=float, default_value=300.0,
        doc="Trigger=watch: at start, acquisitions changed within this many seconds are taken (the parts missed)",
    )  # fmt: skip
    DetectorName = device_property(
        dtype=str, default_value=StitchConfig.detector, doc="detector (stream) name in messages"
    )
    ModuleCount = device_property(dtype=int, default_value=StitchConfig.module_count, doc="module files per part")
    FramesPerItem = device_property(
        dtype=int, default_value=StitchConfig.frames_per_item, doc="frames per work item"
    )
    DataRoots = device_property(
        dtype=(str,), default_value=[], doc="announced/reintegrated files must lie under one of these (empty: anywhere)"
    )
    AutoStart = device_property(
        dtype=bool,
        default_value=True,
        doc="take announcements from init on (so a restarted Stitcher goes on by itself); Stop/Start toggle it",
    )
    ModuleTimeout = device_property(
        dtype=float,
        default_value=StitchConfig.module_timeout_s,
        doc="seconds to wait for a part's missing module files before failing it",
    )
    CalibrationRoots = device_property(
        dtype=(str,), default_value=[], doc="PONI and mask files must lie under one of these (empty: anywhere)"
    )
    ReintegrationBackend = device_property(
        dtype=str,
        default_value=DEFAULT_REINTEGRATION_BACKEND,
        doc="where Reintegrate runs: chain (through the live chain), local (a process pool on this host) or "
        "slurm (an sbatch array job); local/slurm return a job id (see jobs, CancelJob)",
    )

    def init_device(self) -> None:
        super().init_device()
        # the first PONI check imports pyFAI (~1 s, more on a busy host): do it now, not inside a
        # SetSettings call that an Integrator forwards within its client's 3 s timeout
        threading.Thread(target=_import_pyfai, name="xrd-import-pyfai", daemon=True).start()
        self._running = bool(self.AutoStart)
        for name in ("workAvailable", "scanInfo"):  # pushed with every scan / work item (hints, transport)
            self.set_change_event(name, True, False)
        self.publisher.watch(*STITCHER_EVENTED)
        self._scan_json = ""
        self.trigger = None
        self.stage = self.create_stage()
        self.restore_memorized()  # before the trigger starts: no part is queued with half the settings
        try:
            self.trigger = make_trigger(self)
        except PipelineError as exc:  # a bad Trigger/WatchDirectories...: the device says why and serves on
            self.set_fault(str(exc))
            return
        self.trigger.start()

    def delete_device(self) -> None:
        """The trigger first (no new announcements), then the rest, all within one stop deadline."""
        if self.trigger is not None:
            self.trigger.stop(self.stop_deadline())
        super().delete_device()

    def create_stage(self) -> StitchStage:
        """The stage this device adapts, with everything it needs passed in (the seam tests use)."""
        return StitchStage(
            StitchConfig(
                self.DetectorName,
                self.ModuleCount,
                self.FramesPerItem,
                self.ModuleTimeout,
                data_roots=tuple(self.DataRoots),
                require_announced=self.Trigger.strip().lower() == "watch",  # a file there may be half written
                **self.queue_bounds(),
            ),
            on_scan=self._scan_started,
            on_work=self._work_queued,
            on_error=self.report_error,
            settings=ChainSettings(roots=tuple(self.CalibrationRoots)),
            thread_context=tango.EnsureOmniThread,  # its thread pushes events
        )

    # -- callbacks: enqueue and return ----------------------------------------------------------------
    def taking_announcements(self) -> bool:
        """Started: what the trigger finds is stitched (Stop: not taken)."""
        return self._running

    def _scan_started(self, info) -> None:
        self._scan_json = info.to_json()
        self.push_change_event("scanInfo", self._scan_json)
        self.push_progress()  # currentScan, State, ... from the publisher

    def _work_queued(self, n_items: int) -> None:
        self.push_change_event("workAvailable", self.stage.queue_depth)
        self.push_progress()

    # -- interface --------------------------------------------------------------------------------------
    def counters(self):
        return self.stage.counters

    def is_busy(self) -> bool:
        """Work waiting, claimed, or a part stitched in the last seconds (the scan goes on)."""
        stage = self.stage
        return (
            stage.queue_depth > 0
            or stage.pending_announcements > 0
            or stage.leased > 0
            or self.recently_worked()
            or self.jobs_running() > 0
        )

    def describe(self) -> str:
        c = self.stage.counters
        jobs = self.jobs_running()
        state = self.trigger.describe() if self.trigger is not None else f"no trigger (Trigger={self.Trigger!r})"
        return (  # what changes first: an operator's panel may show only the first line's start
            f"{'Started' if self._running else 'Stopped'}; scan {self.stage.current_scan or '-'}: "
            f"{c.parts_done} parts, {c.frames_processed} frames queued, {c.frames_failed} failed, "
            f"{self.stage.queue_depth} items waiting"
            + (f"; {jobs} reintegration job(s) not ended ({self.ReintegrationBackend})" if jobs else "")
            + ("" if self.stage.settings.current() else " (no PONI set in the chain: write poniPath)")
            + f"; {state}"
        )

    @command(doc_in="", doc_out="")
    def Start(self) -> None:
        """Begin live processing: announcements from the detector are stitched from now on."""
        self._running = True
        self.publisher.wake()

    @command
    def Stop(self) -> None:
        """Stop taking announcements (queued work is still handed out)."""
        self._running = False
        self.publisher.wake()

    @attribute(dtype=str, label="Detector", access=AttrWriteType.READ, doc="how new parts are found (the trigger)")
    def detectorAnnouncement(self) -> str:
        return self.trigger.describe() if self.trigger is not None else f"none (Trigger={self.Trigger!r})"


def _import_pyfai() -> None:
    import pyFAI.integrator.azimuthal  # noqa: F401


SERVER = "XrdStitcher"


def main(args: list[str] | None = None) -> None:
    """``xrd-stitcher INSTANCE [Tango/omniORB options]`` — the XrdStitcher device server (Starter-compatible)."""
    run((Stitcher,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
