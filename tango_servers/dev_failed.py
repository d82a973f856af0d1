"""Raising a Tango error as a function typed ``NoReturn``, so code after a refusal needs no dead return."""

from __future__ import annotations

from typing import NoReturn

import tango


def throw(reason: str, description: str, where: str) -> NoReturn:
    """``tango.Except.throw_exception`` (DevFailed with ``reason``, e.g. XRD_InvalidValue), typed."""
    tango.Except.throw_exception(reason, description, where)
    raise AssertionError("unreachable: throw_exception raises")
