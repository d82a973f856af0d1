"""pipeline_core.signals: SIGTERM/SIGHUP behave like Ctrl-C; deferred blocks finish their cleanup."""

import os
import signal

import pytest

from pipeline_core.signals import Interrupted, exit_code, signals_deferred, stop_signals_raise


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signals_raise_interrupted_with_the_shell_exit_code(signum, code):
    with pytest.raises(Interrupted) as info, stop_signals_raise():
        os.kill(os.getpid(), signum)
    assert info.value.signum == signum and exit_code(info.value) == code
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored


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
