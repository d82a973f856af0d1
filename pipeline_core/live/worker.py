"""A queue and one worker thread: how every stage keeps heavy work off its caller's thread.

Tango delivers all event callbacks of a process on one thread; a callback that takes a second
delays every other event by a second. So callbacks only ``submit`` and return, and the work runs
here. Exceptions are caught, logged and passed to ``on_error`` so a stage keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..errors import PipelineError

log = logging.getLogger(__name__)

_STOP = object()

#: A context every worker thread runs in (``contextlib.nullcontext``, or ``tango.EnsureOmniThread``).
ThreadContext = Callable[[], Any]


class Worker:
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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        self.queue.put(item)

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def _run(self) -> None:
        with self._thread_context():
            self._loop()

    def _loop(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=self._idle_interval_s)
            except queue.Empty:
                item = None
                if self._idle is None:
                    continue
            if item is _STOP:
                return
            try:
                if item is None:
                    self._idle()  # type: ignore[misc]
                else:
                    self._handle(item)
            except Exception as exc:  # keep serving: report, never die silently
                log.exception("%s failed", self.name)
                self._on_error(str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}")

    def stop(self, timeout_s: float = 10.0) -> None:
        self.queue.put(_STOP)
        self._thread.join(timeout_s)
