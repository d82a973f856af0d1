"""The Stitcher as an Integrator's :class:`~pipeline_core.live.work_source.WorkSource`, through Tango."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import tango

from pipeline_core.messages import MAX_DONE, ClaimRequest, WorkItem

from .dev_failed import one_line, unreachable


class LinkWatch(Protocol):
    """Where the claims' link to the Stitcher is reported (:class:`~.subscriptions.EventSubscriptions`)."""

    def mark_waiting(self, what: str, reason: str) -> None: ...

    def mark_delivering(self, what: str) -> None: ...

    def forget(self, what: str) -> None: ...


class TangoWorkSource:
    """Claims with the Stitcher's ``ClaimWork`` command (JSON ClaimRequest in, JSON WorkItem out).

    A Stitcher that cannot be reached (restarting, not started yet, hung) is a link out, reported to
    ``links`` and answered as "no work now": it is not a failure, nothing was lost, and the claim is
    tried again at the next hint or poll. The items it should have acknowledged are sent with that
    next claim, so their leases do not run out and hand them to another Integrator. Any other error
    (the Stitcher answered and refused) is raised: the stage reports it.
    """

    def __init__(self, proxy: tango.DeviceProxy, links: LinkWatch | None = None):
        self.proxy = proxy
        self.links = links
        #: the link's name in Status: the Stitcher's TRL and the command
        self.what = f"{proxy.dev_name()} ClaimWork"
        self._unsent: list[str] = []  # acknowledgements of claims that did not reach the Stitcher

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        done = [*self._unsent, *request.done][-MAX_DONE:]  # beyond the bound, the oldest leases just expire
        request = dataclasses.replace(request, done=done)
        try:
            answer = self.proxy.command_inout("ClaimWork", request.to_json())
        except tango.DevFailed as exc:
            if not unreachable(exc.args):
                raise
            self._unsent = done
            if self.links is not None:
                self.links.mark_waiting(self.what, one_line(exc.args))
            return None
        self._unsent = []
        if self.links is not None:
            self.links.mark_delivering(self.what)
        return WorkItem.from_json(answer) if answer else None

    def forget(self) -> None:
        """No more claims for now (the Integrator was stopped): the link no longer counts as out."""
        if self.links is not None:
            self.links.forget(self.what)
