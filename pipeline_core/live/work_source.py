"""Where an Integrator gets its work: the claim/acknowledge protocol in one place.

An :class:`~.integrate_stage.IntegrateStage` is *given* a :class:`WorkSource` and calls nothing
else to get work: in the device it is a Tango proxy of the Stitcher (``tango_servers.work_source``),
in tests and benchmarks :class:`InProcessWorkSource` over a :class:`~.stitch_stage.StitchStage`.
Both speak the same versioned messages: a :class:`~.messages.ClaimRequest` goes in (the claimant,
its initial settings, the items it finished, which acknowledges them), a
:class:`~.messages.WorkItem` or nothing comes out. The in-process source sends them through their
JSON form, so a test exercises exactly what crosses a process in production.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..messages import ClaimRequest, WorkItem

if TYPE_CHECKING:
    from .stitch_stage import StitchStage


class WorkSource(Protocol):
    """Hands out work items, one per claim; a claim acknowledges the items finished since the last."""

    def claim(self, request: ClaimRequest) -> WorkItem | None: ...


class InProcessWorkSource:
    """A StitchStage in this process, reached through the messages' wire form (as ``ClaimWork`` is)."""

    def __init__(self, stitch: StitchStage):
        self.stitch = stitch

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        item = self.stitch.claim(ClaimRequest.from_json(request.to_json()))
        return None if item is None else WorkItem.from_json(item.to_json())


class NoWork:
    """A source with nothing to hand out: for a stage driven only through ``process(item)``."""

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        return None
