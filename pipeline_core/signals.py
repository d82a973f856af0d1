"""Stopping on a signal the way Ctrl-C stops: SIGTERM and SIGHUP become :class:`Interrupted`.

Service managers, CI runners and closed terminals stop a program with SIGTERM or SIGHUP, not
SIGINT. Python only turns SIGINT into ``KeyboardInterrupt``; the other two would kill the process
on the spot, leaving result files ``running`` and child processes orphaned. Raising the same kind
of exception for all three means one shutdown path (stop workers, close files, stop children) runs
whatever stopped us, and the exit status says which signal it was (128 + number, as shells do).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: The signals that mean "stop, cleanly".
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which (``exit_code`` = 128 + signum)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """Shell-style exit status of an interruption (130 for a plain Ctrl-C)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def _raise(signum, _frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within this block, SIGINT/SIGTERM/SIGHUP raise :class:`Interrupted` in the main thread.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


#: Signals recorded by the outermost active :func:`signals_deferred` block (None: none active).
_deferred: list[int] | None = None


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Within this block stop signals are *recorded*, not raised: for cleanup that must finish.

    After the block, the first recorded signal is raised as :class:`Interrupted`. Blocks nest: an
    inner block records into the outer one's list and raises nothing, so a cleanup that calls
    another cleanup is never cut short half-way.
    """
    global _deferred
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    if _deferred is not None:  # nested: the outermost block raises
        yield _deferred
        return
    got: list[int] = []
    _deferred = got
    previous = {s: signal.signal(s, lambda signum, _f: got.append(signum)) for s in STOP_SIGNALS}
    try:
        yield got
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _deferred = None
    if got:
        raise Interrupted(got[0])
