"""The stitching stage of the live pipeline, without Tango.

It hears "this module file is written" announcements (from the detector driver, via the Stitcher
device), groups them into parts, and once every module file of a part exists and opens, checks the
part (layout, frame counts, sequence numbers) and cuts it into :class:`WorkItem` s of a few frames.
Integrators *claim* items one by one, so several of them share a scan without duplicating a frame.
A part whose module files do not all arrive within ``module_timeout_s`` becomes a failed item that
still travels down the chain, so the Merger lists it instead of waiting for it forever.

Frames themselves never travel: a work item says which module files and which frame range to stitch,
and the Integrator that claims it reads and stitches them with :func:`sources.read_part_range`.

Every queue a client can fill is bounded and its depth visible: announcements, reintegrations and
requeue requests waiting for the stage's thread, and the work items waiting for an Integrator.
Beyond a bound a request is refused with :class:`QueueFull` naming it — except a part that is
complete on disk while the work queue is full: it waits (back-pressure) instead of being lost.
Every file the stage opens is checked against ``data_roots`` where it is opened.

The stage itself only takes requests, applies the bounds and queues jobs for its thread; the jobs
are done by parts that each do one job and can be tested alone: :class:`~.work_queue.WorkQueue`
(claims, leases, expiry), :class:`~.scan_tracker.ScanTracker` (scans, parts, settings stamping),
:class:`~.part_checker.PartChecker` (is a part on disk ready) and :class:`~.stitch_jobs.StitchJobs`
(what each job does with them).

The stage also holds the chain's integration settings in force
(:class:`~.chain_settings.ChainSettings`): one set for the whole chain, changed from any device,
and stamped on every work item. A scan never mixes settings: all its items carry the settings in
force when its first part was queued (for a reintegration: when ``reintegrate`` was called), also
items made again for it later (expired leases, requeued frames). A scan queued while the chain had
no PONI takes the settings in force when its first item is handed out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..messages import ClaimRequest, ScanInfo, WorkItem
from ..paths import confine
from ..processing.integrate import IntegrationSettings
from .chain_settings import ChainSettings
from .deadline import Deadline
from .part_checker import PartChecker
from .scan_tracker import ScanTracker
from .stitch_jobs import (
    Announce,
    AnnouncePart,
    Job,
    JobSlots,
    PartIntake,
    Reintegrate,
    Requeue,
    StitchCounters,
    StitchJobs,
    check_reintegration_path,
)
from .triggers.lambda_follow import PartDue
from .work_queue import QueueFull, WorkQueue
from .worker import ThreadContext, Worker

__all__ = ["QueueFull", "StitchConfig", "StitchCounters", "StitchStage"]


@dataclass(frozen=True)
class StitchConfig:
    detector: str = "lambda"
    module_count: int = 3
    frames_per_item: int = 16
    module_timeout_s: float = 60.0
    open_retries: int = 3
    open_retry_delay_s: float = 0.5
    #: Announced and reintegrated files must lie under one of these (empty: anywhere).
    data_roots: tuple[str, ...] = ()
    #: Announcements waiting to be handled; beyond this they are refused (and reported), never blocking.
    max_pending: int = 10_000
    #: Reintegrations accepted and not yet all queued as work; beyond this Reintegrate is refused.
    max_reintegrations: int = 8
    #: RequeueFrames requests waiting to be handled; beyond this they are refused.
    max_requeues: int = 100
    #: Work items waiting for an Integrator. Beyond it requeues and reintegrations are refused and
    #: complete parts wait on disk until Integrators catch up (a part adds at most one part's items).
    max_items: int = 100_000
    #: A claimed item not acknowledged within this time is handed out again (its Integrator died?).
    lease_s: float = 60.0
    #: After this many expired leases of the same frames they are not handed out again but sent down
    #: the chain as failed: data that kills every Integrator taking it must not loop forever.
    max_lease_expiries: int = 2
    #: A part is opened only once every module file of it was announced complete (Trigger=watch: a
    #: file that exists may still be being written); otherwise once every module file exists.
    require_announced: bool = False
    #: A part the detector says is written (Trigger=lambda) whose other module files exist: a module
    #: with no file this long after is taken as switched off for the scan.
    switched_off_s: float = 5.0


class StitchStage:
    """Turns module-file announcements into claimable work items. Thread-safe; callbacks never block.

    ``clock`` (monotonic seconds) times leases and module timeouts; tests pass a fake one.
    ``thread_context`` wraps the stage's thread (the device passes ``tango.EnsureOmniThread``).
    """

    def __init__(
        self,
        config: StitchConfig,
        on_scan: Callable[[ScanInfo], None],
        on_work: Callable[[int], None],
        on_error: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        settings: ChainSettings | None = None,
        thread_context: ThreadContext | None = None,
    ):
        self.config = config
        #: the chain's settings in force; ``set_settings`` changes them for the work queued from then on
        self.settings = settings or ChainSettings()
        self._on_error = on_error
        self._slots = JobSlots()
        self._queue = WorkQueue(config.max_items, config.lease_s, config.max_lease_expiries, clock)
        self._scans = ScanTracker(
            config.detector, config.frames_per_item, lambda: self.settings.current(), config.max_reintegrations
        )
        checker = PartChecker(config.open_retries, config.open_retry_delay_s, config.data_roots)
        self._intake = PartIntake(
            config, (self._scans, self._queue, checker), on_work, on_error, clock,
            announcements_waiting=lambda: self._slots.waiting(Announce),
        )  # fmt: skip
        self._jobs = StitchJobs(self._intake, on_scan, on_work, clock)
        self._worker = Worker(
            "xrd-stitch", self._handle, on_error, idle=self._intake.check_pending, idle_interval_s=0.5,
            thread_context=thread_context,
        )

    # -- requests (any thread): checked and bounded here, done on the stage's thread ------------------
    def announce(self, path: str) -> None:
        """A module file was written. Returns at once; the work happens on the stage's thread."""
        if not self._slots.take(Announce, self.config.max_pending):
            self.counters.announcements_refused += 1
            self._on_error(
                f"announcement queue full ({self.config.max_pending}): {path} refused; "
                "Reintegrate the acquisition once the burst is over"
            )
            return
        self._worker.submit(Announce(str(path)))

    def announce_part(self, due: PartDue) -> None:
        """The detector says a part is written (Trigger=lambda). Returns at once, like :meth:`announce`."""
        if not self._slots.take(Announce, self.config.max_pending):
            self.counters.announcements_refused += 1
            self._on_error(
                f"announcement queue full ({self.config.max_pending}): part {due.part} of {due.stem} refused; "
                "Reintegrate the acquisition once the burst is over"
            )
            return
        self._worker.submit(AnnouncePart(due))

    def reintegrate(self, path: str) -> None:
        """Queue every part of the acquisition that ``path`` (a file or directory) belongs to, as a new scan.

        Refused at once (ConfigError/SourceError) when the path or the module files it leads to resolve
        outside the data roots or do not exist, and (QueueFull) beyond ``max_reintegrations``.
        """
        check_reintegration_path(path, self.config.data_roots)
        self._scans.reserve_reintegration(path)
        self._slots.take(Reintegrate)
        self._worker.submit(Reintegrate(str(path), self.settings.current()))

    def requeue_frames(self, scan_id: str, frame_numbers: list[int], raw_file: str = "") -> None:
        """Make work items again for frames the Merger is missing (lost events, dead Integrators).

        Returns at once. Refused (ConfigError) when ``raw_file`` resolves outside the data roots, and
        (QueueFull) when requeue requests or work items are at their bounds.
        """
        if raw_file:
            confine(raw_file, self.config.data_roots, "raw_file of the requeue request")
        if self.queue_depth >= self.config.max_items:
            raise QueueFull(
                f"frames of {scan_id} requested again, refused: {self.queue_depth} work items are waiting "
                f"(bound MaxItems = {self.config.max_items})"
            )
        if not self._slots.take(Requeue, self.config.max_requeues):
            raise QueueFull(
                f"frames of {scan_id} requested again, refused: {self.config.max_requeues} requeue requests "
                f"are waiting (bound MaxRequeues = {self.config.max_requeues})"
            )
        self._worker.submit(Requeue(scan_id, tuple(frame_numbers), raw_file))

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        """Hand out the next item to ``request.integrator``; ``request.done`` acknowledges the items it
        has finished (see :class:`~.work_queue.WorkQueue` for leases).

        ``request.settings`` (the claimant's initial settings) become the chain's while it has no PONI.
        An item queued while the chain had none gets its scan's settings now, fixed for the scan from
        here on.
        """
        refused = self.settings.adopt_offer(request.settings, self.frame_shape)
        if refused:
            self._on_error(f"initial settings offered by {request.integrator or '?'} refused: {refused}")
        return self._queue.claim(request.integrator, request.done, prepare=self._intake.hand_out)

    def set_settings(self, changes: dict, initial: bool = False) -> IntegrationSettings | None:
        """Change the chain's settings from the next queued scan on (see ChainSettings.change).

        Raises ConfigError (the old value kept) for a PONI that does not parse, a mask that does not
        load or does not fit the frames seen so far, bins or unit out of range."""
        return self.settings.change(changes, self.frame_shape, initial=initial)

    def expire_leases(self) -> int:
        """Hand out again the items whose lease ran out; fail those whose leases ran out twice.

        Returns how many items were queued (again or as failed)."""
        return self._intake.expire_leases()

    def stop(self, deadline: Deadline | float | None = None) -> bool:
        """Stop after the current job; queued announcements are dropped (the trigger finds them again)."""
        return self._worker.stop(deadline)

    def _handle(self, job: Job) -> None:
        self._slots.release(Announce if isinstance(job, AnnouncePart) else type(job))
        try:
            self._jobs.handle(job)
        finally:
            self._intake.check_pending(if_due_s=0.5)  # a steady stream of jobs keeps the worker from idling

    # -- what it shows -------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    @property
    def leased(self) -> int:
        return self._queue.leased

    @property
    def pending_announcements(self) -> int:
        return self._slots.waiting(Announce)

    @property
    def pending_requeues(self) -> int:
        return self._slots.waiting(Requeue)

    @property
    def pending_reintegrations(self) -> int:
        """Reintegrations accepted whose parts are not all queued as work yet."""
        return self._scans.pending_reintegrations

    @property
    def counters(self) -> StitchCounters:
        return self._intake.counters

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        return self._intake.frame_shape

    @property
    def detector_mask(self) -> np.ndarray | None:
        return self._intake.detector_mask

    @property
    def current_scan(self) -> str:
        return self._scans.current_scan
