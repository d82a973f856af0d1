"""Stopping on a signal the way Ctrl-C stops: SIGTERM and SIGHUP become :class:`Interrupted`.

Service managers, CI runners and closed terminals stop a program with SIGTERM or SIGHUP, not
SIGINT. Python only turns SIGINT into ``KeyboardInterrupt``; the other two would kill the process
on the spot, leaving result files ``running`` and child processes orphaned. Raising the same kind
of exception for all three means one shutdown path (stop workers, close files, stop children) runs
whatever stopped us, and the exit status says which signal it was (128 + number, as shells do).

A handler that raises can do so between any two bytecodes, inside a lock's or a queue's own code
too; a second signal 0.1 ms after the first then unwinds that code half-way ("release unlocked
lock", measured: Ctrl-C then SIGTERM during ``integrate --workers 2``). So only the first stop
signal raises; later ones are recorded for the stop already under way. Code that waits on locks
and queues runs inside :func:`signals_deferred` and raises a recorded signal itself, where it is
safe (:func:`raise_if_stopped`).
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


#: Stop signals received inside the active :func:`stop_signals_raise` block (None: no block active);
#: only the first one was raised.
_received: list[int] | None = None


def _raise(signum, _frame) -> None:
    if _received:  # a stop is under way: a second raise could cut its unwinding short
        _received.append(signum)
        return
    if _received is not None:
        _received.append(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within this block, the first SIGINT/SIGTERM/SIGHUP raises :class:`Interrupted` in the main
    thread; later ones are recorded, never raised while the first one unwinds.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer, _received = _received, []
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received = outer


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


def raise_if_stopped() -> None:
    """Raise the first stop signal the active :func:`signals_deferred` block recorded, as
    :class:`Interrupted`: for a point where unwinding is safe (no lock or queue half-way). Does nothing
    when no block is active or nothing was recorded."""
    if _deferred:
        raise Interrupted(_deferred[0])
