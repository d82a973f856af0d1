"""pipeline_core.signals: SIGTERM/SIGHUP behave like Ctrl-C; deferred blocks finish their cleanup."""

import os
import signal

import pytest

from pipeline_core.signals import Interrupted, exit_code, signals_deferred, stop_signals_raise

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signals_raise_interrupted_with_the_shell_exit_code(signum, code):
    before = {s: signal.getsignal(s) for s in STOPS}
    with pytest.raises(Interrupted) as info, stop_signals_raise():
        assert all(signal.getsignal(s) is not before[s] for s in STOPS)  # the block installs its own
        os.kill(os.getpid(), signum)
    assert info.value.signum == signum and exit_code(info.value) == code
    assert {s: signal.getsignal(s) for s in STOPS} == before  # the handlers in force before are back


def test_handlers_set_before_the_block_are_restored_after_it_ends_normally():
    def mine(_signum, _frame) -> None:
        """A handler of the caller's own (e.g. a Tango server's)."""

    saved = {s: signal.signal(s, mine) for s in STOPS}
    try:
        with stop_signals_raise():
            pass
        assert {s: signal.getsignal(s) for s in STOPS} == dict.fromkeys(STOPS, mine)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_a_plain_keyboard_interrupt_is_130():
    assert exit_code(KeyboardInterrupt()) == 130


def test_deferred_block_finishes_then_raises_the_first_signal():
    steps = []
    with pytest.raises(Interrupted) as info, stop_signals_raise():
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("after TERM")
            os.kill(os.getpid(), signal.SIGHUP)
            steps.append("after HUP")
    assert steps == ["after TERM", "after HUP"]
    assert info.value.signum == signal.SIGTERM


def test_nested_deferred_blocks_raise_only_at_the_outermost():
    steps = []
    with pytest.raises(Interrupted), stop_signals_raise():
        with signals_deferred():
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("inner cleanup")
            steps.append("outer cleanup")  # not cut short by the inner block
    assert steps == ["inner cleanup", "outer cleanup"]
