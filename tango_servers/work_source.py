"""The Stitcher as an Integrator's :class:`~pipeline_core.live.work_source.WorkSource`, through Tango."""

from __future__ import annotations

import tango

from pipeline_core.messages import ClaimRequest, WorkItem


class TangoWorkSource:
    """Claims with the Stitcher's ``ClaimWork`` command (JSON ClaimRequest in, JSON WorkItem out)."""

    def __init__(self, proxy: tango.DeviceProxy):
        self.proxy = proxy

    def claim(self, request: ClaimRequest) -> WorkItem | None:
        answer = self.proxy.command_inout("ClaimWork", request.to_json())
        return WorkItem.from_json(answer) if answer else None
