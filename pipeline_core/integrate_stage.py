"""The integration stage of the live pipeline, without Tango.

Woken by "work available" hints, it claims work items one at a time (``claim`` is a callable: the
Integrator device passes a call of the Stitcher's ``ClaimWork`` command), reads and stitches the
item's frames, integrates them with a warm engine and hands a :class:`PatternBatch` on. It also
polls for work when idle, because an event is a hint, not a delivery guarantee.

Each item is integrated with the settings it carries (stamped by the Stitcher: the chain's settings
in force when its scan was queued), so any Integrator integrates any item exactly as queued. The
stage's own ``settings`` serve only items that carry none (in-process drivers that do not give the
Stitcher settings). Warm engines are cached per settings fingerprint and frame layout, at most
``max_engines`` of them (each holds a CSR matrix: ~120 MB for a Lambda 2M), so two interleaved scans
with different settings do not rebuild an engine per item.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, PipelineError
from .integrate import IntegrationEngine, IntegrationSettings, read_poni
from .mask import check_mask_shape, load_mask_file
from .messages import FailedFrames, PatternBatch, WorkItem
from .paths import confine
from .sources import PartFrames, read_part_range
from .worker import Worker

log = logging.getLogger(__name__)


@dataclass
class IntegrateCounters:
    frames_received: int = 0
    frames_processed: int = 0
    frames_failed: int = 0
    busy_s: float = 0.0
    latency_s: float = 0.0  # part announced -> its patterns sent, of the last item


class IntegrateStage:
    def __init__(
        self,
        name: str,
        settings: IntegrationSettings | None,
        claim: Callable[[], WorkItem | None],
        on_batch: Callable[[PatternBatch], None],
        on_error: Callable[[str], None],
        poll_interval_s: float = 1.0,
        data_roots: tuple[str, ...] = (),
        calibration_roots: tuple[str, ...] = (),
        max_engines: int = 2,
    ):
        self.name = name
        #: module files of a work item must resolve inside these (empty: anywhere), checked at open:
        #: an item names files, and whoever can call ClaimWork's answer into existence could name any
        self.data_roots = tuple(data_roots)
        #: the PONI and mask files an item names must lie inside these (empty: anywhere), for the same reason
        self.calibration_roots = tuple(calibration_roots)
        self._settings = settings
        #: settings of the last item integrated (what Status shows)
        self.last_settings: IntegrationSettings | None = None
        self._own: tuple[IntegrationSettings, str] | None = None
        self._claim = claim
        self._on_batch = on_batch
        self._on_error = on_error
        #: (fingerprint, frame shape) -> warm engine, least recently used first
        self._engines: collections.OrderedDict[tuple[str, tuple[int, ...]], IntegrationEngine] = (
            collections.OrderedDict()
        )
        self.max_engines = max(1, int(max_engines))
        self._engine_lock = threading.Lock()
        self.frame_shape: tuple[int, int] | None = None
        self.counters = IntegrateCounters()
        self._done: list[str] = []  # item ids handed on, to acknowledge with the next claim
        self._done_lock = threading.Lock()
        self.last_pattern: np.ndarray | None = None
        self.radial: np.ndarray | None = None
        self.running = False
        # Two threads: one claims and reads (decompress + stitch) the next item while the other
        # integrates the current one; the bounded hand-over queue stops it from hoarding work.
        self._integrator = Worker(f"xrd-integrate-{name}", self._integrate_ready, on_error, maxsize=1)
        self._worker = Worker(
            f"xrd-claim-{name}", self._drain, on_error, idle=self._poll, idle_interval_s=poll_interval_s
        )

    # -- settings ---------------------------------------------------------------------------------
    @property
    def settings(self) -> IntegrationSettings | None:
        """The settings for items that carry none (None: such items fail)."""
        return self._settings

    def set_settings(self, settings: IntegrationSettings) -> None:
        """Validate, then switch the settings for items that carry none. A bad PONI or a mask of the
        wrong shape raises and the old value stays."""
        read_poni(settings.poni_path)
        if settings.mask_path is not None:
            mask = load_mask_file(settings.mask_path)
            if self.frame_shape is not None:
                check_mask_shape(mask, self.frame_shape, f"file {settings.mask_path}")
        self._settings = settings

    def _own_fingerprint(self, settings: IntegrationSettings) -> str:
        """The fingerprint of the stage's own settings, computed once per value (it hashes the files)."""
        if self._own is None or self._own[0] is not settings:
            self._own = (settings, settings.fingerprint())
        return self._own[1]

    def _item_settings(self, item: WorkItem) -> tuple[IntegrationSettings, str | None]:
        """The settings to integrate ``item`` with and the fingerprint they were queued with (None for
        the stage's own settings). ConfigError for settings this Integrator must not use."""
        if not item.settings:
            if self._settings is None:
                raise ConfigError(
                    "the chain has no integration settings: write poniPath on the Stitcher, an Integrator or "
                    "the Merger, then Reintegrate"
                )
            return self._settings, None
        settings = IntegrationSettings.from_dict(item.settings)
        confine(settings.poni_path, self.calibration_roots, "PONI file of the work item")
        if settings.mask_path is not None:
            confine(settings.mask_path, self.calibration_roots, "mask file of the work item")
        return settings, item.settings_hash

    # -- work ---------------------------------------------------------------------------------------
    def take_done(self) -> list[str]:
        """Item ids finished since the last call (the claim acknowledges them, ending their lease)."""
        with self._done_lock:
            done, self._done = self._done, []
        return done

    def wake(self) -> None:
        """Work is available (an event arrived). Returns at once."""
        if self.running and self._worker.depth < 2:
            self._worker.submit("wake")

    def _poll(self) -> None:
        if self.running:
            self._drain("poll")

    def _drain(self, _reason: str) -> None:
        while self.running:
            item = self._claim()
            if item is None:
                return
            self.counters.frames_received += len(item.frame_numbers)
            self._integrator.submit((item, self._read(item)))

    def _read(self, item: WorkItem) -> PartFrames | str:
        """The item's stitched frames, or the reason they cannot be had."""
        if item.error:
            return item.error
        try:
            return read_part_range(item.module_files, item.start, item.stop, roots=self.data_roots)
        except PipelineError as exc:
            return str(exc)

    def _integrate_ready(self, job: tuple[WorkItem, PartFrames | str]) -> None:
        self._finish(*job)

    def process(self, item: WorkItem) -> PatternBatch:
        """Read, integrate and hand on one work item in the calling thread."""
        self.counters.frames_received += len(item.frame_numbers)
        return self._finish(item, self._read(item))

    def _finish(self, item: WorkItem, frames: PartFrames | str) -> PatternBatch:
        t0 = time.perf_counter()
        batch = self._integrate(item, frames)
        self.counters.frames_processed += len(batch.frame_numbers)
        self.counters.frames_failed += sum(len(f.frame_numbers) for f in batch.failed)
        self.counters.busy_s += time.perf_counter() - t0
        if item.announced_at:
            self.counters.latency_s = max(0.0, time.time() - item.announced_at)
        self._on_batch(batch)
        with self._done_lock:
            self._done.append(item.item_id)
        return batch

    def _integrate(self, item: WorkItem, frames: PartFrames | str) -> PatternBatch:
        settings = self._settings
        try:
            settings, fingerprint = self._item_settings(item) if not isinstance(frames, str) else (settings, None)
        except PipelineError as exc:
            settings, frames = None, str(exc)
        empty = np.zeros((0, settings.bins if settings else 1), np.float32)

        def failed(reason: str) -> PatternBatch:
            self._on_error(f"{item.item_id}: {reason}")
            none = np.zeros(0, np.int64)
            return self._batch(
                item,
                settings_hash="",
                frame_numbers=none,
                index_in_file=none,
                intensities=empty,
                radial=np.zeros(empty.shape[1]),
                failed=[FailedFrames(item.module_files[0], reason, list(item.frame_numbers))],
            )

        if isinstance(frames, str):
            return failed(frames)
        assert settings is not None  # _item_settings raised otherwise
        try:
            engine = self._engine_for(settings, fingerprint, frames.frames.shape[-2:], frames.detector_mask)
            result = np.empty((len(frames.frame_numbers), settings.bins), np.float32)
            sigma = np.empty_like(result) if settings.error_model else None
            invalid = 0
            for i, frame in enumerate(frames.frames):
                pattern = engine.integrate(frame, int(frames.frame_numbers[i]))
                invalid += pattern.invalid_pixels
                result[i] = pattern.intensity
                if sigma is not None:
                    sigma[i] = pattern.sigma
        except PipelineError as exc:
            return failed(str(exc))
        if invalid:
            self._on_error(
                f"{item.item_id} ({item.module_files[0]}): {invalid} pixel(s) with negative or NaN counts "
                "were left out of the integration"
            )
        self.last_pattern = result[-1].copy()
        self.radial = engine.radial
        self.last_settings = settings
        return self._batch(
            item,
            settings_hash=engine.fingerprint,
            frame_numbers=frames.frame_numbers,
            index_in_file=np.arange(item.start, item.stop),
            intensities=result,
            radial=engine.radial,
            sigma=sigma,
            settings=settings.to_dict(),
        )

    def _batch(self, item: WorkItem, **results) -> PatternBatch:
        """A batch that carries the item's identity and provenance, plus ``results``."""
        return PatternBatch(
            item_id=item.item_id,
            scan=item.scan,
            detector=item.detector,
            integrator=self.name,
            part=item.part,
            raw_file=item.module_files[0],
            module_files=list(item.module_files),
            total_frames=item.total_frames,
            announced_at=item.announced_at,
            **results,
        )

    def _engine_for(self, settings, fingerprint: str | None, frame_shape, detector_mask) -> IntegrationEngine:
        """A warm engine for these settings and layout, built (and the least recently used one dropped
        beyond ``max_engines``) when none is cached. Refuses settings whose PONI or mask file no longer
        holds what the item was queued with: integrating other content would mix calibrations in a scan."""
        key = (fingerprint or self._own_fingerprint(settings), tuple(int(n) for n in frame_shape))
        with self._engine_lock:
            e = self._engines.get(key)
            if e is not None and e.settings == settings and np.array_equal(e.detector_mask, detector_mask):
                self._engines.move_to_end(key)
                return e
            if settings.mask_path is not None:
                check_mask_shape(load_mask_file(settings.mask_path), tuple(frame_shape), f"file {settings.mask_path}")
            log.info("%s: building integration engine for %s", self.name, settings)
            e = IntegrationEngine(settings, tuple(frame_shape), detector_mask)
            if fingerprint is not None and e.fingerprint != fingerprint:
                raise ConfigError(
                    f"the PONI or mask file of this item ({settings.poni_path}, {settings.mask_path or 'no mask'}) "
                    f"changed since its scan was queued (fingerprint {fingerprint}, now {e.fingerprint}): "
                    "not integrated with other content; Reintegrate the acquisition"
                )
            self._engines[key] = e
            self._engines.move_to_end(key)
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)
            self.frame_shape = e.frame_shape
            return e

    def start(self) -> None:
        self.running = True
        self.wake()

    def pause(self) -> None:
        self.running = False

    def stop(self) -> None:
        self.running = False
        self._worker.stop()
        self._integrator.stop()
