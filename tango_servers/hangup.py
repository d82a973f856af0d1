"""SIGHUP shuts a device server down the way SIGTERM does (cppTango drops HUP on its own)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

log = logging.getLogger(__name__)

#: The watcher thread and the wakeup socket Python's handler writes to (kept for the process's life).
_hangup_watch: tuple[threading.Thread, socket.socket] | None = None


def stop_on_hangup() -> None:
    """Make SIGHUP shut this server down exactly as SIGTERM does (once per process, main thread).

    cppTango blocks every signal in every thread and waits (``sigwait``) on its own thread for INT,
    TERM, QUIT and HUP: the first three run a clean shutdown (``delete_device`` of each device,
    exit 0), but HUP is dropped unconditionally (``thsig.cpp``: ``if (signo == SIGHUP) continue;``),
    and a device's ``register_signal(SIGHUP)`` handler is never called. Measured with pytango
    10.3.1: a server sent SIGHUP still ran 20 s later. A closed terminal or a service manager
    sends HUP, so we take it before cppTango can: the main thread (which the kernel prefers for a
    signal sent to the process) unblocks HUP with Python's handler, whose C part writes the signal
    number to a wakeup socket; a watcher thread reads it and sends us SIGTERM, which cppTango
    handles. One shutdown path, the one TERM already takes.

    Called from ``init_device``: the first call runs in the main thread during server start-up,
    after cppTango set its signal mask; later calls (``Init``, other devices) do nothing.
    """
    global _hangup_watch
    if _hangup_watch is not None or threading.current_thread() is not threading.main_thread():
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def watch() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        while data := reader.recv(64):
            if signal.SIGHUP in data:
                log.warning("SIGHUP: shutting the server down as on SIGTERM")
                os.kill(os.getpid(), signal.SIGTERM)

    _hangup_watch = (threading.Thread(target=watch, name="xrd-sighup", daemon=True), writer)
    _hangup_watch[0].start()
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: None)  # the work is done by the watcher
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
