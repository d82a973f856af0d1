"""``xrd-pipeline panel`` stops on SIGINT, SIGTERM and SIGHUP like every other command (exit 128 + N).

Python runs a signal handler only between two bytecodes of the main thread. In Qt's event loop the
main thread sits in C++ until some Python slot runs, and a handler that raises there (the CLI's
:func:`~pipeline_core.signals.stop_signals_raise`) raises inside a slot, where PyQt/Taurus log the
exception and carry on: SIGTERM and SIGHUP were ignored, and TaurusApplication's own SIGINT handler
closed the window with exit status 0. Here the handlers only record the signal and ask Qt to quit,
and a timer runs a little Python every :data:`TICK_MS` so a pending handler is run promptly. The
caller raises :class:`~pipeline_core.signals.Interrupted` once the loop has returned, outside Qt,
so the CLI's usual path reports it and exits 128 + the signal.
"""

from __future__ import annotations

import signal

from taurus.external.qt import Qt

from pipeline_core.signals import STOP_SIGNALS

#: how often the event loop hands the interpreter a chance to run a pending signal handler
TICK_MS = 200


class StopOnSignals:
    """Within this block, the first stop signal closes the top-level windows and quits ``app``;
    ``received`` says which signal it was (None: the window was closed)."""

    def __init__(self, app: Qt.QApplication, tick_ms: int = TICK_MS):
        self.app = app
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._tick = Qt.QTimer()
        self._tick.timeout.connect(lambda: None)  # any Python code lets the interpreter run handlers
        self._tick_ms = tick_ms

    def __enter__(self) -> StopOnSignals:
        self._previous = {s: signal.signal(s, self._stop) for s in STOP_SIGNALS}
        self._tick.start(self._tick_ms)
        return self

    def __exit__(self, *_exc) -> None:
        self._tick.stop()
        for s, handler in self._previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(s, handler)

    def _stop(self, signum: int, _frame) -> None:
        if self.received is not None:
            return  # already stopping
        self.received = signum
        for widget in self.app.topLevelWidgets():
            widget.close()
        self.app.quit()
