"""A queue and one worker thread: how every stage keeps heavy work off its caller's thread.

Tango delivers all event callbacks of a process on one thread; a callback that takes a second
delays every other event by a second. So callbacks only ``submit`` and return, and the work runs
here. Exceptions are caught, logged and passed to ``on_error`` so a stage keeps serving.

Stopping (:meth:`Worker.stop`) never waits for the backlog: jobs not started are dropped, after at
most ``drain_s`` of them, and a ``final`` job the stage gives runs last. Dropping is safe for every
stage because none holds the only copy of anything in its queue:

- Stitcher: queued announcements are files on disk; after a restart its trigger finds them again
  (the watch sweep's backlog, the Lambda follower's acquisition) and the Merger's gap check asks for
  any frame still missing.
- Integrator: a claimed item not integrated is leased; the lease runs out and the Stitcher hands
  the item to another Integrator.
- Merger: batches not merged are asked for again by the gap check of the resumed scan; its
  ``final`` job (``SuspendAll``) always runs, so open files are left suspended with their journals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import PipelineError
from .deadline import Deadline, as_deadline

log = logging.getLogger(__name__)

_STOP = object()
#: seconds a bounded queue's ``submit`` waits between looks at the stop flag
_PUT_POLL_S = 0.2
#: seconds a worker's own stop waits when no deadline is given
WORKER_STOP_S = 10.0

#: A context every worker thread runs in (``contextlib.nullcontext``, or ``tango.EnsureOmniThread``).
ThreadContext = Callable[[], Any]


class Worker:
    """One thread running ``handle(item)`` for each submitted item, ``idle()`` when none came for
    ``idle_interval_s``; ``maxsize`` bounds the queue (``submit`` then waits for room)."""

    def __init__(
        self,
        name: str,
        handle: Callable[[Any], None],
        on_error: Callable[[str], None],
        maxsize: int = 0,
        idle: Callable[[], None] | None = None,
        idle_interval_s: float = 1.0,
        thread_context: ThreadContext | None = None,
    ):
        self.name = name
        self._handle = handle
        self._on_error = on_error
        self._idle = idle
        self._idle_interval_s = idle_interval_s
        # Tango needs threads it did not create to run inside tango.EnsureOmniThread(); the core
        # cannot import tango, so the device layer passes it in through the stage it builds.
        self._thread_context = thread_context or contextlib.nullcontext
        self.queue: queue.Queue = queue.Queue(maxsize)
        self._stopping = threading.Event()
        self._final: Any = None
        self._drain_until = 0.0
        #: jobs dropped by the stop (submitted and never run); counted by submitters and the worker thread
        self.dropped = 0
        self._dropped_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        """Queue ``item``; once the worker is stopping it is dropped (a full queue never blocks a stop)."""
        while not self._stopping.is_set():
            try:
                self.queue.put(item, timeout=_PUT_POLL_S)
                return
            except queue.Full:
                continue
        self._count_dropped()

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called: no job not started yet is run (but ``final``, and the drain)."""
        return self._stopping.is_set()

    def _run(self) -> None:
        with self._thread_context():
            self._loop()
            self._finish()

    def _loop(self) -> None:
        while not self._stopping.is_set() or self._draining():
            try:
                item = self.queue.get(timeout=self._idle_interval_s)
            except queue.Empty:
                if self._idle is None or self._stopping.is_set():
                    continue
                item = None
            if item is _STOP:
                continue  # the stop's wake-up: the loop ends (after the drain)
            if item is not None and self._stopping.is_set() and time.monotonic() >= self._drain_until:
                self._count_dropped()  # the drain is over: the loop ends
                continue
            job = self._idle if item is None else functools.partial(self._handle, item)
            if job is not None:
                self._run_one(job)

    def _count_dropped(self) -> None:
        with self._dropped_lock:  # ``+=`` is a read and a write: two threads could lose one
            self.dropped += 1

    def _draining(self) -> bool:
        return time.monotonic() < self._drain_until and not self.queue.empty()

    def _finish(self) -> None:
        """Drop what is still queued, then run the stage's ``final`` job."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._count_dropped()
        if self.dropped:  # a warning: the operator learns that work was left (found again after a restart)
            log.warning("%s stopped with %d queued job(s) not run: dropped", self.name, self.dropped)
        if self._final is not None:
            self._run_one(functools.partial(self._handle, self._final))

    def _run_one(self, job: Callable[[], Any]) -> None:
        try:
            job()
        except Exception as exc:  # keep serving: report, never die silently
            log.exception("%s failed", self.name)
            self._on_error(str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}")

    def stop(self, deadline: Deadline | float | None = None, final: Any = None, drain_s: float = 0.0) -> bool:
        """Stop after the job running now; never blocks on a full queue nor runs the whole backlog.

        Jobs queued are still run for ``drain_s`` seconds, then dropped (why that is safe: the module
        docstring); ``final`` (e.g. the Merger's ``SuspendAll``) runs last, after the current job.
        Waits until ``deadline`` (a :class:`Deadline`, or seconds; default :data:`WORKER_STOP_S`):
        True when the thread ended, False (the thread named in the log) when it still runs.
        """
        self._final = final
        self._drain_until = time.monotonic() + drain_s
        self._stopping.set()
        try:
            self.queue.put_nowait(_STOP)  # wakes a worker waiting for a job
        except queue.Full:
            pass  # it is busy on a job: it sees the flag after that one
        return as_deadline(deadline, WORKER_STOP_S).join(self._thread, f"worker of {self.name}")
