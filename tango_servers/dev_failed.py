"""Tango errors: raising one typed ``NoReturn``, telling "cannot reach it" from a failure, one line each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import tango

#: Error reasons that mean "the other device cannot be reached now" (not exported, restarting, hung):
#: a link out, not a failure. Event errors and command errors (a claim) alike.
UNREACHABLE_ERRORS = frozenset(
    {
        "API_EventTimeout",
        "API_CantConnectToDevice",
        "API_DeviceNotExported",
        "API_ZmqFailed",
        "API_CorbaException",
        "API_DServerClassNotInitialised",  # upstream server still starting
        "API_DeviceTimedOut",  # upstream hung or stopped (SIGSTOP): leases expire, nothing is lost
        "API_CommunicationFailed",
        "API_ConnectionFailed",
    }
)


def throw(reason: str, description: str, where: str) -> NoReturn:
    """``tango.Except.throw_exception`` (DevFailed with ``reason``, e.g. XRD_InvalidValue), typed."""
    tango.Except.throw_exception(reason, description, where)
    raise AssertionError("unreachable: throw_exception raises")


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (a Tango error's description can span many)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "no reason given")


def one_line(errors: Sequence[Any]) -> str:
    """A Tango error stack (``DevFailed.args``, ``EventData.errors``) as one line for Status: the first
    error's reason and the first line of its description (``str(DevFailed)`` is a multi-line dump)."""
    if not errors:
        return "unknown error"
    return f"{errors[0].reason}: {first_line(errors[0].desc)}"


def unreachable(errors: Sequence[Any]) -> bool:
    """The error stack says the other device cannot be reached now (any error of it)."""
    return any(error.reason in UNREACHABLE_ERRORS for error in errors)
