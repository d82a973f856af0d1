"""The integration stage of the live pipeline, without Tango.

Woken by "work available" hints, it claims work items one at a time from the
:class:`~.work_source.WorkSource` it is given (the device: the Stitcher's ``ClaimWork`` through
Tango; tests and benchmarks: a StitchStage in the same process), reads and stitches the
item's frames, integrates them with a warm engine and hands a :class:`PatternBatch` on. It also
polls for work when idle, because an event is a hint, not a delivery guarantee.

Each item is integrated with the settings it carries (:mod:`.item_settings`), so any Integrator
integrates any item exactly as queued; warm engines are kept between items by an
:class:`~.engine_cache.EngineCache`. Frames become patterns through
:func:`~.frame_batch.integrate_batch`, as in the offline command: a frame that fails is reported
on its own, the others of its item still count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import PipelineError
from ..messages import ClaimRequest, FailedFrames, PatternBatch, WorkItem
from ..processing.engine_cache import EngineCache
from ..processing.engine_choice import DEFAULT_ENGINE, validate_engine
from ..processing.engine_store import EngineStore
from ..processing.frame_batch import BatchPatterns, FrameBatch, integrate_batch
from ..processing.integrate import IntegrationEngine, IntegrationSettings
from ..processing.open_parts import OpenParts
from ..processing.sources import read_part_range
from .deadline import Deadline, as_deadline
from .item_settings import ItemSettings
from .work_source import NoWork, WorkSource
from .worker import ThreadContext, Worker

#: Seconds between claims when no "work available" hint came (events are hints, not deliveries).
DEFAULT_POLL_INTERVAL_S = 1.0
#: An item held longer than this fraction of its lease is dropped, not integrated: by the time it
#: would be handed on the Stitcher may have given it to another Integrator (dropped a little early,
#: it is only handed out again; integrated late, its frames would be integrated twice)
LEASE_MARGIN = 0.9


@dataclass
class IntegrateCounters:
    frames_received: int = 0
    frames_processed: int = 0
    frames_failed: int = 0
    busy_s: float = 0.0
    latency_s: float = 0.0  # part announced -> its patterns sent, of the last item

    def count(self, batch: PatternBatch, busy_s: float, announced_at: float) -> None:
        """Count one item handed on."""
        self.frames_processed += len(batch.frame_numbers)
        self.frames_failed += sum(len(f.frame_numbers) for f in batch.failed)
        self.busy_s += busy_s
        if announced_at:
            self.latency_s = max(0.0, time.time() - announced_at)


class IntegrateStage:
    def __init__(
        self,
        name: str,
        settings: IntegrationSettings | None,
        work: WorkSource | None,
        on_batch: Callable[[PatternBatch], None],
        on_error: Callable[[str], None],
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        data_roots: tuple[str, ...] = (),
        calibration_roots: tuple[str, ...] = (),
        max_engines: int = 2,
        offer: dict | None = None,
        thread_context: ThreadContext | None = None,
        engine: str = DEFAULT_ENGINE,
        engine_store: EngineStore | None | str = "default",
    ):
        """``work`` None: the stage only integrates what ``process`` is given. ``offer``: initial
        settings sent with every claim (the Stitcher adopts them only while the chain has none).
        ``engine``: auto, csr or pyfai (:mod:`pipeline_core.processing.engine_choice`); an unknown name is
        reported through ``on_error`` and the stage claims no work (the other Integrators do it),
        so nothing is integrated with an engine that was not asked for. ``engine_store``: where built
        engines are kept between processes (``"default"`` the process's, None none)."""
        self.name = name
        #: module files of a work item must resolve inside these (empty: anywhere), checked at open:
        #: an item names files, and whoever can call ClaimWork's answer into existence could name any
        self.data_roots = tuple(data_roots)
        self.item_settings = ItemSettings(settings, calibration_roots)
        #: settings of the last item integrated (what Status shows)
        self.last_settings: IntegrationSettings | None = None
        self._work: WorkSource = work or NoWork()
        self.offer = dict(offer or {})
        self._on_batch = on_batch
        self._on_error = on_error
        #: why this stage cannot integrate at all (an unknown engine name), or None
        self.engine_error: str | None = None
        try:
            engine = validate_engine(engine)
        except PipelineError as exc:
            self.engine_error = f"{exc}: this Integrator claims no work until it is given a known engine"
            on_error(self.engine_error)
            engine = DEFAULT_ENGINE  # never used: nothing is claimed, items given to process() fail
        self.engines = EngineCache(name, max_engines, engine, engine_store)
        self.counters = IntegrateCounters()
        self._done: list[str] = []  # item ids handed on, to acknowledge with the next claim
        self._done_lock = threading.Lock()
        self.last_pattern: np.ndarray | None = None
        self.radial: np.ndarray | None = None
        self.running = False
        #: work hints and polls that came while paused and were declined: the proof that a stopped
        #: stage was asked for work and claimed none (seeing nothing happen for a while proves nothing)
        self.hints_while_stopped = 0
        #: the part the claiming thread read last, open for its next items (only that thread uses it)
        self._open_parts = OpenParts()
        # Two threads: one claims and reads (decompress + stitch) the next item while the other
        # integrates the current one; the bounded hand-over queue stops it from hoarding work.
        ctx = thread_context
        self._integrator = Worker(f"xrd-integrate-{name}", self._integrate_ready, on_error, 1, thread_context=ctx)
        self._worker = Worker(
            f"xrd-claim-{name}", self._drain, on_error, idle=self._poll, idle_interval_s=poll_interval_s,
            thread_context=ctx,
        )  # fmt: skip

    # -- settings ---------------------------------------------------------------------------------
    @property
    def settings(self) -> IntegrationSettings | None:
        """The settings for items that carry none (None: such items fail)."""
        return self.item_settings.own

    def set_settings(self, settings: IntegrationSettings) -> None:
        """Validate, then switch the settings for items that carry none (the old value stays on error)."""
        self.item_settings.set_own(settings, self.frame_shape)

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        """Frame shape of the last engine built (None before the first item)."""
        return self.engines.frame_shape

    # -- work ---------------------------------------------------------------------------------------
    def take_done(self) -> list[str]:
        """Item ids finished since the last call (the claim acknowledges them, ending their lease)."""
        with self._done_lock:
            done, self._done = self._done, []
        return done

    def wake(self) -> None:
        """Work is available (an event arrived). Returns at once."""
        if not self.running:
            self.hints_while_stopped += 1
        elif self._worker.depth < 2:
            self._worker.submit("wake")

    def _poll(self) -> None:
        if self.running:
            self._drain("poll")
        else:
            self.hints_while_stopped += 1

    def _drain(self, _reason: str) -> None:
        try:
            while self.running and self.engine_error is None:
                claimed_at = time.monotonic()  # before asking: its lease cannot have started earlier
                item = self._work.claim(ClaimRequest(self.name, self.offer, self.take_done()))
                if item is None:
                    return
                self.counters.frames_received += len(item.frame_numbers)
                self._integrator.submit((item, self._read(item, self._open_parts), claimed_at))
        finally:
            self._open_parts.close()  # no more work for now (or stopped): no raw file held open while idle

    def _read(self, item: WorkItem, parts: OpenParts | None = None) -> FrameBatch | str:
        """The item's stitched frames, or the reason they cannot be had. ``parts``: the claiming
        thread's open part, kept for the part's next items while the work keeps coming."""
        if item.error:
            return item.error
        try:
            return read_part_range(
                item.module_files, item.start, item.stop, roots=self.data_roots, modules_off=item.modules_off,
                stamps=item.file_stamps,  # files written over since queued: refused, never another scan's frames
                parts=parts,
            )
        except PipelineError as exc:
            return str(exc)

    def _integrate_ready(self, job: tuple[WorkItem, FrameBatch | str, float]) -> None:
        item, frames, claimed_at = job
        if not self._lease_ran_out(item, claimed_at):
            self._finish(item, frames, lambda: self._lease_ran_out(item, claimed_at))

    def _lease_ran_out(self, item: WorkItem, claimed_at: float) -> bool:
        """True, and said, when the item has been held (since its claim) past its lease: this process
        was held up (SIGSTOP, swapped out, a debugger) and the Stitcher hands the item to another
        Integrator. Integrating or handing it on now would integrate its frames twice, and
        acknowledging it could end the other Integrator's lease: it is dropped."""
        held = time.monotonic() - claimed_at
        if not item.lease_s or held < item.lease_s * LEASE_MARGIN:
            return False
        self._on_error(
            f"{item.item_id}: held {held:.1f} s, past its lease of {item.lease_s:g} s (this Integrator was held "
            f"up): its {len(item.frame_numbers)} frame(s) dropped, the Stitcher hands them out again"
        )
        return True

    def process(self, item: WorkItem) -> PatternBatch:
        """Read, integrate and hand on one work item in the calling thread."""
        self.counters.frames_received += len(item.frame_numbers)
        return self._finish(item, self._read(item))

    def _finish(
        self, item: WorkItem, frames: FrameBatch | str, lease_lost: Callable[[], bool] = lambda: False
    ) -> PatternBatch:
        """Integrate and hand on one item, unless ``lease_lost()`` says it is another's now."""
        t0 = time.perf_counter()
        batch = self._integrate(item, frames)
        if lease_lost():  # held up while integrating: neither counted, handed on nor acknowledged
            return batch
        self.counters.count(batch, time.perf_counter() - t0, item.announced_at)
        self._on_batch(batch)
        with self._done_lock:
            self._done.append(item.item_id)
        return batch

    def _integrate(self, item: WorkItem, frames: FrameBatch | str) -> PatternBatch:
        if isinstance(frames, str):
            return self._failed(item, frames, self.settings)
        if self.engine_error is not None:
            return self._failed(item, self.engine_error, self.settings)
        settings = None
        try:
            settings, fingerprint = self.item_settings.for_item(item)
            engine = self.engines.engine_for(settings, fingerprint, frames.frame_shape, frames.detector_mask)
        except PipelineError as exc:
            return self._failed(item, str(exc), settings)
        patterns = integrate_batch(engine, frames)
        for problem in _problems(item, patterns):
            self._on_error(problem)
        if len(patterns.frame_numbers):
            self.last_pattern = patterns.intensities[-1].copy()
        self.radial, self.last_settings = engine.radial, settings
        return patterns_batch(item, self.name, engine, patterns)

    def start(self) -> None:
        self.running = True
        self.wake()

    def pause(self) -> None:
        self.running = False

    def stop(self, deadline: Deadline | float | None = None) -> bool:
        """Stop both threads within one ``deadline``; an item claimed and not integrated is dropped
        (its lease runs out and the Stitcher hands it out again). The integrating thread first: the
        claiming one may be waiting for room in its queue, which a stopping worker no longer waits for."""
        self.running = False
        deadline = as_deadline(deadline)
        integrated = self._integrator.stop(deadline)
        return self._worker.stop(deadline) and integrated

    def _failed(self, item: WorkItem, reason: str, settings: IntegrationSettings | None) -> PatternBatch:
        self._on_error(f"{item.item_id}: {reason}")
        return failed_batch(item, self.name, reason, settings.bins if settings else 1)


def _problems(item: WorkItem, patterns: BatchPatterns) -> list[str]:
    """What the operator should hear about an item that integrated: frames lost, pixels left out."""
    problems = [f"{item.item_id}: {f.reason}" for f in patterns.failed]
    if patterns.invalid_pixels:
        problems.append(
            f"{item.item_id} ({item.module_files[0]}): {patterns.invalid_pixels} pixel(s) with negative or NaN "
            "counts were left out of the integration"
        )
    return problems


def patterns_batch(item: WorkItem, integrator: str, engine: IntegrationEngine, patterns: BatchPatterns) -> PatternBatch:
    """The item's patterns (frames that failed listed in ``failed``), with the settings they were made with."""
    return item_batch(
        item,
        integrator,
        settings_hash=engine.fingerprint,
        frame_numbers=patterns.frame_numbers,
        index_in_file=patterns.index_in_file,
        intensities=patterns.intensities,
        radial=engine.radial,
        sigma=patterns.sigma,
        failed=patterns.failed,
        settings=engine.settings.to_dict(),
        engine=engine.used.name,
        engine_note=engine.used.note,
    )


def failed_batch(item: WorkItem, integrator: str, reason: str, bins: int) -> PatternBatch:
    """The whole item failed: every frame listed with the reason, no patterns."""
    none = np.zeros(0, np.int64)
    return item_batch(
        item,
        integrator,
        settings_hash="",
        frame_numbers=none,
        index_in_file=none,
        intensities=np.zeros((0, bins), np.float32),
        radial=np.zeros(bins),
        failed=[FailedFrames(item.module_files[0], reason, list(item.frame_numbers))],
        settings=dict(item.settings),  # the scan's: a Merger writes a file even when every frame fails
    )


def item_batch(item: WorkItem, integrator: str, **results) -> PatternBatch:
    """A batch that carries the item's identity and provenance, plus ``results``."""
    return PatternBatch(
        item_id=item.item_id,
        scan=item.scan,
        detector=item.detector,
        integrator=integrator,
        part=item.part,
        raw_file=item.module_files[0],
        module_files=list(item.module_files),
        total_frames=item.total_frames,
        announced_at=item.announced_at,
        modules_off=list(item.modules_off),
        **results,
    )
